//! The peer of a connection, pinned at accept, against a pid that another process took
//! between connect(2) and accept(2): an attacker connects, hands the socket on and exits,
//! then a process with identities starts under its pid.

use super::tests::one;
use super::*;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use nix::libc;

const NOBODY: u32 = 65534;

fn become_uid(uid: u32) -> io::Result<()> {
    // SAFETY: plain syscalls on integers, between fork and exec.
    let rcs = unsafe {
        [
            libc::setgroups(0, std::ptr::null()),
            libc::setgid(uid),
            libc::setuid(uid),
        ]
    };
    match rcs.iter().all(|&rc| rc == 0) {
        true => Ok(()),
        false => Err(io::Error::last_os_error()),
    }
}

/// Runs `program args` as `run_uid`, having connected to `path` as `connect_uid` first, in
/// the child before exec: the connection's peer is that child.
fn spawn_connected(
    path: &Path,
    connect_uid: u32,
    run_uid: u32,
    program: &str,
    args: &[&str],
) -> Child {
    // SAFETY: sockaddr_un is plain data; zeroed is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_encoded_bytes();
    assert!(bytes.len() < addr.sun_path.len(), "socket path too long");
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::null());
    // SAFETY: only async-signal-safe calls (set*id, socket, connect) on data prepared before
    // the fork.
    unsafe {
        cmd.pre_exec(move || {
            if connect_uid != 0 {
                become_uid(connect_uid)?;
            }
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
            if fd < 0 || libc::connect(fd, (&raw const addr).cast(), len) != 0 {
                return Err(io::Error::last_os_error());
            }
            if run_uid != connect_uid {
                become_uid(run_uid)?;
            }
            Ok(())
        });
    }
    cmd.spawn().expect("spawn the connecting process")
}

/// A listener that `nobody` may connect to, in a directory removed on drop; None (and
/// nothing to test) unless this is root, which connecting as another uid needs.
fn listener() -> Option<(tempfile::TempDir, UnixListener, PathBuf)> {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("not root: cannot connect as another uid; nothing to test");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("s");
    let l = UnixListener::bind(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
    Some((dir, l, path))
}

fn peer(s: &UnixStream) -> (i32, u32) {
    let cred = getsockopt(&s.as_fd(), PeerCredentials).unwrap();
    (cred.pid(), cred.uid())
}

/// Starts `sleep` as root under `pid` (the next pid handed out is ns_last_pid + 1); None
/// when another process took it first.
fn spawn_at(pid: i32) -> Option<Child> {
    std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string())
        .expect("write /proc/sys/kernel/ns_last_pid (root in the initial pid namespace)");
    let mut child = Command::new("sleep").arg("60").spawn().ok()?;
    if child.id() as i32 == pid {
        return Some(child);
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn a_pid_taken_between_connect_and_accept_is_not_the_peer() {
    let Some((_dir, l, path)) = listener() else {
        return;
    };
    let a = UnixAttestor::new();
    for _ in 0..20 {
        let mut attacker = spawn_connected(&path, NOBODY, NOBODY, "true", &[]);
        let taken = attacker.id() as i32;
        attacker.wait().unwrap();
        let victim = spawn_at(taken);
        let (server, _) = l.accept().unwrap();
        let Some(mut victim) = victim else {
            continue;
        };
        assert_eq!(peer(&server), (taken, NOBODY));
        // The pid really names the victim now: looked up as its own uid, it is pinned.
        let by_pid = a.pin_connected(taken, 0).unwrap();
        assert!(!by_pid.exited());
        assert_eq!(one(&a.attest_pinned(&by_pid).unwrap(), "unix", "uid:"), "0");
        // Whatever this kernel offers (a pidfd of the exited peer, EINVAL, or only the pid),
        // the connection's peer is gone.
        let pinned = a.pin_peer(server.as_fd()).unwrap();
        assert!(pinned.exited(), "the victim was pinned as the peer");
        assert!(a.attest_pinned(&pinned).is_err());
        // What kernels without SO_PEERPIDFD do: the pid's uid is not the one that connected.
        let fallback = a.pin_connected(taken, NOBODY).unwrap();
        assert!(fallback.exited(), "the victim was pinned by the peer's pid");
        victim.kill().unwrap();
        victim.wait().unwrap();
        return;
    }
    panic!("other processes took the pid in each of 20 tries");
}

#[test]
fn by_pid_a_live_peer_is_pinned_unless_it_changed_its_uid() {
    let Some((_dir, l, path)) = listener() else {
        return;
    };
    let a = UnixAttestor::new();
    for (connect_uid, run_uid) in [(NOBODY, NOBODY), (0, NOBODY)] {
        let mut child = spawn_connected(&path, connect_uid, run_uid, "sleep", &["60"]);
        let (server, _) = l.accept().unwrap();
        let (pid, uid) = peer(&server);
        assert_eq!((pid, uid), (child.id() as i32, connect_uid));
        let pinned = a.pin_connected(pid, uid).unwrap();
        if connect_uid == run_uid {
            let uid = one(&a.attest_pinned(&pinned).unwrap(), "unix", "uid:");
            assert_eq!(uid, run_uid.to_string());
        } else {
            assert!(
                pinned.exited(),
                "pinned after it left the uid it connected as"
            );
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

/// A peer the kernel reports reaped (EINVAL from SO_PEERPIDFD on Linux 6.5-6.15) is gone,
/// even while its pid names a live process of the same uid.
#[test]
fn a_peer_reported_reaped_is_gone_whoever_has_its_pid() {
    let a = UnixAttestor::new();
    let me = std::process::id() as i32;
    let uid = nix::unistd::Uid::effective().as_raw();
    assert!(!a.pin_connected(me, uid).unwrap().exited(), "this process");
    let pinned = a.pin_reported(me, uid, PeerPidfd::Gone).unwrap();
    assert!(pinned.exited());
    assert!(a.attest_pinned(&pinned).is_err());
}
