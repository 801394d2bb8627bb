//! Keeps the agent SVID: the first one at start, then renewal at 50% ±10% of
//! its life, attestation again when the authority refuses it or it expired,
//! and backoff (at least the authority's retry hint) on every failure.

use super::{Attestation, Credential, NodeAuthority};
use crate::authority_client::AuthorityError;
use crate::cache::manager::Clock;
use crate::cache::rotation::{random_jitter, rotate_at};
use crate::metrics::Metrics;
use crate::node::{AgentSvid, NodeError};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tessera_attestors::node::NodeEvidence;
use tessera_common::TrustDomain;
use tokio::sync::watch;

/// Longest wait between attempts.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Why the agent could not get its first credential.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("agent SVID store: {0}")]
    Store(#[from] NodeError),
    #[error("node attestation: {0}")]
    Refused(AuthorityError),
}

/// What to ask the authority for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Renew,
    Reattest,
    Attest,
}

pub struct Keeper {
    authority: Arc<dyn NodeAuthority>,
    evidence: Box<dyn NodeEvidence>,
    trust_domain: TrustDomain,
    data_dir: PathBuf,
    clock: Arc<dyn Clock>,
    tx: watch::Sender<Option<Arc<Credential>>>,
    /// Bumped on each new credential: the SVID manager syncs with it at once.
    wake: Option<watch::Sender<u64>>,
    /// Credentials the authority refused in other calls (entry sync, signing).
    refusals: Option<watch::Receiver<Option<Arc<Credential>>>>,
    metrics: Option<Arc<Metrics>>,
}

impl Keeper {
    /// `tx` publishes each credential; the TLS configuration reads it.
    pub fn new(
        authority: Arc<dyn NodeAuthority>,
        evidence: Box<dyn NodeEvidence>,
        trust_domain: TrustDomain,
        data_dir: PathBuf,
        clock: Arc<dyn Clock>,
        tx: watch::Sender<Option<Arc<Credential>>>,
    ) -> Self {
        Self {
            authority,
            evidence,
            trust_domain,
            data_dir,
            clock,
            tx,
            wake: None,
            refusals: None,
            metrics: None,
        }
    }

    pub fn with_wake(mut self, wake: watch::Sender<u64>) -> Self {
        self.wake = Some(wake);
        self
    }

