//! EK certificate profile checks and certification path building.

use std::time::{SystemTime, UNIX_EPOCH};

use x509_parser::certificate::X509Certificate;
use x509_parser::error::X509Error;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;
use x509_parser::x509::AttributeTypeAndValue;

use super::{normalize_nv, normalized_spki, oids, EkCaStore, EkCertError, MAX_CHAIN_DEPTH};

/// Most signature verifications spent on one path search (bounds the work
/// when a store holds many CAs with the same subject).
const MAX_SIGNATURE_CHECKS: usize = 32;

/// Extensions an EK certificate may mark critical (DER OID contents):
/// SAN, basicConstraints, keyUsage, EKU, certificatePolicies,
/// subjectDirectoryAttributes, AKI, SKI, CRL distribution points and
/// authorityInfoAccess. Any other critical extension is rejected.
const KNOWN_CRITICAL: [&[u8]; 10] = [
    &[0x55, 0x1d, 0x11],
    &[0x55, 0x1d, 0x13],
    &[0x55, 0x1d, 0x0f],
    &[0x55, 0x1d, 0x25],
    &[0x55, 0x1d, 0x20],
    &[0x55, 0x1d, 0x09],
    &[0x55, 0x1d, 0x23],
    &[0x55, 0x1d, 0x0e],
    &[0x55, 0x1d, 0x1f],
    &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x01],
];

/// What an accepted EK certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedEk {
    /// True if a certification path to a trust anchor of the store was
    /// verified ([`verify`]); false for [`inspect`].
    pub chain_verified: bool,
    /// SAN directoryName tpmManufacturer (2.23.133.2.1), e.g. `id:00001014`.
    pub manufacturer: Option<String>,
    /// SAN directoryName tpmModel (2.23.133.2.2).
    pub model: Option<String>,
    /// SAN directoryName tpmVersion (2.23.133.2.3).
    pub version: Option<String>,
    /// The EK public key as DER SubjectPublicKeyInfo (rsaesOaep mapped to
    /// rsaEncryption, see [`super::public_key_spki`]).
    pub spki_der: Vec<u8>,
    /// The EK certificate's issuer DN (RFC 4514-like string).
    pub issuer: String,
}

impl VerifiedEk {
    /// The tpmManufacturer as a number (`id:00001014` -> 0x1014), to compare
    /// with the TPM's `TPM_PT_MANUFACTURER` (TPM.md item 5; informational:
    /// swtpm certifies `id:00001014` while reporting "IBM").
    pub fn manufacturer_id(&self) -> Option<u32> {
        let hex = self.manufacturer.as_deref()?.strip_prefix("id:")?;
        if hex.len() != 8 {
            return None;
        }
        u32::from_str_radix(hex, 16).ok()
    }
}

/// Parses the EK certificate leniently (NV header and trailing bytes are
/// stripped), checks the EK profile and its notAfter against the current
/// time, and verifies a certification path to a trust anchor of `store`.
///
/// Only signatures, names/key identifiers and CA constraints are checked
/// along the path: validity periods of intermediates and roots and the
/// leaf's notBefore are not enforced (see the module documentation).
pub fn verify(ek_cert_der: &[u8], store: &EkCaStore) -> Result<VerifiedEk, EkCertError> {
    verify_at(ek_cert_der, store, Some(SystemTime::now()))
}

/// [`verify`] at time `now`; `None` skips the leaf's notAfter check too
/// (verification "at issuance", for fleets whose EK certificates expired).
pub fn verify_at(
    ek_cert_der: &[u8],
    store: &EkCaStore,
    now: Option<SystemTime>,
) -> Result<VerifiedEk, EkCertError> {
    let cert = parse_cert(normalize_nv(ek_cert_der)?)?;
    let mut ek = check_profile(&cert)?;
    if let Some(now) = now {
        let now = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let not_after = &cert.validity().not_after;
        if not_after.timestamp() < now {
            return Err(EkCertError::Expired(format!("notAfter {not_after}")));
        }
    }
    build_path(&cert, store)?;
    ek.chain_verified = true;
    Ok(ek)
}

/// EK profile checks and attributes without any chain verification
/// (`chain_verified == false`): for trust-on-first-use policies and logs.
pub fn inspect(ek_cert_der: &[u8]) -> Result<VerifiedEk, EkCertError> {
    check_profile(&parse_cert(normalize_nv(ek_cert_der)?)?)
}

/// Verifies only the certification path of `cert_der` (any certificate,
/// e.g. a vendor intermediate) to a trust anchor of `store`: no EK profile
/// and no validity checks on the certificate itself.
pub fn verify_chain_only(cert_der: &[u8], store: &EkCaStore) -> Result<(), EkCertError> {
    build_path(&parse_cert(normalize_nv(cert_der)?)?, store)
}

