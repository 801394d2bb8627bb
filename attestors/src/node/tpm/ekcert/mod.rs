//! TPM endorsement key (EK) certificates: lenient parsing, chain building to
//! manufacturer CAs, and the TCG EK profile checks (TPM.md §1.4 items 1–3, 5).
//!
//! EK certificates are not TLS certificates: their SAN holds only a critical
//! directoryName (tpmManufacturer/tpmModel/tpmVersion), their EKU is
//! `tcg-kp-EKCertificate` (2.23.133.8.1), many vendor CAs sign with SHA-1 and
//! some vendor intermediates have expired while the EKs they issued are still
//! in service. A WebPKI/TLS verifier rejects most of that, so the chain is
//! built here with x509-parser and verified with aws-lc-rs.
//!
//! What is enforced:
//! * signatures along the whole path, the outer signature algorithm equal to
//!   the one inside the TBS, issuer names (raw DER bytes) and AKI/SKI,
//! * issuers along the path are CAs (basicConstraints cA, keyUsage
//!   keyCertSign, pathLenConstraint) when they say so,
//! * the EK profile of the leaf (not a CA, key usage, EKU, no unknown
//!   critical extension) and, by default, the leaf's notAfter.
//!
//! What is deliberately not enforced:
//! * validity periods of intermediates and roots: vendors let intermediates
//!   expire (keylime `IFX_RSA_01I.pem`, 2025-10-20) while the EKs they issued
//!   remain the identity of the TPM for its whole life, so the path is checked
//!   "at issuance" rather than "now";
//! * the leaf's notBefore: EK certificates are written at manufacture (or by
//!   `swtpm_setup` seconds before the first attestation) with whatever clock
//!   the provisioning station had; a notBefore in the future proves nothing
//!   about the key and would only turn clock skew into outages.

mod store;
mod verify;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_gen;

pub use store::EkCaStore;
pub use verify::{inspect, verify, verify_at, verify_chain_only, VerifiedEk};

use x509_parser::x509::SubjectPublicKeyInfo;

/// Largest EK certificate (or NV index content) accepted, in bytes.
pub const MAX_EK_CERT_LEN: usize = 16 * 1024;
/// Longest certification path searched (certificates above the leaf).
pub const MAX_CHAIN_DEPTH: usize = 8;

/// Why an EK certificate (or a CA store) was rejected.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum EkCertError {
    #[error("EK certificate parse error: {0}")]
    Parse(String),
    #[error("no trusted issuer found for {0}")]
    UnknownIssuer(String),
    #[error("bad signature: {0}")]
    BadSignature(String),
    #[error("not an EK certificate: {0}")]
    NotEk(String),
    #[error("EK certificate expired: {0}")]
    Expired(String),
    #[error("EK CA store {}: {reason}", path.display())]
    Store {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("EK certificate larger than {MAX_EK_CERT_LEN} bytes")]
    TooLarge,
    #[error("certification path longer than {MAX_CHAIN_DEPTH} or too many candidates")]
    ChainTooLong,
}

/// DER contents of the OIDs used here (compared with `Oid::as_bytes`).
pub(crate) mod oids {
    pub const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    pub const RSAES_OAEP: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x07];
    pub const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    pub const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    pub const P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
    pub const P521: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x23];
    pub const ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
    pub const ECDSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
    pub const ECDSA_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04];
    /// tcg-kp-EKCertificate 2.23.133.8.1
    pub const TCG_KP_EK_CERTIFICATE: &[u8] = &[0x67, 0x81, 0x05, 0x08, 0x01];
    /// tcg-at-tpmManufacturer / tpmModel / tpmVersion 2.23.133.2.{1,2,3}
    pub const TPM_MANUFACTURER: &[u8] = &[0x67, 0x81, 0x05, 0x02, 0x01];
    pub const TPM_MODEL: &[u8] = &[0x67, 0x81, 0x05, 0x02, 0x02];
    pub const TPM_VERSION: &[u8] = &[0x67, 0x81, 0x05, 0x02, 0x03];
}

