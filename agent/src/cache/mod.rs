//! The SVID cache: entries synced from the authority, one X.509-SVID per
//! entry, published as immutable snapshots every Workload API stream watches.

pub mod entry;
pub mod expiry;
pub mod jwt;
pub mod manager;
pub mod rotation;
pub mod selector_index;
pub mod template_limits;
pub mod templates;

use entry::Entry;
use std::sync::Arc;
use std::time::{Duration, Instant};
use templates::TemplateEntry;
use tessera_common::jwt::JwtBundle;
use tessera_common::secret::SecretBytes;
use tessera_common::spiffe_template::SpiffeTemplate;
use tessera_common::{Selector, SpiffeId};

/// One entitled identity with its current X.509-SVID.
#[derive(Debug)]
pub struct CachedSvid {
    /// The entry as it was when this SVID was signed (ID, selectors, hint).
    pub entry: Arc<Entry>,
    /// The entry's, or for a templated entry this expansion.
    pub spiffe_id: SpiffeId,
    /// Set for an expansion of a templated entry: it serves only workloads
    /// whose selectors expand the template to `spiffe_id`.
    pub template: Option<SpiffeTemplate>,
    /// DER certificates, leaf first.
    pub chain: Vec<u8>,
    /// PKCS#8 DER; lives only in memory, never printed, wiped on drop.
    pub key: SecretBytes,
    pub not_before: i64,
    pub not_after: i64,
    pub rotate_at: i64,
    /// `rotate_at` and `not_after` as the time left when it arrived, on the
    /// monotonic clock: a wall-clock step back cannot extend either.
    pub monotonic: Option<Monotonic>,
}

#[derive(Debug, Clone, Copy)]
pub struct Monotonic {
    pub rotate: Instant,
    pub expire: Instant,
}

impl Monotonic {
    /// Deadlines `rotate_at - now` and `not_after - now` seconds from now.
    pub fn from_wall(now: i64, rotate_at: i64, not_after: i64) -> Monotonic {
        let start = Instant::now();
        let after = |at: i64| start + Duration::from_secs((at - now).max(0) as u64);
        Monotonic {
            rotate: after(rotate_at),
            expire: after(not_after),
        }
    }
}

impl CachedSvid {
    /// Milliseconds it may still be served: until its notAfter on the wall
    /// clock, and no longer than it had left when it arrived.
    pub fn ms_left(&self, now_ms: i64) -> i64 {
        let wall = self.not_after.saturating_mul(1000) - now_ms;
        match self.monotonic {
            Some(m) => wall.min(
                m.expire
                    .saturating_duration_since(Instant::now())
                    .as_millis() as i64,
            ),
            None => wall,
        }
    }

    /// Due for renewal by the wall clock or by the time elapsed since it arrived.
    pub fn rotation_due(&self, now: i64) -> bool {
        self.rotate_at <= now || self.monotonic.is_some_and(|m| Instant::now() >= m.rotate)
    }
}

/// The trust domain's bundle as the Workload API hands it out.
#[derive(Debug, PartialEq)]
pub struct Bundle {
    pub trust_domain: String,
    pub x509_der: Vec<u8>,
    pub jwks_json: Vec<u8>,
}

impl Bundle {
    pub fn jwt(&self) -> Option<JwtBundle> {
        JwtBundle::from_jwks_json(&self.jwks_json).ok()
    }
}

/// The same items (not just equal ones), in the same order: snapshots change by
/// replacing Arcs, so this tells whether anything was replaced.
pub(crate) fn same_arcs<T>(a: &[Arc<T>], b: &[Arc<T>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| Arc::ptr_eq(x, y))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No successful sync yet: the Workload API answers Unavailable.
    Syncing,
    /// Entries synced; SVIDs are served.
    Ready,
    /// The authority refused this agent (evicted): nothing is served.
    Refused,
}

/// An immutable view of everything the Workload API serves.
#[derive(Debug)]
pub struct Snapshot {
    pub state: State,
    /// Ordered by entry creation; only SVIDs that are currently valid.
    pub svids: Vec<Arc<CachedSvid>>,
    /// Templated entries: their expansions are in `svids` once signed.
    pub templates: Vec<Arc<TemplateEntry>>,
    pub bundle: Option<Arc<Bundle>>,
    /// Built on the first lookup: `svids` must not change once one is made.
    pub index: selector_index::SelectorIndex,
}

impl Snapshot {
    pub fn empty() -> Self {
        Snapshot {
            state: State::Syncing,
            svids: Vec::new(),
            templates: Vec::new(),
            bundle: None,
            index: Default::default(),
        }
    }

    /// SVIDs whose entry selectors all hold for a workload with `selectors`.
    pub fn matching(&self, selectors: &[Selector]) -> Vec<Arc<CachedSvid>> {
        self.index
            .matching(&self.svids, selectors)
            .into_iter()
            .filter_map(|i| self.svids.get(i))
            .filter(|s| {
                s.template
                    .as_ref()
                    .is_none_or(|t| t.expand(selectors).is_ok_and(|id| id == s.spiffe_id))
            })
            .cloned()
            .collect()
    }
}
