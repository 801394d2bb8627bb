//! Templated entries: one X.509-SVID per distinct expansion, signed on demand
//! when a workload first needs it, rotated by the manager while in use and
//! evicted once idle. The Workload API side ([`Demands`]) asks and waits; the
//! manager side ([`Templates`]) signs and owns the SVIDs.

use super::entry::Entry;
use super::manager::Clock;
pub use super::template_limits::TemplateLimits;
use super::{same_arcs, CachedSvid, Snapshot};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tessera_common::selector::all_present;
use tessera_common::spiffe_template::{is_template, SpiffeTemplate};
use tessera_common::{Selector, SpiffeId};
use tokio::sync::{mpsc, oneshot};

/// (entry id, expanded SPIFFE ID).
pub type Key = (String, SpiffeId);

/// Demands waiting for the manager; beyond it callers get Unavailable at once.
const QUEUE: usize = 1024;

/// Held by every caller (and open stream) served an expansion: it is not
/// evicted while any is alive.
#[derive(Clone, Debug)]
pub struct Lease(Arc<()>);

/// A caller's leases, and the templated entries they were taken for (a stream
/// takes new ones when those change).
#[derive(Clone, Debug, Default)]
pub struct Leases {
    leases: Vec<Lease>,
    seen: Vec<Arc<TemplateEntry>>,
}

impl Leases {
    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }
}

/// A synced entry whose SPIFFE ID is a template.
#[derive(Debug)]
pub struct TemplateEntry {
    pub entry_id: String,
    pub template: SpiffeTemplate,
    pub selectors: Vec<Selector>,
}

impl TemplateEntry {
    /// The expansion for a workload with `selectors`, or why there is none.
    pub fn expansion(&self, selectors: &[Selector]) -> Option<Result<SpiffeId, String>> {
        if !all_present(&self.selectors, selectors) {
            return None;
        }
        Some(self.template.expand(selectors).map_err(|e| e.to_string()))
    }
}

struct Use {
    last_used: i64,
    lease: Lease,
}

/// Which expansions are wanted and when they were last asked for; shared by
/// the Workload API (touch) and the manager (evict).
pub struct Usage {
    map: Mutex<HashMap<Key, Use>>,
    limits: TemplateLimits,
    clock: Arc<dyn Clock>,
}

impl Usage {
    /// Marks `key` used now; None when its entry already has its maximum.
    fn touch(&self, key: &Key) -> Option<Lease> {
        let now = self.clock.now();
        let mut m = self.map.lock().ok()?;
        if let Some(u) = m.get_mut(key) {
            u.last_used = now;
            return Some(u.lease.clone());
        }
        if m.keys().filter(|k| k.0 == key.0).count() >= self.limits.max_per_entry {
            tracing::warn!(entry_id = %key.0, spiffe_id = %key.1, max = self.limits.max_per_entry,
                "templated entry has its maximum of expansions; no identity for this workload");
            return None;
        }
        let lease = Lease(Arc::new(()));
        m.insert(
            key.clone(),
            Use {
                last_used: now,
                lease: lease.clone(),
            },
        );
        Some(lease)
    }

    /// Drops idle expansions and those of entries not in `live`; true: keep `key`.
    fn prune(&self, live: &[Arc<TemplateEntry>], now: i64) -> impl Fn(&Key) -> bool {
        let idle = self.limits.idle.as_secs() as i64;
        let kept: Vec<Key> = match self.map.lock() {
            Ok(mut m) => {
                m.retain(|k, u| {
                    live.iter().any(|t| t.entry_id == k.0)
                        && (Arc::strong_count(&u.lease.0) > 1 || now - u.last_used < idle)
                });
                m.keys().cloned().collect()
            }
            Err(_) => Vec::new(),
        };
        move |k| kept.contains(k)
    }
}

pub struct Demand {
    pub key: Key,
    pub reply: oneshot::Sender<Result<(), String>>,
}

/// The Workload API's handle: makes sure a caller's expansions are signed.
#[derive(Clone)]
pub struct Demands {
    tx: mpsc::Sender<Demand>,
    usage: Arc<Usage>,
}

impl Demands {
    /// Signs (through the manager) every expansion a workload with `selectors`
    /// is entitled to that `snap` lacks, waiting a bounded time. The leases keep
    /// them cached while the caller holds them.
    pub async fn ensure(&self, snap: &Snapshot, selectors: &[Selector]) -> Result<Leases, String> {
        let mut leases = Vec::new();
        let mut waits = Vec::new();
        let now_ms = self.usage.clock.now_millis();
        for t in &snap.templates {
            let id = match t.expansion(selectors) {
                None => continue,
                Some(Ok(id)) => id,
                Some(Err(why)) => {
                    tracing::debug!(entry_id = %t.entry_id, template = %t.template, reason = %why, "template gives this workload no identity");
                    continue;
                }
            };
            let key = (t.entry_id.clone(), id);
            let Some(lease) = self.usage.touch(&key) else {
                continue;
            };
            leases.push(lease);
            if !snap
                .svids
                .iter()
                .any(|s| s.entry.id == key.0 && s.spiffe_id == key.1 && s.ms_left(now_ms) > 0)
            {
                let (reply, rx) = oneshot::channel();
                self.tx
                    .try_send(Demand { key, reply })
                    .map_err(|_| "too many identities are being signed; retry".to_string())?;
                waits.push(rx);
            }
        }
        let wait = self.usage.limits.wait;
        for rx in waits {
            match tokio::time::timeout(wait, rx).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => return Err(e),
                Ok(Err(_)) => return Err("the SVID manager stopped".into()),
                Err(_) => return Err(format!("no SVID signed within {wait:?}")),
            }
        }
        Ok(Leases {
            leases,
            seen: snap.templates.clone(),
        })
    }

    /// For a stream: once the synced templated entries differ from those `held`
    /// was taken for, ensures the caller's expansions again. True when it did
    /// (the snapshot has likely moved on since `snap`).
    pub async fn refresh(
        &self,
        held: &mut Leases,
        snap: &Snapshot,
        selectors: &[Selector],
    ) -> bool {
        if same_arcs(&held.seen, &snap.templates) {
            return false;
        }
        match self.ensure(snap, selectors).await {
            Ok(l) => *held = l,
            Err(e) => {
                tracing::debug!(error = %e, "templated SVID for an open stream not signed");
                held.seen = snap.templates.clone();
            }
        }
        true
    }
}

