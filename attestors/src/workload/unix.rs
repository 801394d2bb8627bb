//! The `unix` workload attestor: selectors for a local process, read from /proc.
//!
//! Emits `unix:uid|user|gid|group|supplementary_gid|path|sha256:<v>` and `cgroup:path:<v>`.

mod hash_cache;
mod proc;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use nix::unistd::{Gid, Group, Uid, User};
use tessera_common::Selector;

use hash_cache::{sha256_reader, FileKey, HashCache, DEFAULT_CAPACITY};
use proc::{is_gone, ProcDir, Status};

/// Executables larger than this get no `sha256` selector: the caller picks the file, so the
/// cost of hashing it must stay bounded.
pub const MAX_HASH_SIZE: u64 = 1 << 30;

#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum UnixError {
    #[error("invalid pid {0}")]
    InvalidPid(i32),
    #[error("process exited during attestation")]
    ProcessGone,
    #[error("pid was reused by another process during attestation")]
    PidReused,
    #[error("process credentials changed during attestation")]
    CredentialsChanged,
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: larger than {limit} bytes", path.display())]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{}: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },
}

/// Attests local processes by pid. Cheap to share: the hash cache is behind a mutex that is
/// never held while reading files.
pub struct UnixAttestor {
    proc_root: PathBuf,
    cache: Mutex<HashCache>,
}

impl Default for UnixAttestor {
    fn default() -> Self {
        Self::new()
    }
}

impl UnixAttestor {
    pub fn new() -> Self {
        Self::with_proc_root(PathBuf::from("/proc"))
    }

    /// Reads processes from `root` instead of `/proc` (tests).
    pub fn with_proc_root(root: PathBuf) -> Self {
        UnixAttestor {
            proc_root: root,
            cache: Mutex::new(HashCache::new(DEFAULT_CAPACITY)),
        }
    }

    /// Selectors for process `pid`. Afterwards re-checks that `pid` is still the same process
    /// (same start time) with the same credentials, so a reused pid can't borrow an identity.
    pub fn attest(&self, pid: i32) -> Result<Vec<Selector>, UnixError> {
        if pid <= 0 {
            return Err(UnixError::InvalidPid(pid));
        }
        let dir = ProcDir::open(&self.proc_root, pid)?;
        let first = dir.stat().map_err(gone_as_process_gone)?;
        if first.exited() {
            return Err(UnixError::ProcessGone);
        }
        let (selectors, status) = self
            .gather(&dir)
            .map_err(|e| self.classify(pid, first.start_time, e))?;
        self.recheck(pid, first.start_time, &status)?;
        Ok(selectors)
    }

    /// (hits, misses) of the executable hash cache.
    pub fn cache_stats(&self) -> (u64, u64) {
        self.cache().stats()
    }

    fn cache(&self) -> MutexGuard<'_, HashCache> {
        // Poisoning only means another caller panicked; the map is still usable.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn gather(&self, dir: &ProcDir) -> Result<(Vec<Selector>, Status), UnixError> {
        let status = dir.status()?;
        let mut out = Vec::new();

        // Real, not effective, ids (as SPIRE does): a setuid binary is attested as its invoker,
        // and the ids are stable across seteuid() games during attestation.
        out.push(Selector::new("unix", format!("uid:{}", status.uid)));
        match User::from_uid(Uid::from_raw(status.uid)) {
            Ok(Some(u)) => out.extend(checked("unix", format!("user:{}", u.name))),
            Ok(None) => {}
            Err(e) => tracing::warn!(uid = status.uid, error = %e, "user lookup failed"),
        }
        out.push(Selector::new("unix", format!("gid:{}", status.gid)));
        match Group::from_gid(Gid::from_raw(status.gid)) {
            Ok(Some(g)) => out.extend(checked("unix", format!("group:{}", g.name))),
            Ok(None) => {}
            Err(e) => tracing::warn!(gid = status.gid, error = %e, "group lookup failed"),
        }
        for g in &status.groups {
            out.push(Selector::new("unix", format!("supplementary_gid:{g}")));
        }

