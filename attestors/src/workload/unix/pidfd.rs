//! The process that connected, pinned so a reused pid can never stand in for it.
//!
//! The kernel records the peer of a Unix socket at connect(2). From Linux 6.5 it hands out
//! a pidfd for that very process (SO_PEERPIDFD); older kernels only give the pid, which is
//! opened with pidfd_open(2) at accept (Linux >= 5.3) or, failing that, remembered with its
//! start time. A pidfd turns readable once its process exits, whatever later takes the pid.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::libc;

use super::proc::ProcDir;

/// `SO_PEERPIDFD` (asm-generic/socket.h; not yet exported by the libc crate for every target).
#[cfg(not(any(target_arch = "sparc", target_arch = "sparc64")))]
const SO_PEERPIDFD: libc::c_int = 77;
#[cfg(any(target_arch = "sparc", target_arch = "sparc64"))]
const SO_PEERPIDFD: libc::c_int = 0x56;

/// One process, identified for as long as it lives: its pid, its start time (clock ticks since
/// boot, from `/proc/<pid>/stat`), its `/proc/<pid>` directory and, where the kernel supports
/// it, a pidfd.
#[derive(Debug)]
pub struct PinnedProcess {
    pub(crate) pid: i32,
    /// `None`: the process had already exited when it was pinned; nothing can be attested.
    pub(crate) start_time: Option<u64>,
    pub(crate) pidfd: Option<OwnedFd>,
    /// Opened at pin time and then checked to be this process's (alive after it was opened):
    /// it stays this process's, and once the process exits lookups in it fail, whoever
    /// takes the pid next. `None` with `start_time`.
    pub(crate) dir: Option<ProcDir>,
}

impl PinnedProcess {
    /// A process that had exited when it was pinned.
    pub(crate) fn gone(pid: i32) -> Self {
        PinnedProcess {
            pid,
            start_time: None,
            pidfd: None,
            dir: None,
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The pidfd, for callers that want to be woken when the process exits.
    pub fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        self.pidfd.as_ref().map(|f| f.as_fd())
    }

    /// True once the pinned process is known to have exited. Without a pidfd this only
    /// reports an exit seen at pin time; the start-time checks cover the rest.
    pub fn exited(&self) -> bool {
        self.start_time.is_none() || self.pidfd.as_ref().is_some_and(pidfd_exited)
    }
}

/// What the kernel tells of the process that connected a socket.
#[derive(Debug)]
pub(crate) enum PeerPidfd {
    /// A pidfd for that very process (already exited, from Linux 6.16, if it was reaped).
    Pinned(OwnedFd),
    /// Reaped before it was asked for (Linux 6.5 to 6.15 answer EINVAL): its pid may already
    /// be another process's, so nothing may be looked up by it.
    Gone,
    /// A kernel without SO_PEERPIDFD (before 6.5).
    Unsupported,
}

/// A pidfd for the process that connected `sock`, as the kernel pinned it at connect(2).
pub(crate) fn peer_pidfd(sock: BorrowedFd<'_>) -> io::Result<PeerPidfd> {
    let mut fd: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `fd` and `len` are valid for writes of the sizes passed; `sock` is a live fd.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_PEERPIDFD,
            (&mut fd as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return peer_pidfd_refused(io::Error::last_os_error());
    }
    if fd < 0 {
        return Err(io::Error::other("SO_PEERPIDFD returned no descriptor"));
    }
    // SAFETY: the kernel just installed `fd` in our table; nothing else owns it.
    Ok(PeerPidfd::Pinned(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// What SO_PEERPIDFD's error means (net/core/sock.c: an unknown option is ENOPROTOOPT;
/// `pidfd_prepare` refuses a pid without a task with EINVAL, and some kernels with ESRCH).
fn peer_pidfd_refused(e: io::Error) -> io::Result<PeerPidfd> {
    match e.raw_os_error() {
        Some(libc::ENOPROTOOPT) => Ok(PeerPidfd::Unsupported),
        Some(libc::EINVAL | libc::ESRCH) => Ok(PeerPidfd::Gone),
        _ => Err(e),
    }
}

/// pidfd_open(2). `Ok(None)` on kernels without it.
pub(crate) fn pidfd_open(pid: i32) -> io::Result<Option<OwnedFd>> {
    // SAFETY: a plain syscall with integer arguments.
    let rc = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOSYS) => Ok(None),
            _ => Err(e),
        };
    }
    // SAFETY: the kernel just installed this fd in our table; nothing else owns it.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(rc as libc::c_int) }))
}

/// A process's ids and cgroup as its pidfd tells them (`PIDFD_GET_INFO`, Linux 6.13+).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PidfdCreds {
    /// Real, effective, saved and filesystem uids, then the same gids.
    uids: [u32; 4],
    gids: [u32; 4],
    /// The cgroup v2 id; 0 when the kernel gave none.
    cgroup: u64,
}

/// `struct pidfd_info` as of its first version (`PIDFD_INFO_SIZE_VER0`), which every kernel
/// with the ioctl accepts.
#[repr(C)]
#[derive(Default)]
struct PidfdInfo {
    mask: u64,
    cgroupid: u64,
    pid: u32,
    tgid: u32,
    ppid: u32,
    ruid: u32,
    rgid: u32,
    euid: u32,
    egid: u32,
    suid: u32,
    sgid: u32,
    fsuid: u32,
    fsgid: u32,
    spare0: u32,
}

const PIDFD_INFO_CREDS: u64 = 1 << 1;
const PIDFD_INFO_CGROUPID: u64 = 1 << 2;
/// `_IOWR(0xFF, 11, struct pidfd_info)` with the 64-byte first version.
const PIDFD_GET_INFO: libc::c_ulong =
    (3 << 30) | ((std::mem::size_of::<PidfdInfo>() as libc::c_ulong) << 16) | (0xFF << 8) | 11;
