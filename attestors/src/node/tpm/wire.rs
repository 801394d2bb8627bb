//! Bounds-checked big-endian reader and writer for TPM 2.0 marshalled
//! structures (TPM 2.0 Part 2), plus the algorithm identifiers shared by the
//! structure modules. Every input here comes from a remote agent: reads never
//! panic, every sized buffer has a maximum, and callers reject trailing bytes.

use aws_lc_rs::{digest, hmac};

/// A malformed marshalled structure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    #[error("{what}: truncated ({needed} bytes needed, {available} left)")]
    Truncated {
        what: &'static str,
        needed: usize,
        available: usize,
    },
    #[error("{what}: size {size} exceeds the maximum {max}")]
    TooLarge {
        what: &'static str,
        size: usize,
        max: usize,
    },
    #[error("{what}: {count} trailing bytes")]
    TrailingBytes { what: &'static str, count: usize },
}

/// TPM_ALG_ID values used here (TPM 2.0 Part 2, Table 9).
pub mod alg {
    pub const RSA: u16 = 0x0001;
    pub const SHA1: u16 = 0x0004;
    pub const AES: u16 = 0x0006;
    pub const KEYEDHASH: u16 = 0x0008;
    pub const SHA256: u16 = 0x000B;
    pub const SHA384: u16 = 0x000C;
    pub const SHA512: u16 = 0x000D;
    pub const NULL: u16 = 0x0010;
    pub const SM4: u16 = 0x0013;
    pub const RSASSA: u16 = 0x0014;
    pub const RSAES: u16 = 0x0015;
    pub const RSAPSS: u16 = 0x0016;
    pub const OAEP: u16 = 0x0017;
    pub const ECDSA: u16 = 0x0018;
    pub const ECDH: u16 = 0x0019;
    pub const ECDAA: u16 = 0x001A;
    pub const SM2: u16 = 0x001B;
    pub const ECSCHNORR: u16 = 0x001C;
    pub const ECMQV: u16 = 0x001D;
    pub const MGF1: u16 = 0x0007;
    pub const KDF1_SP800_56A: u16 = 0x0020;
    pub const KDF2: u16 = 0x0021;
    pub const KDF1_SP800_108: u16 = 0x0022;
    pub const ECC: u16 = 0x0023;
    pub const SYMCIPHER: u16 = 0x0025;
    pub const CAMELLIA: u16 = 0x0026;
    pub const CFB: u16 = 0x0043;
}

/// TPM_ECC_CURVE values (TPM 2.0 Part 2, Table 10).
pub mod curve {
    pub const NIST_P256: u16 = 0x0003;
    pub const NIST_P384: u16 = 0x0004;
}

/// The hash algorithms this code can compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HashAlg {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlg {
    pub fn from_id(id: u16) -> Option<Self> {
        match id {
            alg::SHA1 => Some(Self::Sha1),
            alg::SHA256 => Some(Self::Sha256),
            alg::SHA384 => Some(Self::Sha384),
            alg::SHA512 => Some(Self::Sha512),
            _ => None,
        }
    }

    pub fn id(self) -> u16 {
        match self {
            Self::Sha1 => alg::SHA1,
            Self::Sha256 => alg::SHA256,
            Self::Sha384 => alg::SHA384,
            Self::Sha512 => alg::SHA512,
        }
    }

    /// Digest size in bytes.
    pub fn size(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    pub fn digest_alg(self) -> &'static digest::Algorithm {
        match self {
            Self::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            Self::Sha256 => &digest::SHA256,
            Self::Sha384 => &digest::SHA384,
            Self::Sha512 => &digest::SHA512,
        }
    }

    pub fn hmac_alg(self) -> hmac::Algorithm {
        match self {
            Self::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            Self::Sha256 => hmac::HMAC_SHA256,
            Self::Sha384 => hmac::HMAC_SHA384,
            Self::Sha512 => hmac::HMAC_SHA512,
        }
    }

    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        digest::digest(self.digest_alg(), data).as_ref().to_vec()
    }
}

