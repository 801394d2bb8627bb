//! Keeps the SVID cache current: syncs entries, signs new and due SVIDs in
//! batches, drops expired ones, and publishes a snapshot on every change.

use super::entry::{resync, Entry};
use super::templates::{Demands, TemplateLimits, Templates};
use super::{same_arcs, Bundle, CachedSvid, Snapshot, State};
use crate::authority_client::{AuthorityClient, AuthorityError};
use crate::metrics::Metrics;
use crate::node::key_and_csr;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tessera_common::secret::SecretBytes;
use tessera_common::spiffe_template::is_template;
use tessera_common::SpiffeId;
use tessera_proto::authority as pb;
use tokio::sync::watch;

/// Most CSRs per signing request.
const BATCH: usize = 100;
/// Longest wait between failed rounds: an authority back after an outage is
/// noticed within a few seconds (SVIDs may have expired meanwhile).
const MAX_BACKOFF: Duration = Duration::from_secs(4);
/// How often a waiting manager checks whether a clock step made an SVID due.
const CLOCK_CHECK: Duration = Duration::from_secs(1);

/// Unix seconds; injected so rotation tests do not wait.
pub trait Clock: Send + Sync {
    fn now(&self) -> i64;
    /// Unix milliseconds: expiry is timed to the instant, not the second.
    fn now_millis(&self) -> i64 {
        self.now().saturating_mul(1000)
    }
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        tessera_common::unix_now()
    }
    fn now_millis(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }
}

pub struct Manager {
    authority: Arc<dyn AuthorityClient>,
    clock: Arc<dyn Clock>,
    tx: watch::Sender<Arc<Snapshot>>,
    entries: Vec<Arc<Entry>>,
    /// `svids[i]` is the SVID of `entries[i]` (None for a templated entry:
    /// `templates` keeps its expansions'). A map by entry ID cost another
    /// copy of each ID and a table slot, about 100 B an SVID.
    svids: Vec<Option<Arc<CachedSvid>>>,
    bundle: Option<Arc<Bundle>>,
    state: State,
    /// Where `inspect` finds the synced entries (metadata only, never keys).
    entries_file: Option<PathBuf>,
    metrics: Option<Arc<Metrics>>,
    /// Expansions of templated entries, signed on demand.
    templates: Templates,
}

/// One SVID to sign: for an entry, or for an expansion of a templated entry.
struct Job {
    entry: Arc<Entry>,
    target: Target,
}

enum Target {
    /// The entry's own SVID, at this position in `entries` (which does not
    /// change while a round signs).
    Entry(usize),
    Expansion(SpiffeId),
}

impl Manager {
    pub fn new(
        authority: Arc<dyn AuthorityClient>,
        clock: Arc<dyn Clock>,
        entries_file: Option<PathBuf>,
    ) -> (Self, watch::Receiver<Arc<Snapshot>>) {
        let (tx, rx) = watch::channel(Arc::new(Snapshot::empty()));
        let m = Manager {
            authority,
            tx,
            entries: Vec::new(),
            svids: Vec::new(),
            bundle: None,
            state: State::Syncing,
            templates: Templates::new(TemplateLimits::default(), clock.clone()),
            clock,
            entries_file,
            metrics: None,
        };
        (m, rx)
    }

    /// Replaces the default template limits; call before [`Manager::demands`].
    pub fn with_template_limits(mut self, limits: TemplateLimits) -> Self {
        self.templates = Templates::new(limits, self.clock.clone());
        self
    }

    /// The Workload API's handle for on-demand expansions.
    pub fn demands(&self) -> Demands {
        self.templates.demands()
    }

    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// One round: sync, sign what is due, publish. The snapshot is published
    /// even when the round fails, so expired SVIDs are never served. Only a
    /// refusal of the agent itself drops every identity.
    pub async fn step(&mut self) -> Result<(), AuthorityError> {
        let result = self.sync_and_sign().await;
        // What the round decoded and signed with is freed by now.
        crate::heap::release_free_pages();
        if let Some(m) = &self.metrics {
            m.entry_sync(result.is_ok());
        }
        if let Err(AuthorityError::AgentRefused(_)) = &result {
            self.state = State::Refused;
            self.entries.clear();
            self.svids.clear();
            self.templates.clear();
        }
        self.publish();
        result
    }

    async fn sync_and_sign(&mut self) -> Result<(), AuthorityError> {
        let resp = self.authority.sync_entries().await?;
        if let Some(b) = resp.bundle {
            let bundle = Bundle {
                trust_domain: format!("spiffe://{}", b.trust_domain),
                x509_der: b.x509_authorities,
                jwks_json: b.jwt_authorities,
            };
            if self.bundle.as_deref() != Some(&bundle) {
                self.bundle = Some(Arc::new(bundle));
            }
        }
        if let Some(entries) = resync(self.entries.iter(), &resp.entries) {
            self.set_entries(entries);
        }
        // Not held while the round signs: 10,000 decoded entries are 5 MB.
        drop(resp.entries);
        // Once serving, each signed batch is published as it lands (see `sign`);
        // before that, workloads are told to wait for the whole first round.
        let serving = self.state == State::Ready;
        self.state = State::Ready;
        let now = self.clock.now();
        self.templates.evict(now);
        let mut due = self.due(now);
        due.extend(
            self.templates
                .due(&self.entries, now)
                .into_iter()
                .map(|(entry, id)| Job {
                    entry,
                    target: Target::Expansion(id),
                }),
        );
        self.sign(due, serving).await
    }

