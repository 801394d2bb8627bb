//! What one local user may take of the Workload API: connections (overall and per uid) and
//! attestations per second (a token bucket per uid, charged before any /proc read or hash).

use crate::config::WorkloadApiConfig;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tessera_common::limits::{Full, Slot, Slots};

/// Buckets kept before idle (full) ones are dropped; they are recreated full on demand.
const MAX_BUCKETS: usize = 4096;

pub struct Limits {
    cfg: WorkloadApiConfig,
    conns: Arc<Slots<u32>>,
    buckets: Mutex<HashMap<u32, Bucket>>,
}

/// One open connection's place in the counts; its key is the uid.
pub type ConnSlot = Slot<u32>;

impl Limits {
    pub fn new(cfg: WorkloadApiConfig) -> Arc<Self> {
        Arc::new(Limits {
            conns: Slots::new(cfg.max_connections, cfg.max_connections_per_uid),
            cfg,
            buckets: Mutex::default(),
        })
    }

    pub fn config(&self) -> &WorkloadApiConfig {
        &self.cfg
    }

    /// A slot for one more connection of `uid`, released when the slot is dropped.
    pub fn admit(&self, uid: u32) -> Result<ConnSlot, Full> {
        self.conns.try_take(uid)
    }

    /// Takes one attestation token of `uid`; false when its bucket is empty.
    pub fn take_attestation(&self, uid: u32) -> bool {
        self.take_at(uid, Instant::now())
    }

    fn take_at(&self, uid: u32, now: Instant) -> bool {
        let (rate, burst) = (
            self.cfg.attestations_per_second as f64,
            self.cfg.attestation_burst as f64,
        );
        let mut buckets = lock(&self.buckets);
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(&uid) {
            // Full buckets carry no state; forget them first. Thousands of uids each with an
            // empty bucket at once is not a real host: then start over rather than grow.
            buckets.retain(|_, b| b.level(now, rate, burst) < burst);
            if buckets.len() >= MAX_BUCKETS {
                buckets.clear();
            }
        }
        let b = buckets.entry(uid).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        b.tokens = b.level(now, rate, burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn level(&self, now: Instant, rate: f64, burst: f64) -> f64 {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * rate;
        (self.tokens + refill).min(burst)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits(total: usize, per_uid: usize, rate: u32, burst: u32) -> Arc<Limits> {
        Limits::new(WorkloadApiConfig {
            max_connections: total,
            max_connections_per_uid: per_uid,
            attestations_per_second: rate,
            attestation_burst: burst,
            ..WorkloadApiConfig::default()
        })
    }

    #[test]
    fn connection_caps_per_uid_and_total() {
        let l = limits(5, 3, 1, 1);
        let a: Vec<_> = (0..3).map(|_| l.admit(1000).unwrap()).collect();
        assert_eq!(l.admit(1000).err(), Some(Full::PerKey));
        // Another uid is not affected by the first one's cap...
        let _b: Vec<_> = (0..2).map(|_| l.admit(0).unwrap()).collect();
        // ...but everyone is by the total.
        assert_eq!(l.admit(7).err(), Some(Full::Total));
        drop(a);
        let again: Vec<_> = (0..3).map(|_| l.admit(1000).unwrap()).collect();
        assert_eq!(*again[0].key(), 1000);
    }

    #[test]
    fn token_bucket_per_uid() {
        let l = limits(10, 10, 10, 5);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(l.take_at(1, t0));
        }
        assert!(!l.take_at(1, t0), "burst spent");
        assert!(l.take_at(2, t0), "another uid has its own bucket");
        // 10/s: one token back after 100 ms, never more than the burst.
        assert!(l.take_at(1, t0 + Duration::from_millis(100)));
        assert!(!l.take_at(1, t0 + Duration::from_millis(100)));
        let later = t0 + Duration::from_secs(60);
        for _ in 0..5 {
            assert!(l.take_at(1, later));
        }
        assert!(!l.take_at(1, later));
    }

    #[test]
    fn buckets_are_bounded() {
        let l = limits(10, 10, 1000, 1);
        let t0 = Instant::now();
        for uid in 0..(MAX_BUCKETS as u32 + 100) {
            l.take_at(uid, t0);
        }
        assert!(lock(&l.buckets).len() <= MAX_BUCKETS);
    }
}
