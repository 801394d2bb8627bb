//! TPMT_PUBLIC / TPM2B_PUBLIC for RSA and ECC keys (TPM 2.0 Part 2 §12.2):
//! unmarshalling, the object Name, the key as a DER SubjectPublicKeyInfo, the
//! AK checks of TPM.md §1.4 item 6 and recognition of the TCG EK templates.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::PublicKeyComponents;

use super::wire::{
    alg, curve, HashAlg, Reader, WireError, Writer, MAX_DIGEST, MAX_ECC_KEY_BYTES,
    MAX_RSA_KEY_BYTES,
};

/// Cap on a marshalled public area (an RSA-4096 key needs about 600 bytes).
pub const MAX_PUBLIC: usize = 1024;

/// TPMA_OBJECT bits (TPM 2.0 Part 2 §8.3).
pub mod attr {
    pub const FIXED_TPM: u32 = 1 << 1;
    pub const ST_CLEAR: u32 = 1 << 2;
    pub const FIXED_PARENT: u32 = 1 << 4;
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    pub const USER_WITH_AUTH: u32 = 1 << 6;
    pub const ADMIN_WITH_POLICY: u32 = 1 << 7;
    pub const NO_DA: u32 = 1 << 10;
    pub const ENCRYPTED_DUPLICATION: u32 = 1 << 11;
    pub const RESTRICTED: u32 = 1 << 16;
    pub const DECRYPT: u32 = 1 << 17;
    pub const SIGN: u32 = 1 << 18;
}

/// A public area that cannot be used, or an AK/EK that fails a check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublicError {
    #[error("public area: {0}")]
    Wire(#[from] WireError),
    #[error("public area larger than {MAX_PUBLIC} bytes")]
    TooLarge,
    #[error("unsupported object type {0:#06x}")]
    UnsupportedType(u16),
    #[error("unsupported {what} algorithm {alg:#06x}")]
    UnsupportedAlg { what: &'static str, alg: u16 },
    #[error("invalid public key: {0}")]
    InvalidKey(&'static str),
    #[error("AK check failed: {0:?}")]
    AkCheck(AkCheck),
    #[error("public area is not a TCG EK template")]
    NotEkTemplate,
}

/// The AK requirement that was not met (TPM.md §1.4 item 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AkCheck {
    Restricted,
    Sign,
    FixedTpm,
    FixedParent,
    SensitiveDataOrigin,
    DecryptClear,
    NameAlgSha256,
    RsaKeyBits,
    EccCurve,
    SigningScheme,
}

/// TPMT_SYM_DEF_OBJECT when not NULL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SymDef {
    pub alg: u16,
    pub key_bits: u16,
    pub mode: u16,
}

/// A signing/decryption scheme or a KDF when not NULL. `hash` is unused for
/// RSAES; `count` is only marshalled for ECDAA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheme {
    pub alg: u16,
    pub hash: u16,
    pub count: u16,
}

/// The type-specific part of a public area: parameters and `unique`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyParams {
    Rsa {
        key_bits: u16,
        /// 0 means the default 65537.
        exponent: u32,
        modulus: Vec<u8>,
    },
    Ecc {
        curve: u16,
        kdf: Option<Scheme>,
        x: Vec<u8>,
        y: Vec<u8>,
    },
}

/// The fields of a TPMT_PUBLIC (RSA or ECC). `None` stands for TPM_ALG_NULL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicArea {
    pub name_alg: u16,
    pub attributes: u32,
    pub auth_policy: Vec<u8>,
    pub symmetric: Option<SymDef>,
    pub scheme: Option<Scheme>,
    pub key: KeyParams,
}

/// A parsed TPMT_PUBLIC that keeps its exact bytes: the Name is computed
/// over what the TPM produced, never over a re-encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmtPublic {
    raw: Vec<u8>,
    area: PublicArea,
}

const RSA_SCHEMES: &[u16] = &[alg::RSAES, alg::RSASSA, alg::RSAPSS, alg::OAEP];
#[rustfmt::skip]
const ECC_SCHEMES: &[u16] = &[alg::ECDSA, alg::ECDH, alg::ECDAA, alg::SM2, alg::ECSCHNORR, alg::ECMQV];
const KDFS: &[u16] = &[
    alg::MGF1,
    alg::KDF1_SP800_56A,
    alg::KDF2,
    alg::KDF1_SP800_108,
];

fn read_sym(r: &mut Reader) -> Result<Option<SymDef>, PublicError> {
    match r.u16("symmetric.algorithm")? {
        alg::NULL => Ok(None),
        a @ (alg::AES | alg::SM4 | alg::CAMELLIA) => Ok(Some(SymDef {
            alg: a,
            key_bits: r.u16("symmetric.keyBits")?,
            mode: r.u16("symmetric.mode")?,
        })),
        a => Err(PublicError::UnsupportedAlg {
            what: "symmetric",
            alg: a,
        }),
    }
}

