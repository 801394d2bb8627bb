//! The X.509 CA: a self-signed root kept in `data_dir`, or an operator's CA used
//! as an intermediate. Issues X.509-SVIDs from CSRs and the authority's TLS cert.

use crate::config::UpstreamCa;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::{
    CertificateDer, CertificateSigningRequestDer, PrivateKeyDer, PrivatePkcs8KeyDer,
};
use std::path::Path;
use std::time::Duration;
use tessera_common::secret::SecretBytes;
use tessera_common::x509::{certs_from_pem, certs_to_pem, not_after};
use tessera_common::{fsutil, SpiffeId, TrustDomain};
use time::OffsetDateTime;

/// Back-dating of notBefore, for hosts whose clocks run a little behind.
const BACKDATE: i64 = 30;
/// Largest CSR accepted, in bytes.
pub const MAX_CSR_LEN: usize = 8 * 1024;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("csr: {0}")]
    Csr(String),
    #[error("signing failed: {0}")]
    Sign(String),
    #[error("the CA expires before the SVID could start")]
    Expired,
}

pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// Certificates sent after the leaf: the signing CA and its parents, minus the roots.
    intermediates: Vec<CertificateDer<'static>>,
    roots: Vec<CertificateDer<'static>>,
    not_after: i64,
    trust_domain: TrustDomain,
}

fn file_err(path: &Path, reason: impl ToString) -> CaError {
    CaError::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

fn offset(unix: i64) -> Result<OffsetDateTime, CaError> {
    OffsetDateTime::from_unix_timestamp(unix).map_err(|e| CaError::Sign(e.to_string()))
}

impl Ca {
    /// Loads the CA from `data_dir` (or the operator's files), creating a root on first start.
    pub fn load_or_create(
        data_dir: &Path,
        td: &TrustDomain,
        upstream: Option<&UpstreamCa>,
        ca_ttl: Duration,
        now: i64,
    ) -> Result<Self, CaError> {
        match upstream {
            Some(u) => Self::from_files(&u.cert_file, &u.key_file, u.bundle_file.as_deref(), td),
            None => {
                let cert = data_dir.join("ca_cert.pem");
                let key = data_dir.join("ca_key.pem");
                if !cert.exists() {
                    Self::create_root(&cert, &key, td, ca_ttl, now)?;
                }
                Self::from_files(&cert, &key, None, td)
            }
        }
    }

    fn create_root(
        cert_path: &Path,
        key_path: &Path,
        td: &TrustDomain,
        ttl: Duration,
        now: i64,
    ) -> Result<(), CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| CaError::Sign(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "tessera");
        dn.push(DnType::CommonName, format!("tessera root CA {td}"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.subject_alt_names = vec![uri_san(&td.id_string())?];
        params.serial_number = Some(random_serial());
        params.not_before = offset(now - BACKDATE)?;
        params.not_after = offset(now + ttl.as_secs() as i64)?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| CaError::Sign(e.to_string()))?;
        // Key first: a cert without its key would be unusable on the next start.
        fsutil::write_atomic(key_path, key.serialize_pem().as_bytes(), 0o600)
            .map_err(|e| file_err(key_path, e))?;
        fsutil::write_atomic(cert_path, cert.pem().as_bytes(), 0o644)
            .map_err(|e| file_err(cert_path, e))?;
        tracing::info!(path = %cert_path.display(), "created a new root CA");
        Ok(())
    }

    fn from_files(
        cert_path: &Path,
        key_path: &Path,
        bundle: Option<&Path>,
        td: &TrustDomain,
    ) -> Result<Self, CaError> {
        let read = |p: &Path| std::fs::read(p).map_err(|e| file_err(p, e));
        let chain = certs_from_pem(&read(cert_path)?).map_err(|e| file_err(cert_path, e))?;
        // Our copy of the PEM is wiped on drop; rcgen's KeyPair keeps its own.
        let key_file = SecretBytes::new(read(key_path)?);
        let key_pem = std::str::from_utf8(&key_file).map_err(|e| file_err(key_path, e))?;
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| file_err(key_path, format!("not a PEM private key: {e}")))?;
        let signing = &chain[0];
        let issuer = Issuer::from_ca_cert_der(signing, key).map_err(|e| file_err(cert_path, e))?;
        let roots = match bundle {
            Some(p) => certs_from_pem(&read(p)?).map_err(|e| file_err(p, e))?,
            None => chain.last().cloned().into_iter().collect(),
        };
        let intermediates = chain
            .iter()
            .filter(|c| !roots.contains(c))
            .cloned()
            .collect();
        let not_after = not_after(signing).map_err(|e| file_err(cert_path, e))?;
        Ok(Ca {
            issuer,
            intermediates,
            roots,
            not_after,
            trust_domain: td.clone(),
        })
    }

    /// The X.509 authorities to publish in the bundle.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    pub fn roots_pem(&self) -> String {
        certs_to_pem(&self.roots)
    }

    pub fn not_after(&self) -> i64 {
        self.not_after
    }

    /// Signs an X.509-SVID for `id` over the key in `csr` (the CSR's own names and
    /// extensions are ignored: the entry decides). Returns leaf + intermediates.
    pub fn sign_svid(
        &self,
        csr: &[u8],
        id: &SpiffeId,
        dns_names: &[String],
        ttl: Duration,
        now: i64,
    ) -> Result<Vec<CertificateDer<'static>>, CaError> {
        if csr.len() > MAX_CSR_LEN {
            return Err(CaError::Csr(format!("longer than {MAX_CSR_LEN} bytes")));
        }
        let req =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr))
                .map_err(|e| CaError::Csr(e.to_string()))?;
        let alg = req.public_key.algorithm();
        if alg != &rcgen::PKCS_ECDSA_P256_SHA256 && alg != &rcgen::PKCS_ECDSA_P384_SHA384 {
            return Err(CaError::Csr("key must be ECDSA P-256 or P-384".into()));
        }
        // Last line of defence for the reserved names: no SVID ever names the authority.
        if *id == authority_id(&self.trust_domain)? {
            return Err(CaError::Sign(format!("{id} is reserved for the authority")));
        }
        let mut params = self.leaf_params(id, dns_names, ttl, now)?;
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params
            .signed_by(&req.public_key, &self.issuer)
            .map_err(|e| CaError::Sign(e.to_string()))?;
        Ok(self.with_intermediates(cert.der().clone()))
    }

    /// The authority's own TLS identity: `spiffe://<td>/tessera/authority` plus `names`.
    pub fn server_identity(
        &self,
        names: &[String],
        ttl: Duration,
        now: i64,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| CaError::Sign(e.to_string()))?;
        let id = authority_id(&self.trust_domain)?;
        let mut params = self.leaf_params(&id, &[], ttl, now)?;
        for n in names {
            params
                .subject_alt_names
                .push(match n.parse::<std::net::IpAddr>() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName(
                        n.clone()
                            .try_into()
                            .map_err(|e| CaError::Sign(format!("server name {n:?}: {e}")))?,
                    ),
                });
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| CaError::Sign(e.to_string()))?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((self.with_intermediates(cert.der().clone()), key))
    }

    fn with_intermediates(&self, leaf: CertificateDer<'static>) -> Vec<CertificateDer<'static>> {
        std::iter::once(leaf)
            .chain(self.intermediates.iter().cloned())
            .collect()
    }

    fn leaf_params(
        &self,
        id: &SpiffeId,
        dns_names: &[String],
        ttl: Duration,
        now: i64,
    ) -> Result<CertificateParams, CaError> {
        // Never outlive the CA.
        let not_after = (now + ttl.as_secs() as i64).min(self.not_after);
        if not_after <= now {
            return Err(CaError::Expired);
        }
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "tessera");
        if let Some(first) = dns_names.first() {
            dn.push(DnType::CommonName, first.clone());
        }
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
            KeyUsagePurpose::KeyAgreement,
        ];
        params.subject_alt_names = vec![uri_san(id.as_str())?];
        for d in dns_names {
            params.subject_alt_names.push(SanType::DnsName(
                d.clone()
                    .try_into()
                    .map_err(|e| CaError::Sign(format!("dns name {d:?}: {e}")))?,
            ));
        }
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        params.not_before = offset(now - BACKDATE)?;
        params.not_after = offset(not_after)?;
        Ok(params)
    }
}