const _: () = assert!(std::mem::size_of::<PidfdInfo>() == 64);

/// Set once a kernel has answered that it has no `PIDFD_GET_INFO`: not asked again.
static NO_PIDFD_INFO: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The process's ids and cgroup; `Ok(None)` on a kernel without `PIDFD_GET_INFO`. ESRCH once
/// the process has been reaped.
pub(crate) fn pidfd_creds(fd: &OwnedFd) -> io::Result<Option<PidfdCreds>> {
    use std::sync::atomic::Ordering::Relaxed;
    if NO_PIDFD_INFO.load(Relaxed) {
        return Ok(None);
    }
    let mut info = PidfdInfo {
        mask: PIDFD_INFO_CREDS | PIDFD_INFO_CGROUPID,
        ..PidfdInfo::default()
    };
    // SAFETY: the kernel writes at most the size the request encodes, that of `info`.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), PIDFD_GET_INFO as _, &mut info) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOTTY) | Some(libc::EINVAL) => {
                NO_PIDFD_INFO.store(true, Relaxed);
                Ok(None)
            }
            _ => Err(e),
        };
    }
    if info.mask & PIDFD_INFO_CREDS == 0 {
        return Err(io::Error::other("PIDFD_GET_INFO returned no credentials"));
    }
    Ok(Some(PidfdCreds {
        uids: [info.ruid, info.euid, info.suid, info.fsuid],
        gids: [info.rgid, info.egid, info.sgid, info.fsgid],
        cgroup: match info.mask & PIDFD_INFO_CGROUPID {
            0 => 0,
            _ => info.cgroupid,
        },
    }))
}

/// A pidfd polls readable once its process has exited (zombie or reaped). Any error counts as
/// exited: an identity is never handed out on an uncertain answer.
fn pidfd_exited(fd: &OwnedFd) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd, zero timeout.
        let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
        if rc >= 0 {
            return rc > 0;
        }
        if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::process::Command;
    use std::time::{Duration, Instant};

    #[test]
    fn pidfd_follows_its_process_not_the_pid() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let fd = pidfd_open(child.id() as i32).unwrap().expect("pidfd_open");
        assert!(!pidfd_exited(&fd));
        child.kill().unwrap();
        // Readable as soon as it is a zombie, before anyone reaps it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pidfd_exited(&fd) {
            assert!(Instant::now() < deadline, "pidfd never turned readable");
            std::thread::sleep(Duration::from_millis(5));
        }
        child.wait().unwrap();
        assert!(pidfd_exited(&fd));
    }

    #[test]
    fn peer_pidfd_names_the_connecting_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let l = UnixListener::bind(&path).unwrap();
        let _c = UnixStream::connect(&path).unwrap();
        let (server, _) = l.accept().unwrap();
        let PeerPidfd::Pinned(fd) = peer_pidfd(server.as_fd()).unwrap() else {
            eprintln!("kernel without SO_PEERPIDFD; nothing to check");
            return;
        };
        assert!(!pidfd_exited(&fd));
        // The pidfd is for this very process: fdinfo names its pid.
        let info =
            std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).unwrap();
        let pid = info
            .lines()
            .find_map(|l| l.strip_prefix("Pid:"))
            .map(|v| v.trim().parse::<u32>().unwrap());
        assert_eq!(pid, Some(std::process::id()));
    }

    /// A reaped peer on a kernel that cannot hand out its pidfd is gone, never a reason to
    /// look its pid up again (which may name another process by then).
    #[test]
    fn a_peer_the_kernel_cannot_pin_is_gone_and_an_unknown_option_unsupported() {
        let refused = |errno| peer_pidfd_refused(io::Error::from_raw_os_error(errno));
        assert!(matches!(refused(libc::EINVAL), Ok(PeerPidfd::Gone)));
        assert!(matches!(refused(libc::ESRCH), Ok(PeerPidfd::Gone)));
        assert!(matches!(
            refused(libc::ENOPROTOOPT),
            Ok(PeerPidfd::Unsupported)
        ));
        assert!(refused(libc::EBADF).is_err());
    }

    /// The ids read through the ioctl are the ones status shows, field for field (a wrong
    /// request number or layout reads nothing or the wrong fields); a kernel from 6.13 on
    /// must have the ioctl.
    #[test]
    fn pidfd_creds_match_status() {
        let fd = pidfd_open(std::process::id() as i32)
            .unwrap()
            .expect("pidfd_open");
        let release = nix::sys::utsname::uname().unwrap();
        let mut version = release.release().to_str().unwrap().split(['.', '-']);
        let major: u32 = version.next().unwrap().parse().unwrap();
        let minor: u32 = version.next().unwrap().parse().unwrap();
        let Some(creds) = pidfd_creds(&fd).unwrap() else {
            assert!(
                (major, minor) < (6, 13),
                "Linux {major}.{minor} has PIDFD_GET_INFO"
            );
            return;
        };
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let ids = |key: &str| -> [u32; 4] {
            let line = status.lines().find_map(|l| l.strip_prefix(key)).unwrap();
            let v: Vec<u32> = line
                .split_whitespace()
                .map(|x| x.parse().unwrap())
                .collect();
            [v[0], v[1], v[2], v[3]]
        };
        assert_eq!(creds.uids, ids("Uid:"));
        assert_eq!(creds.gids, ids("Gid:"));
        let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        if cgroup.lines().any(|l| l.starts_with("0::")) {
            assert_ne!(creds.cgroup, 0, "a cgroup v2 id");
        }
    }
}
