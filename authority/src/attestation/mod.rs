//! Server half of node attestation: the seam every node attestor plugs into.

pub mod join_token;
pub mod tpm;

use tessera_common::{Selector, SpiffeId};

/// What a verified node is.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    pub agent_id: SpiffeId,
    pub selectors: Vec<Selector>,
    /// A join token to consume in the same transaction that records the agent.
    pub consume_token: Option<String>,
    /// Free text for the audit trail (e.g. policies passed).
    pub detail: String,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttestError {
    /// The evidence does not prove the node: PermissionDenied.
    #[error("{0}")]
    Rejected(String),
    /// The evidence is malformed: InvalidArgument.
    #[error("{0}")]
    Malformed(String),
    /// A message over the size limit: ResourceExhausted.
    #[error("{0}")]
    TooLarge(String),
    /// The agent went away mid-exchange.
    #[error("agent closed the attestation stream")]
    StreamClosed,
    #[error("datastore: {0}")]
    Datastore(#[from] crate::datastore::DatastoreError),
}

/// Lets a challenge/response attestor talk to the agent during attestation.
#[async_trait::async_trait]
pub trait Challenger: Send {
    async fn challenge(&mut self, challenge: Vec<u8>) -> Result<Vec<u8>, AttestError>;
}

/// One node attestation method, authority side.
#[async_trait::async_trait]
pub trait NodeVerifier: Send + Sync {
    fn method(&self) -> &'static str;
    async fn attest(
        &self,
        payload: &[u8],
        challenger: &mut dyn Challenger,
    ) -> Result<NodeIdentity, AttestError>;
}
