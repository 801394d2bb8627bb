//! Child processes: the daemons (killed on drop, and by the kernel if the thread
//! that started them dies), short-lived helper children, and where the binaries are.

use crate::readiness::Readiness;
use anyhow::{anyhow, bail, Context, Result};
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Write as _};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How often a daemon that has not reported READY=1 is checked for having exited.
const EXIT_CHECK: Duration = Duration::from_millis(50);

/// A command whose child inherits no descriptor >= 3: libtss2's swtpm TCTI
/// opens a socket per TPM command without CLOEXEC, and swtpm serves one
/// connection at a time, so a long-lived child holding one would stall the
/// in-process TPM tests.
pub fn child_command(program: impl AsRef<OsStr>) -> Command {
    tessera_attestors::node::tpm::device::swtpm::command(program)
}

fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// User plus system CPU time process `pid` (all its threads, exited ones included) has
/// used so far, in nanoseconds, from its CPU-time clock.
pub fn cpu_time(pid: u32) -> Result<Duration> {
    let pid = nix::libc::pid_t::try_from(pid).context("pid out of range")?;
    let mut clock: nix::libc::clockid_t = 0;
    // SAFETY: `clock` is valid for a write of its type.
    let rc = unsafe { nix::libc::clock_getcpuclockid(pid, &mut clock) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc))
            .with_context(|| format!("CPU clock of {pid}"));
    }
    let mut ts = nix::libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is valid for a write of its type.
    if unsafe { nix::libc::clock_gettime(clock, &mut ts) } != 0 {
        return Err(io::Error::last_os_error()).with_context(|| format!("CPU time of {pid}"));
    }
    let secs = u64::try_from(ts.tv_sec).context("negative CPU time")?;
    let nanos = u32::try_from(ts.tv_nsec).context("bad CPU time")?;
    Ok(Duration::new(secs, nanos))
}

/// `<name>` beside the running binary (a test binary lives in `<profile>/deps`, a
/// bin in `<profile>`: so `target/release/tessera-bench` runs release daemons), else
/// `<target dir>/debug/<name>`, the target dir being `CARGO_TARGET_DIR` or
/// `<workspace>/target`.
pub fn bin(name: &str) -> Result<PathBuf> {
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(2) {
            candidates.push(dir.join(name));
        }
    }
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        let t = PathBuf::from(t);
        let t = if t.is_absolute() {
            t
        } else {
            workspace_root().join(t)
        };
        candidates.push(t.join("debug").join(name));
    }
    candidates.push(workspace_root().join("target").join("debug").join(name));
    match candidates.iter().find(|p| p.is_file()) {
        Some(p) => Ok(p.clone()),
        None => bail!(
            "binary `{name}` not found (looked at {candidates:?}); build it first: \
             `cargo build --workspace --bins`"
        ),
    }
}

