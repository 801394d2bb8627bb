//! Authority half of the `tpm` node attestor: checks the evidence, issues
//! the challenge (credential activation + quote nonce), checks the answer and
//! turns the verified boot into node selectors.

use super::attest::{ClockInfo, PcrSelection};
use super::credential::make_credential;
use super::ekcert::{self, EkCaStore};
use super::eventlog::{self, event_type::EV_NO_ACTION, EventLog};
use super::facts::{self, BootFacts};
use super::policy::BootPolicy;
use super::public::{AkPublic, EkTemplate, TpmtPublic};
use super::quote::verify_quote;
use super::wire::HashAlg;
use prost::Message;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use subtle::ConstantTimeEq;
use tessera_common::secret::SecretBytes;
use tessera_common::Selector;
use tessera_proto::tpm as pb;

/// Secret and nonce sizes: one SHA-256 digest each.
const SECRET_LEN: usize = 32;
const NONCE_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TpmVerifyError {
    /// Malformed evidence or answer.
    #[error("{0}")]
    Malformed(String),
    /// Well-formed, but it does not prove what it must.
    #[error("{0}")]
    Rejected(String),
}

fn malformed(what: &str, e: impl std::fmt::Display) -> TpmVerifyError {
    TpmVerifyError::Malformed(format!("{what}: {e}"))
}

fn rejected(what: &str, e: impl std::fmt::Display) -> TpmVerifyError {
    TpmVerifyError::Rejected(format!("{what}: {e}"))
}

/// The authority's TPM settings.
pub struct TpmVerifier {
    /// Manufacturer CAs; None when no `ek_ca_dir` is configured.
    pub ek_cas: Option<EkCaStore>,
    /// SHA-256 of EK public keys (SPKI DER) accepted without a verified certificate.
    pub allowed_ek_hashes: Vec<String>,
    /// PCRs to quote in the SHA-256 bank.
    pub pcrs: Vec<u8>,
    /// The one EK template that identifies a TPM: EKs of other templates
    /// (the same TPM's other EKs) are refused, so eviction holds for the TPM.
    pub ek_template: EkTemplate,
    pub policies: Vec<BootPolicy>,
}

/// State between the challenge and the answer; lives only in the one
/// attestation exchange, so nonce and secret are single use.
pub struct Pending {
    /// The credential's secret: never printed, wiped on drop.
    secret: SecretBytes,
    nonce: Vec<u8>,
    selection: PcrSelection,
    ak: AkPublic,
    ek_hash: String,
    ek_manufacturer: Option<String>,
    ek_cert_verified: bool,
    log: Option<EventLog>,
}

impl Pending {
    pub fn ek_hash(&self) -> &str {
        &self.ek_hash
    }

    /// The AK name (hex): the key its clock counters are tracked under.
    pub fn ak_name(&self) -> String {
        hex::encode(self.ak.name())
    }
}

/// Everything the authority learned about the node.
#[derive(Debug, Clone)]
pub struct TpmOutcome {
    pub ek_hash: String,
    pub ak_name: String,
    pub clock: ClockInfo,
    pub selectors: Vec<Selector>,
    pub policies_passed: Vec<String>,
    pub pcr_digest: String,
    pub boot: BootFacts,
    /// A non-empty event log replayed against this quote's PCRs.
    pub event_log_replayed: bool,
}