/// Parses one DER certificate; trailing bytes are an error.
pub(super) fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, EkCertError> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| EkCertError::Parse(e.to_string()))?;
    if !rest.is_empty() {
        return Err(EkCertError::Parse(format!("{} trailing bytes", rest.len())));
    }
    Ok(cert)
}

/// TCG EK profile: not a CA, key usage matching the key type, EKU
/// tcg-kp-EKCertificate if an EKU is present, no unknown critical extension.
fn check_profile(cert: &X509Certificate<'_>) -> Result<VerifiedEk, EkCertError> {
    let key_alg = cert.public_key().algorithm.algorithm.as_bytes();
    let is_rsa = key_alg == oids::RSA_ENCRYPTION || key_alg == oids::RSAES_OAEP;
    if !is_rsa && key_alg != oids::EC_PUBLIC_KEY {
        let oid = &cert.public_key().algorithm.algorithm;
        return Err(EkCertError::NotEk(format!("key algorithm {oid}")));
    }
    let mut ek = VerifiedEk {
        chain_verified: false,
        manufacturer: None,
        model: None,
        version: None,
        spki_der: normalized_spki(cert.public_key())?,
        issuer: cert.issuer().to_string(),
    };
    for ext in cert.extensions() {
        let oid = ext.oid.as_bytes();
        if ext.critical && !KNOWN_CRITICAL.contains(&oid) {
            let oid = &ext.oid;
            return Err(EkCertError::NotEk(format!("critical extension {oid}")));
        }
        let not_ek = |why: &str| Err(EkCertError::NotEk(why.to_string()));
        match ext.parsed_extension() {
            ParsedExtension::BasicConstraints(bc) if bc.ca => return not_ek("CA certificate"),
            ParsedExtension::KeyUsage(ku) => {
                if ku.key_cert_sign() {
                    return not_ek("key usage keyCertSign");
                }
                if is_rsa && !ku.key_encipherment() {
                    return not_ek("RSA EK without key usage keyEncipherment");
                }
                if !is_rsa && !ku.key_agreement() {
                    return not_ek("ECC EK without key usage keyAgreement");
                }
            }
            ParsedExtension::ExtendedKeyUsage(eku)
                if !eku
                    .other
                    .iter()
                    .any(|o| o.as_bytes() == oids::TCG_KP_EK_CERTIFICATE) =>
            {
                return not_ek("EKU without tcg-kp-EKCertificate (2.23.133.8.1)");
            }
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    if let GeneralName::DirectoryName(dn) = name {
                        dn.iter_attributes()
                            .for_each(|a| take_tpm_attribute(&mut ek, a));
                    }
                }
            }
            ParsedExtension::ParseError { error } => {
                // Lenient on everything but the extensions the checks rely on.
                if [
                    &[0x55, 0x1d, 0x13][..],
                    &[0x55, 0x1d, 0x0f],
                    &[0x55, 0x1d, 0x25],
                ]
                .contains(&oid)
                {
                    return Err(EkCertError::NotEk(format!(
                        "malformed {}: {error}",
                        ext.oid
                    )));
                }
                tracing::debug!(oid = %ext.oid, %error, "ignoring malformed EK extension");
            }
            _ => {}
        }
    }
    Ok(ek)
}

fn take_tpm_attribute(ek: &mut VerifiedEk, attr: &AttributeTypeAndValue<'_>) {
    let slot = match attr.attr_type().as_bytes() {
        oids::TPM_MANUFACTURER => &mut ek.manufacturer,
        oids::TPM_MODEL => &mut ek.model,
        oids::TPM_VERSION => &mut ek.version,
        _ => return,
    };
    let value = match attr.as_str() {
        Ok(s) => s.to_string(),
        Err(_) => hex::encode(attr.as_slice()),
    };
    slot.get_or_insert(value);
}

fn build_path(cert: &X509Certificate<'_>, store: &EkCaStore) -> Result<(), EkCertError> {
    let mut search = PathSearch {
        store,
        budget: MAX_SIGNATURE_CHECKS,
        on_path: Vec::new(),
    };
    let anchor = search.extend(cert, 0)?;
    tracing::debug!(subject = %cert.subject(), anchor, "EK certification path verified");
    Ok(())
}

/// Depth-first search for a verified path from a certificate to an anchor.
struct PathSearch<'s> {
    store: &'s EkCaStore,
    budget: usize,
    /// Store indices of the certificates on the current path (loop guard).
    on_path: Vec<usize>,
}

