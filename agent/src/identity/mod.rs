//! The agent's own identity: it attests the node, renews the agent SVID at
//! about half its life, attests again when the SVID is refused or expired,
//! persists each new one, and publishes it as an immutable [`Credential`]
//! that the one mTLS configuration to the authority reads at each handshake.

mod credential;
mod keeper;
mod tls;

pub use credential::Credential;
pub use keeper::{Keeper, StartError};
pub use tls::client_config;

use crate::authority_client::AuthorityError;
use crate::node::AgentSvid;
use std::time::Duration;
use tessera_attestors::node::NodeEvidence;

/// How a node attestation reaches the authority.
#[derive(Clone, Copy)]
pub enum Attestation<'a> {
    /// Without a client certificate, trusting the configured bundle or else
    /// that of `last`: the first attestation, or after the agent SVID expired
    /// or was refused.
    Fresh { last: Option<&'a AgentSvid> },
    /// Continuous verification: the node proves itself again over mTLS with
    /// the current credential.
    Renewal(&'a AgentSvid),
}

/// The authority calls that keep the agent's identity.
#[tonic::async_trait]
pub trait NodeAuthority: Send + Sync + 'static {
    async fn attest(
        &self,
        evidence: &dyn NodeEvidence,
        how: Attestation<'_>,
    ) -> Result<AgentSvid, AuthorityError>;
    /// A new agent SVID over mTLS with `current`.
    async fn renew(&self, current: &AgentSvid) -> Result<AgentSvid, AuthorityError>;
    /// What is left of the authority's latest retry hint (it sheds load).
    fn retry_hint(&self) -> Option<Duration> {
        None
    }
}

#[cfg(test)]
mod tests;
