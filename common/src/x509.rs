//! X.509 helpers: DER chains, SPIFFE IDs in certificates, validity.

use crate::spiffe_id::{SpiffeId, SpiffeIdError};
use rustls_pki_types::CertificateDer;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

/// Most certificates accepted in one concatenated chain or bundle.
pub const MAX_CHAIN_CERTS: usize = 64;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum X509Error {
    #[error("certificate {index} is not valid DER: {reason}")]
    Der { index: usize, reason: String },
    #[error("more than {MAX_CHAIN_CERTS} certificates")]
    TooMany,
    #[error("no certificate")]
    Empty,
    #[error("certificate has {0} URI SANs; an SVID has exactly one")]
    UriSanCount(usize),
    #[error("URI SAN is not a SPIFFE ID: {0}")]
    SpiffeId(#[from] SpiffeIdError),
}

/// Splits concatenated DER certificates (the Workload API and bundle encoding).
pub fn split_der_chain(mut bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, X509Error> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        if out.len() == MAX_CHAIN_CERTS {
            return Err(X509Error::TooMany);
        }
        let index = out.len();
        let (rest, _) = X509Certificate::from_der(bytes).map_err(|e| X509Error::Der {
            index,
            reason: e.to_string(),
        })?;
        let len = bytes.len() - rest.len();
        out.push(CertificateDer::from(bytes[..len].to_vec()));
        bytes = rest;
    }
    if out.is_empty() {
        return Err(X509Error::Empty);
    }
    Ok(out)
}

/// Concatenates DER certificates.
pub fn join_der<'a>(certs: impl IntoIterator<Item = &'a CertificateDer<'a>>) -> Vec<u8> {
    certs
        .into_iter()
        .flat_map(|c| c.as_ref().iter().copied())
        .collect()
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, X509Error> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| X509Error::Der {
            index: 0,
            reason: e.to_string(),
        })
}

/// The SPIFFE ID in the certificate's single URI SAN.
pub fn spiffe_id_of(der: &[u8]) -> Result<SpiffeId, X509Error> {
    let cert = parse(der)?;
    let uris: Vec<&str> = cert
        .extensions()
        .iter()
        .filter_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => Some(san),
            _ => None,
        })
        .flat_map(|san| san.general_names.iter())
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some(*u),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [one] => Ok(one.parse()?),
        other => Err(X509Error::UriSanCount(other.len())),
    }
}

/// Whether the certificate may authenticate a TLS client (extended key usage
/// clientAuth or anyExtendedKeyUsage, or no EKU extension at all).
pub fn allows_client_auth(der: &[u8]) -> Result<bool, X509Error> {
    let cert = parse(der)?;
    let eku = cert
        .extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::ExtendedKeyUsage(eku) => Some(eku),
            _ => None,
        });
    Ok(eku.is_none_or(|e| e.client_auth || e.any))
}

/// notAfter as Unix seconds.
pub fn not_after(der: &[u8]) -> Result<i64, X509Error> {
    Ok(parse(der)?.validity().not_after.timestamp())
}

/// notBefore as Unix seconds.
pub fn not_before(der: &[u8]) -> Result<i64, X509Error> {
    Ok(parse(der)?.validity().not_before.timestamp())
}

/// Serial number as lowercase hex.
pub fn serial_hex(der: &[u8]) -> Result<String, X509Error> {
    Ok(parse(der)?.raw_serial_as_string().replace(':', ""))
}

/// PEM-encodes DER certificates, one block each.
pub fn certs_to_pem(certs: &[CertificateDer<'_>]) -> String {
    certs
        .iter()
        .map(|c| pem_block("CERTIFICATE", c.as_ref()))
        .collect()
}

/// One PEM block with the given label.
pub fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(line).unwrap_or_default());
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}

/// Reads every CERTIFICATE block of a PEM file.
pub fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, X509Error> {
    use rustls_pki_types::pem::PemObject;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem).collect();
    let certs = certs.map_err(|e| X509Error::Der {
        index: 0,
        reason: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(X509Error::Empty);
    }
    if certs.len() > MAX_CHAIN_CERTS {
        return Err(X509Error::TooMany);
    }
    Ok(certs)
}