fn read_scheme(
    r: &mut Reader,
    allowed: &[u16],
    what: &'static str,
) -> Result<Option<Scheme>, PublicError> {
    let a = r.u16(what)?;
    if a == alg::NULL {
        return Ok(None);
    }
    if !allowed.contains(&a) {
        return Err(PublicError::UnsupportedAlg { what, alg: a });
    }
    let hash = if a == alg::RSAES { 0 } else { r.u16(what)? };
    let count = if a == alg::ECDAA { r.u16(what)? } else { 0 };
    Ok(Some(Scheme {
        alg: a,
        hash,
        count,
    }))
}

fn write_scheme(w: &mut Writer, s: Option<&Scheme>) {
    match s {
        None => {
            w.u16(alg::NULL);
        }
        Some(s) => {
            w.u16(s.alg);
            if s.alg != alg::RSAES {
                w.u16(s.hash);
            }
            if s.alg == alg::ECDAA {
                w.u16(s.count);
            }
        }
    }
}

impl PublicArea {
    fn read(r: &mut Reader) -> Result<Self, PublicError> {
        let ty = r.u16("type")?;
        let name_alg = r.u16("nameAlg")?;
        let attributes = r.u32("objectAttributes")?;
        let auth_policy = r.tpm2b(MAX_DIGEST, "authPolicy")?.to_vec();
        let (symmetric, scheme, key) = match ty {
            alg::RSA => {
                let symmetric = read_sym(r)?;
                let scheme = read_scheme(r, RSA_SCHEMES, "RSA scheme")?;
                let key_bits = r.u16("keyBits")?;
                let exponent = r.u32("exponent")?;
                let modulus = r.tpm2b(MAX_RSA_KEY_BYTES, "unique.rsa")?.to_vec();
                let key = KeyParams::Rsa {
                    key_bits,
                    exponent,
                    modulus,
                };
                (symmetric, scheme, key)
            }
            alg::ECC => {
                let symmetric = read_sym(r)?;
                let scheme = read_scheme(r, ECC_SCHEMES, "ECC scheme")?;
                let curve = r.u16("curveID")?;
                let kdf = read_scheme(r, KDFS, "kdf")?;
                let x = r.tpm2b(MAX_ECC_KEY_BYTES, "unique.ecc.x")?.to_vec();
                let y = r.tpm2b(MAX_ECC_KEY_BYTES, "unique.ecc.y")?.to_vec();
                (symmetric, scheme, KeyParams::Ecc { curve, kdf, x, y })
            }
            other => return Err(PublicError::UnsupportedType(other)),
        };
        Ok(Self {
            name_alg,
            attributes,
            auth_policy,
            symmetric,
            scheme,
            key,
        })
    }

    /// Marshals as a TPMT_PUBLIC (no TPM2B size).
    pub fn marshal(&self) -> Result<Vec<u8>, PublicError> {
        let mut w = Writer::new();
        let ty = match self.key {
            KeyParams::Rsa { .. } => alg::RSA,
            KeyParams::Ecc { .. } => alg::ECC,
        };
        w.u16(ty).u16(self.name_alg).u32(self.attributes);
        w.tpm2b(&self.auth_policy, "authPolicy")?;
        match &self.symmetric {
            None => w.u16(alg::NULL),
            Some(s) => w.u16(s.alg).u16(s.key_bits).u16(s.mode),
        };
        write_scheme(&mut w, self.scheme.as_ref());
        match &self.key {
            KeyParams::Rsa {
                key_bits,
                exponent,
                modulus,
            } => {
                w.u16(*key_bits).u32(*exponent);
                w.tpm2b(modulus, "unique.rsa")?;
            }
            KeyParams::Ecc { curve, kdf, x, y } => {
                w.u16(*curve);
                write_scheme(&mut w, kdf.as_ref());
                w.tpm2b(x, "unique.ecc.x")?.tpm2b(y, "unique.ecc.y")?;
            }
        }
        Ok(w.into_vec())
    }
}

/// Coordinate size of the curves this code handles.
pub(crate) fn coordinate_len(curve_id: u16) -> Option<usize> {
    match curve_id {
        curve::NIST_P256 => Some(32),
        curve::NIST_P384 => Some(48),
        _ => None,
    }
}

/// Left-pads a coordinate to `len` bytes; rejects longer values.
pub(crate) fn pad_coordinate(v: &[u8], len: usize) -> Result<Vec<u8>, PublicError> {
    let pad = len
        .checked_sub(v.len())
        .ok_or(PublicError::InvalidKey("ECC coordinate too long"))?;
    let mut out = vec![0u8; pad];
    out.extend_from_slice(v);
    Ok(out)
}

