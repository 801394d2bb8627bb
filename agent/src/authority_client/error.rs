//! What a failed call to the authority means for the agent, read from a gRPC
//! status in this one place. The call's status speaks about the agent and its
//! request; an entry's own outcome travels in that entry's result.

use tessera_proto::authority as pb;
use tonic::Code;

/// Each variant says what the caller should do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthorityError {
    /// Transport, availability or load trouble, or a failure on this host (RNG,
    /// TPM): try again later and keep serving what is cached.
    #[error("temporary failure: {0}")]
    RetryLater(String),
    /// The authority refuses this agent (unknown, evicted, superseded, evidence
    /// refused): every identity it issued through this agent is gone.
    #[error("authority refused this agent: {0}")]
    AgentRefused(String),
    /// The authority refuses the request as sent (malformed, method not
    /// enabled): sending it again unchanged will not help.
    #[error("authority refused the request: {0}")]
    RequestRefused(String),
    /// The authority refuses one entry (deleted, no longer authorised, an
    /// expansion it does not allow): drop that entry's SVID, nothing else.
    #[error("authority refused the entry: {0}")]
    EntryRefused(String),
    /// The answer cannot be used (a result missing, a bad chain): try again later.
    #[error("unusable answer from the authority: {0}")]
    InvalidResponse(String),
}

impl AuthorityError {
    /// Whether the same call may succeed later: the caller backs off and
    /// retries rather than giving up (or exiting).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::RetryLater(_) | Self::InvalidResponse(_))
    }
}

/// Whose outcome a status code is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// The whole call: about the agent and the request.
    Call,
    /// One entry of the call.
    Entry,
}

/// The one reading of a gRPC status code.
fn classify(scope: Scope, code: Code, message: String) -> AuthorityError {
    use AuthorityError::*;
    use Code::*;
    match (scope, code) {
        (Scope::Call, Ok) => InvalidResponse(format!("an error with status OK: {message}")),
        (Scope::Call, Unauthenticated | PermissionDenied) => AgentRefused(message),
        (
            Scope::Call,
            InvalidArgument | FailedPrecondition | NotFound | AlreadyExists | OutOfRange
            | Unimplemented,
        ) => RequestRefused(format!("{code:?}: {message}")),
        (
            Scope::Entry,
            Ok | Unauthenticated | PermissionDenied | InvalidArgument | FailedPrecondition
            | NotFound | AlreadyExists | OutOfRange | Unimplemented,
        ) => EntryRefused(message),
        (
            _,
            Cancelled | Unknown | DeadlineExceeded | ResourceExhausted | Aborted | Internal
            | Unavailable | DataLoss,
        ) => RetryLater(format!("{code:?}: {message}")),
    }
}

impl From<tonic::Status> for AuthorityError {
    fn from(s: tonic::Status) -> Self {
        // Transport errors hide their cause in the source chain.
        let message = match std::error::Error::source(&s) {
            Some(e) => format!("{} ({})", s.message(), super::source_chain(e)),
            None => s.message().to_string(),
        };
        classify(Scope::Call, s.code(), message)
    }
}

/// One entry's outcome; an answer without one is unusable.
fn entry_outcome(status: Option<&pb::ItemStatus>) -> Result<(), AuthorityError> {
    let s = status.ok_or_else(|| {
        AuthorityError::InvalidResponse("an entry's result carries no status".into())
    })?;
    match Code::from(s.code) {
        Code::Ok => Ok(()),
        code => Err(classify(Scope::Entry, code, s.message.clone())),
    }
}

/// One outcome per request, in request order. An answer with a different
/// number of results (such as one from an authority that predates per-entry
/// results) is unusable as a whole, never read as success.
pub fn x509_results(
    requested: usize,
    resp: pb::BatchSignX509Response,
) -> Result<Vec<Result<pb::X509Svid, AuthorityError>>, AuthorityError> {
    if resp.results.len() != requested {
        return Err(AuthorityError::InvalidResponse(format!(
            "{} results for {requested} signing requests",
            resp.results.len()
        )));
    }
    Ok(resp
        .results
        .into_iter()
        .map(|r| {
            entry_outcome(r.status.as_ref())?;
            r.svid.ok_or_else(|| {
                AuthorityError::InvalidResponse("a signed entry's result has no SVID".into())
            })
        })
        .collect())
}

/// The JWT-SVID, or why the authority refused its entry.
pub fn jwt_result(resp: pb::SignJwtResponse) -> Result<pb::SignJwtResponse, AuthorityError> {
    entry_outcome(resp.status.as_ref())?;
    if resp.token.is_empty() {
        return Err(AuthorityError::InvalidResponse(
            "a signed JWT-SVID answer has no token".into(),
        ));
    }
    Ok(resp)
}

#[cfg(test)]
mod tests;
