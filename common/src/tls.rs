//! TLS between agent and authority, authenticated by SPIFFE ID rather than DNS name.

use crate::spiffe_id::SpiffeId;
use crate::x509::{allows_client_auth, spiffe_id_of};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    ClientConfig, DigitallySignedStruct, Error as TlsError, RootCertStore, ServerConfig,
    SignatureScheme,
};
use std::sync::Arc;

/// The workspace's one crypto provider.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Installs aws-lc-rs as the process default (idempotent).
pub fn install_default_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Verifies a peer's chain against `roots` and requires its leaf to carry `expected`.
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    roots: Vec<rustls_pki_types::TrustAnchor<'static>>,
    expected: SpiffeId,
    algs: WebPkiSupportedAlgorithms,
}

impl SpiffeServerVerifier {
    pub fn new(roots: &[CertificateDer<'_>], expected: SpiffeId) -> Result<Self, TlsError> {
        let roots = roots
            .iter()
            .map(|c| webpki::anchor_from_trusted_cert(c).map(|a| a.to_owned()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::General(format!("bad trust root: {e}")))?;
        Ok(Self {
            roots,
            expected,
            algs: provider().signature_verification_algorithms,
        })
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        let ee = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| TlsError::General(e.to_string()))?;
        ee.verify_for_usage(
            self.algs.all,
            &self.roots,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(|e| TlsError::General(format!("authority certificate: {e}")))?;
        let id = spiffe_id_of(end_entity).map_err(|e| TlsError::General(e.to_string()))?;
        if id != self.expected {
            return Err(TlsError::General(format!(
                "authority presented {id}, expected {}",
                self.expected
            )));
        }
        // The authority's own certificate is for servers only; every SVID the same
        // CA signs is also a client certificate. So an SVID is never taken for the
        // authority, even one that names it.
        if allows_client_auth(end_entity).map_err(|e| TlsError::General(e.to_string()))? {
            return Err(TlsError::General(format!(
                "authority presented a client certificate (an SVID) for {id}, not the \
                 authority's server certificate"
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Client side of agent -> authority: verify the authority by SPIFFE ID, and
/// present `identity` (the agent SVID) when there is one.
pub fn client_config(
    roots: &[CertificateDer<'_>],
    authority_id: SpiffeId,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<ClientConfig, TlsError> {
    let verifier = Arc::new(SpiffeServerVerifier::new(roots, authority_id)?);
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut cfg = match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

/// Insecure bootstrap: the agent has no trust bundle yet and accepts whatever
/// the authority presents on the first connection. Only with `insecure_bootstrap = true`.
#[derive(Debug)]
pub struct InsecureBootstrapVerifier(WebPkiSupportedAlgorithms);

impl InsecureBootstrapVerifier {
    pub fn new() -> Self {
        Self(provider().signature_verification_algorithms)
    }
}

impl Default for InsecureBootstrapVerifier {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerCertVerifier for InsecureBootstrapVerifier {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// A client config that trusts any authority certificate (insecure bootstrap).
pub fn insecure_bootstrap_client_config() -> Result<ClientConfig, TlsError> {
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(InsecureBootstrapVerifier::new()))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

/// Server side of the authority: certificates come from `certs` (rotated by the
/// caller); client certificates are optional (attestation has none) but, when
/// sent, must chain to `client_roots`.
pub fn server_config(
    certs: Arc<dyn rustls::server::ResolvesServerCert>,
    client_roots: &[CertificateDer<'static>],
) -> Result<ServerConfig, TlsError> {
    let mut store = RootCertStore::empty();
    for c in client_roots {
        store.add(c.clone())?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::General(e.to_string()))?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(certs);
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

/// A server certificate that can be replaced while the server runs.
#[derive(Debug)]
pub struct RotatingCert(std::sync::RwLock<Arc<rustls::sign::CertifiedKey>>);

impl RotatingCert {
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, TlsError> {
        Ok(Self(std::sync::RwLock::new(Arc::new(Self::certified(
            chain, key,
        )?))))
    }

    fn certified(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<rustls::sign::CertifiedKey, TlsError> {
        let key = provider().key_provider.load_private_key(key)?;
        Ok(rustls::sign::CertifiedKey::new(chain, key))
    }

    pub fn replace(
        &self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<(), TlsError> {
        let new = Arc::new(Self::certified(chain, key)?);
        if let Ok(mut cur) = self.0.write() {
            *cur = new;
        }
        Ok(())
    }
}

impl rustls::server::ResolvesServerCert for RotatingCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.0.read().ok().map(|c| c.clone())
    }
}
