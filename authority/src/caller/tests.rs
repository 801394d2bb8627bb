//! `Authority::caller` against a real authority (temp-dir SQLite datastore, real CA)
//! and real agent SVIDs presented over a real TLS handshake on loopback: the
//! request carries the server side's connection info exactly as tonic attaches it.
//! Here the connection stays up, so each check is seen on its own (end to end, the
//! connection layer also closes a connection when its certificate expires).

use super::*;
use crate::ca::{authority_id, Ca};
use crate::config::Config;
use crate::datastore::{test_records, AuditEvent, AuditKind, Datastore};
use crate::limits::gate::AttestGate;
use crate::metrics::Metrics;
use rcgen::KeyPair;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use std::sync::Arc;
use std::time::Duration;
use tessera_common::jwt::JwtSigner;
use tessera_common::tls::{client_config, server_config, RotatingCert};
use tessera_common::{SpiffeId, UnixTime};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::Connected;

pub(crate) const AGENT: &str = "spiffe://example.org/tessera/agent/join_token/t1";
pub(crate) const HOUR: Duration = Duration::from_secs(3600);

pub(crate) type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

pub(crate) struct Fixture {
    _dir: tempfile::TempDir,
    pub(crate) authority: Arc<Authority>,
    server_tls: Arc<rustls::ServerConfig>,
}

pub(crate) async fn fixture() -> Fixture {
    tessera_common::tls::install_default_provider();
    let dir = tempfile::tempdir().unwrap();
    let config = Config::parse(&format!(
        "trust_domain = \"example.org\"\nlisten_address = \"127.0.0.1:0\"\ndata_dir = {:?}\n",
        dir.path().display().to_string()
    ))
    .unwrap();
    let datastore = Datastore::open_sqlite(&dir.path().join("authority.db"))
        .await
        .unwrap();
    let ca = Ca::load_or_create(
        dir.path(),
        &config.trust_domain,
        None,
        HOUR * 24,
        unix_now(),
    )
    .unwrap();
    let (chain, key) = ca.server_identity(&[], HOUR, unix_now()).unwrap();
    let certs = Arc::new(RotatingCert::new(chain, key).unwrap());
    let server_tls = Arc::new(server_config(certs, ca.roots()).unwrap());
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let authority = Authority {
        attest_gate: AttestGate::new(&config.limits),
        jwt_limits: crate::limits::jwt::JwtLimiter::new(&config.limits),
        expansions: Default::default(),
        config,
        datastore,
        ca,
        jwt: JwtSigner::generate().unwrap(),
        verifiers: Vec::new(),
        metrics: Metrics::new(&prometheus::Registry::new()).unwrap(),
        shutdown,
    };
    Fixture {
        _dir: dir,
        authority: Arc::new(authority),
        server_tls,
    }
}

impl Fixture {
    /// An SVID for `id` signed by the authority's CA, as attestation or renewal issues it.
    pub(crate) fn svid(&self, id: &str, ttl: Duration) -> Identity {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = rcgen::CertificateParams::default()
            .serialize_request(&key)
            .unwrap();
        let id: SpiffeId = id.parse().unwrap();
        let chain = self
            .authority
            .ca
            .sign_svid(csr.der(), &id, &[], ttl, unix_now())
            .unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (chain, key)
    }

    /// Records `id` as attested with `svid` (a fresh attestation: no earlier SVID accepted).
    pub(crate) async fn attest(&self, id: &str, svid: &Identity) {
        let agent = AgentRecord {
            method: "join_token".into(),
            serial: serial(svid),
            expires_at: UnixTime::now().plus(HOUR),
            attested_at: UnixTime::now(),
            ..test_records::agent(id)
        };
        self.authority
            .datastore
            .record_attestation(&agent, &event(id, AuditKind::NodeAttestation), None)
            .await
            .unwrap();
    }

    /// Renews `id`'s SVID `presented` into `new`, as the node API's renewal does.
    async fn renew(&self, id: &str, presented: &Identity, new: &Identity) {
        self.authority
            .datastore
            .renew_agent(
                &test_records::id(id),
                &serial(presented),
                &serial(new),
                UnixTime::now().plus(HOUR),
                &event(id, AuditKind::AgentRenewal),
            )
            .await
            .unwrap();
    }

    /// A node-API request on a TLS connection whose client presented `identity`.
    pub(crate) async fn request(&self, identity: Option<Identity>) -> tonic::Request<()> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(self.server_tls.clone());
        let td = &self.authority.config.trust_domain;
        let client = client_config(
            self.authority.ca.roots(),
            authority_id(td).unwrap(),
            identity,
        )
        .unwrap();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let server = async {
            let (tcp, _) = listener.accept().await.unwrap();
            acceptor.accept(tcp).await.unwrap()
        };
        let client = async {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = ServerName::try_from("authority").unwrap();
            connector.connect(name, tcp).await.unwrap()
        };
        let (tls, _client) = tokio::join!(server, client);
        let mut req = tonic::Request::new(());
        req.extensions_mut().insert(tls.connect_info());
        req
    }

    async fn call(&self, svid: &Identity) -> Result<Caller, ApiError> {
        let req = self.request(Some(copy(svid))).await;
        self.authority.caller(&req).await
    }
}

