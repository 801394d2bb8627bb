//! The one typed client for the authority: every call answers an
//! [`AuthorityError`] saying what to do. The SVID manager and the Workload API
//! call it through [`AuthorityClient`], the agent identity through
//! [`NodeAuthority`] (tests drive each with a fake).

use crate::identity::{Attestation, Credential, NodeAuthority};
use crate::metrics::Metrics;
use crate::node::{self, AgentSvid};
use rustls::pki_types::CertificateDer;
use std::sync::Arc;
use tessera_attestors::node::NodeEvidence;
use tessera_common::{tls, SpiffeId, TrustDomain};
use tessera_proto::authority as pb;
use tessera_proto::authority::node_client::NodeClient;

mod channel;
mod error;
mod replicas;
pub use channel::{channel, IdentityChannel};
pub use error::AuthorityError;
pub use replicas::Replicas;

/// The authority's SPIFFE ID, which its TLS certificate must carry.
pub fn authority_id(td: &TrustDomain) -> Result<SpiffeId, String> {
    td.id("/tessera/authority").map_err(|e| e.to_string())
}

/// An error with its sources, on one line (transport errors hide the cause).
pub fn source_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// What the SVID manager and the Workload API need from the authority. Every
/// failure is an [`AuthorityError`] saying what to do about it.
#[tonic::async_trait]
pub trait AuthorityClient: Send + Sync + 'static {
    async fn sync_entries(&self) -> Result<pb::SyncEntriesResponse, AuthorityError>;
    /// One outcome per request, in request order: a refused entry fails alone.
    async fn batch_sign_x509(
        &self,
        reqs: Vec<pb::X509SignRequest>,
    ) -> Result<Vec<Result<pb::X509Svid, AuthorityError>>, AuthorityError>;
    /// `spiffe_id`: the expansion of a templated entry; empty for the entry's own ID.
    async fn sign_jwt(
        &self,
        entry_id: &str,
        spiffe_id: &str,
        audience: &[String],
    ) -> Result<pb::SignJwtResponse, AuthorityError>;
    /// What is left of the authority's latest retry hint (it sheds load).
    fn retry_hint(&self) -> Option<std::time::Duration> {
        None
    }
}

/// What the first contact with the authority trusts.
enum Bootstrap {
    /// The configured trust bundle, and TLS trusting only it.
    Bundle(Vec<CertificateDer<'static>>, Arc<rustls::ClientConfig>),
    /// Anything, until the first attestation gives a bundle (insecure_bootstrap).
    Insecure,
}

/// The real client: gRPC over TLS; mTLS with the agent's current credential.
pub struct GrpcAuthority {
    replicas: Arc<Replicas>,
    trust_domain: TrustDomain,
    bootstrap: Bootstrap,
    identity: IdentityChannel,
    metrics: Option<Arc<Metrics>>,
    pushback: crate::backoff::Pushback,
}

impl GrpcAuthority {
    /// `roots`: the configured trust bundle, None for insecure bootstrap.
    pub fn new(
        replicas: Arc<Replicas>,
        trust_domain: TrustDomain,
        roots: Option<Vec<CertificateDer<'static>>>,
        identity: IdentityChannel,
    ) -> Result<Self, String> {
        let bootstrap = match roots {
            Some(r) => {
                let id = authority_id(&trust_domain)?;
                let cfg = tls::client_config(&r, id, None).map_err(|e| e.to_string())?;
                Bootstrap::Bundle(r, Arc::new(cfg))
            }
            None => Bootstrap::Insecure,
        };
        Ok(Self {
            replicas,
            trust_domain,
            bootstrap,
            identity,
            metrics: None,
            pushback: Default::default(),
        })
    }

    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Counts a failed RPC by its method and code, notes its retry hint, and
    /// reads it.
    fn failed(&self, method: &'static str, st: tonic::Status) -> AuthorityError {
        self.pushback.note(&st);
        if let Some(m) = &self.metrics {
            m.authority_error(method, st.code());
        }
        st.into()
    }

    /// Reads the answer to a call made with `used`; a refusal of the agent
    /// is passed on to the identity, which attests again.
    fn read<T>(
        &self,
        method: &'static str,
        used: &Arc<Credential>,
        r: Result<tonic::Response<T>, tonic::Status>,
    ) -> Result<T, AuthorityError> {
        let e = match r {
            Ok(resp) => return Ok(resp.into_inner()),
            Err(st) => self.failed(method, st),
        };
        if matches!(e, AuthorityError::AgentRefused(_)) {
            self.identity.refused(used);
        }
        Err(e)
    }

