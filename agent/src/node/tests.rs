//! How a node attestation failure on this host is read.

use super::*;
use tessera_attestors::node::EvidenceError;

/// A TPM that fails now (busy, reset, swtpm restarting) and may not later.
struct FailingTpm;

#[async_trait::async_trait]
impl NodeEvidence for FailingTpm {
    fn method(&self) -> &'static str {
        "tpm"
    }
    async fn evidence(&self) -> Result<Vec<u8>, EvidenceError> {
        Err(EvidenceError::Failed("TPM_RC_RETRY".into()))
    }
    async fn respond(&self, _: &[u8]) -> Result<Vec<u8>, EvidenceError> {
        Err(EvidenceError::Failed("TPM_RC_RETRY".into()))
    }
}

#[tokio::test]
async fn a_tpm_failure_is_retried_not_a_refusal() {
    tls::install_default_provider();
    let td = TrustDomain::new("example.org").unwrap();
    let boot = tls::insecure_bootstrap_client_config().unwrap();
    // Nothing listens there: the evidence fails before any connection.
    let nowhere = crate::authority_client::Replicas::new(vec!["127.0.0.1:9".into()]);
    let client = NodeClient::new(crate::authority_client::channel(
        std::sync::Arc::new(nowhere),
        std::sync::Arc::new(boot),
    ));
    let err = attest(client, &td, None, &FailingTpm, &|_, s| s.into())
        .await
        .err()
        .expect("no evidence, no SVID");
    assert!(
        matches!(&err, AuthorityError::RetryLater(m) if m.contains("TPM_RC_RETRY")),
        "{err:?}"
    );
    assert!(err.is_transient(), "the agent must retry, not exit");
}
