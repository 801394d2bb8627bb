//! TPMT_SIGNATURE (RSASSA, ECDSA) and its verification with aws-lc-rs over
//! the raw signed bytes (a TPMS_ATTEST) with a checked AK.

use aws_lc_rs::signature::{self, UnparsedPublicKey};

use super::public::{coordinate_len, strip_zeros, AkPublic, PublicError};
use super::wire::{
    alg, curve, HashAlg, Reader, WireError, Writer, MAX_ECC_KEY_BYTES, MAX_RSA_KEY_BYTES,
};

/// Cap on a marshalled TPMT_SIGNATURE (RSA-4096 needs 518 bytes).
pub const MAX_SIGNATURE: usize = 1024;

/// A signature that cannot be parsed or does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    #[error("signature: {0}")]
    Wire(#[from] WireError),
    #[error("signature larger than {MAX_SIGNATURE} bytes")]
    TooLarge,
    #[error("unsupported signature algorithm {0:#06x}")]
    UnsupportedScheme(u16),
    #[error("signature scheme {got:04x?} is not the AK scheme {expected:04x?}")]
    SchemeMismatch {
        expected: (u16, u16),
        got: (u16, u16),
    },
    #[error("malformed signature: {0}")]
    Malformed(&'static str),
    #[error("AK key: {0}")]
    Key(#[from] PublicError),
    #[error("signature does not verify")]
    Invalid,
}

/// A TPMT_SIGNATURE of a scheme an AK may use.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TpmtSignature {
    RsaSsa { hash: u16, sig: Vec<u8> },
    Ecdsa { hash: u16, r: Vec<u8>, s: Vec<u8> },
}

impl TpmtSignature {
    /// Parses a TPMT_SIGNATURE that fills `bytes` exactly.
    pub fn parse(bytes: &[u8]) -> Result<Self, SignatureError> {
        if bytes.len() > MAX_SIGNATURE {
            return Err(SignatureError::TooLarge);
        }
        let mut r = Reader::new(bytes);
        let sig = match r.u16("sigAlg")? {
            alg::RSASSA => Self::RsaSsa {
                hash: r.u16("hash")?,
                sig: r.tpm2b(MAX_RSA_KEY_BYTES, "sig")?.to_vec(),
            },
            alg::ECDSA => Self::Ecdsa {
                hash: r.u16("hash")?,
                r: r.tpm2b(MAX_ECC_KEY_BYTES, "signatureR")?.to_vec(),
                s: r.tpm2b(MAX_ECC_KEY_BYTES, "signatureS")?.to_vec(),
            },
            other => return Err(SignatureError::UnsupportedScheme(other)),
        };
        r.finish("TPMT_SIGNATURE")?;
        Ok(sig)
    }

    /// Marshals as a TPMT_SIGNATURE (used to build test vectors).
    pub fn marshal(&self) -> Result<Vec<u8>, SignatureError> {
        let mut w = Writer::new();
        match self {
            Self::RsaSsa { hash, sig } => {
                w.u16(alg::RSASSA).u16(*hash).tpm2b(sig, "sig")?;
            }
            Self::Ecdsa { hash, r, s } => {
                w.u16(alg::ECDSA).u16(*hash);
                w.tpm2b(r, "signatureR")?.tpm2b(s, "signatureS")?;
            }
        }
        Ok(w.into_vec())
    }

    /// (sigAlg, hashAlg).
    pub fn scheme(&self) -> (u16, u16) {
        match self {
            Self::RsaSsa { hash, .. } => (alg::RSASSA, *hash),
            Self::Ecdsa { hash, .. } => (alg::ECDSA, *hash),
        }
    }
}

/// DER INTEGER of a non-negative big-endian value.
fn der_integer(v: &[u8]) -> Vec<u8> {
    let v = strip_zeros(v);
    let mut body = Vec::with_capacity(v.len() + 1);
    if v.first().is_none_or(|b| b & 0x80 != 0) {
        body.push(0);
    }
    body.extend_from_slice(v);
    let mut out = vec![0x02];
    der_len(&mut out, body.len());
    out.extend(body);
    out
}

fn der_len(out: &mut Vec<u8>, len: usize) {
    match u8::try_from(len) {
        Ok(l) if l < 0x80 => out.push(l),
        Ok(l) => out.extend([0x81, l]),
        // Never reached: r and s are bounded by MAX_ECC_KEY_BYTES.
        Err(_) => out.extend([0x82, (len >> 8) as u8, len as u8]),
    }
}

/// ECDSA (r, s) as the DER `Ecdsa-Sig-Value` aws-lc-rs's ASN.1 verifiers take.
pub(crate) fn ecdsa_der(r: &[u8], s: &[u8]) -> Vec<u8> {
    let body = [der_integer(r), der_integer(s)].concat();
    let mut out = vec![0x30];
    der_len(&mut out, body.len());
    out.extend(body);
    out
}

/// Verifies `sig` over `message` with the AK. The signature's scheme and
/// hash must be exactly the AK's (no downgrade to another hash).
pub fn verify(ak: &AkPublic, message: &[u8], sig: &TpmtSignature) -> Result<(), SignatureError> {
    let (ak_alg, ak_hash) = ak.scheme();
    let expected = (ak_alg, ak_hash.id());
    if sig.scheme() != expected {
        return Err(SignatureError::SchemeMismatch {
            expected,
            got: sig.scheme(),
        });
    }
    match sig {
        TpmtSignature::RsaSsa { sig, .. } => {
            let params = match ak_hash {
                HashAlg::Sha256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                _ => return Err(SignatureError::UnsupportedScheme(ak_alg)),
            };
            ak.public()
                .rsa_components()?
                .verify(params, message, sig)
                .map_err(|_| SignatureError::Invalid)
        }
        TpmtSignature::Ecdsa { r, s, .. } => {
            let (curve_id, point) = ak.public().ecc_point()?;
            let n = coordinate_len(curve_id).unwrap_or(0);
            if r.is_empty() || s.is_empty() || r.len() > n || s.len() > n {
                return Err(SignatureError::Malformed("ECDSA r/s size"));
            }
            let algorithm = match (curve_id, ak_hash) {
                (curve::NIST_P256, HashAlg::Sha256) => &signature::ECDSA_P256_SHA256_ASN1,
                (curve::NIST_P256, HashAlg::Sha384) => &signature::ECDSA_P256_SHA384_ASN1,
                (curve::NIST_P384, HashAlg::Sha256) => &signature::ECDSA_P384_SHA256_ASN1,
                (curve::NIST_P384, HashAlg::Sha384) => &signature::ECDSA_P384_SHA384_ASN1,
                _ => return Err(SignatureError::UnsupportedScheme(ak_alg)),
            };
            UnparsedPublicKey::new(algorithm, point)
                .verify(message, &ecdsa_der(r, s))
                .map_err(|_| SignatureError::Invalid)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_integers_are_minimal_and_positive() {
        assert_eq!(der_integer(&[0, 0, 1]), vec![2, 1, 1]);
        assert_eq!(der_integer(&[0x80]), vec![2, 2, 0, 0x80]);
        assert_eq!(der_integer(&[]), vec![2, 1, 0]);
        let long = ecdsa_der(&[0xff; 66], &[0xff; 66]);
        assert_eq!(&long[..3], &[0x30, 0x81, 2 * (2 + 67)]);
    }

    #[test]
    fn parse_rejects_other_schemes_sizes_and_trailing() {
        assert_eq!(
            TpmtSignature::parse(&[0x00, 0x16, 0, 0x0b, 0, 0]),
            Err(SignatureError::UnsupportedScheme(alg::RSAPSS))
        );
        assert!(matches!(
            TpmtSignature::parse(&[0x00, 0x18, 0, 0x0b, 0, 67]),
            Err(SignatureError::Wire(WireError::TooLarge { .. }))
        ));
        assert!(matches!(
            TpmtSignature::parse(&[0x00, 0x18, 0, 0x0b, 0, 1, 1, 0, 1, 1, 9]),
            Err(SignatureError::Wire(WireError::TrailingBytes { .. }))
        ));
        assert_eq!(
            TpmtSignature::parse(&[0; 2000]),
            Err(SignatureError::TooLarge)
        );
    }
}
