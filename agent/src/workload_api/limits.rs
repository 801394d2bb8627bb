//! What one local user may take of the Workload API: connections (overall and per uid) and
//! attestations per second (a token bucket per uid, charged before any /proc read or hash).

use crate::config::WorkloadApiConfig;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Buckets kept before idle (full) ones are dropped; they are recreated full on demand.
const MAX_BUCKETS: usize = 4096;

pub struct Limits {
    cfg: WorkloadApiConfig,
    conns: Mutex<Conns>,
    buckets: Mutex<HashMap<u32, Bucket>>,
}

#[derive(Default)]
struct Conns {
    total: usize,
    per_uid: HashMap<u32, usize>,
}

/// Why a connection was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    Total,
    PerUid,
}

impl Limits {
    pub fn new(cfg: WorkloadApiConfig) -> Arc<Self> {
        Arc::new(Limits {
            cfg,
            conns: Mutex::default(),
            buckets: Mutex::default(),
        })
    }

    pub fn config(&self) -> &WorkloadApiConfig {
        &self.cfg
    }

    /// A slot for one more connection of `uid`, released when the slot is dropped.
    pub fn admit(self: &Arc<Self>, uid: u32) -> Result<ConnSlot, Refused> {
        let mut c = lock(&self.conns);
        if c.total >= self.cfg.max_connections {
            return Err(Refused::Total);
        }
        let n = c.per_uid.entry(uid).or_default();
        if *n >= self.cfg.max_connections_per_uid {
            return Err(Refused::PerUid);
        }
        *n += 1;
        c.total += 1;
        Ok(ConnSlot {
            limits: self.clone(),
            uid,
        })
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

    #[cfg(test)]
    fn open(&self, uid: u32) -> (usize, usize) {
        let c = lock(&self.conns);
        (c.total, c.per_uid.get(&uid).copied().unwrap_or(0))
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

/// One open connection's place in the counts.
pub struct ConnSlot {
    limits: Arc<Limits>,
    uid: u32,
}

impl ConnSlot {
    pub fn uid(&self) -> u32 {
        self.uid
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut c = lock(&self.limits.conns);
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_uid.get_mut(&self.uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_uid.remove(&self.uid);
            }
        }
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
        assert_eq!(l.admit(1000).err(), Some(Refused::PerUid));
        // Another uid is not affected by the first one's cap...
        let b: Vec<_> = (0..2).map(|_| l.admit(0).unwrap()).collect();
        // ...but everyone is by the total.
        assert_eq!(l.admit(7).err(), Some(Refused::Total));
        drop(a);
        assert_eq!(l.open(1000), (2, 0));
        let _again = l.admit(1000).unwrap();
        drop(b);
        assert_eq!(l.open(0), (1, 0));
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
