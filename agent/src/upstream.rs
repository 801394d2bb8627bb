//! Connections to the authority, and the small `Upstream` trait the SVID
//! manager and the Workload API call it through (tests drive them with a fake).

use crate::metrics::Metrics;
use crate::node::AgentSvid;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::sync::Arc;
use std::time::Duration;
use tessera_common::SpiffeId;
use tessera_proto::authority as pb;
use tessera_proto::authority::node_client::NodeClient;
use tonic::transport::{Channel, Endpoint};

mod error;
pub use error::AuthorityError;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const RPC_TIMEOUT: Duration = Duration::from_secs(30);

/// A gRPC channel to `address` over TLS configured by `tls`. It connects on
/// first use, so an agent can start while the authority is down.
pub fn channel(address: &str, tls: rustls::ClientConfig) -> Channel {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let address = address.to_string();
    // The URI only satisfies the API; the connector dials `address` itself.
    Endpoint::from_static("http://tessera-authority")
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(RPC_TIMEOUT)
        .connect_with_connector_lazy(tower::service_fn(move |_| {
            let (connector, address) = (connector.clone(), address.clone());
            async move {
                let tcp =
                    tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&address))
                        .await
                        .map_err(|_| {
                            std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
                        })??;
                tcp.set_nodelay(true)?;
                // Name checks are replaced by the SPIFFE ID check in the verifier.
                let name =
                    ServerName::try_from("tessera-authority").map_err(std::io::Error::other)?;
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
}

/// The authority's SPIFFE ID, which its TLS certificate must carry.
pub fn authority_id(td: &tessera_common::TrustDomain) -> Result<SpiffeId, String> {
    td.id("/tessera/authority").map_err(|e| e.to_string())
}

/// An mTLS client authenticated by the agent SVID.
pub fn mtls_client(
    address: &str,
    td: &tessera_common::TrustDomain,
    svid: &AgentSvid,
) -> Result<NodeClient<Channel>, AuthorityError> {
    let cfg = crate::node::identity_client_config(td, svid)?;
    Ok(NodeClient::new(channel(address, cfg)))
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
pub trait Upstream: Send + Sync + 'static {
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

/// The mTLS client of the current agent SVID, and that SVID's notAfter.
pub type AgentClient = Option<(NodeClient<Channel>, i64)>;

/// An agent SVID this close to its notAfter is no longer presented: the
/// authority would refuse this agent outright (the SVID manager then drops
/// every SVID), while it is only waiting to attest again.
const EXPIRY_MARGIN: i64 = 2;

/// The real upstream: the current mTLS client, replaced when the agent SVID rotates.
pub struct GrpcUpstream {
    client: tokio::sync::watch::Receiver<AgentClient>,
    metrics: Option<Arc<Metrics>>,
    pushback: crate::backoff::Pushback,
}

impl GrpcUpstream {
    pub fn new(client: tokio::sync::watch::Receiver<AgentClient>) -> Self {
        Self {
            client,
            metrics: None,
            pushback: Default::default(),
        }
    }

    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Counts a failed RPC by its method and code, then reads it.
    fn read<T>(
        &self,
        method: &'static str,
        r: Result<tonic::Response<T>, tonic::Status>,
    ) -> Result<T, AuthorityError> {
        match r {
            Ok(resp) => Ok(resp.into_inner()),
            Err(st) => {
                self.pushback.note(&st);
                if let Some(m) = &self.metrics {
                    m.authority_error(method, st.code());
                }
                Err(st.into())
            }
        }
    }

    fn client(&self) -> Result<NodeClient<Channel>, AuthorityError> {
        match &*self.client.borrow() {
            Some((c, not_after)) if tessera_common::unix_now() + EXPIRY_MARGIN < *not_after => {
                Ok(c.clone())
            }
            Some(_) => Err(AuthorityError::RetryLater(
                "the agent SVID expired; attesting again".into(),
            )),
            None => Err(AuthorityError::RetryLater(
                "not attested to the authority yet".into(),
            )),
        }
    }
}

#[tonic::async_trait]
impl Upstream for GrpcUpstream {
    async fn sync_entries(&self) -> Result<pb::SyncEntriesResponse, AuthorityError> {
        let mut client = self.client()?;
        let r = client.sync_entries(pb::SyncEntriesRequest {}).await;
        self.read("SyncEntries", r)
    }

    async fn batch_sign_x509(
        &self,
        requests: Vec<pb::X509SignRequest>,
    ) -> Result<Vec<Result<pb::X509Svid, AuthorityError>>, AuthorityError> {
        let mut client = self.client()?;
        let n = requests.len();
        let r = client
            .batch_sign_x509(pb::BatchSignX509Request { requests })
            .await;
        error::x509_results(n, self.read("BatchSignX509", r)?)
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
        let mut client = self.client()?;
        let r = client.sign_jwt(req).await;
        error::jwt_result(self.read("SignJwt", r)?)
    }

    fn retry_hint(&self) -> Option<std::time::Duration> {
        self.pushback.remaining()
    }
}
