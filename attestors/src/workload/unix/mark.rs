//! A cheap reading of what, in a live pinned process, would change its selectors: the
//! executable it runs (an exec) and its effective ids (a setuid binary, a privilege drop).
//! Two stat(2)s through the `/proc/<pid>` directory held since pin time and a pidfd poll,
//! against a full attestation's reads of stat, status, exe, cgroup and the user database: the
//! Workload API attests a connection once and checks this mark on every later call,
//! attesting again in full when it changed.

use nix::libc::{self, gid_t, uid_t};

use super::hash_cache::FileKey;
use super::{gone_as_process_gone, PinnedProcess, UnixAttestor, UnixError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessMark {
    /// The executable and its content's identity (an exec of another file, or of the same
    /// file rewritten, changes it).
    exe: FileKey,
    /// The owner of `/proc/<pid>`: the effective ids (root's when the process is not dumpable,
    /// which a credential change also toggles).
    uid: uid_t,
    gid: gid_t,
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
    let owner = dir.stat_self().map_err(gone_as_process_gone)?;
    Ok(ProcessMark {
        exe,
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
