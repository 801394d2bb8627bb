//! A cheap reading of what, in a live pinned process, would change its selectors: the
//! executable it runs (an exec) and its ids (a setuid binary, a privilege drop). A stat(2)
//! of `exe` through the `/proc/<pid>` directory held since pin time, the ids from the pidfd,
//! and a pidfd poll, against a full attestation's reads of stat, status, exe, cgroup and the
//! user database: the Workload API attests a connection once and checks this mark on every
//! later call, attesting again in full when it changed.

use nix::libc::{self, gid_t, uid_t};

use super::hash_cache::FileKey;
use super::pidfd::{pidfd_creds, PidfdCreds};
use super::proc::ProcDir;
use super::{gone_as_process_gone, PinnedProcess, UnixAttestor, UnixError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessMark {
    /// The executable and its content's identity (an exec of another file, or of the same
    /// file rewritten, changes it).
    exe: FileKey,
    ids: Ids,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ids {
    /// Every uid and gid and the cgroup, from the pidfd (Linux 6.13+).
    Pidfd(PidfdCreds),
    /// Older kernels: the owner of `/proc/<pid>`, the effective ids (the directory itself is
    /// the process's euid and egid whether or not it is dumpable, unlike the files in it).
    /// A change of the real ids alone, or of the cgroup, is not seen.
    Owner { uid: uid_t, gid: gid_t },
}

impl UnixAttestor {
    /// The mark of the pinned process now. `Ok(None)` without a pidfd: then nothing cheap shows
    /// that the pid is still the pinned process's, and every call must attest in full.
    pub fn mark(&self, p: &PinnedProcess) -> Result<Option<ProcessMark>, UnixError> {
        if p.pidfd.is_none() {
            return Ok(None);
        }
        let read = read_mark(p);
        // Alive after the reads: they were of the live process (a dead one's directory stats
        // as root's, and its `exe` is gone).
        if p.exited() {
            return Err(UnixError::ProcessGone);
        }
        read.map(Some)
    }
}

/// The mark read through the directory held since pin time: a lookup of `exe` in it and a
/// stat of the open directory, where absolute paths walked `/proc` and the pid's entry twice
/// a call. It can only ever read the pinned process, whoever has the pid now.
///
/// The executable's attributes are the kernel's cached ones (`AT_STATX_DONT_SYNC`): this
/// runs on the async runtime's threads, and a FUSE daemon (even behind an overlay a user
/// mounted in a namespace of their own) could otherwise hold them in GETATTR forever.
fn read_mark(p: &PinnedProcess) -> Result<ProcessMark, UnixError> {
    let dir = p.dir.as_ref().ok_or(UnixError::ProcessGone)?;
    let exe = dir.exe_key(libc::AT_STATX_DONT_SYNC)?;
    let ids = match pidfd_ids(p)? {
        Some(ids) => ids,
        None => owner_ids(dir)?,
    };
    Ok(ProcessMark { exe, ids })
}

/// `None` when the kernel has no `PIDFD_GET_INFO` or refuses it for this process (it
/// answers ESRCH for a live process whose parent is outside the agent's pid namespace):
/// then the directory's owner stands in.
fn pidfd_ids(p: &PinnedProcess) -> Result<Option<Ids>, UnixError> {
    let Some(fd) = &p.pidfd else { return Ok(None) };
    match pidfd_creds(fd) {
        Ok(creds) => Ok(creds.map(Ids::Pidfd)),
        Err(_) if p.exited() => Err(UnixError::ProcessGone),
        Err(e) => {
            tracing::debug!(pid = p.pid, error = %e, "PIDFD_GET_INFO refused; the owner of /proc/<pid> stands in");
            Ok(None)
        }
    }
}

fn owner_ids(dir: &ProcDir) -> Result<Ids, UnixError> {
    let owner = dir.stat_self().map_err(gone_as_process_gone)?;
    Ok(Ids::Owner {
        uid: owner.st_uid,
        gid: owner.st_gid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    /// The mark follows an exec of the same process, and turns into an error once it exits.
    #[test]
    fn an_exec_changes_the_mark_and_an_exit_ends_it() {
        let mut child = Command::new("sh")
            .args(["-c", "read line; exec sleep 60"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let a = UnixAttestor::new();
        let pinned = a.pin(pid).unwrap();
        let before = a.mark(&pinned).unwrap().expect("a pidfd on this kernel");
        assert_eq!(
            a.mark(&pinned).unwrap(),
            Some(before),
            "stable while nothing changes"
        );

        writeln!(child.stdin.as_mut().unwrap()).unwrap();
        let sleep = std::fs::canonicalize(
            String::from_utf8(
                Command::new("sh")
                    .args(["-c", "command -v sleep"])
                    .output()
                    .unwrap()
                    .stdout,
            )
            .unwrap()
            .trim(),
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_link(format!("/proc/{pid}/exe")).ok().as_ref() != Some(&sleep) {
            assert!(Instant::now() < deadline, "the child did not exec sleep");
            std::thread::sleep(Duration::from_millis(10));
        }
        let after = a.mark(&pinned).unwrap().unwrap();
        assert_ne!(after, before, "an exec must change the mark");

        child.kill().unwrap();
        child.wait().unwrap();
        assert!(matches!(a.mark(&pinned), Err(UnixError::ProcessGone)));
    }

    /// A root process that drops to nobody without an exec (which also makes it non-dumpable)
    /// changes its mark, read either way, so the connection it opened as root is attested
    /// again as nobody.
    #[test]
    fn a_privilege_drop_without_exec_changes_the_mark() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("needs root (a process that drops its ids); skipped");
            return;
        }
        let drop = "import os, sys, time\n\
                    print('ready', flush=True)\n\
                    sys.stdin.readline()\n\
                    os.setgroups([]); os.setresgid(65534, 65534, 65534); os.setresuid(65534, 65534, 65534)\n\
                    print('dropped', flush=True)\n\
                    time.sleep(60)\n";
        let mut child = Command::new("python3")
            .args(["-c", drop])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut said = || {
            let mut line = String::new();
            std::io::BufRead::read_line(&mut out, &mut line).unwrap();
            line.trim().to_string()
        };
        // Running python (not the test binary it was forked from) before the first mark.
        assert_eq!(said(), "ready");
        let a = UnixAttestor::new();
        let pinned = a.pin(child.id() as i32).unwrap();
        let dir = pinned.dir.as_ref().unwrap();
        let (mark, pidfd, owner) = (
            a.mark(&pinned).unwrap().unwrap(),
            pidfd_ids(&pinned).unwrap(),
            owner_ids(dir).unwrap(),
        );

        assert_eq!(
            a.mark(&pinned).unwrap().unwrap(),
            mark,
            "stable before the drop"
        );
        writeln!(child.stdin.as_mut().unwrap()).unwrap();
        assert_eq!(said(), "dropped");
        assert_ne!(a.mark(&pinned).unwrap().unwrap(), mark, "the mark in use");
        match pidfd {
            Some(before) => assert_ne!(pidfd_ids(&pinned).unwrap(), Some(before)),
            None => eprintln!("kernel without PIDFD_GET_INFO: only the fallback checked"),
        }
        assert_ne!(owner_ids(dir).unwrap(), owner, "the older kernels' reading");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Once the pinned process has exited and another process has its pid, the mark read
    /// through the pinned directory fails, where the same read through a fresh `/proc/<pid>`
    /// (as absolute paths did, and as reopening the directory by pid would) reads the
    /// newcomer. Without the pidfd check after the reads, only this keeps a reused pid out.
    #[test]
    fn the_pinned_directory_never_follows_a_reused_pid() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("needs root (ns_last_pid); skipped");
            return;
        }
        let a = UnixAttestor::new();
        let mut first = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = first.id() as i32;
        let pinned = a.pin(pid).unwrap();
        let before = read_mark(&pinned).unwrap();
        first.kill().unwrap();
        first.wait().unwrap();

        let mut second = spawn_with_pid(pid).expect("another process with the pinned pid");
        let newcomer = a.pin(pid).unwrap();
        assert_eq!(
            read_mark(&newcomer).unwrap(),
            before,
            "the newcomer runs the same binary as the same user: only the pin tells them apart"
        );
        assert!(matches!(read_mark(&pinned), Err(UnixError::ProcessGone)));
        assert!(matches!(a.mark(&pinned), Err(UnixError::ProcessGone)));
        second.kill().unwrap();
        second.wait().unwrap();
    }

    /// `sleep 30` with pid `pid`, by setting `ns_last_pid` (other forks on the host may take
    /// the pid first, hence the retries).
    fn spawn_with_pid(pid: i32) -> Option<std::process::Child> {
        for _ in 0..200 {
            std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).unwrap();
            let mut child = Command::new("sleep").arg("30").spawn().unwrap();
            if child.id() as i32 == pid {
                return Some(child);
            }
            child.kill().unwrap();
            child.wait().unwrap();
        }
        None
    }
}