/// The last `max_lines` lines of a log file.
pub fn tail(path: &Path, max_lines: usize) -> String {
    match fs::read_to_string(path) {
        Ok(s) => {
            let lines: Vec<&str> = s.lines().collect();
            let start = lines.len().saturating_sub(max_lines);
            let mut out = String::new();
            if start > 0 {
                out.push_str(&format!("[... {start} earlier lines ...]\n"));
            }
            out.push_str(&lines[start..].join("\n"));
            out
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// A long-running child with stdout and stderr appended to `log` and its own
/// `NOTIFY_SOCKET` (unless `env` sets one). Killed (SIGTERM, then SIGKILL) on drop;
/// it also gets SIGKILL if the thread that started it dies (PR_SET_PDEATHSIG), so
/// nothing outlives a crashed test binary.
pub struct Daemon {
    pub(crate) name: String,
    child: Option<Child>,
    pid: u32,
    pub log: PathBuf,
    readiness: Readiness,
}

impl Daemon {
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[&OsStr],
        log: &Path,
        env: &[(&str, &str)],
    ) -> Result<Daemon> {
        let mut out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("open {}", log.display()))?;
        let _ = writeln!(
            out,
            "===== test harness: starting {name}: {} {:?}",
            program.display(),
            args
        );
        let err = out.try_clone().context("dup the log fd")?;
        let readiness = Readiness::new()?;
        let mut cmd = child_command(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .env("NO_COLOR", "1")
            .env("NOTIFY_SOCKET", readiness.path())
            .env_remove("SPIFFE_ENDPOINT_SOCKET");
        for (k, v) in env {
            cmd.env(k, v);
        }
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(io::Error::from)
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name} ({})", program.display()))?;
        Ok(Daemon {
            name: name.to_string(),
            pid: child.id(),
            child: Some(child),
            log: log.to_path_buf(),
            readiness,
        })
    }

    /// Waits up to `limit` for the daemon's `READY=1`; fails with the tail of its
    /// log if it exits first or stays silent. Returns its `STATUS=` values so far.
    pub async fn wait_ready(&mut self, limit: Duration) -> Result<Vec<String>> {
        let deadline = Instant::now() + limit;
        loop {
            if self.readiness.wait(EXIT_CHECK).await {
                return Ok(self.readiness.statuses().to_vec());
            }
            if let Some(st) = self.exited() {
                bail!(
                    "{} exited ({st}) before it reported READY=1\n{}",
                    self.name,
                    tail(&self.log, 60)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not report READY=1 within {limit:?}\n{}",
                    self.name,
                    tail(&self.log, 60)
                );
            }
        }
    }

    /// Every `STATUS=` the daemon sent so far.
    pub fn statuses(&mut self) -> Vec<String> {
        self.readiness.statuses().to_vec()
    }

    /// `host:port` of an authority's gRPC listener, as it reported binding it.
    pub fn listening(&mut self) -> Result<String> {
        crate::readiness::listening_on(self.readiness.statuses()).map(|a| a.to_string())
    }

    /// `host:port` of its `[telemetry] listen`, as it reported binding it (before READY=1):
    /// configured with port 0, so no other process can take the port first.
    pub fn telemetry(&mut self) -> Result<String> {
        crate::readiness::reported(self.readiness.statuses(), "telemetry on")
            .map(|a| a.to_string())
            .with_context(|| format!("{}'s telemetry address", self.name))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id (of the exited process, once it was stopped).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGTERM, up to 2s grace, then SIGKILL. Blocks the thread: only for Drop (an async
    /// caller must use `stop_async`, or its runtime cannot close its own connections).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        terminate(&child);
        // Short: the caller's own connections cannot close while this blocks its
        // runtime, and a graceful shutdown may be waiting for them.
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(st)) => return Some(st),
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => break,
            }
        }
        eprintln!(
            "teardown: {} still running 2s after SIGTERM; sending SIGKILL",
            self.name
        );
        let _ = child.kill();
        child.wait().ok()
    }

    /// SIGTERM and wait up to `grace` (the runtime keeps running meanwhile); then SIGKILL.
    /// Returns the exit status and whether it exited within the grace period.
    pub async fn stop_async(&mut self, grace: Duration) -> Result<(ExitStatus, bool)> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("{} is not running", self.name))?;
        if let Ok(Some(st)) = child.try_wait() {
            return Ok((st, true));
        }
        terminate(&child);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(st)) => return Ok((st, true)),
                Ok(None) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(_) => break,
            }
        }
        eprintln!(
            "{} ignored SIGTERM for {grace:?}; sending SIGKILL",
            self.name
        );
        let _ = child.kill();
        let st = child
            .wait()
            .with_context(|| format!("wait for {}", self.name))?;
        Ok((st, false))
    }
}

fn terminate(child: &Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A short-lived helper child (e.g. a caller under another uid); killed on drop.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daemon(dir: &Path, script: &str) -> Daemon {
        let args = [OsStr::new("-c"), OsStr::new(script)];
        Daemon::spawn("test", Path::new("/bin/sh"), &args, &dir.join("log"), &[])
            .expect("spawn /bin/sh")
    }

    #[tokio::test]
    async fn ready_comes_from_the_daemons_own_notification() {
        let dir = tempfile::tempdir().expect("temp dir");
        // A real sd_notify client, as the daemons' is: one datagram, two lines.
        let send = "import os, socket; s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); \
                    s.sendto(b'STATUS=listening on 127.0.0.1:9\\nREADY=1', os.environ['NOTIFY_SOCKET'])";
        let mut d = daemon(dir.path(), &format!("python3 -c \"{send}\"; exec sleep 30"));
        let statuses = d
            .wait_ready(Duration::from_secs(10))
            .await
            .expect("READY=1");
        assert_eq!(statuses, ["listening on 127.0.0.1:9"]);
        assert!(d.exited().is_none(), "it is still running");
    }

    #[tokio::test]
    async fn a_daemon_that_exits_before_ready_fails_with_its_log() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut d = daemon(dir.path(), "echo 'config: bad port' >&2; exit 3");
        let started = Instant::now();
        let err = d
            .wait_ready(Duration::from_secs(10))
            .await
            .expect_err("it exited");
        let msg = format!("{err:#}");
        assert!(msg.contains("exited (exit status: 3)"), "{msg}");
        assert!(msg.contains("config: bad port"), "{msg}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "it did not wait out the deadline"
        );
    }

    #[tokio::test]
    async fn a_silent_daemon_fails_at_the_deadline() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut d = daemon(dir.path(), "exec sleep 30");
        let err = d
            .wait_ready(Duration::from_millis(300))
            .await
            .expect_err("no READY=1");
        assert!(
            format!("{err:#}").contains("did not report READY=1"),
            "{err:#}"
        );
    }
}
