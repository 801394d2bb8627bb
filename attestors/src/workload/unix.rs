//! The `unix` workload attestor: selectors for a local process, read from /proc.
//!
//! Emits `unix:uid|user|gid|group|supplementary_gid|path|sha256:<v>`, `cgroup:path:<v>` and
//! the `systemd:`, `container:` and `k8s:` selectors derived from that path.

mod cgroupfs;
mod concurrency;
mod exe_fs;
mod hash_cache;
mod mark;
mod names;
mod pidfd;
mod proc;

use std::fs::File;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use tessera_common::Selector;

use cgroupfs::Mounts;
use concurrency::{default_hash_permits, Hasher};
use exe_fs::Trust;
use hash_cache::{sha256_reader, FileKey, DEFAULT_CAPACITY};
pub use mark::ProcessMark;
use names::Names;
use pidfd::PeerPidfd;
pub use pidfd::PinnedProcess;
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
    #[error("process executed another file during attestation")]
    ExecutableChanged,
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

/// Selectors a container runtime's API adds to those read from the kernel (which name the
/// container). Must return promptly: it runs inside every attestation.
pub trait Enrich: Send + Sync {
    fn enrich(&self, kernel: &[Selector]) -> Vec<Selector>;
}

/// Attests local processes. Cheap to share: the hash cache is behind a mutex that is never
/// held while reading files.
pub struct UnixAttestor {
    proc_root: PathBuf,
    /// pidfds name processes of the real /proc only; a test root has start times alone.
    use_pidfd: bool,
    hasher: Hasher,
    names: Names,
    /// Found on first use; a test root has none, so no invocation IDs.
    cgroup_mounts: OnceLock<Mounts>,
    enricher: Option<std::sync::Arc<dyn Enrich>>,
}

impl Default for UnixAttestor {
    fn default() -> Self {
        Self::new()
    }
}

impl UnixAttestor {
    pub fn new() -> Self {
        UnixAttestor {
            use_pidfd: true,
            cgroup_mounts: OnceLock::new(),
            ..Self::with_proc_root(PathBuf::from("/proc"))
        }
    }

    /// Reads processes from `root` instead of `/proc` (tests).
    pub fn with_proc_root(root: PathBuf) -> Self {
        UnixAttestor {
            proc_root: root,
            use_pidfd: false,
            hasher: Hasher::new(DEFAULT_CAPACITY, default_hash_permits()),
            names: Names::default(),
            cgroup_mounts: OnceLock::from(Mounts::default()),
            enricher: None,
        }
    }

    /// Adds `enricher`'s selectors to every attestation.
    pub fn with_enricher(mut self, enricher: std::sync::Arc<dyn Enrich>) -> Self {
        self.enricher = Some(enricher);
        self
    }

    /// Pins the process that connected the Unix socket `sock` (call at accept): SO_PEERPIDFD
    /// where the kernel has it, else the SO_PEERCRED pid as it is now.
    pub fn pin_peer(&self, sock: BorrowedFd<'_>) -> Result<PinnedProcess, UnixError> {
        let io = |source| UnixError::Io {
            path: PathBuf::from("<socket peer>"),
            source,
        };
        let cred = getsockopt(&sock, PeerCredentials).map_err(|e| io(e.into()))?;
        let pid = cred.pid();
        if pid <= 0 {
            return Err(UnixError::InvalidPid(pid));
        }
        let peer = match self.use_pidfd {
            true => pidfd::peer_pidfd(sock).map_err(io)?,
            false => PeerPidfd::Unsupported,
        };
        self.pin_reported(pid, cred.uid(), peer)
    }