impl TpmVerifier {
    /// Checks EK and AK and makes the challenge.
    pub fn challenge(&self, evidence: &[u8]) -> Result<(Pending, Vec<u8>), TpmVerifyError> {
        let ev = pb::Evidence::decode(evidence).map_err(|e| malformed("tpm evidence", e))?;
        let ek = TpmtPublic::parse(&ev.ek_public).map_err(|e| malformed("ek_public", e))?;
        let template = ek.ek_template().map_err(|e| rejected("ek_public", e))?;
        if template != self.ek_template {
            return Err(TpmVerifyError::Rejected(format!(
                "ek_public: an EK of template {template}; this authority identifies TPMs by \
                 their {} EK (agent [tpm] ek_template)",
                self.ek_template
            )));
        }
        let ek_spki = ek.spki_der().map_err(|e| malformed("ek_public", e))?;
        let ek_hash = hex::encode(Sha256::digest(&ek_spki));
        let (ek_cert_verified, ek_manufacturer) =
            self.check_ek_cert(&ev.ek_cert, &ek_spki, &ek_hash)?;
        let ak = TpmtPublic::parse(&ev.ak_public).map_err(|e| malformed("ak_public", e))?;
        let ak = AkPublic::new(ak).map_err(|e| rejected("ak_public", e))?;
        let log = match ev.event_log.is_empty() {
            true => None,
            false => Some(eventlog::parse(&ev.event_log).map_err(|e| malformed("event_log", e))?),
        };
        // A log that extends nothing proves nothing: the same as no log.
        let log = log.filter(|l| l.events.iter().any(|e| e.event_type != EV_NO_ACTION));
        let secret = SecretBytes::new(random(SECRET_LEN)?);
        let nonce = random(NONCE_LEN)?;
        let cred =
            make_credential(&ek, &secret, ak.name()).map_err(|e| rejected("make credential", e))?;
        let selection = PcrSelection::single(HashAlg::Sha256, &self.pcrs);
        let challenge = pb::Challenge {
            credential_blob: cred.credential_blob,
            encrypted_secret: cred.encrypted_secret,
            nonce: nonce.clone(),
            pcr_bank: u32::from(HashAlg::Sha256.id()),
            pcrs: self.pcrs.iter().map(|p| u32::from(*p)).collect(),
        };
        let pending = Pending {
            secret,
            nonce,
            selection,
            ak,
            ek_hash,
            ek_manufacturer,
            ek_cert_verified,
            log,
        };
        Ok((pending, challenge.encode_to_vec()))
    }

    /// The EK certificate must chain to a configured manufacturer CA and carry
    /// the EK's key; without one the EK must be allow-listed. The manufacturer
    /// comes only from a verified chain: an allow-listed EK may bring any
    /// certificate, so what an unverified one says is no fact.
    fn check_ek_cert(
        &self,
        cert: &[u8],
        ek_spki: &[u8],
        ek_hash: &str,
    ) -> Result<(bool, Option<String>), TpmVerifyError> {
        let allowed = self
            .allowed_ek_hashes
            .iter()
            .any(|h| h.eq_ignore_ascii_case(ek_hash));
        if cert.is_empty() {
            return match allowed {
                true => Ok((false, None)),
                false => Err(TpmVerifyError::Rejected(format!(
                    "no EK certificate and EK {ek_hash} is not allow-listed"
                ))),
            };
        }
        if ekcert::public_key_spki(cert).map_err(|e| malformed("ek_cert", e))? != ek_spki {
            return Err(TpmVerifyError::Rejected(
                "ek_cert: certificate key is not the EK public key".into(),
            ));
        }
        let verified = match &self.ek_cas {
            Some(store) => ekcert::verify(cert, store),
            None => Err(ekcert::EkCertError::UnknownIssuer(
                "no ek_ca_dir is configured".into(),
            )),
        };
        match verified {
            Ok(v) => Ok((true, v.manufacturer)),
            Err(_) if allowed => Ok((false, None)),
            Err(e) => Err(rejected("ek_cert", e)),
        }
    }