    /// A new entry list: each entry keeps its SVID, under its new position
    /// (not one that became templated: its expansions are signed instead).
    fn set_entries(&mut self, entries: Vec<Arc<Entry>>) {
        let old = std::mem::take(&mut self.svids);
        let by_id: HashMap<&str, &Arc<CachedSvid>> = old
            .iter()
            .flatten()
            .map(|s| (s.entry.id.as_str(), s))
            .collect();
        self.svids = entries
            .iter()
            .map(|e| match by_id.get(e.id.as_str()) {
                Some(s) if !is_template(&e.spiffe_id) => Some(Arc::clone(s)),
                _ => None,
            })
            .collect();
        self.entries = entries;
        self.templates.set_entries(&self.entries);
        self.write_entries_file();
    }

    /// Entries whose own SVID is missing, outdated or due, the most urgent
    /// first (missing, then the earliest notAfter): when there are more than
    /// one round signs in time, what expires first is renewed first.
    /// Templated entries are signed per expansion, on demand.
    fn due(&self, now: i64) -> Vec<Job> {
        let mut due: Vec<(i64, Job)> = self
            .entries
            .iter()
            .zip(&self.svids)
            .enumerate()
            .filter(|(_, (e, _))| !is_template(&e.spiffe_id))
            .filter_map(|(i, (e, svid))| {
                let urgency = match svid {
                    None => i64::MIN,
                    Some(s) if s.entry.revision != e.revision || s.rotation_due(now) => s.not_after,
                    Some(_) => return None,
                };
                let job = Job {
                    entry: e.clone(),
                    target: Target::Entry(i),
                };
                Some((urgency, job))
            })
            .collect();
        due.sort_by_key(|(urgency, _)| *urgency);
        due.into_iter().map(|(_, job)| job).collect()
    }

    /// Signs `due` in batches; with `publish_each`, every batch reaches
    /// workloads as soon as it is stored instead of after the last one.
    async fn sign(&mut self, due: Vec<Job>, publish_each: bool) -> Result<(), AuthorityError> {
        let mut due = due.into_iter();
        loop {
            let chunk: Vec<Job> = due.by_ref().take(BATCH).collect();
            if chunk.is_empty() {
                return Ok(());
            }
            let mut keys = Vec::with_capacity(chunk.len());
            let mut reqs = Vec::with_capacity(chunk.len());
            for j in &chunk {
                let (key, csr) = key_and_csr()?;
                keys.push(key);
                reqs.push(pb::X509SignRequest {
                    entry_id: j.entry.id.clone(),
                    csr,
                    spiffe_id: match &j.target {
                        Target::Expansion(id) => id.to_string(),
                        Target::Entry(_) => String::new(),
                    },
                });
            }
            // One outcome per job, in order (checked by the authority client).
            let outcomes = self.authority.batch_sign_x509(reqs).await?;
            for ((job, key), outcome) in chunk.iter().zip(keys).zip(outcomes) {
                match outcome {
                    Ok(s) => self.store(job, s, key.serialize_der().into()),
                    Err(AuthorityError::EntryRefused(why)) => self.drop_refused(job, &why),
                    Err(e) => {
                        tracing::warn!(entry_id = %job.entry.id, error = %e, "X509-SVID not signed this round; keeping the current one")
                    }
                }
            }
            if publish_each {
                self.publish();
            }
        }
    }

    /// Caches a signed SVID once it is checked against what was asked.
    fn store(&mut self, job: &Job, s: pb::X509Svid, key: SecretBytes) {
        let template = self.templates.template_of(&job.entry.id).cloned();
        let checked = if s.entry_id == job.entry.id {
            let now = self.clock.now();
            let expansion = match &job.target {
                Target::Expansion(id) => Some(id.clone()),
                Target::Entry(_) => None,
            };
            cached_svid(&job.entry, expansion, template, s.svid_chain, key, now)
        } else {
            Err(format!("answer for entry {:?} in its place", s.entry_id))
        };
        match checked {
            Ok(svid) => {
                tracing::info!(spiffe_id = %svid.spiffe_id, entry_id = %job.entry.id, not_after = svid.not_after, "X509-SVID updated");
                let replaced = match job.target {
                    Target::Expansion(_) => self.templates.insert(svid),
                    Target::Entry(i) => self
                        .svids
                        .get_mut(i)
                        .and_then(|slot| slot.replace(Arc::new(svid))),
                };
                if let (Some(m), Some(_)) = (&self.metrics, replaced) {
                    m.svid_rotated();
                }
            }
            Err(e) => {
                tracing::error!(entry_id = %job.entry.id, error = %e, "authority returned an unusable SVID")
            }
        }
    }

