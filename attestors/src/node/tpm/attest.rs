//! TPMS_ATTEST for TPM2_Quote (TPM 2.0 Part 2 §10.12): magic, type,
//! qualifiedSigner, extraData, clockInfo, firmwareVersion and TPMS_QUOTE_INFO.

use super::wire::{HashAlg, Reader, WireError, Writer, MAX_DATA, MAX_DIGEST, MAX_NAME};

/// TPM_GENERATED_VALUE.
pub const TPM_GENERATED: u32 = 0xff54_4347;
/// TPM_ST_ATTEST_QUOTE.
pub const ST_ATTEST_QUOTE: u16 = 0x8018;
/// Cap on a marshalled TPMS_ATTEST for a quote (a full 16-bank selection
/// with 64-byte names and data stays well below this).
pub const MAX_ATTEST: usize = 1024;
/// Cap on banks in a TPML_PCR_SELECTION (HASH_COUNT in practice is <= 5).
pub const MAX_BANKS: u32 = 16;
/// Cap on sizeofSelect: 4 bytes select PCRs 0-31 (PC Client TPMs have 24).
pub const MAX_SELECT: u8 = 4;

/// A quote that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttestError {
    #[error("attest: {0}")]
    Wire(#[from] WireError),
    #[error("attest larger than {MAX_ATTEST} bytes")]
    TooLarge,
    #[error("attest magic {0:#010x} is not TPM_GENERATED_VALUE")]
    BadMagic(u32),
    #[error("attest type {0:#06x} is not TPM_ST_ATTEST_QUOTE")]
    NotAQuote(u16),
    #[error("clockInfo.safe is {0}, not a TPMI_YES_NO")]
    BadSafe(u8),
    #[error("PCR selection has {0} banks (max {MAX_BANKS})")]
    TooManyBanks(u32),
    #[error("PCR selection uses unsupported hash {0:#06x}")]
    UnsupportedBank(u16),
    #[error("PCR selection sizeofSelect {0} exceeds {MAX_SELECT}")]
    SelectSize(u8),
}

/// TPMS_CLOCK_INFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockInfo {
    pub clock: u64,
    pub reset_count: u32,
    pub restart_count: u32,
    pub safe: bool,
}

/// One TPMS_PCR_SELECTION: a bank and a bitmap of PCRs (bit n = PCR n).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcrBank {
    pub hash: HashAlg,
    pub pcrs: u32,
}

/// A TPML_PCR_SELECTION, in wire order. Equality is on (bank, PCR set), so
/// the same PCRs selected with 3 or 4 bitmap bytes compare equal.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PcrSelection(pub Vec<PcrBank>);

impl PcrSelection {
    /// A one-bank selection of `pcrs` (each < 32; others are ignored).
    pub fn single(hash: HashAlg, pcrs: &[u8]) -> Self {
        let mask = pcrs
            .iter()
            .filter(|p| **p < 32)
            .fold(0u32, |m, p| m | (1 << p));
        Self(vec![PcrBank { hash, pcrs: mask }])
    }

    /// (bank, PCR index) pairs in selection order: banks in list order,
    /// PCRs ascending. This is the order of the values hashed into pcrDigest.
    pub fn iter(&self) -> impl Iterator<Item = (HashAlg, u8)> + '_ {
        self.0.iter().flat_map(|b| {
            (0u8..32)
                .filter(move |i| (b.pcrs >> i) & 1 == 1)
                .map(move |i| (b.hash, i))
        })
    }

    fn read(r: &mut Reader) -> Result<Self, AttestError> {
        let count = r.u32("TPML_PCR_SELECTION.count")?;
        if count > MAX_BANKS {
            return Err(AttestError::TooManyBanks(count));
        }
        let mut banks = Vec::new();
        for _ in 0..count {
            let id = r.u16("TPMS_PCR_SELECTION.hash")?;
            let hash = HashAlg::from_id(id).ok_or(AttestError::UnsupportedBank(id))?;
            let size = r.u8("sizeofSelect")?;
            if size > MAX_SELECT {
                return Err(AttestError::SelectSize(size));
            }
            let bitmap = r.bytes(usize::from(size), "pcrSelect")?;
            let pcrs = bitmap
                .iter()
                .enumerate()
                .fold(0u32, |m, (i, b)| m | (u32::from(*b) << (8 * i)));
            banks.push(PcrBank { hash, pcrs });
        }
        Ok(Self(banks))
    }

    /// Marshals with the smallest sizeofSelect >= 3 (PCR_SELECT_MIN).
    pub fn write(&self, w: &mut Writer) {
        w.u32(u32::try_from(self.0.len()).unwrap_or(u32::MAX));
        for b in &self.0 {
            let bytes = b.pcrs.to_le_bytes();
            let size: u8 = if b.pcrs < 1 << 24 { 3 } else { 4 };
            w.u16(b.hash.id()).u8(size);
            w.bytes(bytes.get(..usize::from(size)).unwrap_or(&bytes));
        }
    }
}

