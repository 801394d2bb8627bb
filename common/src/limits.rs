//! Admission shared by both daemons: a resource counted overall and per key
//! (connections per uid or per address, attestations per address), and the
//! open-files limit every connection draws on.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

/// Which cap refused a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    Total,
    PerKey,
}

/// A counted resource with a cap overall and per key.
pub struct Slots<K: Eq + Hash + Clone> {
    total: usize,
    per_key: usize,
    used: Mutex<(usize, HashMap<K, usize>)>,
}

/// One taken slot, given back when dropped.
pub struct Slot<K: Eq + Hash + Clone> {
    slots: Arc<Slots<K>>,
    key: K,
}

impl<K: Eq + Hash + Clone> Slots<K> {
    pub fn new(total: usize, per_key: usize) -> Arc<Self> {
        Arc::new(Slots {
            total,
            per_key,
            used: Mutex::new((0, HashMap::new())),
        })
    }

    /// A slot for `key`, or which cap is reached.
    pub fn try_take(self: &Arc<Self>, key: K) -> Result<Slot<K>, Full> {
        let mut used = self.lock();
        let (total, per) = &mut *used;
        if *total >= self.total {
            return Err(Full::Total);
        }
        let n = per.get(&key).copied().unwrap_or(0);
        if n >= self.per_key {
            return Err(Full::PerKey);
        }
        *total += 1;
        per.insert(key.clone(), n + 1);
        Ok(Slot {
            slots: self.clone(),
            key,
        })
    }

    fn lock(&self) -> MutexGuard<'_, (usize, HashMap<K, usize>)> {
        self.used.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<K: Eq + Hash + Clone> Slot<K> {
    pub fn key(&self) -> &K {
        &self.key
    }
}

impl<K: Eq + Hash + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut used = self.slots.lock();
        let (total, per) = &mut *used;
        *total = total.saturating_sub(1);
        if let Some(n) = per.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                per.remove(&self.key);
            }
        }
    }
}

/// Raises the soft open-files limit to the hard one: every connection is a
/// descriptor. Under systemd, `LimitNOFILE=` sets both (and the units' syscall
/// filters refuse setrlimit, which is fine).
pub fn raise_nofile_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::debug!(soft, hard, error = %e, "cannot raise the open files limit");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, "cannot read the open files limit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_cap_overall_and_per_key_and_come_back() {
        let s = Slots::new(3, 2);
        let a1 = s.try_take("a").unwrap();
        let _a2 = s.try_take("a").unwrap();
        assert_eq!(s.try_take("a").err(), Some(Full::PerKey));
        let b1 = s.try_take("b").unwrap();
        assert_eq!(b1.key(), &"b");
        assert_eq!(s.try_take("c").err(), Some(Full::Total));
        drop(a1);
        assert!(s.try_take("c").is_ok());
        drop(b1);
        assert!(
            lock_len(&s) <= 2,
            "a key whose slots are all back is forgotten"
        );
    }

    fn lock_len<K: Eq + Hash + Clone>(s: &Slots<K>) -> usize {
        s.lock().1.len()
    }
}
