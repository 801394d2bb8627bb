//! The authority's request errors, mapped to gRPC status in exactly one place.

use crate::attestation::AttestError;
use crate::ca::CaError;
use crate::datastore::DatastoreError;
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// A limit on concurrent work or message size: retry later, or send less.
    #[error("{0}")]
    ResourceExhausted(String),
    /// Too much at once: retry after about this long (sent as a retry hint).
    #[error("{0}")]
    Overloaded(String, std::time::Duration),
    #[error("attestation: {0}")]
    Attest(#[from] AttestError),
    #[error("signing: {0}")]
    Ca(#[from] CaError),
    #[error("datastore: {0}")]
    Datastore(#[from] DatastoreError),
    #[error("{0}")]
    Internal(String),
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        if let ApiError::Overloaded(message, retry) = &e {
            return crate::limits::shed::overloaded(message, *retry);
        }
        let code = match &e {
            ApiError::InvalidArgument(_) => Code::InvalidArgument,
            ApiError::PermissionDenied(_) => Code::PermissionDenied,
            ApiError::Unauthenticated(_) => Code::Unauthenticated,
            ApiError::NotFound(_) => Code::NotFound,
            ApiError::FailedPrecondition(_) => Code::FailedPrecondition,
            ApiError::ResourceExhausted(_)
            | ApiError::Overloaded(..)
            | ApiError::Attest(AttestError::TooLarge(_)) => Code::ResourceExhausted,
            ApiError::Attest(AttestError::Malformed(_)) => Code::InvalidArgument,
            ApiError::Attest(AttestError::Rejected(_)) => Code::PermissionDenied,
            ApiError::Attest(AttestError::StreamClosed) => Code::Cancelled,
            ApiError::Attest(AttestError::Datastore(d)) | ApiError::Datastore(d) => match d {
                DatastoreError::AlreadyExists(_) => Code::AlreadyExists,
                DatastoreError::NotFound(_) => Code::NotFound,
                DatastoreError::Changed(_) => Code::Aborted,
                DatastoreError::TokenUsed
                | DatastoreError::TokenExpired
                | DatastoreError::Evicted(_)
                | DatastoreError::Superseded(_) => Code::PermissionDenied,
                _ => Code::Unavailable,
            },
            ApiError::Ca(CaError::Csr(_)) => Code::InvalidArgument,
            ApiError::Ca(_) | ApiError::Internal(_) => Code::Internal,
        };
        if matches!(code, Code::Internal | Code::Unavailable) {
            tracing::error!(error = %e, "request failed");
        }
        Status::new(code, e.to_string())
    }
}