/// A parsed quote TPMS_ATTEST. Parsing checks the magic and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attest {
    pub qualified_signer: Vec<u8>,
    pub extra_data: Vec<u8>,
    pub clock_info: ClockInfo,
    pub firmware_version: u64,
    pub pcr_selection: PcrSelection,
    pub pcr_digest: Vec<u8>,
}

impl Attest {
    /// Parses a quote TPMS_ATTEST that fills `bytes` exactly.
    pub fn parse(bytes: &[u8]) -> Result<Self, AttestError> {
        if bytes.len() > MAX_ATTEST {
            return Err(AttestError::TooLarge);
        }
        let mut r = Reader::new(bytes);
        let magic = r.u32("magic")?;
        if magic != TPM_GENERATED {
            return Err(AttestError::BadMagic(magic));
        }
        let ty = r.u16("type")?;
        if ty != ST_ATTEST_QUOTE {
            return Err(AttestError::NotAQuote(ty));
        }
        let qualified_signer = r.tpm2b(MAX_NAME, "qualifiedSigner")?.to_vec();
        let extra_data = r.tpm2b(MAX_DATA, "extraData")?.to_vec();
        let clock = r.u64("clock")?;
        let reset_count = r.u32("resetCount")?;
        let restart_count = r.u32("restartCount")?;
        let safe = match r.u8("safe")? {
            0 => false,
            1 => true,
            other => return Err(AttestError::BadSafe(other)),
        };
        let firmware_version = r.u64("firmwareVersion")?;
        let pcr_selection = PcrSelection::read(&mut r)?;
        let pcr_digest = r.tpm2b(MAX_DIGEST, "pcrDigest")?.to_vec();
        r.finish("TPMS_ATTEST")?;
        Ok(Self {
            qualified_signer,
            extra_data,
            clock_info: ClockInfo {
                clock,
                reset_count,
                restart_count,
                safe,
            },
            firmware_version,
            pcr_selection,
            pcr_digest,
        })
    }

    /// Marshals as a quote TPMS_ATTEST (used to build test vectors).
    pub fn marshal(&self) -> Result<Vec<u8>, AttestError> {
        let mut w = Writer::new();
        w.u32(TPM_GENERATED).u16(ST_ATTEST_QUOTE);
        w.tpm2b(&self.qualified_signer, "qualifiedSigner")?;
        w.tpm2b(&self.extra_data, "extraData")?;
        let c = &self.clock_info;
        w.u64(c.clock).u32(c.reset_count).u32(c.restart_count);
        w.u8(u8::from(c.safe)).u64(self.firmware_version);
        self.pcr_selection.write(&mut w);
        w.tpm2b(&self.pcr_digest, "pcrDigest")?;
        Ok(w.into_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "fixtures/swtpm-sample/quote.tpms_attest";

    #[test]
    fn parses_swtpm_quote_and_round_trips() {
        let raw = crate::testdata::read(SAMPLE);
        let a = Attest::parse(&raw).expect("parse");
        assert_eq!(a.extra_data, vec![0x5a; 32]);
        assert_eq!(
            a.pcr_selection,
            PcrSelection::single(HashAlg::Sha256, &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14])
        );
        assert!(a.clock_info.safe);
        assert_eq!(a.qualified_signer.len(), 34);
        assert_eq!(a.pcr_digest.len(), 32);
        assert_eq!(a.marshal().expect("marshal"), raw);
        assert_eq!(a.pcr_selection.iter().count(), 11);
    }

    #[test]
    fn rejects_bad_magic_type_safe_and_trailing() {
        let raw = crate::testdata::read(SAMPLE);
        let mut m = raw.clone();
        m[0] ^= 1;
        assert_eq!(Attest::parse(&m), Err(AttestError::BadMagic(0xfe54_4347)));
        let mut t = raw.clone();
        t[5] = 0x17; // TPM_ST_ATTEST_CERTIFY
        assert_eq!(Attest::parse(&t), Err(AttestError::NotAQuote(0x8017)));
        // safe sits after magic(4) type(2) signer(2+34) extra(2+32) clock(8) counts(8).
        let safe_at = 4 + 2 + 36 + 34 + 16;
        let mut s = raw.clone();
        s[safe_at] = 2;
        assert_eq!(Attest::parse(&s), Err(AttestError::BadSafe(2)));
        let mut long = raw.clone();
        long.push(0);
        assert!(matches!(
            Attest::parse(&long),
            Err(AttestError::Wire(WireError::TrailingBytes { .. }))
        ));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let raw = crate::testdata::read(SAMPLE);
        for n in 0..raw.len() {
            assert!(Attest::parse(&raw[..n]).is_err(), "prefix {n}");
        }
        assert_eq!(Attest::parse(&[0; 2000]), Err(AttestError::TooLarge));
    }
}
