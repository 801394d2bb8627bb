//! TLS to the authority that always uses the latest published credential: the
//! client certificate is resolved, and the authority's certificate verified,
//! at each handshake, so one configuration serves every renewal.

use super::credential::Credential;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, Resumption};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, Error as TlsError, SignatureScheme};
use std::sync::Arc;
use tessera_common::tls;
use tokio::sync::watch;

/// Reads the latest credential at each handshake.
#[derive(Debug)]
struct Latest {
    credential: watch::Receiver<Option<Arc<Credential>>>,
    algs: WebPkiSupportedAlgorithms,
}

impl Latest {
    fn get(&self) -> Option<Arc<Credential>> {
        self.credential.borrow().clone()
    }

    /// The check of the latest credential's bundle.
    fn verifier(&self) -> Result<Arc<tls::SpiffeServerVerifier>, TlsError> {
        let c = self.get();
        c.map(|c| c.verifier.clone())
            .ok_or_else(|| TlsError::General("no agent SVID yet".into()))
    }
}

impl ResolvesClientCert for Latest {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.get()?.certified.clone())
    }

    fn has_certs(&self) -> bool {
        self.credential.borrow().is_some()
    }
}

/// The check of [`tls::client_config`] (chain to the bundle, the authority's
/// SPIFFE ID, a server-only certificate), against the latest bundle.
impl ServerCertVerifier for Latest {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        self.verifier()?
            .verify_server_cert(end_entity, intermediates, name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.verifier()?.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.verifier()?.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// The one client configuration for mTLS to the authority. Without resumption:
/// a resumed session would carry the certificate of the session it resumes.
pub fn client_config(
    credential: watch::Receiver<Option<Arc<Credential>>>,
) -> Result<rustls::ClientConfig, TlsError> {
    let latest = Arc::new(Latest {
        credential,
        algs: tls::provider().signature_verification_algorithms,
    });
    let mut cfg = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(latest.clone())
        .with_client_cert_resolver(latest);
    cfg.resumption = Resumption::disabled();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}
