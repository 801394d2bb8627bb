//! Workload API errors, mapped to gRPC status in this one place.

use crate::authority_client::AuthorityError;
use tessera_common::SpiffeId;
use tonic::Status;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkloadError {
    #[error("could not identify the caller: {0}")]
    Attestation(String),
    #[error("agent is not ready to serve identities yet")]
    NotSynced,
    #[error("no identity issued")]
    NoIdentity,
    #[error("caller is not entitled to {0}")]
    NotEntitled(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("authority unavailable: {0}")]
    Upstream(String),
    #[error("too many Workload API calls from this uid; retry later")]
    RateLimited,
    #[error("{0}")]
    Internal(String),
}

impl WorkloadError {
    /// The agent's own answer when the authority did not give `id`: the
    /// authority's status never reaches a workload as is.
    pub fn from_authority(e: AuthorityError, id: &SpiffeId) -> Self {
        match e {
            AuthorityError::AgentRefused(_) => WorkloadError::NoIdentity,
            AuthorityError::EntryRefused(_) => WorkloadError::NotEntitled(id.to_string()),
            AuthorityError::RequestRefused(why) => WorkloadError::InvalidArgument(why),
            AuthorityError::RetryLater(why) => WorkloadError::Upstream(why),
            AuthorityError::InvalidResponse(why) => {
                WorkloadError::Upstream(format!("unusable answer: {why}"))
            }
        }
    }
}

impl From<WorkloadError> for Status {
    fn from(e: WorkloadError) -> Status {
        let msg = e.to_string();
        match e {
            WorkloadError::Attestation(_)
            | WorkloadError::NotSynced
            | WorkloadError::Upstream(_) => Status::unavailable(msg),
            WorkloadError::NoIdentity | WorkloadError::NotEntitled(_) => {
                Status::permission_denied(msg)
            }
            WorkloadError::InvalidArgument(_) => Status::invalid_argument(msg),
            WorkloadError::RateLimited => Status::resource_exhausted(msg),
            WorkloadError::Internal(_) => Status::internal(msg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    /// A workload gets the agent's own code, never the authority's.
    #[test]
    fn authority_errors_become_the_agents_own_status() {
        let id: SpiffeId = "spiffe://td/w".parse().unwrap();
        let status = |e: AuthorityError| Status::from(WorkloadError::from_authority(e, &id));
        let cases = [
            (
                AuthorityError::AgentRefused("evicted".into()),
                Code::PermissionDenied,
            ),
            (
                AuthorityError::EntryRefused("deleted".into()),
                Code::PermissionDenied,
            ),
            (
                AuthorityError::RequestRefused("audience".into()),
                Code::InvalidArgument,
            ),
            (
                AuthorityError::RetryLater("Internal: db".into()),
                Code::Unavailable,
            ),
            (
                AuthorityError::InvalidResponse("no token".into()),
                Code::Unavailable,
            ),
        ];
        for (e, code) in cases {
            let st = status(e.clone());
            assert_eq!(st.code(), code, "{e:?}");
        }
        let st = status(AuthorityError::EntryRefused("deleted".into()));
        assert!(st.message().contains("spiffe://td/w"), "{st:?}");
        assert!(!st.message().contains("deleted"), "{st:?}");
    }
}