/// The manager's side: the expansions' SVIDs and the demand queue.
pub struct Templates {
    pub entries: Vec<Arc<TemplateEntry>>,
    svids: HashMap<Key, Arc<CachedSvid>>,
    usage: Arc<Usage>,
    tx: mpsc::Sender<Demand>,
    rx: mpsc::Receiver<Demand>,
}

impl Templates {
    pub fn new(limits: TemplateLimits, clock: Arc<dyn Clock>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let usage = Arc::new(Usage {
            map: Mutex::new(HashMap::new()),
            limits,
            clock,
        });
        Templates {
            entries: Vec::new(),
            svids: HashMap::new(),
            usage,
            tx,
            rx,
        }
    }

    pub fn demands(&self) -> Demands {
        Demands {
            tx: self.tx.clone(),
            usage: self.usage.clone(),
        }
    }

    /// Takes the templated entries out of a sync.
    pub fn set_entries(&mut self, entries: &[Arc<Entry>]) {
        self.entries = entries
            .iter()
            .filter(|e| is_template(&e.spiffe_id))
            .filter_map(|e| match SpiffeTemplate::parse(&e.spiffe_id) {
                Ok(template) => Some(Arc::new(TemplateEntry {
                    entry_id: e.id.clone(),
                    template,
                    selectors: e.selectors.clone(),
                })),
                Err(err) => {
                    tracing::warn!(entry_id = %e.id, error = %err, "templated entry ignored");
                    None
                }
            })
            .collect();
    }

    /// Drops expansions that are idle or whose entry is gone.
    pub fn evict(&mut self, now: i64) {
        let keep = self.usage.prune(&self.entries, now);
        self.svids.retain(|k, _| {
            let kept = keep(k);
            if !kept {
                tracing::info!(entry_id = %k.0, spiffe_id = %k.1, "templated SVID evicted");
            }
            kept
        });
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.svids.clear();
        self.evict(0);
    }

    /// Cached expansions to sign again: due for rotation or entry changed.
    pub fn due(&self, entries: &[Arc<Entry>], now: i64) -> Vec<(Arc<Entry>, SpiffeId)> {
        self.svids
            .iter()
            .filter_map(|(k, s)| {
                let e = entries.iter().find(|e| e.id == k.0)?;
                (s.entry.revision != e.revision || s.rotation_due(now))
                    .then(|| (e.clone(), k.1.clone()))
            })
            .collect()
    }

    /// True when `key` has a current SVID (a demand for it is already met).
    pub fn has(&self, key: &Key, entries: &[Arc<Entry>], now: i64) -> bool {
        self.svids.get(key).is_some_and(|s| {
            s.ms_left(now.saturating_mul(1000)) > 0
                && entries
                    .iter()
                    .any(|e| e.id == key.0 && e.revision == s.entry.revision)
        })
    }

    pub fn insert(&mut self, svid: CachedSvid) -> Option<Arc<CachedSvid>> {
        let key = (svid.entry.id.clone(), svid.spiffe_id.clone());
        self.svids.insert(key, Arc::new(svid))
    }

    /// Forgets one expansion's SVID (the authority refused it).
    pub fn remove(&mut self, entry_id: &str, id: &SpiffeId) {
        self.svids.remove(&(entry_id.to_string(), id.clone()));
    }

    pub fn template_of(&self, entry_id: &str) -> Option<&SpiffeTemplate> {
        self.entries
            .iter()
            .find(|t| t.entry_id == entry_id)
            .map(|t| &t.template)
    }

    /// The entry's expansions, in a stable order.
    pub fn svids_of(&self, entry_id: &str) -> Vec<Arc<CachedSvid>> {
        let mut v: Vec<_> = self
            .svids
            .iter()
            .filter(|(k, _)| k.0 == entry_id)
            .map(|(_, s)| s.clone())
            .collect();
        v.sort_by(|a, b| a.spiffe_id.cmp(&b.spiffe_id));
        v
    }

    pub fn next_deadline(&self) -> Option<i64> {
        self.svids
            .values()
            .map(|s| s.rotate_at.min(s.not_after))
            .min()
    }

    /// Waits for a demand, then takes every other one queued.
    pub async fn recv(&mut self) -> Vec<Demand> {
        let mut out = Vec::new();
        if let Some(d) = self.rx.recv().await {
            out.push(d);
        }
        while let Ok(d) = self.rx.try_recv() {
            out.push(d);
        }
        out
    }
}