    /// The authority no longer signs for this entry (deleted or no longer
    /// authorised since the last sync): its SVID goes, every other stays.
    fn drop_refused(&mut self, job: &Job, why: &str) {
        tracing::warn!(entry_id = %job.entry.id, spiffe_id = %job.entry.spiffe_id, reason = %why, "authority refused one entry; dropping its SVID");
        match &job.target {
            Target::Expansion(id) => self.templates.remove(&job.entry.id, id),
            Target::Entry(i) => {
                if let Some(slot) = self.svids.get_mut(*i) {
                    *slot = None;
                }
            }
        }
    }

    fn publish(&self) {
        let svids: Vec<Arc<CachedSvid>> = self
            .entries
            .iter()
            .zip(&self.svids)
            .flat_map(|(e, svid)| match svid {
                Some(s) => vec![s.clone()],
                None => self.templates.svids_of(&e.id),
            })
            .collect();
        let mut next = Snapshot {
            state: self.state,
            svids,
            templates: self.templates.entries.clone(),
            bundle: self.bundle.clone(),
            index: Default::default(),
        };
        self.tx.send_if_modified(|cur| {
            // Timed under the channel's lock: the expiry task cannot drop an
            // SVID between this check and the send, only before or after it.
            let now_ms = self.clock.now_millis();
            next.svids.retain(|s| s.ms_left(now_ms) > 0);
            let same = cur.state == next.state
                && same_arcs(&cur.svids, &next.svids)
                && same_arcs(&cur.templates, &next.templates)
                && match (&cur.bundle, &next.bundle) {
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                    (None, None) => true,
                    _ => false,
                };
            if !same {
                *cur = Arc::new(next);
            }
            !same
        });
    }

    /// Whether an SVID is due for renewal now (the clock may have been stepped).
    fn due_now(&self) -> bool {
        let now = self.clock.now();
        self.svids.iter().flatten().any(|s| s.rotation_due(now))
            || !self.templates.due(&self.entries, now).is_empty()
    }

    /// Earliest rotation or expiry among cached SVIDs.
    pub fn next_deadline(&self) -> Option<i64> {
        self.svids
            .iter()
            .flatten()
            .map(|s| s.rotate_at.min(s.not_after))
            .chain(self.templates.next_deadline())
            .min()
    }

    fn write_entries_file(&self) {
        let Some(path) = &self.entries_file else {
            return;
        };
        let entries: Vec<serde_json::Value> = self
            .entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "id": e.id, "spiffe_id": e.spiffe_id, "parent_id": &*e.parent_id,
                    "selectors": e.selectors.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                })
            })
            .collect();
        let data = serde_json::to_vec_pretty(&entries).unwrap_or_default();
        if let Err(e) = tessera_common::fsutil::write_atomic(path, &data, 0o600) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the entries cache");
        }
    }

    /// Runs until the process ends: rounds, and every SVID taken out of the
    /// snapshot at its notAfter without waiting for a round.
    pub async fn run(self, interval: Duration, wake: watch::Receiver<u64>) {
        let expiry = super::expiry::drop_expired(self.tx.clone(), self.clock.clone());
        tokio::select! {
            _ = expiry => {}
            _ = self.rounds(interval, wake) => {}
        }
    }

    /// A round every `interval`, sooner when an SVID is due or `wake` fires
    /// (new agent SVID), later (backoff) on failures.
    async fn rounds(mut self, interval: Duration, mut wake: watch::Receiver<u64>) {
        let mut failures = 0u32;
        loop {
            let wait = match self.step().await {
                Ok(()) => {
                    failures = 0;
                    let until_due = self
                        .next_deadline()
                        .map(|d| Duration::from_secs((d - self.clock.now()).max(1) as u64));
                    // Splay: agents started together do not sync together.
                    let splayed = interval.mul_f64(0.9 + 0.2 * rand::random::<f64>());
                    until_due.map_or(splayed, |d| d.min(splayed))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "entry sync failed; serving cached SVIDs");
                    failures += 1;
                    // At least the authority's retry hint when it shed us.
                    let cap = MAX_BACKOFF.min(interval.max(Duration::from_secs(1)));
                    crate::backoff::wait(failures - 1, cap, self.authority.retry_hint())
                }
            };
            let sleep = tokio::time::sleep(wait);
            tokio::pin!(sleep);
            // Demands are served while waiting for the next round; the wall
            // clock is looked at every second, for a step that made an SVID due.
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    _ = tokio::time::sleep(CLOCK_CHECK), if failures == 0 => if self.due_now() { break },
                    changed = wake.changed() => if changed.is_err() { return } else { break },
                    demands = self.templates.recv() => self.serve(demands).await,
                }
            }
        }
    }
}

mod on_demand;
mod svid;
use svid::cached_svid;

#[cfg(test)]
mod tests;