/// Big-endian integer bytes without leading zeros (as aws-lc-rs wants them).
pub(crate) fn strip_zeros(v: &[u8]) -> &[u8] {
    let first = v.iter().position(|b| *b != 0).unwrap_or(v.len());
    v.get(first..).unwrap_or_default()
}

impl TpmtPublic {
    /// Parses a TPMT_PUBLIC that fills `bytes` exactly.
    pub fn parse(bytes: &[u8]) -> Result<Self, PublicError> {
        if bytes.len() > MAX_PUBLIC {
            return Err(PublicError::TooLarge);
        }
        let mut r = Reader::new(bytes);
        let area = PublicArea::read(&mut r)?;
        r.finish("TPMT_PUBLIC")?;
        Ok(Self {
            raw: bytes.to_vec(),
            area,
        })
    }

    /// Parses a TPM2B_PUBLIC (u16 size, then the TPMT_PUBLIC), exactly.
    pub fn parse_tpm2b(bytes: &[u8]) -> Result<Self, PublicError> {
        let mut r = Reader::new(bytes);
        let inner = r.tpm2b(MAX_PUBLIC, "TPM2B_PUBLIC")?;
        r.finish("TPM2B_PUBLIC")?;
        Self::parse(inner)
    }

    /// The exact marshalled TPMT_PUBLIC.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    pub fn area(&self) -> &PublicArea {
        &self.area
    }

    pub fn name_alg(&self) -> Result<HashAlg, PublicError> {
        HashAlg::from_id(self.area.name_alg).ok_or(PublicError::UnsupportedAlg {
            what: "nameAlg",
            alg: self.area.name_alg,
        })
    }

    /// The object Name: nameAlg (2 bytes) || H_nameAlg(TPMT_PUBLIC).
    pub fn name(&self) -> Result<Vec<u8>, PublicError> {
        let h = self.name_alg()?;
        let mut name = h.id().to_be_bytes().to_vec();
        name.extend_from_slice(&h.digest(&self.raw));
        Ok(name)
    }

    /// RSA modulus and exponent as aws-lc-rs public key components.
    pub(crate) fn rsa_components(&self) -> Result<PublicKeyComponents<Vec<u8>>, PublicError> {
        let KeyParams::Rsa {
            exponent, modulus, ..
        } = &self.area.key
        else {
            return Err(PublicError::InvalidKey("not an RSA key"));
        };
        let e = if *exponent == 0 { 65537 } else { *exponent };
        let n = strip_zeros(modulus);
        if n.is_empty() {
            return Err(PublicError::InvalidKey("empty RSA modulus"));
        }
        Ok(PublicKeyComponents {
            n: n.to_vec(),
            e: strip_zeros(&e.to_be_bytes()).to_vec(),
        })
    }

    /// The uncompressed SEC1 point `04 || x || y` and the curve ID.
    pub(crate) fn ecc_point(&self) -> Result<(u16, Vec<u8>), PublicError> {
        let KeyParams::Ecc { curve, x, y, .. } = &self.area.key else {
            return Err(PublicError::InvalidKey("not an ECC key"));
        };
        let len = coordinate_len(*curve).ok_or(PublicError::UnsupportedAlg {
            what: "curve",
            alg: *curve,
        })?;
        let mut point = vec![0x04];
        point.extend(pad_coordinate(x, len)?);
        point.extend(pad_coordinate(y, len)?);
        Ok((*curve, point))
    }

    /// The key as a DER SubjectPublicKeyInfo (rsaEncryption or
    /// id-ecPublicKey with a named curve), for comparison with a certificate.
    pub fn spki_der(&self) -> Result<Vec<u8>, PublicError> {
        if let KeyParams::Rsa { .. } = self.area.key {
            let der = self
                .rsa_components()?
                .as_der()
                .map_err(|_| PublicError::InvalidKey("RSA key rejected"))?;
            return Ok(der.as_ref().to_vec());
        }
        let (curve_id, point) = self.ecc_point()?;
        // SEQUENCE { SEQUENCE { id-ecPublicKey, curve OID }, BIT STRING }.
        let prefix: &[u8] = match curve_id {
            curve::NIST_P256 => &[
                0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
                0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
            ],
            _ => &[
                0x30, 0x76, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
                0x05, 0x2b, 0x81, 0x04, 0x00, 0x22, 0x03, 0x62, 0x00,
            ],
        };
        Ok([prefix, &point].concat())
    }
}

mod ak;
mod ek;
pub use ak::AkPublic;
pub use ek::EkTemplate;

#[cfg(test)]
mod tests;