    /// Each credential the authority refused in a call (see [`IdentityChannel`]).
    pub fn refusals(&self) -> tokio::sync::watch::Receiver<Option<Arc<Credential>>> {
        self.identity.refusals()
    }

    /// TLS without a client certificate, and the roots the answer must
    /// contain: the configured bundle, else that of the last agent SVID.
    fn bootstrap_tls(
        &self,
        last: Option<&AgentSvid>,
    ) -> Result<
        (
            Arc<rustls::ClientConfig>,
            Option<Vec<CertificateDer<'static>>>,
        ),
        AuthorityError,
    > {
        let local = |e: String| AuthorityError::RetryLater(format!("TLS to the authority: {e}"));
        Ok(match (&self.bootstrap, last) {
            (Bootstrap::Bundle(roots, cfg), _) => (cfg.clone(), Some(roots.clone())),
            (Bootstrap::Insecure, Some(last)) => {
                let id = authority_id(&self.trust_domain).map_err(local)?;
                let cfg = tls::client_config(&last.bundle_roots, id, None)
                    .map_err(|e| local(e.to_string()))?;
                (Arc::new(cfg), Some(last.bundle_roots.clone()))
            }
            (Bootstrap::Insecure, None) => {
                let cfg =
                    tls::insecure_bootstrap_client_config().map_err(|e| local(e.to_string()))?;
                (Arc::new(cfg), None)
            }
        })
    }
}

#[tonic::async_trait]
impl NodeAuthority for GrpcAuthority {
    async fn attest(
        &self,
        evidence: &dyn NodeEvidence,
        how: Attestation<'_>,
    ) -> Result<AgentSvid, AuthorityError> {
        let (client, known) = match how {
            Attestation::Fresh { last } => {
                let (cfg, known) = self.bootstrap_tls(last)?;
                (NodeClient::new(channel(self.replicas.clone(), cfg)), known)
            }
            Attestation::Renewal(current) => (
                self.identity.client()?.0,
                Some(current.bundle_roots.clone()),
            ),
        };
        let failed = |method, st| self.failed(method, st);
        let td = &self.trust_domain;
        let r = node::attest(client, td, known.as_deref(), evidence, &failed).await;
        if let Some(m) = &self.metrics {
            m.node_attestation(r.is_ok());
        }
        r
    }

    async fn renew(&self, current: &AgentSvid) -> Result<AgentSvid, AuthorityError> {
        let failed = |method, st| self.failed(method, st);
        let client = self.identity.client()?.0;
        node::renew(client, &self.trust_domain, current, &failed).await
    }

    fn retry_hint(&self) -> Option<std::time::Duration> {
        self.pushback.remaining()
    }
}

#[tonic::async_trait]
impl AuthorityClient for GrpcAuthority {
    async fn sync_entries(&self) -> Result<pb::SyncEntriesResponse, AuthorityError> {
        let (mut client, used) = self.identity.client()?;
        let r = client.sync_entries(pb::SyncEntriesRequest {}).await;
        self.read("SyncEntries", &used, r)
    }

    async fn batch_sign_x509(
        &self,
        requests: Vec<pb::X509SignRequest>,
    ) -> Result<Vec<Result<pb::X509Svid, AuthorityError>>, AuthorityError> {
        let (mut client, used) = self.identity.client()?;
        let n = requests.len();
        let r = client
            .batch_sign_x509(pb::BatchSignX509Request { requests })
            .await;
        error::x509_results(n, self.read("BatchSignX509", &used, r)?)
    }

    async fn sign_jwt(
        &self,
        entry_id: &str,
        spiffe_id: &str,
        audience: &[String],
    ) -> Result<pb::SignJwtResponse, AuthorityError> {
        let req = pb::SignJwtRequest {
            entry_id: entry_id.to_string(),
            audience: audience.to_vec(),
            spiffe_id: spiffe_id.to_string(),
        };
        let (mut client, used) = self.identity.client()?;
        let r = client.sign_jwt(req).await;
        error::jwt_result(self.read("SignJwt", &used, r)?)
    }

    fn retry_hint(&self) -> Option<std::time::Duration> {
        self.pushback.remaining()
    }
}
