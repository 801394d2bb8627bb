//! User and group names by id, kept for a few seconds: every lookup in the user database
//! (NSS: files, systemd, LDAP...) opens and parses it, which costs more than the rest of an
//! attestation. A renamed or deleted user is seen within `TTL`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::unistd::{Gid, Group, Uid, User};

/// How long a name is trusted without asking the database again.
const TTL: Duration = Duration::from_secs(5);
/// Ids kept per table; past this the table starts over (a host has far fewer in use).
const MAX_IDS: usize = 4096;

type Table = Mutex<HashMap<u32, (Option<String>, Instant)>>;

#[derive(Default)]
pub(crate) struct Names {
    users: Table,
    groups: Table,
}

impl Names {
    /// The name of user `uid`; `Ok(None)` if it has none. Errors are not kept.
    pub fn user(&self, uid: u32) -> nix::Result<Option<String>> {
        cached(&self.users, uid, || {
            Ok(User::from_uid(Uid::from_raw(uid))?.map(|u| u.name))
        })
    }

    /// The name of group `gid`; `Ok(None)` if it has none. Errors are not kept.
    pub fn group(&self, gid: u32) -> nix::Result<Option<String>> {
        cached(&self.groups, gid, || {
            Ok(Group::from_gid(Gid::from_raw(gid))?.map(|g| g.name))
        })
    }
}

fn cached(
    table: &Table,
    id: u32,
    lookup: impl FnOnce() -> nix::Result<Option<String>>,
) -> nix::Result<Option<String>> {
    let now = Instant::now();
    let fresh = |at: &Instant| now.saturating_duration_since(*at) < TTL;
    if let Some((name, _)) = lock(table).get(&id).filter(|(_, at)| fresh(at)) {
        return Ok(name.clone());
    }
    // Looked up without the lock: the database may be slow (a network directory).
    let name = lookup()?;
    let mut t = lock(table);
    if t.len() >= MAX_IDS {
        t.clear();
    }
    t.insert(id, (name.clone(), now));
    Ok(name)
}

fn lock(t: &Table) -> std::sync::MutexGuard<'_, HashMap<u32, (Option<String>, Instant)>> {
    t.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn a_name_is_looked_up_once_per_ttl_and_errors_are_not_kept() {
        let table = Table::default();
        let calls = Cell::new(0);
        let look = || {
            calls.set(calls.get() + 1);
            Ok(Some("alice".to_string()))
        };
        assert_eq!(
            cached(&table, 1000, look).unwrap().as_deref(),
            Some("alice")
        );
        assert_eq!(
            cached(&table, 1000, look).unwrap().as_deref(),
            Some("alice")
        );
        assert_eq!(calls.get(), 1, "the second lookup is served from the table");
        // Expired: asked again.
        lock(&table).get_mut(&1000).unwrap().1 = Instant::now() - TTL;
        cached(&table, 1000, look).unwrap();
        assert_eq!(calls.get(), 2);
        // A failed lookup leaves nothing behind.
        assert!(cached(&table, 7, || Err(nix::errno::Errno::EIO)).is_err());
        assert!(!lock(&table).contains_key(&7));
    }

    #[test]
    fn the_table_is_bounded() {
        let table = Table::default();
        for id in 0..(MAX_IDS as u32 + 10) {
            cached(&table, id, || Ok(None)).unwrap();
        }
        assert!(lock(&table).len() <= MAX_IDS);
    }
}
