//! Replay: PCR = H(PCR || digest) per bank, from each PCR's reset value.

use std::collections::BTreeMap;

use sha1::Sha1;
use sha2::{Digest, Sha256, Sha384, Sha512};

use super::events::event_type::{EV_EFI_HCRTM_EVENT, EV_NO_ACTION};
use super::{Event, EventLog, EventLogError, HashAlg, PCR_COUNT};

/// `alg(data)`, or None for the algorithms without an implementation here
/// (SM3, SHA-3).
pub fn digest(alg: HashAlg, data: &[u8]) -> Option<Vec<u8>> {
    Some(match alg {
        HashAlg::Sha1 => Sha1::digest(data).to_vec(),
        HashAlg::Sha256 => Sha256::digest(data).to_vec(),
        HashAlg::Sha384 => Sha384::digest(data).to_vec(),
        HashAlg::Sha512 => Sha512::digest(data).to_vec(),
        _ => return None,
    })
}

impl EventLog {
    /// The value `pcr` holds before any extend.
    pub fn initial_value(&self, bank: HashAlg, pcr: u32) -> Vec<u8> {
        let mut v = vec![0u8; bank.size()];
        let last = match pcr {
            // H-CRTM beats StartupLocality: the TPM sets 4 at _TPM_Hash_End.
            0 if self.has_hcrtm() => 4,
            0 => self.startup_locality.unwrap_or(0),
            // DRTM PCRs reset to all ones at TPM2_Startup.
            17..=22 => 0xff,
            _ => 0,
        };
        if last == 0xff {
            v.fill(0xff);
        } else if let Some(b) = v.last_mut() {
            *b = last;
        }
        v
    }

    fn has_hcrtm(&self) -> bool {
        self.events
            .iter()
            .any(|e| e.pcr == 0 && e.event_type == EV_EFI_HCRTM_EVENT)
    }

    /// Replays one bank: the PCRs the log extends, each with its final value.
    pub fn replay_bank(&self, bank: HashAlg) -> Result<BTreeMap<u32, Vec<u8>>, EventLogError> {
        if !self.banks.contains(&bank) {
            return Err(EventLogError::NoSuchBank(bank));
        }
        let unsupported = EventLogError::UnsupportedAlgorithm(bank);
        digest(bank, b"").ok_or(unsupported.clone())?;
        let mut pcrs: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
        // EV_NO_ACTION is informational and never reaches the TPM.
        for e in self.events.iter().filter(|e| e.event_type != EV_NO_ACTION) {
            let d = e.digest(bank).ok_or(EventLogError::MissingDigest {
                index: e.index,
                bank,
            })?;
            let pcr = pcrs
                .entry(e.pcr)
                .or_insert_with(|| self.initial_value(bank, e.pcr));
            pcr.extend_from_slice(d);
            *pcr = digest(bank, pcr).ok_or(unsupported.clone())?;
        }
        Ok(pcrs)
    }

    /// Replays every bank this crate can hash; SM3 and SHA-3 banks are
    /// skipped (logged), not reported as errors.
    pub fn replay(&self) -> Result<BTreeMap<HashAlg, BTreeMap<u32, Vec<u8>>>, EventLogError> {
        let mut out = BTreeMap::new();
        for &bank in &self.banks {
            match self.replay_bank(bank) {
                Ok(pcrs) => {
                    out.insert(bank, pcrs);
                }
                Err(EventLogError::UnsupportedAlgorithm(_)) => {
                    tracing::debug!(%bank, "event log bank not replayed: unsupported algorithm");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// The events of `pcrs` whose replay in `bank` equals `quoted` PCR
    /// values; error names the first PCR that does not replay. A quoted PCR
    /// the log never extends must hold its reset value. EV_NO_ACTION events
    /// are left out: nothing covers them.
    pub fn verify(
        &self,
        bank: HashAlg,
        quoted: &BTreeMap<u32, Vec<u8>>,
    ) -> Result<Vec<&Event>, EventLogError> {
        if let Some(&pcr) = quoted.keys().find(|&&p| p >= PCR_COUNT) {
            return Err(EventLogError::PcrOutOfRange(pcr));
        }
        let replayed = self.replay_bank(bank)?;
        for (&pcr, want) in quoted {
            let ok = match replayed.get(&pcr) {
                Some(got) => got == want,
                None => self.initial_value(bank, pcr) == *want,
            };
            if !ok {
                return Err(EventLogError::PcrMismatch { bank, pcr });
            }
        }
        Ok(self
            .events
            .iter()
            .filter(|e| e.event_type != EV_NO_ACTION && quoted.contains_key(&e.pcr))
            .collect())
    }
}
