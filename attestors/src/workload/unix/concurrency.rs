//! Hashing under load: concurrent misses on one file hash it once (the others wait for that
//! result), and at most a few files are hashed at a time, so callers that pick large
//! binaries cannot occupy every core.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::hash_cache::{FileKey, HashCache};
use super::UnixError;

/// Files hashed at once: min(CPUs, 4).
pub(crate) fn default_hash_permits() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(4)
}

/// One hash in progress; `None` inside once it ended without a usable digest.
#[derive(Default)]
struct Flight {
    result: Mutex<Option<Option<[u8; 32]>>>,
    done: Condvar,
}

impl Flight {
    fn finish(&self, digest: Option<[u8; 32]>) {
        *lock(&self.result) = Some(digest);
        self.done.notify_all();
    }

    fn wait(&self) -> Option<[u8; 32]> {
        let mut r = lock(&self.result);
        loop {
            if let Some(d) = *r {
                return d;
            }
            r = self.done.wait(r).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Ends the flight even if the hashing thread panics, so waiters never hang.
struct Leader<'a> {
    hasher: &'a Hasher,
    key: FileKey,
    flight: Arc<Flight>,
    digest: Option<[u8; 32]>,
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        {
            let mut st = self.hasher.state();
            st.inflight.remove(&self.key);
            if let Some(d) = self.digest {
                st.cache.insert(self.key, d);
            }
        }
        self.flight.finish(self.digest);
    }
}

struct State {
    cache: HashCache,
    inflight: HashMap<FileKey, Arc<Flight>>,
    hashes: u64,
}

/// The digest cache with single-flight misses and a cap on concurrent hashing.
pub(crate) struct Hasher {
    state: Mutex<State>,
    permits: Semaphore,
}

impl Hasher {
    pub fn new(capacity: usize, permits: usize) -> Self {
        Hasher {
            state: Mutex::new(State {
                cache: HashCache::new(capacity),
                inflight: HashMap::new(),
                hashes: 0,
            }),
            permits: Semaphore::new(permits),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// The digest for `key`: cached, or awaited from a hash already running, or computed by
    /// `hash` (under a permit). `Ok(None)` when `hash` found no usable digest.
    pub fn digest(
        &self,
        key: FileKey,
        hash: impl Fn() -> Result<Option<[u8; 32]>, UnixError>,
    ) -> Result<Option<[u8; 32]>, UnixError> {
        loop {
            let waiting = {
                let mut st = self.state();
                if let Some(d) = st.cache.get(&key) {
                    return Ok(Some(d));
                }
                match st.inflight.get(&key) {
                    Some(f) => f.clone(),
                    None => {
                        let flight = Arc::<Flight>::default();
                        st.inflight.insert(key, flight.clone());
                        st.hashes += 1;
                        drop(st);
                        let mut leader = Leader {
                            hasher: self,
                            key,
                            flight,
                            digest: None,
                        };
                        let _permit = self.permits.acquire();
                        leader.digest = hash()?;
                        return Ok(leader.digest);
                    }
                }
            };
            if let Some(d) = waiting.wait() {
                return Ok(Some(d));
            }
            // The leader failed (e.g. the file changed under it): try again ourselves, which
            // either hashes or reports this caller's own error.
        }
    }

    /// (cache hits, cache misses).
    pub fn stats(&self) -> (u64, u64) {
        self.state().cache.stats()
    }

    /// Files actually hashed.
    #[cfg(test)]
    pub fn hashes(&self) -> u64 {
        self.state().hashes
    }
}

/// A counting semaphore for blocking threads (hashing runs on the blocking pool).
struct Semaphore {
    free: Mutex<usize>,
    cv: Condvar,
}

struct Permit<'a>(&'a Semaphore);

impl Semaphore {
    fn new(n: usize) -> Self {
        Semaphore {
            free: Mutex::new(n.max(1)),
            cv: Condvar::new(),
        }
    }

    fn acquire(&self) -> Permit<'_> {
        let mut free = lock(&self.free);
        while *free == 0 {
            free = self.cv.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *lock(&self.0.free) += 1;
        self.0.cv.notify_one();
    }
}

/// Poisoning only means another caller panicked; the data is still consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn key(ino: u64) -> FileKey {
        FileKey::for_test(ino)
    }

    #[test]
    fn concurrent_misses_hash_once() {
        let h = Hasher::new(16, 4);
        let calls = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..16 {
                s.spawn(|| {
                    let d = h
                        .digest(key(1), || {
                            calls.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(300));
                            Ok(Some([5; 32]))
                        })
                        .unwrap();
                    assert_eq!(d, Some([5; 32]));
                });
            }
        });
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(h.hashes(), 1);
    }

    #[test]
    fn hashing_is_capped() {
        let h = Hasher::new(64, 2);
        let running = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for i in 0..8 {
                let (h, running, peak) = (&h, &running, &peak);
                s.spawn(move || {
                    h.digest(key(100 + i), || {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(50));
                        running.fetch_sub(1, Ordering::SeqCst);
                        Ok(Some([1; 32]))
                    })
                    .unwrap();
                });
            }
        });
        assert_eq!(peak.load(Ordering::SeqCst), 2);
        assert_eq!(h.hashes(), 8);
    }

    #[test]
    fn failed_leader_lets_waiters_retry_and_nothing_is_cached() {
        let h = Hasher::new(16, 1);
        assert_eq!(h.digest(key(7), || Ok(None)).unwrap(), None);
        let err = h.digest(key(7), || {
            Err(UnixError::InvalidPid(0)) // any error: it must reach the caller
        });
        assert!(matches!(err, Err(UnixError::InvalidPid(0))));
        assert_eq!(
            h.digest(key(7), || Ok(Some([9; 32]))).unwrap(),
            Some([9; 32])
        );
        // Cached now: the closure is not called again.
        assert_eq!(
            h.digest(key(7), || panic!("must be cached")).unwrap(),
            Some([9; 32])
        );
        assert!(h.state().inflight.is_empty());
    }
}
