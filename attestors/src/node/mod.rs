//! Node attestors: how a host proves itself to the authority.

pub mod join_token;
pub mod tpm;

/// A node attestation failure on the agent side.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvidenceError {
    #[error("{0}")]
    Failed(String),
    #[error("unexpected challenge for the {0} attestor")]
    UnexpectedChallenge(&'static str),
}

/// Agent half of a node attestor: evidence to open with, answers to challenges.
#[async_trait::async_trait]
pub trait NodeEvidence: Send + Sync {
    fn method(&self) -> &'static str;
    async fn evidence(&self) -> Result<Vec<u8>, EvidenceError>;
    async fn respond(&self, challenge: &[u8]) -> Result<Vec<u8>, EvidenceError>;
    /// Whether renewal re-proves the node (continuous verification) rather
    /// than only presenting the current agent SVID.
    fn reattest_on_renewal(&self) -> bool {
        false
    }
}