impl PathSearch<'_> {
    /// Finds an issuer of `child` that leads to an anchor; `depth` is the
    /// number of certificates between `child`'s issuer and the leaf.
    /// Returns the anchor's store index.
    fn extend(&mut self, child: &X509Certificate<'_>, depth: usize) -> Result<usize, EkCertError> {
        if depth >= MAX_CHAIN_DEPTH {
            return Err(EkCertError::ChainTooLong);
        }
        let aki = child
            .iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.as_ref(),
                _ => None,
            });
        let candidates = self.store.candidates(child.issuer(), aki.map(|k| k.0));
        let mut last = EkCertError::UnknownIssuer(child.issuer().to_string());
        for idx in candidates {
            if self.on_path.contains(&idx) {
                continue;
            }
            let Some(entry) = self.store.get(idx) else {
                continue;
            };
            self.budget = self
                .budget
                .checked_sub(1)
                .ok_or(EkCertError::ChainTooLong)?;
            let issuer = parse_cert(&entry.der)?;
            let step = check_issuer(&issuer, depth).and_then(|()| check_signed_by(child, &issuer));
            if let Err(e) = step {
                last = e;
                continue;
            }
            if entry.anchor {
                return Ok(idx);
            }
            self.on_path.push(idx);
            let found = self.extend(&issuer, depth + 1);
            self.on_path.pop();
            match found {
                Ok(anchor) => return Ok(anchor),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// A certificate may issue others: basicConstraints cA (when present, with
/// its pathLenConstraint) and keyUsage keyCertSign (when present).
fn check_issuer(issuer: &X509Certificate<'_>, depth: usize) -> Result<(), EkCertError> {
    let refuse = |why: String| {
        Err(EkCertError::UnknownIssuer(format!(
            "{}: {why}",
            issuer.subject()
        )))
    };
    for ext in issuer.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::BasicConstraints(bc) if !bc.ca => {
                return refuse("not a CA".into());
            }
            ParsedExtension::BasicConstraints(bc) => {
                let limit = bc.path_len_constraint.map_or(usize::MAX, |l| l as usize);
                if depth > limit {
                    return refuse(format!("pathLenConstraint {limit} < {depth}"));
                }
            }
            ParsedExtension::KeyUsage(ku) if !ku.key_cert_sign() => {
                return refuse("key usage without keyCertSign".into());
            }
            _ => {}
        }
    }
    Ok(())
}

/// Verifies `child`'s signature with `issuer`'s key (x509-parser with
/// aws-lc-rs; sha1WithRSAEncryption included), falling back to aws-lc-rs
/// directly for the ECDSA combinations x509-parser does not map (P-521,
/// ecdsa-with-SHA512).
fn check_signed_by(
    child: &X509Certificate<'_>,
    issuer: &X509Certificate<'_>,
) -> Result<(), EkCertError> {
    let bad = |why: String| {
        EkCertError::BadSignature(format!(
            "{} by {}: {why}",
            child.subject(),
            issuer.subject()
        ))
    };
    if child.signature_algorithm.algorithm != child.tbs_certificate.signature.algorithm {
        return Err(bad("signature algorithm differs from the TBS one".into()));
    }
    match child.verify_signature(Some(issuer.public_key())) {
        Ok(()) => Ok(()),
        Err(X509Error::SignatureUnsupportedAlgorithm) => {
            use aws_lc_rs::signature as sig;
            let spki = issuer.public_key();
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok());
            let alg: &dyn sig::VerificationAlgorithm = match (
                curve.as_ref().map(|c| c.as_bytes()),
                child.signature_algorithm.algorithm.as_bytes(),
            ) {
                (Some(oids::P256), oids::ECDSA_SHA512) => &sig::ECDSA_P256_SHA512_ASN1,
                (Some(oids::P384), oids::ECDSA_SHA512) => &sig::ECDSA_P384_SHA512_ASN1,
                (Some(oids::P521), oids::ECDSA_SHA256) => &sig::ECDSA_P521_SHA256_ASN1,
                (Some(oids::P521), oids::ECDSA_SHA384) => &sig::ECDSA_P521_SHA384_ASN1,
                (Some(oids::P521), oids::ECDSA_SHA512) => &sig::ECDSA_P521_SHA512_ASN1,
                _ => {
                    let oid = &child.signature_algorithm.algorithm;
                    return Err(bad(format!("unsupported signature algorithm {oid}")));
                }
            };
            sig::UnparsedPublicKey::new(alg, &spki.subject_public_key.data)
                .verify(child.tbs_certificate.as_ref(), &child.signature_value.data)
                .map_err(|_| bad("signature verification failed".into()))
        }
        Err(e) => Err(bad(e.to_string())),
    }
}