        // Path as the kernel shows it, including a " (deleted)" suffix; the hash is read through
        // /proc/<pid>/exe, i.e. the file actually executing, never the path on disk.
        let link = dir.readlink("exe")?;
        match link.to_str() {
            Some(p) => out.extend(checked("unix", format!("path:{p}"))),
            // Lossy conversion could make it equal to another path; no entry can name it anyway.
            None => tracing::warn!(exe = ?link, "executable path is not UTF-8; no path selector"),
        }
        let exe = dir.open_file("exe")?;
        if let Some(digest) = self.exe_digest(&exe, &dir.path_of("exe"))? {
            out.push(Selector::new(
                "unix",
                format!("sha256:{}", hex::encode(digest)),
            ));
        }

        if let Some(cg) = dir.cgroup()? {
            out.extend(checked("cgroup", format!("path:{cg}")));
        }
        Ok((out, status))
    }

    /// SHA-256 of the open executable, from the cache when its identity is unchanged.
    /// `Ok(None)` (no selector) when it is too large or changes while being read.
    fn exe_digest(&self, file: &File, path: &Path) -> Result<Option<[u8; 32]>, UnixError> {
        let io_err = |source| UnixError::Io {
            path: path.to_path_buf(),
            source,
        };
        let key = FileKey::from_metadata(&file.metadata().map_err(io_err)?);
        if let Some(digest) = self.cache().get(&key) {
            return Ok(Some(digest));
        }
        if key.size() > MAX_HASH_SIZE {
            tracing::warn!(path = %path.display(), size = key.size(), "executable too large to hash");
            return Ok(None);
        }
        let Some(digest) = sha256_reader(file, MAX_HASH_SIZE).map_err(io_err)? else {
            tracing::warn!(path = %path.display(), "executable grew past the hash limit");
            return Ok(None);
        };
        if FileKey::from_metadata(&file.metadata().map_err(io_err)?) != key {
            tracing::warn!(path = %path.display(), "executable changed while hashing");
            return Ok(None);
        }
        self.cache().insert(key, digest);
        Ok(Some(digest))
    }

    /// Turns a "not found" error seen mid-attestation into what actually happened.
    fn classify(&self, pid: i32, start_time: u64, err: UnixError) -> UnixError {
        match &err {
            UnixError::Io { source, .. } if is_gone(source) => {}
            _ => return err,
        }
        match self.current_stat(pid) {
            Ok(st) if st.start_time != start_time => UnixError::PidReused,
            Ok(st) if st.exited() => UnixError::ProcessGone,
            // Same live process: the file is genuinely missing (e.g. a kernel thread's exe).
            Ok(_) => err,
            Err(e) => e,
        }
    }

    fn current_stat(&self, pid: i32) -> Result<proc::Stat, UnixError> {
        ProcDir::open(&self.proc_root, pid)?
            .stat()
            .map_err(gone_as_process_gone)
    }

    /// The final check, through a fresh lookup of `pid` so that reuse is visible.
    fn recheck(&self, pid: i32, start_time: u64, status: &Status) -> Result<(), UnixError> {
        let dir = ProcDir::open(&self.proc_root, pid)?;
        let st = dir.stat().map_err(gone_as_process_gone)?;
        if st.start_time != start_time {
            return Err(UnixError::PidReused);
        }
        if st.exited() {
            return Err(UnixError::ProcessGone);
        }
        if dir.status().map_err(gone_as_process_gone)? != *status {
            return Err(UnixError::CredentialsChanged);
        }
        Ok(())
    }
}

fn gone_as_process_gone(e: UnixError) -> UnixError {
    match &e {
        UnixError::Io { source, .. } if is_gone(source) => UnixError::ProcessGone,
        _ => e,
    }
}

/// A selector only if it is one an entry could contain (`Selector::parse` rejects control
/// characters and overlong values); otherwise it is left out, which can only match less.
fn checked(kind: &str, value: String) -> Option<Selector> {
    let sel = Selector::new(kind, value);
    match Selector::parse(&sel.to_string()) {
        Ok(parsed) if parsed == sel => Some(sel),
        _ => {
            tracing::warn!(selector = ?sel, "unusable selector value; left out");
            None
        }
    }
}

#[cfg(test)]
mod tests;
