//! TPM node attestation, authority side: one challenge round (credential
//! activation + quote), then the clock-counter check and the selectors.

use super::{AttestError, Challenger, NodeIdentity, NodeVerifier};
use crate::datastore::{ClockCheck, Datastore, TpmClock};
use tessera_attestors::node::tpm::verifier::{TpmVerifier, TpmVerifyError};
use tessera_common::TrustDomain;

pub const METHOD: &str = "tpm";

pub struct TpmNodeVerifier {
    pub verifier: TpmVerifier,
    pub datastore: Datastore,
    pub trust_domain: TrustDomain,
}

fn map(e: TpmVerifyError) -> AttestError {
    match e {
        TpmVerifyError::Malformed(m) => AttestError::Malformed(m),
        TpmVerifyError::Rejected(m) => AttestError::Rejected(m),
        other => AttestError::Rejected(other.to_string()),
    }
}

#[async_trait::async_trait]
impl NodeVerifier for TpmNodeVerifier {
    fn method(&self) -> &'static str {
        METHOD
    }

    async fn attest(
        &self,
        payload: &[u8],
        challenger: &mut dyn Challenger,
    ) -> Result<NodeIdentity, AttestError> {
        let (pending, challenge) = self.verifier.challenge(payload).map_err(map)?;
        let agent_id = self
            .trust_domain
            .id(&format!("/tessera/agent/tpm/{}", pending.ek_hash()))
            .map_err(|e| AttestError::Malformed(e.to_string()))?;
        let answer = challenger.challenge(challenge).await?;
        let outcome = self.verifier.verify(pending, &answer).map_err(map)?;
        let clock = TpmClock {
            reset_count: i64::from(outcome.clock.reset_count),
            restart_count: i64::from(outcome.clock.restart_count),
            clock: i64::try_from(outcome.clock.clock).unwrap_or(i64::MAX),
        };
        let check = self
            .datastore
            .advance_tpm_clock(&outcome.ek_hash, clock, outcome.event_log_replayed)
            .await?;
        match check {
            ClockCheck::Advanced => {}
            ClockCheck::WentBack => {
                return Err(AttestError::Rejected(
                    "quote: TPM clock or reset/restart counters went backwards (replayed quote?)"
                        .into(),
                ))
            }
            ClockCheck::RebootWithoutLog => {
                return Err(AttestError::Rejected(
                    "quote: the TPM reset count changed (a reboot) and no event log shows what \
                     booted"
                        .into(),
                ))
            }
        }
        let detail = format!(
            "ek_hash={} pcr_digest={} secure_boot={} policies={}",
            outcome.ek_hash,
            outcome.pcr_digest,
            outcome.boot.secure_boot,
            outcome.policies_passed.join(",")
        );
        Ok(NodeIdentity {
            agent_id,
            selectors: outcome.selectors,
            consume_token: None,
            detail,
        })
    }
}