pub(crate) fn copy(svid: &Identity) -> Identity {
    (svid.0.clone(), svid.1.clone_key())
}

fn serial(svid: &Identity) -> String {
    x509::serial_hex(&svid.0[0]).unwrap()
}

fn event(agent_id: &str, kind: AuditKind) -> AuditEvent {
    AuditEvent::new(kind, UnixTime::now(), test_records::id(agent_id))
}

fn denied(res: Result<Caller, ApiError>, why: &str) {
    match res {
        Err(ApiError::PermissionDenied(m)) if m.contains(why) => {}
        other => panic!("expected PermissionDenied mentioning {why:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn current_svid_of_a_known_agent_is_accepted() {
    let fx = fixture().await;
    let svid = fx.svid(AGENT, HOUR);
    fx.attest(AGENT, &svid).await;
    let caller = fx.call(&svid).await.unwrap();
    assert_eq!(caller.agent.id.as_str(), AGENT);
    assert_eq!(caller.serial, serial(&svid));
}

#[tokio::test]
async fn no_client_certificate_is_unauthenticated() {
    let fx = fixture().await;
    for req in [tonic::Request::new(()), fx.request(None).await] {
        let res = fx.authority.caller(&req).await;
        assert!(
            matches!(res, Err(ApiError::Unauthenticated(ref m)) if m.contains("required")),
            "{res:?}"
        );
    }
}

/// The handshake happened while the SVID was valid; a request on that connection
/// after its notAfter is refused.
#[tokio::test]
async fn svid_expired_since_the_handshake_is_unauthenticated() {
    let fx = fixture().await;
    // Long enough to survive a slow handshake on a loaded machine.
    let svid = fx.svid(AGENT, Duration::from_secs(4));
    fx.attest(AGENT, &svid).await;
    let req = fx.request(Some(copy(&svid))).await;
    let not_after = x509::not_after(&svid.0[0]).unwrap();
    assert!(fx.authority.caller(&req).await.is_ok(), "valid at first");
    while unix_now() <= not_after {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    match fx.authority.caller(&req).await {
        Err(ApiError::Unauthenticated(m)) => assert!(m.contains("expired"), "{m}"),
        other => panic!("expected Unauthenticated (expired), got {other:?}"),
    }
}

#[tokio::test]
async fn unknown_agent_is_denied() {
    let fx = fixture().await;
    let svid = fx.svid(AGENT, HOUR);
    denied(fx.call(&svid).await, "not a known agent");
}

#[tokio::test]
async fn evicted_agent_is_denied() {
    let fx = fixture().await;
    let svid = fx.svid(AGENT, HOUR);
    fx.attest(AGENT, &svid).await;
    assert!(fx.authority.datastore.evict_agent(AGENT).await.unwrap());
    denied(fx.call(&svid).await, "evicted");
}

/// Even with an agent row to match (an agent of the domain the authority served
/// before, or a row written by hand), only agent IDs of this trust domain pass.
#[tokio::test]
async fn other_trust_domain_or_non_agent_id_is_denied() {
    let fx = fixture().await;
    for id in [
        "spiffe://other.org/tessera/agent/join_token/t1",
        "spiffe://example.org/web",
        "spiffe://example.org/tessera/agents/x",
    ] {
        let svid = fx.svid(id, HOUR);
        fx.attest(id, &svid).await;
        denied(fx.call(&svid).await, "not an agent of this trust domain");
    }
}

#[tokio::test]
async fn previous_svid_works_until_the_renewed_one_is_used() {
    let fx = fixture().await;
    let first = fx.svid(AGENT, HOUR);
    fx.attest(AGENT, &first).await;
    let second = fx.svid(AGENT, HOUR);
    fx.renew(AGENT, &first, &second).await;
    // The renewal's answer may be lost: the agent still holds only the first.
    assert_eq!(fx.call(&first).await.unwrap().serial, serial(&first));
    assert_eq!(fx.call(&first).await.unwrap().serial, serial(&first));
    assert_eq!(fx.call(&second).await.unwrap().serial, serial(&second));
    denied(fx.call(&first).await, "superseded");
    assert!(fx.call(&second).await.is_ok());
}

#[tokio::test]
async fn svid_older_than_the_previous_one_is_superseded() {
    let fx = fixture().await;
    let first = fx.svid(AGENT, HOUR);
    fx.attest(AGENT, &first).await;
    let second = fx.svid(AGENT, HOUR);
    fx.renew(AGENT, &first, &second).await;
    let third = fx.svid(AGENT, HOUR);
    fx.renew(AGENT, &second, &third).await;
    denied(fx.call(&first).await, "superseded");
    assert!(fx.call(&second).await.is_ok(), "the one before the latest");
    // A fresh attestation supersedes every earlier SVID at once.
    let fresh = fx.svid(AGENT, HOUR);
    fx.attest(AGENT, &fresh).await;
    for old in [&second, &third] {
        denied(fx.call(old).await, "superseded");
    }
    assert!(fx.call(&fresh).await.is_ok());
}
