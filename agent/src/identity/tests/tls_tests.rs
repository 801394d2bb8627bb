//! The one client configuration presents the latest credential at each
//! handshake and keeps checking who the authority is.

use super::*;
use rustls::pki_types::{PrivateKeyDer, ServerName};
use tessera_common::tls::{server_config, RotatingCert};

/// A TLS server presenting `cert` that records the client certificate of
/// one handshake made with `client`.
async fn handshake(
    client: Arc<rustls::ClientConfig>,
    cert: (CertificateDer<'static>, KeyPair),
    roots: &[CertificateDer<'static>],
) -> Result<CertificateDer<'static>, std::io::Error> {
    let key = PrivateKeyDer::Pkcs8(cert.1.serialize_der().into());
    let certs = Arc::new(RotatingCert::new(vec![cert.0], key).unwrap());
    let server = tokio_rustls::TlsAcceptor::from(Arc::new(server_config(certs, roots).unwrap()));
    let (c, s) = tokio::io::duplex(64 * 1024);
    let name = ServerName::try_from("tessera-authority").unwrap();
    let connector = tokio_rustls::TlsConnector::from(client);
    let (client, server) = tokio::join!(connector.connect(name, c), server.accept(s));
    client?;
    let server = server?;
    let presented = server
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first());
    Ok(presented
        .expect("a client certificate")
        .clone()
        .into_owned())
}

#[tokio::test(start_paused = true)]
async fn the_renewed_credential_is_presented_without_a_new_configuration() {
    let a = agent(false, |_| {}).await;
    let config = Arc::new(client_config(a.credential.clone()).unwrap());
    let authority_id = format!("spiffe://{TD}/tessera/authority");
    let first = a.current();
    let seen = handshake(
        config.clone(),
        a.fake.cert(&authority_id, true),
        &a.fake.roots,
    )
    .await
    .unwrap();
    assert_eq!(seen, first.svid.chain[0]);
    // Renewal at about half-life: the same configuration presents the new SVID.
    tokio::time::sleep(Duration::from_secs(61)).await;
    let renewed = a.current();
    assert_ne!(renewed.svid.chain, first.svid.chain);
    let seen = handshake(config, a.fake.cert(&authority_id, true), &a.fake.roots)
        .await
        .unwrap();
    assert_eq!(seen, renewed.svid.chain[0]);
}

#[tokio::test(start_paused = true)]
async fn only_the_authority_s_server_certificate_is_accepted() {
    let a = agent(false, |_| {}).await;
    let config = Arc::new(client_config(a.credential.clone()).unwrap());
    let roots = a.fake.roots.clone();
    // Another workload's certificate from the same CA, and an SVID that names
    // the authority (a client certificate): both refused.
    let other = a.fake.cert(&format!("spiffe://{TD}/db"), true);
    let svid = a
        .fake
        .cert(&format!("spiffe://{TD}/tessera/authority"), false);
    for (what, cert) in [("another ID", other), ("an SVID", svid)] {
        let r = handshake(config.clone(), cert, &roots).await;
        assert!(r.is_err(), "{what} accepted as the authority");
    }
    // A certificate from a CA outside the agent's bundle: refused.
    let stranger = FakeAuthority::new();
    let cert = stranger.cert(&format!("spiffe://{TD}/tessera/authority"), true);
    assert!(handshake(config.clone(), cert, &roots).await.is_err());
    let good = a
        .fake
        .cert(&format!("spiffe://{TD}/tessera/authority"), true);
    assert!(handshake(config, good, &roots).await.is_ok());
}

#[tokio::test]
async fn before_attestation_no_handshake_is_made() {
    tessera_common::tls::install_default_provider();
    let fake = FakeAuthority::new();
    let (_tx, rx) = watch::channel(None);
    let config = Arc::new(client_config(rx).unwrap());
    let cert = fake.cert(&format!("spiffe://{TD}/tessera/authority"), true);
    assert!(handshake(config, cert, &fake.roots).await.is_err());
}