/// The authority's SPIFFE ID, and the parent of node-alias entries.
pub fn authority_id(td: &TrustDomain) -> Result<SpiffeId, CaError> {
    td.id("/tessera/authority")
        .map_err(|e| CaError::Sign(e.to_string()))
}

fn uri_san(uri: &str) -> Result<SanType, CaError> {
    Ok(SanType::URI(
        uri.to_string()
            .try_into()
            .map_err(|e| CaError::Sign(format!("uri {uri:?}: {e}")))?,
    ))
}

fn random_serial() -> SerialNumber {
    let mut b: [u8; 16] = rand::random();
    b[0] &= 0x7f; // positive
    b[0] |= 0x01; // no leading zero byte to strip
    SerialNumber::from_slice(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::BasicConstraints;
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

    fn csr(alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
        let key = KeyPair::generate_for(alg).unwrap();
        let mut p = CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.serialize_request(&key).unwrap().der().to_vec()
    }

    fn ca(dir: &Path) -> Ca {
        let td = TrustDomain::new("example.org").unwrap();
        Ca::load_or_create(
            dir,
            &td,
            None,
            Duration::from_secs(7200),
            tessera_common::unix_now(),
        )
        .unwrap()
    }

    #[test]
    fn root_persists_with_private_key_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let a = ca(dir.path());
        let b = ca(dir.path());
        assert_eq!(a.roots(), b.roots());
        let mode = std::fs::metadata(dir.path().join("ca_key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn svid_follows_the_x509_svid_profile_not_the_csr() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca(dir.path());
        let id: SpiffeId = "spiffe://example.org/web".parse().unwrap();
        let now = tessera_common::unix_now();
        let chain = ca
            .sign_svid(
                &csr(&rcgen::PKCS_ECDSA_P256_SHA256),
                &id,
                &[],
                Duration::from_secs(3600),
                now,
            )
            .unwrap();
        assert_eq!(chain.len(), 1);
        let (_, cert) = X509Certificate::from_der(&chain[0]).unwrap();
        let bc = cert.basic_constraints().unwrap().unwrap();
        assert!(!bc.value.ca);
        let ku = cert.key_usage().unwrap().unwrap();
        assert!(
            ku.critical
                && ku.value.digital_signature()
                && !ku.value.key_cert_sign()
                && !ku.value.crl_sign()
        );
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(
            san.value.general_names,
            vec![GeneralName::URI("spiffe://example.org/web")]
        );
        let eku = cert.extended_key_usage().unwrap().unwrap();
        assert!(eku.value.server_auth && eku.value.client_auth);
        let (_, root) = X509Certificate::from_der(&ca.roots()[0]).unwrap();
        assert!(cert.verify_signature(Some(root.public_key())).is_ok());
    }

    #[test]
    fn never_signs_an_svid_for_the_authority() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca(dir.path());
        let id = authority_id(&TrustDomain::new("example.org").unwrap()).unwrap();
        let res = ca.sign_svid(
            &csr(&rcgen::PKCS_ECDSA_P256_SHA256),
            &id,
            &[],
            Duration::from_secs(60),
            tessera_common::unix_now(),
        );
        assert!(
            matches!(res, Err(CaError::Sign(ref m)) if m.contains("reserved")),
            "{res:?}"
        );
    }

    #[test]
    fn lifetime_is_capped_by_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca(dir.path());
        let id: SpiffeId = "spiffe://example.org/web".parse().unwrap();
        let now = tessera_common::unix_now();
        let chain = ca
            .sign_svid(
                &csr(&rcgen::PKCS_ECDSA_P256_SHA256),
                &id,
                &[],
                Duration::from_secs(100_000),
                now,
            )
            .unwrap();
        assert_eq!(not_after(&chain[0]).unwrap(), ca.not_after());
    }

    #[test]
    fn rejects_bad_csrs() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca(dir.path());
        let id: SpiffeId = "spiffe://example.org/web".parse().unwrap();
        let now = tessera_common::unix_now();
        let ttl = Duration::from_secs(60);
        assert!(matches!(
            ca.sign_svid(b"garbage", &id, &[], ttl, now),
            Err(CaError::Csr(_))
        ));
        assert!(matches!(
            ca.sign_svid(&vec![0u8; MAX_CSR_LEN + 1], &id, &[], ttl, now),
            Err(CaError::Csr(_))
        ));
        let mut tampered = csr(&rcgen::PKCS_ECDSA_P256_SHA256);
        let n = tampered.len();
        tampered[n - 40] ^= 0x55;
        assert!(ca.sign_svid(&tampered, &id, &[], ttl, now).is_err());
        assert!(matches!(
            ca.sign_svid(&csr(&rcgen::PKCS_ED25519), &id, &[], ttl, now),
            Err(CaError::Csr(_))
        ));
    }

    #[test]
    fn operator_ca_signs_as_intermediate_under_its_root() {
        let dir = tempfile::tempdir().unwrap();
        let root_key = KeyPair::generate().unwrap();
        let mut root = CertificateParams::default();
        root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        root.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let root_cert = root.self_signed(&root_key).unwrap();
        let inter_key = KeyPair::generate().unwrap();
        let mut inter = CertificateParams::default();
        inter.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        inter.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        inter.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(2);
        let inter_cert = inter
            .signed_by(&inter_key, &Issuer::new(root, &root_key))
            .unwrap();
        let w = |n: &str, d: String| {
            std::fs::write(dir.path().join(n), d).unwrap();
            dir.path().join(n)
        };
        let upstream = UpstreamCa {
            cert_file: w("ca.pem", inter_cert.pem()),
            key_file: w("ca.key", inter_key.serialize_pem()),
            bundle_file: Some(w("root.pem", root_cert.pem())),
        };
        let td = TrustDomain::new("example.org").unwrap();
        let now = tessera_common::unix_now();
        let ca = Ca::load_or_create(
            dir.path(),
            &td,
            Some(&upstream),
            Duration::from_secs(60),
            now,
        )
        .unwrap();
        assert_eq!(ca.roots(), &[root_cert.der().clone()]);
        let id: SpiffeId = "spiffe://example.org/web".parse().unwrap();
        let chain = ca
            .sign_svid(
                &csr(&rcgen::PKCS_ECDSA_P256_SHA256),
                &id,
                &[],
                Duration::from_secs(10 * 86400),
                now,
            )
            .unwrap();
        assert_eq!(chain.len(), 2, "leaf then the operator's CA");
        assert_eq!(&chain[1], inter_cert.der());
        assert_eq!(
            not_after(&chain[0]).unwrap(),
            ca.not_after(),
            "capped by the intermediate"
        );
        let (_, leaf) = X509Certificate::from_der(&chain[0]).unwrap();
        let (_, i) = X509Certificate::from_der(&chain[1]).unwrap();
        assert!(leaf.verify_signature(Some(i.public_key())).is_ok());
        assert!(
            !dir.path().join("ca_cert.pem").exists(),
            "no root of our own"
        );
    }
}