    /// Pins the peer the kernel reported as pid `pid`, effective uid `uid`, and `peer`.
    fn pin_reported(
        &self,
        pid: i32,
        uid: u32,
        peer: PeerPidfd,
    ) -> Result<PinnedProcess, UnixError> {
        match peer {
            PeerPidfd::Pinned(fd) => self.pin_with(pid, Some(fd)),
            PeerPidfd::Gone => {
                tracing::debug!(pid, "Workload API peer reaped before accept: gone");
                Ok(PinnedProcess::gone(pid))
            }
            PeerPidfd::Unsupported => self.pin_connected(pid, uid),
        }
    }

    /// Pins `pid`, looked up only now, as the process that connected with effective uid
    /// `uid`. It may have exited since and its pid gone to another process: one running
    /// with another uid is not the peer (a process that changed its uid after connecting
    /// is refused too). Another of the same uid cannot be told apart without SO_PEERPIDFD.
    pub(crate) fn pin_connected(&self, pid: i32, uid: u32) -> Result<PinnedProcess, UnixError> {
        let pinned = self.pin(pid)?;
        let Some(dir) = &pinned.dir else {
            return Ok(pinned);
        };
        let now = match dir.status().map_err(gone_as_process_gone) {
            Ok(status) => status.euid,
            Err(UnixError::ProcessGone) => return Ok(PinnedProcess::gone(pid)),
            Err(e) => return Err(e),
        };
        // Debug, as the listener's other refusals: any user can cause it at will.
        if now != uid {
            tracing::debug!(pid, connected_uid = uid, uid = now,
                "Workload API peer's pid now runs with another uid (exited and taken by another process, or changed its ids): treated as gone");
            return Ok(PinnedProcess::gone(pid));
        }
        Ok(pinned)
    }

    /// Pins process `pid` as it is now.
    pub fn pin(&self, pid: i32) -> Result<PinnedProcess, UnixError> {
        if pid <= 0 {
            return Err(UnixError::InvalidPid(pid));
        }
        let pidfd = match self.use_pidfd {
            true => match pidfd::pidfd_open(pid) {
                Ok(fd) => fd,
                // Exited already: still pinned (as gone), so its connection is answered
                // `Unavailable` per request rather than dropped at accept, and never
                // looked up by the pid, which another process may take at any moment.
                Err(e) if e.raw_os_error() == Some(nix::libc::ESRCH) => {
                    return Ok(PinnedProcess::gone(pid))
                }
                Err(source) => {
                    return Err(UnixError::Io {
                        path: PathBuf::from(format!("pidfd of {pid}")),
                        source,
                    })
                }
            },
            false => None,
        };
        self.pin_with(pid, pidfd)
    }

    fn pin_with(
        &self,
        pid: i32,
        pidfd: Option<std::os::fd::OwnedFd>,
    ) -> Result<PinnedProcess, UnixError> {
        let gone = PinnedProcess::gone(pid);
        let read = ProcDir::open(&self.proc_root, pid).and_then(|d| Ok((d.stat()?, d)));
        let (stat, dir) = match read {
            Ok((st, dir)) if !st.exited() => (st, dir),
            Ok(_) => return Ok(gone),
            Err(e) => {
                return match gone_as_process_gone(e) {
                    UnixError::ProcessGone => Ok(gone),
                    e => Err(e),
                }
            }
        };
        let pinned = PinnedProcess {
            pid,
            start_time: Some(stat.start_time),
            pidfd,
            dir: Some(dir),
        };
        // Still alive after /proc was read: the directory and the start time read through it
        // are this process's.
        if pinned.exited() {
            return Ok(gone);
        }
        Ok(pinned)
    }

    /// Ok while the pinned process lives and `/proc/<pid>` is still that process.
    pub fn check(&self, p: &PinnedProcess) -> Result<(), UnixError> {
        let start = p.start_time.ok_or(UnixError::ProcessGone)?;
        if p.exited() {
            return Err(UnixError::ProcessGone);
        }
        let st = self.current_stat(p.pid)?;
        if st.start_time != start {
            return Err(UnixError::PidReused);
        }
        if st.exited() || p.exited() {
            return Err(UnixError::ProcessGone);
        }
        Ok(())
    }

