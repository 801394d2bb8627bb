//! TPM2_Quote with the AK over a PCR selection, plus the PCR values it covers.

use std::path::Path;

use sha2::{Digest as _, Sha256};
use tss_esapi::abstraction::pcr::read_all;
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    AttestInfo, Data, PcrSelectionList, PcrSelectionListBuilder, PcrSlot, SignatureScheme,
};
use tss_esapi::traits::Marshall;

use super::context::{tss, State};
use super::{ak, PcrBank, PcrSelection, Quote, TpmError};

/// rust-keylime's bound: PCRs extended between Quote and PCR_Read force a retry.
const ATTEMPTS: usize = 5;
/// TPM2B_DATA limit for qualifyingData.
pub const MAX_NONCE: usize = 64;

pub(crate) fn quote(
    state: &mut State,
    dir: &Path,
    nonce: &[u8],
    selection: &PcrSelection,
) -> Result<Quote, TpmError> {
    if nonce.len() > MAX_NONCE {
        return Err(TpmError::InvalidInput(format!(
            "nonce is {} bytes, at most {MAX_NONCE}",
            nonce.len()
        )));
    }
    let data = Data::try_from(nonce.to_vec())
        .map_err(|e| TpmError::InvalidInput(format!("nonce: {e}")))?;
    let (indices, list) = selection_list(selection)?;
    let bank = hash_alg(selection.bank);
    let err = |what: &str, e: tss_esapi::Error| TpmError::Quote(format!("{what}: {}", tss(&e)));
    ak::with_ak(state, dir, |state, ak, _| {
        for attempt in 1..=ATTEMPTS {
            // The AK has userWithAuth and an empty authValue.
            let (attest, signature) = state
                .ctx
                .execute_with_session(Some(AuthSession::Password), |c| {
                    c.quote(ak, data.clone(), SignatureScheme::Null, list.clone())
                })
                .map_err(|e| err("Quote", e))?;
            let pcrs = read_all(&mut state.ctx, list.clone()).map_err(|e| err("PCR_Read", e))?;
            let read = pcrs.pcr_bank(bank).ok_or_else(|| {
                TpmError::Quote("PCR_Read returned no values for the bank".into())
            })?;
            let mut pcr_values = Vec::with_capacity(indices.len());
            let mut hasher = Sha256::new();
            for &(index, slot) in &indices {
                let value = read.get_digest(slot).ok_or_else(|| {
                    TpmError::Quote(format!("PCR {index} not returned (bank inactive?)"))
                })?;
                hasher.update(value.value());
                pcr_values.push((index, value.value().to_vec()));
            }
            // pcrDigest uses the AK's signing hash, which is always SHA-256 here.
            let AttestInfo::Quote { info } = attest.attested() else {
                return Err(TpmError::Quote(
                    "TPM returned a non-quote attestation".into(),
                ));
            };
            if info.pcr_digest().value() == hasher.finalize().as_slice() {
                return Ok(Quote {
                    attest: attest
                        .marshall()
                        .map_err(|e| err("marshal TPMS_ATTEST", e))?,
                    signature: signature
                        .marshall()
                        .map_err(|e| err("marshal TPMT_SIGNATURE", e))?,
                    pcr_values,
                });
            }
            tracing::debug!(
                attempt,
                "PCRs changed between TPM2_Quote and PCR_Read; retrying"
            );
        }
        Err(TpmError::Quote(format!(
            "PCRs kept changing during {ATTEMPTS} quote attempts"
        )))
    })
}

/// Sorted, de-duplicated PCR indices with their slots, and the TPM selection.
fn selection_list(
    selection: &PcrSelection,
) -> Result<(Vec<(u32, PcrSlot)>, PcrSelectionList), TpmError> {
    let mut pcrs = selection.pcrs.clone();
    pcrs.sort_unstable();
    pcrs.dedup();
    if pcrs.is_empty() {
        return Err(TpmError::InvalidInput("empty PCR selection".into()));
    }
    let indices = pcrs
        .into_iter()
        .map(|i| {
            let slot = 1u32
                .checked_shl(i)
                .filter(|_| i < 24)
                .and_then(|bit| PcrSlot::try_from(bit).ok());
            slot.map(|s| (i, s))
                .ok_or_else(|| TpmError::InvalidInput(format!("PCR {i} out of range 0-23")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let slots: Vec<PcrSlot> = indices.iter().map(|&(_, s)| s).collect();
    let list = PcrSelectionListBuilder::new()
        .with_selection(hash_alg(selection.bank), &slots)
        .build()
        .map_err(|e| TpmError::InvalidInput(format!("PCR selection: {e}")))?;
    Ok((indices, list))
}

fn hash_alg(bank: PcrBank) -> HashingAlgorithm {
    match bank {
        PcrBank::Sha1 => HashingAlgorithm::Sha1,
        PcrBank::Sha256 => HashingAlgorithm::Sha256,
        PcrBank::Sha384 => HashingAlgorithm::Sha384,
    }
}