/// Returns the DER certificate inside an EK NV index read-out.
///
/// Handles the TCG PC Client stored-certificate header `10 01 00 <len16>`
/// (optionally followed by the TPM 1.2 full-cert tag `10 02`) and drops any
/// trailing padding after the outer DER SEQUENCE (NV indices are often read
/// at their full size). Plain DER input is returned unchanged.
pub fn normalize_nv(bytes: &[u8]) -> Result<&[u8], EkCertError> {
    if bytes.len() > MAX_EK_CERT_LEN {
        return Err(EkCertError::TooLarge);
    }
    let mut der = bytes;
    if let [0x10, 0x01, 0x00, hi, lo, rest @ ..] = bytes {
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        der = rest.get(..len).ok_or_else(|| {
            EkCertError::Parse(format!(
                "NV header announces {len} bytes, {} present",
                rest.len()
            ))
        })?;
        if let [0x10, 0x02, inner @ ..] = der {
            der = inner;
        }
    }
    let total = der_sequence_len(der)?;
    der.get(..total)
        .ok_or_else(|| EkCertError::Parse("certificate truncated".into()))
}

/// Total length (header + content) of the DER SEQUENCE at the start of `der`.
pub(crate) fn der_sequence_len(der: &[u8]) -> Result<usize, EkCertError> {
    let bad = |what: &str| EkCertError::Parse(format!("not a DER certificate: {what}"));
    match der {
        [0x30, l, ..] if *l < 0x80 => Ok(2 + usize::from(*l)),
        [0x30, l, rest @ ..] if (0x81..=0x84).contains(l) => {
            let n = usize::from(*l - 0x80);
            let len_bytes = rest.get(..n).ok_or_else(|| bad("short length"))?;
            let len = len_bytes
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            Ok(len.saturating_add(2 + n))
        }
        [0x30, ..] => Err(bad("unsupported length encoding")),
        _ => Err(bad("no SEQUENCE")),
    }
}

/// The EK certificate's public key as DER SubjectPublicKeyInfo, ready to be
/// compared with the key from the TPM public area: an `rsaesOaep`
/// (1.2.840.113549.1.1.7) algorithm — used by old Infineon/STM EK
/// certificates — is rewritten to `rsaEncryption` with NULL parameters.
pub fn public_key_spki(ek_cert_der: &[u8]) -> Result<Vec<u8>, EkCertError> {
    let der = normalize_nv(ek_cert_der)?;
    let cert = verify::parse_cert(der)?;
    normalized_spki(cert.public_key())
}

/// See [`public_key_spki`]; other algorithms are returned as encoded.
pub(crate) fn normalized_spki(spki: &SubjectPublicKeyInfo<'_>) -> Result<Vec<u8>, EkCertError> {
    if spki.algorithm.algorithm.as_bytes() != oids::RSAES_OAEP {
        return Ok(spki.raw.to_vec());
    }
    if spki.subject_public_key.unused_bits != 0 {
        return Err(EkCertError::Parse(
            "RSA key bit string not byte aligned".into(),
        ));
    }
    let key: &[u8] = &spki.subject_public_key.data;
    if key.first() != Some(&0x30) {
        return Err(EkCertError::Parse(
            "rsaesOaep key is not an RSAPublicKey".into(),
        ));
    }
    let mut alg = vec![0x06, 0x09];
    alg.extend_from_slice(oids::RSA_ENCRYPTION);
    alg.extend_from_slice(&[0x05, 0x00]);
    let mut bits = vec![0x00];
    bits.extend_from_slice(key);
    let mut body = der_tlv(0x30, &alg);
    body.extend_from_slice(&der_tlv(0x03, &bits));
    Ok(der_tlv(0x30, &body))
}

/// DER tag-length-value (definite length, up to 4-byte lengths).
pub(crate) fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let len = content.len();
    let mut out = Vec::with_capacity(len + 6);
    out.push(tag);
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = (len as u32).to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        let significant = bytes.get(skip..).unwrap_or(&[]);
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(content);
    out
}