    /// Replaces a credential as soon as the authority refuses it in a call.
    pub fn with_refusals(mut self, refusals: watch::Receiver<Option<Arc<Credential>>>) -> Self {
        self.refusals = Some(refusals);
        self
    }

    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The first credential: with `resume`, the stored one if it is still
    /// valid (a join-token agent, whose token is spent); else an attestation,
    /// retried while failures are transient. A refusal ends the start: nothing
    /// is served yet that retrying would protect.
    pub async fn start(&self, resume: bool) -> Result<Arc<Credential>, StartError> {
        if resume {
            if let Some(svid) = AgentSvid::load(&self.data_dir, &self.trust_domain)? {
                match Credential::new(svid, &self.trust_domain) {
                    Ok(c) => {
                        tracing::info!(agent_id = %c.svid.id, not_after = c.svid.not_after, "resuming with the stored agent SVID");
                        return Ok(self.publish(c, false));
                    }
                    Err(e) => tracing::warn!(error = %e, "stored agent SVID unusable; attesting"),
                }
            }
        }
        let mut attempt = 0;
        loop {
            let how = Attestation::Fresh { last: None };
            let r = self.authority.attest(self.evidence.as_ref(), how).await;
            match r.and_then(|s| Credential::new(s, &self.trust_domain)) {
                Ok(c) => {
                    tracing::info!(agent_id = %c.svid.id, not_after = c.svid.not_after, "node attested");
                    return Ok(self.publish(c, true));
                }
                // A TPM hiccup, an RNG failure, an unreachable or confused
                // authority: try again; only a refusal ends the agent.
                Err(e) if e.is_transient() => {
                    let wait =
                        crate::backoff::wait(attempt, MAX_RETRY, self.authority.retry_hint());
                    tracing::warn!(error = %e, retry_in = ?wait, "node attestation failed");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(e) => return Err(StartError::Refused(e)),
            }
        }
    }

    /// Keeps the credential published by [`Keeper::start`] current, for good.
    pub async fn run(self) {
        loop {
            let Some(current) = self.tx.borrow().clone() else {
                return;
            };
            let at = rotate_at(
                current.svid.issued_at,
                current.svid.not_after,
                random_jitter(),
            );
            let wait = Duration::from_secs((at - self.clock.now()).max(0) as u64);
            let refused = tokio::select! {
                _ = tokio::time::sleep(wait) => false,
                _ = self.refusal_of(&current) => true,
            };
            if refused {
                tracing::warn!("the authority refused the agent SVID; attesting the node again");
            }
            let next = self.replace(&current.svid, refused).await;
            tracing::info!(agent_id = %next.svid.id, not_after = next.svid.not_after, "agent SVID renewed");
            self.publish(next, true);
            if let Some(w) = &self.wake {
                w.send_modify(|n| *n += 1);
            }
        }
    }

    /// Returns once the authority has refused `current` in a call.
    async fn refusal_of(&self, current: &Arc<Credential>) {
        if let Some(mut rx) = self.refusals.clone() {
            loop {
                let refused = rx.borrow_and_update().clone();
                if refused.is_some_and(|r| Arc::ptr_eq(&r, current)) {
                    return;
                }
                if rx.changed().await.is_err() {
                    break;
                }
            }
        }
        std::future::pending().await
    }

    /// A credential to follow `current`, however many attempts it takes: the
    /// cached SVIDs are served meanwhile, so this never gives up. `refused`:
    /// the authority no longer takes `current`.
    async fn replace(&self, current: &AgentSvid, mut refused: bool) -> Credential {
        let mut attempt = 0;
        loop {
            let now = self.clock.now();
            let step = if refused || now >= current.not_after {
                Step::Attest
            } else if self.evidence.reattest_on_renewal() {
                Step::Reattest
            } else {
                Step::Renew
            };
            let evidence = self.evidence.as_ref();
            let result = match step {
                Step::Renew => self.authority.renew(current).await,
                Step::Reattest => {
                    let how = Attestation::Renewal(current);
                    self.authority.attest(evidence, how).await
                }
                Step::Attest => {
                    let how = Attestation::Fresh {
                        last: Some(current),
                    };
                    self.authority.attest(evidence, how).await
                }
            };
            let e = match result.and_then(|s| Credential::new(s, &self.trust_domain)) {
                Ok(c) => return c,
                Err(e) => e,
            };
            if matches!(e, AuthorityError::AgentRefused(_)) && step != Step::Attest {
                // The credential itself is refused (evicted, superseded, expired
                // on the authority's clock): renewing with it cannot work.
                tracing::warn!(error = %e, "the authority refused the agent SVID; attesting the node again");
                refused = true;
                continue;
            }
            // Close to expiry (or past it) retry often: the authority's return
            // is noticed within seconds; a refusal is retried at the slowest.
            let left = (current.not_after - now).max(1) as u64;
            let cap = if e.is_transient() {
                MAX_RETRY.min(Duration::from_secs(left / 4 + 1))
            } else {
                MAX_RETRY
            };
            let wait = crate::backoff::wait(attempt, cap, self.authority.retry_hint());
            if e.is_transient() {
                tracing::warn!(error = %e, retry_in = ?wait, "agent SVID renewal failed");
            } else {
                tracing::error!(error = %e, retry_in = ?wait, "agent SVID renewal failed: the authority refuses this node; serving cached SVIDs until they expire, and trying again");
            }
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// Makes `c` the current credential, stored first when it is new.
    fn publish(&self, c: Credential, persist: bool) -> Arc<Credential> {
        if persist {
            if let Err(e) = c.svid.save(&self.data_dir) {
                tracing::error!(error = %e, "cannot store the agent SVID; a restart will attest again");
            }
        }
        if let Some(m) = &self.metrics {
            m.agent_svid(c.svid.not_after);
        }
        let c = Arc::new(c);
        self.tx.send_replace(Some(c.clone()));
        c
    }
}
