//! What an audit row records. Stored as its name, the text the admin API and
//! CLI show; a stored name this build does not know is corrupt data, never a
//! new kind accepted in passing.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditKind {
    /// An agent SVID issued to a node attesting for the first time (or afresh).
    NodeAttestation,
    /// An agent SVID issued to a live agent that proved its node again.
    NodeReattestation,
    /// An agent SVID renewed with `RenewAgent`.
    AgentRenewal,
    X509Svid,
    JwtSvid,
    /// The JWT-SVIDs of one agent and audit window past its row cap, counted.
    JwtSvidCoalesced,
}

const ALL: [AuditKind; 6] = [
    AuditKind::NodeAttestation,
    AuditKind::NodeReattestation,
    AuditKind::AgentRenewal,
    AuditKind::X509Svid,
    AuditKind::JwtSvid,
    AuditKind::JwtSvidCoalesced,
];

impl AuditKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            AuditKind::NodeAttestation => "node_attestation",
            AuditKind::NodeReattestation => "node_reattestation",
            AuditKind::AgentRenewal => "agent_renewal",
            AuditKind::X509Svid => "x509_svid",
            AuditKind::JwtSvid => "jwt_svid",
            AuditKind::JwtSvidCoalesced => "jwt_svid_coalesced",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown audit event kind {0:?}")]
pub struct UnknownAuditKind(String);

impl FromStr for AuditKind {
    type Err = UnknownAuditKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALL.into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownAuditKind(s.chars().take(64).collect()))
    }
}

impl fmt::Display for AuditKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_reads_back_as_itself_and_others_are_refused() {
        for k in ALL {
            assert_eq!(k.as_str().parse::<AuditKind>(), Ok(k));
        }
        for bad in ["", "x509", "X509_SVID", "jwt_svid ", "node_attestation\0"] {
            assert!(bad.parse::<AuditKind>().is_err(), "{bad:?}");
        }
    }
}
