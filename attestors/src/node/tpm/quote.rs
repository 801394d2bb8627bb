//! TPM2_Quote verification (TPM.md §1.4 items 8-11): the AK signature over
//! the raw TPMS_ATTEST first, then magic/type, nonce, PCR selection,
//! pcrDigest and clock safety. Counter monotonicity needs state the caller
//! keeps, so the parsed clockInfo is returned with [`ClockInfo::follows`].

use subtle::ConstantTimeEq;

use super::attest::{Attest, AttestError, ClockInfo, PcrSelection, MAX_ATTEST};
use super::public::AkPublic;
use super::signature::{self, SignatureError, TpmtSignature};

/// Nonce bounds: at least 128 bits; at most TPM2B_DATA's 64-byte digest.
pub const MIN_NONCE: usize = 16;
pub const MAX_NONCE: usize = 64;

/// A quote that must not be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuoteError {
    #[error("quote signature: {0}")]
    Signature(#[from] SignatureError),
    #[error("quote: {0}")]
    Attest(#[from] AttestError),
    #[error("expected nonce must be {MIN_NONCE}..={MAX_NONCE} bytes")]
    NonceLength,
    #[error("quote extraData is not the nonce")]
    Nonce,
    #[error("quoted PCR selection is not the expected one")]
    Selection,
    #[error("{got} PCR values supplied, selection has {expected}")]
    PcrCount { expected: usize, got: usize },
    #[error("PCR value {index} has the wrong length for its bank")]
    PcrLength { index: usize },
    #[error("pcrDigest does not match the supplied PCR values")]
    PcrDigest,
    #[error("clockInfo.safe is not set")]
    ClockNotSafe,
    #[error("clock went backwards: {0}")]
    ClockRollback(&'static str),
}

/// Verifies a quote made by `ak` and returns it parsed.
///
/// `pcr_values` are the PCR values the agent reported, in selection order
/// (banks in order, PCRs ascending, see [`PcrSelection::iter`]); they are
/// proven by `pcrDigest = H_ak(concatenation)`, where H is the AK's signing
/// hash, not the bank hash.
pub fn verify_quote(
    ak: &AkPublic,
    attest: &[u8],
    signature: &[u8],
    nonce: &[u8],
    selection: &PcrSelection,
    pcr_values: &[impl AsRef<[u8]>],
) -> Result<Attest, QuoteError> {
    if !(MIN_NONCE..=MAX_NONCE).contains(&nonce.len()) {
        return Err(QuoteError::NonceLength);
    }
    if attest.len() > MAX_ATTEST {
        return Err(AttestError::TooLarge.into());
    }
    let sig = TpmtSignature::parse(signature)?;
    signature::verify(ak, attest, &sig)?;
    let quote = Attest::parse(attest)?;
    if !bool::from(quote.extra_data.as_slice().ct_eq(nonce)) {
        return Err(QuoteError::Nonce);
    }
    if quote.pcr_selection != *selection {
        return Err(QuoteError::Selection);
    }
    let expected = selection.iter().count();
    if pcr_values.len() != expected {
        return Err(QuoteError::PcrCount {
            expected,
            got: pcr_values.len(),
        });
    }
    let (_, hash) = ak.scheme();
    let mut ctx = aws_lc_rs::digest::Context::new(hash.digest_alg());
    for (index, ((bank, _), value)) in selection.iter().zip(pcr_values).enumerate() {
        if value.as_ref().len() != bank.size() {
            return Err(QuoteError::PcrLength { index });
        }
        ctx.update(value.as_ref());
    }
    if !bool::from(ctx.finish().as_ref().ct_eq(&quote.pcr_digest)) {
        return Err(QuoteError::PcrDigest);
    }
    if !quote.clock_info.safe {
        return Err(QuoteError::ClockNotSafe);
    }
    Ok(quote)
}

impl ClockInfo {
    /// Checks that this quote's clock comes after `previous` from the same
    /// AK: resetCount and restartCount never decrease; with both unchanged
    /// the clock must advance. A higher resetCount means a reboot, for which
    /// the caller should require a fresh event log.
    pub fn follows(&self, previous: &ClockInfo) -> Result<(), QuoteError> {
        let now = (self.reset_count, self.restart_count);
        let then = (previous.reset_count, previous.restart_count);
        if self.reset_count < previous.reset_count {
            return Err(QuoteError::ClockRollback("resetCount decreased"));
        }
        if self.reset_count == previous.reset_count && self.restart_count < previous.restart_count {
            return Err(QuoteError::ClockRollback("restartCount decreased"));
        }
        if now == then && self.clock <= previous.clock {
            return Err(QuoteError::ClockRollback("clock did not advance"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
