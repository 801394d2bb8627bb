//! gRPC channels to the authority.

use crate::authority_client::{AuthorityError, Replicas};
use crate::identity::Credential;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tessera_proto::authority::node_client::NodeClient;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

/// An agent SVID this close to its notAfter is no longer presented: the
/// authority would refuse this agent outright and the SVID manager would drop
/// every SVID, while the identity is only waiting to attest again (its TPM
/// may be away).
const EXPIRY_MARGIN: i64 = 2;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const RPC_TIMEOUT: Duration = Duration::from_secs(30);

/// A gRPC channel to one of the authority's `replicas` over TLS configured by
/// `tls`. It connects on first use, so an agent can start while the authority
/// is down, and again to a replica that answers when its connection breaks.
pub fn channel(replicas: Arc<Replicas>, tls: Arc<rustls::ClientConfig>) -> Channel {
    let connector = tokio_rustls::TlsConnector::from(tls);
    // The URI only satisfies the API; the connector dials the replicas itself.
    Endpoint::from_static("http://tessera-authority")
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(RPC_TIMEOUT)
        .connect_with_connector_lazy(tower::service_fn(move |_| {
            let (connector, replicas) = (connector.clone(), replicas.clone());
            async move {
                let tcp = replicas.connect(CONNECT_TIMEOUT).await?;
                tcp.set_nodelay(true)?;
                // Name checks are replaced by the SPIFFE ID check in the verifier.
                let name =
                    ServerName::try_from("tessera-authority").map_err(std::io::Error::other)?;
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
}

/// mTLS to the authority with the agent's current credential. The TLS
/// configuration is built once and reads the latest credential at each
/// handshake; a new credential gets a new connection, because an open one
/// keeps the certificate of its handshake, which the authority stops
/// accepting once it expires or a newer one is used. The old connection
/// closes when its last call ends.
pub struct IdentityChannel {
    replicas: Arc<Replicas>,
    tls: Arc<rustls::ClientConfig>,
    credential: watch::Receiver<Option<Arc<Credential>>>,
    current: Mutex<Option<(Arc<Credential>, Channel)>>,
    /// The latest credential the authority refused in a call.
    refused: watch::Sender<Option<Arc<Credential>>>,
}

impl IdentityChannel {
    pub fn new(
        replicas: Arc<Replicas>,
        credential: watch::Receiver<Option<Arc<Credential>>>,
    ) -> Result<Self, rustls::Error> {
        Ok(Self {
            replicas,
            tls: Arc::new(crate::identity::client_config(credential.clone())?),
            credential,
            current: Mutex::new(None),
            refused: watch::channel(None).0,
        })
    }

    /// Each credential the authority refused, for the identity to replace it.
    pub fn refusals(&self) -> watch::Receiver<Option<Arc<Credential>>> {
        self.refused.subscribe()
    }

    /// Notes that a call made with `used` was refused as this agent's.
    pub fn refused(&self, used: &Arc<Credential>) {
        self.refused.send_replace(Some(used.clone()));
    }

    /// A client on the connection of the latest credential, and that credential.
    pub fn client(&self) -> Result<(NodeClient<Channel>, Arc<Credential>), AuthorityError> {
        let latest = self.credential.borrow().clone().ok_or_else(|| {
            AuthorityError::RetryLater("not attested to the authority yet".into())
        })?;
        if tessera_common::unix_now() + EXPIRY_MARGIN >= latest.svid.not_after {
            return Err(AuthorityError::RetryLater(
                "the agent SVID expired; attesting again".into(),
            ));
        }
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((c, ch)) = current.as_ref() {
            if Arc::ptr_eq(c, &latest) {
                return Ok((NodeClient::new(ch.clone()), latest));
            }
        }
        let ch = channel(self.replicas.clone(), self.tls.clone());
        *current = Some((latest.clone(), ch.clone()));
        Ok((NodeClient::new(ch), latest))
    }
}
