//! The current agent credential as one immutable snapshot: the SVID, its key
//! ready for TLS, and the check the authority's certificate must pass.

use crate::authority_client::{authority_id, AuthorityError};
use crate::node::AgentSvid;
use rustls::pki_types::PrivateKeyDer;
use rustls::sign::CertifiedKey;
use std::sync::Arc;
use tessera_common::tls::{self, SpiffeServerVerifier};
use tessera_common::TrustDomain;

/// Published once per new agent SVID; never changed afterwards.
pub struct Credential {
    pub svid: AgentSvid,
    pub(super) certified: Arc<CertifiedKey>,
    /// The authority must chain to this credential's bundle and carry its ID.
    pub(super) verifier: Arc<SpiffeServerVerifier>,
}

impl Credential {
    /// Prepares `svid` for TLS; an SVID whose key or bundle cannot be used is
    /// an unusable answer (the caller retries).
    pub fn new(svid: AgentSvid, td: &TrustDomain) -> Result<Self, AuthorityError> {
        let unusable = |e: String| AuthorityError::InvalidResponse(format!("agent SVID: {e}"));
        // rustls takes an owned copy it does not wipe (its DER types only hide
        // their bytes from Debug); aws-lc wipes the key it loads from it.
        let key = PrivateKeyDer::Pkcs8(svid.key_pkcs8.to_vec().into());
        let key = tls::provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| unusable(e.to_string()))?;
        let id = authority_id(td).map_err(unusable)?;
        let verifier = SpiffeServerVerifier::new(&svid.bundle_roots, id)
            .map_err(|e| unusable(e.to_string()))?;
        Ok(Self {
            certified: Arc::new(CertifiedKey::new(svid.chain.clone(), key)),
            verifier: Arc::new(verifier),
            svid,
        })
    }
}

/// Names the credential, never its key.
impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("id", &self.svid.id)
            .field("not_after", &self.svid.not_after)
            .finish_non_exhaustive()
    }
}
