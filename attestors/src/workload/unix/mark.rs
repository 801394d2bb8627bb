//! A cheap reading of what, in a live pinned process, would change its selectors: the
//! executable it runs (an exec) and its effective ids (a setuid binary, a privilege drop).
//! Two stat(2)s under /proc and a pidfd poll, against a full attestation's reads of stat,
//! status, exe, cgroup and the user database: the Workload API attests a connection once and
//! checks this mark on every later call, attesting again in full when it changed.

use std::os::unix::fs::MetadataExt;

use super::proc::is_gone;
use super::{PinnedProcess, UnixAttestor, UnixError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessMark {
    exe_dev: u64,
    exe_ino: u64,
    /// The owner of `/proc/<pid>`: the effective ids (root's when the process is not dumpable,
    /// which a credential change also toggles).
    uid: u32,
    gid: u32,
}

impl UnixAttestor {
    /// The mark of the pinned process now. `Ok(None)` without a pidfd: then nothing cheap shows
    /// that the pid is still the pinned process's, and every call must attest in full.
    pub fn mark(&self, p: &PinnedProcess) -> Result<Option<ProcessMark>, UnixError> {
        if p.pidfd.is_none() || p.start_time.is_none() {
            return Ok(None);
        }
        let dir = self.proc_root.join(p.pid.to_string());
        let exe_path = dir.join("exe");
        let exe = std::fs::metadata(&exe_path);
        let owner = std::fs::metadata(&dir);
        // Alive after both reads: they were of this process, not of a later owner of its pid.
        if p.exited() {
            return Err(UnixError::ProcessGone);
        }
        let err = |path: std::path::PathBuf| {
            move |source: std::io::Error| match is_gone(&source) {
                true => UnixError::ProcessGone,
                false => UnixError::Io { path, source },
            }
        };
        let exe = exe.map_err(err(exe_path))?;
        let owner = owner.map_err(err(dir))?;
        Ok(Some(ProcessMark {
            exe_dev: exe.dev(),
            exe_ino: exe.ino(),
            uid: owner.uid(),
            gid: owner.gid(),
        }))
    }
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
}