/// Largest TPMU_HA (SHA-512): the bound of TPM2B_DIGEST and TPM2B_NONCE.
pub const MAX_DIGEST: usize = 64;
/// sizeof(TPMT_HA): the bound of TPM2B_DATA and (with a handle) TPM2B_NAME.
pub const MAX_DATA: usize = 2 + MAX_DIGEST;
/// TPM2B_NAME: sizeof(TPMU_NAME) = sizeof(TPMT_HA).
pub const MAX_NAME: usize = 2 + MAX_DIGEST;
/// MAX_RSA_KEY_BYTES for RSA-4096.
pub const MAX_RSA_KEY_BYTES: usize = 512;
/// MAX_ECC_KEY_BYTES for P-521.
pub const MAX_ECC_KEY_BYTES: usize = 66;

/// A cursor over untrusted bytes. All reads are checked.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        let truncated = WireError::Truncated {
            what,
            needed: n,
            available: self.remaining(),
        };
        let end = self.pos.checked_add(n).ok_or(truncated.clone())?;
        let out = self.buf.get(self.pos..end).ok_or(truncated)?;
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N, what)?);
        Ok(out)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(u8::from_be_bytes(self.array(what)?))
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    pub fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    /// A TPM2B: u16 size then that many bytes, at most `max`.
    pub fn tpm2b(&mut self, max: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        let size = usize::from(self.u16(what)?);
        if size > max {
            return Err(WireError::TooLarge { what, size, max });
        }
        self.bytes(size, what)
    }

    /// The bytes consumed since `start` (a value of [`Self::position`]).
    pub fn since(&self, start: usize) -> &'a [u8] {
        self.buf.get(start..self.pos).unwrap_or_default()
    }

    /// Fails unless every byte was consumed.
    pub fn finish(&self, what: &'static str) -> Result<(), WireError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(WireError::TrailingBytes { what, count }),
        }
    }
}

/// Builds marshalled structures (for outputs such as MakeCredential and tests).
#[derive(Debug, Default, Clone)]
pub struct Writer(Vec<u8>);

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }

    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.0.extend_from_slice(v);
        self
    }

    /// Appends a TPM2B; fails if `v` does not fit the u16 size field.
    pub fn tpm2b(&mut self, v: &[u8], what: &'static str) -> Result<&mut Self, WireError> {
        let size = u16::try_from(v.len()).map_err(|_| WireError::TooLarge {
            what,
            size: v.len(),
            max: usize::from(u16::MAX),
        })?;
        Ok(self.u16(size).bytes(v))
    }

    pub fn into_vec(self) -> Vec<u8> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_reads_big_endian_and_bounds() {
        let data = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
        let mut r = Reader::new(&data);
        assert_eq!(r.u8("a"), Ok(1));
        assert_eq!(r.u16("b"), Ok(0x0203));
        assert_eq!(r.u32("c"), Ok(0x0405_0607));
        assert_eq!(r.u64("d"), Ok(0x0809_0a0b_0c0d_0e0f));
        assert!(matches!(r.u8("e"), Err(WireError::Truncated { .. })));
        assert_eq!(r.finish("x"), Ok(()));
        assert_eq!(r.since(1), &data[1..]);
    }

    #[test]
    fn tpm2b_enforces_max_and_length() {
        let mut r = Reader::new(&[0, 3, 1, 2, 3, 0xff]);
        assert_eq!(r.tpm2b(3, "t"), Ok(&[1u8, 2, 3][..]));
        assert_eq!(
            r.finish("t"),
            Err(WireError::TrailingBytes {
                what: "t",
                count: 1
            })
        );
        let mut r = Reader::new(&[0, 4, 1, 2, 3, 4]);
        assert!(matches!(r.tpm2b(3, "t"), Err(WireError::TooLarge { .. })));
        let mut r = Reader::new(&[0xff, 0xff, 1]);
        assert!(matches!(
            r.tpm2b(usize::MAX, "t"),
            Err(WireError::Truncated { .. })
        ));
    }

    #[test]
    fn bytes_never_overflows() {
        let mut r = Reader::new(&[1, 2]);
        r.u8("a").ok();
        assert!(r.bytes(usize::MAX, "big").is_err());
        assert_eq!(r.position(), 1);
    }

    #[test]
    fn writer_round_trips() {
        let mut w = Writer::new();
        w.u16(0x0102).u32(3);
        w.tpm2b(&[9, 9], "t").ok();
        assert_eq!(w.into_vec(), vec![1, 2, 0, 0, 0, 3, 0, 2, 9, 9]);
        assert!(Writer::new().tpm2b(&vec![0; 70_000], "t").is_err());
    }
}
