//! Agent half of the `tpm` node attestor: EK + AK + event log as evidence,
//! then ActivateCredential and a quote as the answer to the challenge.

use super::ops::{PcrBank, PcrSelection, TpmOps};
use crate::node::{EvidenceError, NodeEvidence};
use prost::Message;
use std::io::Read;
use std::path::PathBuf;
use tessera_proto::tpm as pb;

/// Method name on the wire and in configs.
pub const METHOD: &str = "tpm";
/// Largest event log sent; real logs are tens of KiB.
pub const MAX_EVENT_LOG: u64 = 4 * 1024 * 1024;
/// TPM_ALG_ID values of the banks the authority may ask for.
pub const ALG_SHA1: u32 = 0x0004;
pub const ALG_SHA256: u32 = 0x000B;
pub const ALG_SHA384: u32 = 0x000C;

pub struct TpmEvidence<T> {
    /// The TPM: `device::Tpm` in process, or the agent's helper client.
    pub tpm: T,
    /// Where the AK blob lives (the agent's data_dir).
    pub key_dir: PathBuf,
    pub event_log_path: PathBuf,
}

fn failed(e: impl std::fmt::Display) -> EvidenceError {
    EvidenceError::Failed(e.to_string())
}

impl<T> TpmEvidence<T> {
    fn read_event_log(&self) -> Result<Vec<u8>, EvidenceError> {
        let f = std::fs::File::open(&self.event_log_path)
            .map_err(|e| failed(format!("event log {}: {e}", self.event_log_path.display())))?;
        let mut buf = Vec::new();
        f.take(MAX_EVENT_LOG + 1)
            .read_to_end(&mut buf)
            .map_err(|e| failed(format!("event log {}: {e}", self.event_log_path.display())))?;
        if buf.len() as u64 > MAX_EVENT_LOG {
            return Err(failed(format!(
                "event log {}: larger than {MAX_EVENT_LOG} bytes",
                self.event_log_path.display()
            )));
        }
        Ok(buf)
    }
}

/// The PCR selection the authority asked for, checked before the TPM sees it.
pub fn selection(bank: u32, pcrs: &[u32]) -> Result<PcrSelection, EvidenceError> {
    let bank = match bank {
        ALG_SHA1 => PcrBank::Sha1,
        ALG_SHA256 => PcrBank::Sha256,
        ALG_SHA384 => PcrBank::Sha384,
        other => {
            return Err(failed(format!(
                "challenge asks for unknown PCR bank {other:#06x}"
            )))
        }
    };
    if pcrs.is_empty() || pcrs.len() > 24 || pcrs.iter().any(|p| *p >= 24) {
        return Err(failed("challenge asks for invalid PCRs"));
    }
    Ok(PcrSelection {
        bank,
        pcrs: pcrs.to_vec(),
    })
}

#[async_trait::async_trait]
impl<T: TpmOps> NodeEvidence for TpmEvidence<T> {
    fn method(&self) -> &'static str {
        METHOD
    }

    async fn evidence(&self) -> Result<Vec<u8>, EvidenceError> {
        let ek = self.tpm.endorsement().await.map_err(failed)?;
        let ak = self
            .tpm
            .attestation_key(&self.key_dir)
            .await
            .map_err(failed)?;
        let event_log = self.read_event_log()?;
        Ok(pb::Evidence {
            ek_cert: ek.ek_cert.unwrap_or_default(),
            ek_public: ek.ek_public,
            ak_public: ak.public,
            event_log,
        }
        .encode_to_vec())
    }

    fn reattest_on_renewal(&self) -> bool {
        true
    }

    async fn respond(&self, challenge: &[u8]) -> Result<Vec<u8>, EvidenceError> {
        let c = pb::Challenge::decode(challenge).map_err(|e| failed(format!("challenge: {e}")))?;
        let sel = selection(c.pcr_bank, &c.pcrs)?;
        let secret = self
            .tpm
            .activate_credential(&self.key_dir, &c.credential_blob, &c.encrypted_secret)
            .await
            .map_err(failed)?;
        let q = self
            .tpm
            .quote(&self.key_dir, &c.nonce, &sel)
            .await
            .map_err(failed)?;
        let pcr_values = q
            .pcr_values
            .into_iter()
            .map(|(index, digest)| pb::PcrValue { index, digest })
            .collect();
        Ok(pb::ChallengeResponse {
            secret,
            quote: q.attest,
            signature: q.signature,
            pcr_values,
        }
        .encode_to_vec())
    }
}