    /// Selectors for process `pid` as it is now (a one-off: `pin` + `attest_pinned`).
    pub fn attest(&self, pid: i32) -> Result<Vec<Selector>, UnixError> {
        self.attest_pinned(&self.pin(pid)?)
    }

    /// Selectors for the pinned process, read through its `/proc/<pid>` directory opened at
    /// pin time (and checked then to be that process's), so nothing read through it can come
    /// from a process that reused the pid. Afterwards the pid, start time and credentials
    /// are checked again through a fresh lookup.
    pub fn attest_pinned(&self, p: &PinnedProcess) -> Result<Vec<Selector>, UnixError> {
        let start = p.start_time.ok_or(UnixError::ProcessGone)?;
        let dir = p.dir.as_ref().ok_or(UnixError::ProcessGone)?;
        let first = dir.stat().map_err(gone_as_process_gone)?;
        if p.exited() {
            return Err(UnixError::ProcessGone);
        }
        if first.start_time != start {
            return Err(UnixError::PidReused);
        }
        if first.exited() {
            return Err(UnixError::ProcessGone);
        }
        let (mut selectors, seen) = self
            .gather(dir)
            .map_err(|e| self.classify(p.pid, start, e))?;
        self.recheck(p.pid, start, &seen)?;
        if p.exited() {
            return Err(UnixError::ProcessGone);
        }
        // After the checks: what the kernel said is settled, and a slow daemon cannot widen
        // the window in which the pid could be reused.
        if let Some(e) = &self.enricher {
            let extra = e.enrich(&selectors);
            selectors.extend(extra);
        }
        Ok(selectors)
    }

    /// (hits, misses) of the executable hash cache.
    pub fn cache_stats(&self) -> (u64, u64) {
        self.hasher.stats()
    }

    fn gather(&self, dir: &ProcDir) -> Result<(Vec<Selector>, Seen), UnixError> {
        let status = dir.status()?;
        let mut out = Vec::new();

        // Real, not effective, ids (as SPIRE does): a setuid binary is attested as its invoker,
        // and the ids are stable across seteuid() games during attestation.
        out.push(Selector::new("unix", format!("uid:{}", status.uid)));
        match self.names.user(status.uid) {
            Ok(Some(name)) => out.extend(checked("unix", format!("user:{name}"))),
            Ok(None) => {}
            Err(e) => tracing::warn!(uid = status.uid, error = %e, "user lookup failed"),
        }
        out.push(Selector::new("unix", format!("gid:{}", status.gid)));
        match self.names.group(status.gid) {
            Ok(Some(name)) => out.extend(checked("unix", format!("group:{name}"))),
            Ok(None) => {}
            Err(e) => tracing::warn!(gid = status.gid, error = %e, "group lookup failed"),
        }
        for g in &status.groups {
            out.push(Selector::new("unix", format!("supplementary_gid:{g}")));
        }

        // Path and hash both come from the one opened file: the hash is read through it, and
        // the path counts only if it names that same file in the agent's view.
        let exe = dir.open_file("exe")?;
        let key = FileKey::of(&exe).map_err(|source| UnixError::Io {
            path: dir.path_of("exe"),
            source,
        })?;
        let link = dir.readlink("exe")?;
        if let Some(p) = agent_view_path(&link, &key) {
            out.extend(checked("unix", format!("path:{p}")));
        }
        if let Some(digest) = self.exe_digest(&exe, key, dir)? {
            out.push(Selector::new(
                "unix",
                format!("sha256:{}", hex::encode(digest)),
            ));
        }

        if let Some(cg) = dir.cgroup()? {
            out.extend(checked("cgroup", format!("path:{}", cg.path)));
            let (derived, unit_cgroup) = crate::workload::derived::from_cgroup(&cg.path);
            out.extend(derived.into_iter().filter_map(|(k, v)| checked(k, v)));
            let mounts = self
                .cgroup_mounts
                .get_or_init(|| Mounts::discover(&self.proc_root));
            if let Some(id) = unit_cgroup.and_then(|u| mounts.invocation_id(cg.hierarchy, &u)) {
                out.push(Selector::new("systemd", format!("invocation_id:{id}")));
            }
        }
        Ok((out, Seen { status, exe: key }))
    }