    /// Checks the answer: the activated secret, the quote, the event log
    /// replay, and evaluates the boot policies.
    pub fn verify(&self, pending: Pending, answer: &[u8]) -> Result<TpmOutcome, TpmVerifyError> {
        let a = pb::ChallengeResponse::decode(answer).map_err(|e| malformed("tpm answer", e))?;
        if !bool::from(a.secret.ct_eq(&pending.secret)) {
            return Err(TpmVerifyError::Rejected(
                "credential activation failed: the AK is not in the EK's TPM".into(),
            ));
        }
        let values: Vec<&[u8]> = a.pcr_values.iter().map(|v| v.digest.as_slice()).collect();
        let expected: Vec<u32> = pending
            .selection
            .iter()
            .map(|(_, p)| u32::from(p))
            .collect();
        if a.pcr_values
            .iter()
            .map(|v| v.index)
            .ne(expected.iter().copied())
        {
            return Err(TpmVerifyError::Rejected(
                "quote: PCR values are not the selected PCRs".into(),
            ));
        }
        let quote = verify_quote(
            &pending.ak,
            &a.quote,
            &a.signature,
            &pending.nonce,
            &pending.selection,
            &values,
        )
        .map_err(|e| rejected("quote", e))?;
        let quoted: BTreeMap<u32, Vec<u8>> = a
            .pcr_values
            .iter()
            .map(|v| (v.index, v.digest.clone()))
            .collect();
        let boot = match &pending.log {
            Some(log) => {
                let bank = eventlog::HashAlg::Sha256;
                let events = log
                    .verify(bank, &quoted)
                    .map_err(|e| rejected("event log does not match the quoted PCRs", e))?;
                facts::extract(&events, bank, quoted.keys().copied())
            }
            None => BootFacts::default(),
        };
        let secure_boot = if boot.secure_boot {
            "enabled"
        } else {
            "disabled"
        };
        let mut values = vec![
            format!("ek_hash:{}", pending.ek_hash),
            format!("ek_cert_verified:{}", pending.ek_cert_verified),
            format!("secure_boot:{secure_boot}"),
        ];
        if let Some(m) = &pending.ek_manufacturer {
            values.push(format!("ek_manufacturer:{m}"));
        }
        for (idx, v) in &quoted {
            values.push(format!("pcr:sha256:{idx}:{}", hex::encode(v)));
        }
        let mut policies_passed = Vec::new();
        for p in &self.policies {
            match p.violation(&boot, &quoted) {
                None => {
                    values.push(format!("policy:{}", p.name));
                    policies_passed.push(p.name.clone());
                }
                Some(why) => {
                    tracing::info!(policy = %p.name, ek_hash = %pending.ek_hash, reason = %why, "boot policy not satisfied")
                }
            }
        }
        let selectors = values.into_iter().filter_map(tpm_selector).collect();
        Ok(TpmOutcome {
            ek_hash: pending.ek_hash.clone(),
            ak_name: pending.ak_name(),
            clock: quote.clock_info,
            selectors,
            policies_passed,
            pcr_digest: hex::encode(&quote.pcr_digest),
            boot,
            event_log_replayed: pending.log.is_some(),
        })
    }
}

/// `tpm:<value>` through the common selector checks (length, no control
/// characters: certificate fields are the manufacturer's free text); a value
/// that fails them is left out, not cleaned up.
fn tpm_selector(value: String) -> Option<Selector> {
    Selector::parse(&format!("tpm:{value}"))
        .inspect_err(|e| tracing::warn!(error = %e, "TPM node selector left out"))
        .ok()
}

fn random(len: usize) -> Result<Vec<u8>, TpmVerifyError> {
    let mut b = vec![0u8; len];
    aws_lc_rs::rand::fill(&mut b)
        .map_err(|_| TpmVerifyError::Rejected("random source failed".into()))?;
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::tpm_selector;

    #[test]
    fn selector_values_with_control_characters_are_left_out() {
        assert_eq!(
            tpm_selector("ek_manufacturer:id:00001014".into())
                .unwrap()
                .to_string(),
            "tpm:ek_manufacturer:id:00001014"
        );
        // A certificate field that would forge a second selector line in
        // `agent list` or a log, or hide part of the value on a terminal.
        for forged in [
            "ek_manufacturer:IBM\nSelector      : tpm:policy:prod",
            "ek_manufacturer:IBM\u{1b}[2K",
            "ek_manufacturer:IBM\0",
            "ek_manufacturer:IBM\u{85}",
        ] {
            assert_eq!(tpm_selector(forged.into()), None, "{forged:?}");
        }
    }
}
