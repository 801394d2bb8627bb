//! SHA-256 of executables, cached by file identity so repeat attestations don't re-read them.

use std::collections::{HashMap, VecDeque};
use std::ffi::CStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use nix::libc;

use sha2::{Digest, Sha256};

/// Entries kept; callers choose which binaries get hashed, so the cache must not grow unbounded.
pub(crate) const DEFAULT_CAPACITY: usize = 4096;
const BUF_SIZE: usize = 64 * 1024;

/// Identity of a file's content. Any write changes mtime/ctime, and ctime cannot be set back,
/// so a replaced or modified file gets a new key. Device numbers come back (a loop device's
/// with the next image, whose inodes carry whatever attributes the image says), so the key
/// also names the mount and the btrfs subvolume, by IDs that are never reused where the
/// kernel has them (Linux >= 6.8 and 6.10).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct FileKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: u32,
    ctime: i64,
    ctime_nsec: u32,
    mnt: u64,
    subvol: u64,
}

impl FileKey {
    /// The key of the open file `f`.
    pub fn of(f: &File) -> io::Result<Self> {
        Self::at(f.as_fd(), c"", libc::AT_EMPTY_PATH)
    }

    /// The key of `name` in directory `dir` (`statx` with `flags`).
    pub fn at(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> io::Result<Self> {
        let want = libc::STATX_BASIC_STATS
            | libc::STATX_MNT_ID
            | libc::STATX_MNT_ID_UNIQUE
            | libc::STATX_SUBVOL;
        let stx = statx(dir, name, flags, want)?;
        let has = |bits| stx.stx_mask & bits == bits;
        if !has(libc::STATX_INO | libc::STATX_SIZE | libc::STATX_MTIME | libc::STATX_CTIME) {
            return Err(io::Error::other(
                "statx left out the inode, size, mtime or ctime",
            ));
        }
        Ok(FileKey {
            dev: libc::makedev(stx.stx_dev_major, stx.stx_dev_minor),
            ino: stx.stx_ino,
            size: stx.stx_size,
            mtime: stx.stx_mtime.tv_sec,
            mtime_nsec: stx.stx_mtime.tv_nsec,
            ctime: stx.stx_ctime.tv_sec,
            ctime_nsec: stx.stx_ctime.tv_nsec,
            mnt: match has(libc::STATX_MNT_ID_UNIQUE) || has(libc::STATX_MNT_ID) {
                true => stx.stx_mnt_id,
                false => 0,
            },
            subvol: if has(libc::STATX_SUBVOL) {
                stx.stx_subvol
            } else {
                0
            },
        })
    }

    pub fn dev(&self) -> u64 {
        self.dev
    }

    pub fn ino(&self) -> u64 {
        self.ino
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    #[cfg(test)]
    pub fn for_test(ino: u64) -> Self {
        FileKey {
            dev: 1,
            ino,
            size: 10,
            mtime: 5,
            mtime_nsec: 6,
            ctime: 7,
            ctime_nsec: 8,
            mnt: 9,
            subvol: 0,
        }
    }
}

/// statx(2) of `name` in `dir` (`c""` with `AT_EMPTY_PATH`: `dir` itself), asking for `mask`;
/// `stx_mask` says what the kernel filled in.
pub(crate) fn statx(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: libc::c_int,
    mask: libc::c_uint,
) -> io::Result<libc::statx> {
    // SAFETY: all-zero is a valid `statx`.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `dir` is open, `name` is NUL-terminated, `stx` is valid for writes.
    let rc = unsafe { libc::statx(dir.as_raw_fd(), name.as_ptr(), flags, mask, &mut stx) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stx)
}

/// Bounded map with FIFO eviction: simple, and an attacker churning binaries can at worst cost
/// other callers a re-hash.
pub(crate) struct HashCache {
    map: HashMap<FileKey, [u8; 32]>,
    order: VecDeque<FileKey>,
    capacity: usize,
    hits: u64,
    misses: u64,
}

impl HashCache {
    pub fn new(capacity: usize) -> Self {
        HashCache {
            map: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            hits: 0,
            misses: 0,
        }
    }

    /// Looks up `key`, counting a hit or a miss.
    pub fn get(&mut self, key: &FileKey) -> Option<[u8; 32]> {
        let found = self.map.get(key).copied();
        if found.is_some() {
            self.hits += 1;
        } else {
            self.misses += 1;
        }
        found
    }

    pub fn insert(&mut self, key: FileKey, digest: [u8; 32]) {
        if self.map.insert(key, digest).is_some() {
            // Concurrent misses on one file; the key is already queued.
            return;
        }
        self.order.push_back(key);
        while self.map.len() > self.capacity {
            match self.order.pop_front() {
                Some(old) => {
                    self.map.remove(&old);
                }
                None => break,
            }
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn stats(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }
}

/// Streams `r` through SHA-256 with a fixed buffer. `Ok(None)` if it is longer than `limit`.
pub(crate) fn sha256_reader(mut r: impl Read, limit: u64) -> io::Result<Option<[u8; 32]>> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUF_SIZE];
    let mut total: u64 = 0;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        total = total.saturating_add(n as u64);
        if total > limit {
            return Ok(None);
        }
        hasher.update(&buf[..n]);
    }
    Ok(Some(hasher.finalize().into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn key(ino: u64) -> FileKey {
        FileKey::for_test(ino)
    }

    #[test]
    fn counts_hits_and_misses() {
        let mut c = HashCache::new(8);
        assert_eq!(c.get(&key(1)), None);
        c.insert(key(1), [7; 32]);
        assert_eq!(c.get(&key(1)), Some([7; 32]));
        assert_eq!(c.stats(), (1, 1));
    }

    #[test]
    fn any_field_change_is_a_new_key() {
        let mut c = HashCache::new(8);
        let k = key(1);
        c.insert(k, [7; 32]);
        for changed in [
            FileKey { dev: 2, ..k },
            FileKey { size: 11, ..k },
            FileKey { mtime_nsec: 0, ..k },
            FileKey { ctime: 0, ..k },
            FileKey { ctime_nsec: 0, ..k },
            FileKey { mnt: 10, ..k },
            FileKey { subvol: 1, ..k },
        ] {
            assert_eq!(c.get(&changed), None);
        }
    }

    #[test]
    fn bounded_with_fifo_eviction() {
        let mut c = HashCache::new(3);
        for i in 0..10 {
            c.insert(key(i), [i as u8; 32]);
            assert!(c.len() <= 3);
        }
        assert_eq!(c.len(), 3);
        assert_eq!(c.get(&key(6)), None);
        assert_eq!(c.get(&key(9)), Some([9; 32]));
        // Re-inserting an existing key must not queue it twice.
        c.insert(key(9), [9; 32]);
        assert_eq!(c.order.len(), 3);
    }

    #[test]
    fn sha256_streams_and_limits() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        // Larger than the buffer so the loop runs more than once.
        let data: Vec<u8> = (0..(3 * BUF_SIZE + 17)).map(|i| (i % 251) as u8).collect();
        f.write_all(&data).unwrap();
        let expected: [u8; 32] = Sha256::digest(&data).into();
        let got = sha256_reader(std::fs::File::open(f.path()).unwrap(), u64::MAX).unwrap();
        assert_eq!(got, Some(expected));
        let capped = sha256_reader(std::fs::File::open(f.path()).unwrap(), 1000).unwrap();
        assert_eq!(capped, None);
        assert_eq!(
            sha256_reader(&b""[..], 0).unwrap(),
            Some(Sha256::digest(b"").into())
        );
    }
}
