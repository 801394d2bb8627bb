//! Workload API errors, mapped to gRPC status in this one place.

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