    /// SHA-256 of the open executable (`key`: its key), from the cache when the kernel
    /// keeps its file system's attributes and its identity is unchanged. `Ok(None)` (no
    /// selector) when it is too large, changes while being read, or is on a file system
    /// whose content the agent's read cannot prove to be what the process runs.
    fn exe_digest(
        &self,
        file: &File,
        key: FileKey,
        dir: &ProcDir,
    ) -> Result<Option<[u8; 32]>, UnixError> {
        let path = dir.path_of("exe");
        let io_err = |source| UnixError::Io {
            path: path.clone(),
            source,
        };
        let hash = || {
            if key.size() > MAX_HASH_SIZE {
                tracing::warn!(path = %path.display(), size = key.size(), "executable too large to hash");
                return Ok(None);
            }
            let Some(digest) = sha256_reader(file, MAX_HASH_SIZE).map_err(io_err)? else {
                tracing::warn!(path = %path.display(), "executable grew past the hash limit");
                return Ok(None);
            };
            if FileKey::of(file).map_err(io_err)? != key {
                tracing::warn!(path = %path.display(), "executable changed while hashing");
                return Ok(None);
            }
            Ok(Some(digest))
        };
        match exe_fs::trust(file, dir) {
            Trust::Local => self.hasher.digest(key, hash),
            Trust::Unproven(why) => {
                tracing::warn!(path = %path.display(), reason = why, "executable content cannot be proven; no sha256 selector");
                Ok(None)
            }
        }
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
    fn recheck(&self, pid: i32, start_time: u64, seen: &Seen) -> Result<(), UnixError> {
        let dir = ProcDir::open(&self.proc_root, pid)?;
        let st = dir.stat().map_err(gone_as_process_gone)?;
        if st.start_time != start_time {
            return Err(UnixError::PidReused);
        }
        if st.exited() {
            return Err(UnixError::ProcessGone);
        }
        if dir.status().map_err(gone_as_process_gone)? != seen.status {
            return Err(UnixError::CredentialsChanged);
        }
        // An exec after the executable was read would leave its selectors with a process that
        // now runs something else (an exec of the same, unchanged file is the same content).
        if dir.exe_key(0)? != seen.exe {
            return Err(UnixError::ExecutableChanged);
        }
        Ok(())
    }
}

/// What the attestation read that its final check compares against a fresh look.
struct Seen {
    status: Status,
    /// The executable that was hashed.
    exe: FileKey,
}

/// `link` (where `/proc/<pid>/exe` points, in the caller's mount namespace) if, resolved in
/// the agent's own view, it is the file the process runs (same device and inode). A caller
/// that bind-mounted its binary over another path in a namespace of its own, or whose binary
/// was deleted or replaced, gets no path; the hash still names the binary.
fn agent_view_path<'a>(link: &'a std::ffi::OsStr, exe: &FileKey) -> Option<&'a str> {
    let Some(p) = link.to_str() else {
        // Lossy conversion could make it equal to another path; no entry can name it anyway.
        tracing::warn!(exe = ?link, "executable path is not UTF-8; no path selector");
        return None;
    };
    if !Path::new(p).is_absolute() {
        return None;
    }
    match std::fs::metadata(p) {
        Ok(m) if m.dev() == exe.dev() && m.ino() == exe.ino() => Some(p),
        _ => {
            tracing::debug!(
                path = p,
                "executable path is not that file in the agent's view; no path selector"
            );
            None
        }
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
mod peer_tests;
#[cfg(test)]
pub(crate) mod tests;
