//! Lookups per container id: one in flight at a time (a cell others wait on), kept for a TTL,
//! bounded in number (the ids come from whatever containers run, so they must not pile up).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tessera_common::Selector;
use tokio::sync::OnceCell;

/// One finished lookup; `selectors` is `None` when it failed.
pub(crate) struct Fetched {
    pub at: Instant,
    pub selectors: Option<Vec<Selector>>,
}

struct Slot {
    inserted: Instant,
    cell: Arc<OnceCell<Fetched>>,
}

pub(crate) struct Cache {
    slots: Mutex<HashMap<String, Slot>>,
    capacity: usize,
    ttl: Duration,
    failure_ttl: Duration,
}

impl Cache {
    pub fn new(capacity: usize, ttl: Duration, failure_ttl: Duration) -> Self {
        Cache {
            slots: Mutex::new(HashMap::new()),
            capacity,
            ttl,
            failure_ttl,
        }
    }

    /// The cell for `id`: a fresh or in-flight lookup is shared, an expired one replaced.
    pub fn slot(&self, id: &str, now: Instant) -> Arc<OnceCell<Fetched>> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = slots.get(id) {
            if !self.expired(&s.cell, now) {
                return s.cell.clone();
            }
        }
        if slots.len() >= self.capacity && !slots.contains_key(id) {
            slots.retain(|_, s| !self.expired(&s.cell, now));
            if slots.len() >= self.capacity {
                let oldest = slots
                    .iter()
                    .min_by_key(|(_, s)| s.inserted)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    slots.remove(&k);
                }
            }
        }
        let cell = Arc::new(OnceCell::new());
        slots.insert(
            id.to_string(),
            Slot {
                inserted: now,
                cell: cell.clone(),
            },
        );
        cell
    }

    /// A lookup still in flight never expires (its waiters are bounded by their timeout).
    fn expired(&self, cell: &OnceCell<Fetched>, now: Instant) -> bool {
        cell.get().is_some_and(|f| {
            let ttl = match f.selectors {
                Some(_) => self.ttl,
                None => self.failure_ttl,
            };
            now.duration_since(f.at) >= ttl
        })
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.slots.lock().map(|s| s.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(ok: bool) -> Fetched {
        Fetched {
            at: Instant::now(),
            selectors: ok.then(Vec::new),
        }
    }

    #[test]
    fn shares_until_expiry_and_stays_bounded() {
        let cache = Cache::new(2, Duration::from_secs(30), Duration::from_secs(5));
        let t0 = Instant::now();
        let a = cache.slot("a", t0);
        assert!(Arc::ptr_eq(&a, &cache.slot("a", t0)), "in flight is shared");
        a.set(done(true)).ok();
        assert!(Arc::ptr_eq(
            &a,
            &cache.slot("a", t0 + Duration::from_secs(29))
        ));
        assert!(!Arc::ptr_eq(
            &a,
            &cache.slot("a", t0 + Duration::from_secs(31))
        ));

        let b = cache.slot("b", t0);
        b.set(done(false)).ok();
        assert!(
            !Arc::ptr_eq(&b, &cache.slot("b", t0 + Duration::from_secs(6))),
            "failures retried sooner"
        );

        for i in 0..10 {
            cache.slot(&format!("c{i}"), t0);
        }
        assert_eq!(cache.len(), 2);
    }
}
