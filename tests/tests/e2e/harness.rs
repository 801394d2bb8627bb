//! Real processes, nothing mocked: one authority and one agent per test, each in its own
//! temp dir with its own loopback port, so tests can run in parallel.
//!
//! On a panic the `Deployment` prints both daemons' logs before it kills them.

use hyper_util::rt::TokioIo;
use std::ffi::OsStr;
use std::fmt::Debug;
use std::fs;
use std::future::Future;
use std::io::{self, Write as _};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tessera_proto::workload as pb;
use tessera_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Status};

pub const TD: &str = "example.org";
/// How bundles are keyed on the Workload API.
pub const TD_KEY: &str = "spiffe://example.org";
pub const SECURITY_HEADER: &str = "workload.spiffe.io";
/// The uid/gid of `nobody`, for a caller that no entry matches.
pub const NOBODY: u32 = 65534;

pub type Raw = SpiffeWorkloadApiClient<Channel>;

const STARTUP: Duration = Duration::from_secs(20);
const CLI_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the agent may take to reflect a change made at the authority
/// (sync_interval is 500ms; this is generous for a loaded 2-core machine).
pub const PROPAGATION: Duration = Duration::from_secs(25);

// ---------------------------------------------------------------------------------------
// small utilities

/// A command whose child inherits no descriptor >= 3: libtss2's swtpm TCTI
/// opens a socket per TPM command without CLOEXEC, and swtpm serves one
/// connection at a time, so a long-lived child holding one would stall the
/// in-process TPM tests.
pub fn child_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    tessera_attestors::node::tpm::device::swtpm::command(program)
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Awaits `fut` or panics naming `what`: a broken agent must not hang the suite.
pub async fn within<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `<target dir>/debug/<name>`, where the target dir is `CARGO_TARGET_DIR` or
/// `<workspace>/target` (or, failing both, the one this test binary was built into).
pub fn bin(name: &str) -> PathBuf {
    let mut candidates = Vec::new();
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
    if let Some(debug) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent().map(Path::to_path_buf))
    {
        candidates.push(debug.join(name));
    }
    match candidates.iter().find(|p| p.is_file()) {
        Some(p) => p.clone(),
        None => panic!(
            "binary `{name}` not found (looked at {candidates:?}); build it first: \
             `cargo build --workspace --bins`"
        ),
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

fn tail(path: &Path, max_lines: usize) -> String {
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

// ---------------------------------------------------------------------------------------
// daemons

/// A long-running child. Killed (SIGTERM, then SIGKILL) on drop; it also gets SIGKILL
/// if the test thread that started it dies (PR_SET_PDEATHSIG), so nothing outlives a
/// crashed test binary.
pub struct Daemon {
    name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Daemon {
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[&OsStr],
        log: &Path,
        env: &[(&str, &str)],
    ) -> Daemon {
        let mut out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
        let _ = writeln!(
            out,
            "===== test harness: starting {name}: {} {:?}",
            program.display(),
            args
        );
        let err = out.try_clone().expect("dup log fd");
        let mut cmd = child_command(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .env("NO_COLOR", "1")
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
            .unwrap_or_else(|e| panic!("cannot start {name} ({}): {e}", program.display()));
        Daemon {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon is running").id()
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGTERM, up to 2s grace, then SIGKILL. Blocks the thread: only for Drop (an async
    /// test must use `stop_async`, or its runtime cannot close its own connections).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        // Short: the test's own connections cannot close while this blocks its runtime,
        // and a graceful shutdown may be waiting for them.
        let deadline = Instant::now() + secs(2);
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
    pub async fn stop_async(&mut self, grace: Duration) -> Option<(ExitStatus, bool)> {
        let mut child = self.child.take()?;
        if let Ok(Some(st)) = child.try_wait() {
            return Some((st, true));
        }
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(st)) => return Some((st, true)),
                Ok(None) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(_) => break,
            }
        }
        eprintln!(
            "{} ignored SIGTERM for {grace:?}; sending SIGKILL",
            self.name
        );
        let _ = child.kill();
        child.wait().ok().map(|st| (st, false))
    }
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

// ---------------------------------------------------------------------------------------
// CLI runs

#[derive(Debug)]
pub struct CmdOut {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOut {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Non-empty stderr lines.
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }

    /// The contract: a non-zero exit and exactly one `error: ...` line (clap's fixed
    /// "For more information, try '--help'." hint is tolerated), never a panic.
    /// Returns the error line, or what is wrong.
    pub fn check_one_line_error(&self) -> Result<String, String> {
        if self.success() {
            return Err(format!(
                "exit 0 (expected non-zero); stdout: {:?}",
                self.stdout.chars().take(300).collect::<String>()
            ));
        }
        if self.status.code().is_none() {
            return Err(format!(
                "killed by a signal ({:?}); stderr: {}",
                self.status, self.stderr
            ));
        }
        if self.stderr.contains("panicked") || self.stderr.contains("RUST_BACKTRACE") {
            return Err(format!("panicked: {}", self.stderr));
        }
        let lines: Vec<&str> = self
            .stderr_lines()
            .into_iter()
            .filter(|l| l.trim() != "For more information, try '--help'.")
            .collect();
        if lines.len() == 1 && lines[0].starts_with("error: ") {
            Ok(lines[0].to_string())
        } else {
            Err(format!(
                "expected exactly one `error: ...` line on stderr, got {} lines: {:?}",
                lines.len(),
                self.stderr
            ))
        }
    }

    /// `check_one_line_error`, panicking with `what` on failure.
    pub fn assert_one_line_error(&self, what: &str) -> String {
        self.check_one_line_error()
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    }
}

/// Runs a CLI to completion (killed after 30s). `uid` runs it as another user.
pub async fn run_cmd(
    program: &Path,
    args: &[&str],
    uid: Option<u32>,
    env: &[(&str, &str)],
) -> CmdOut {
    let mut cmd = tokio::process::Command::from(child_command(program));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("NO_COLOR", "1")
        .env_remove("SPIFFE_ENDPOINT_SOCKET")
        .env_remove("RUST_BACKTRACE")
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(u) = uid {
        cmd.uid(u).gid(u);
    }
    let what = format!("{} {}", program.display(), args.join(" "));
    let out = within(CLI_TIMEOUT, &what, cmd.output())
        .await
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    CmdOut {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

// ---------------------------------------------------------------------------------------
// the deployment

#[derive(Clone, Debug)]
pub struct Opts {
    pub default_x509_ttl: &'static str,
    pub default_jwt_ttl: &'static str,
    pub agent_ttl: &'static str,
    /// Appended to the authority's config (e.g. a `[tpm]` section).
    pub authority_extra: String,
    /// Appended to every agent config the deployment writes (e.g. `[telemetry]`).
    pub agent_extra: String,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            default_x509_ttl: "1h",
            default_jwt_ttl: "5m",
            agent_ttl: "1h",
            authority_extra: String::new(),
            agent_extra: String::new(),
        }
    }
}

pub struct Deployment {
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
    pub port: u16,
    /// The join token in the agent's config (already consumed once the agent attested).
    pub token: String,
    /// `spiffe://example.org/tessera/agent/join_token/<token>`.
    pub agent_id: String,
    authority: Option<Daemon>,
    agent: Option<Daemon>,
    /// Further daemons a test started (e.g. a second agent); their logs are printed too.
    pub extra: Vec<Daemon>,
    /// `Opts::agent_extra`.
    pub agent_extra: String,
}

impl Deployment {
    /// Starts an authority, generates a join token and writes the agent's config and trust
    /// bundle. The agent is not started: register entries first, then `start_agent`.
    pub async fn new(opts: Opts) -> Deployment {
        let tmp = tempfile::Builder::new()
            .prefix("tessera-e2e-")
            .tempdir_in("/tmp")
            .expect("create a temp dir in /tmp");
        // A non-root child must be able to reach the agent socket inside it.
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let dir = tmp.path().to_path_buf();
        let port = free_port();
        let cfg = format!(
            "trust_domain = \"{TD}\"\n\
             listen_address = \"127.0.0.1:{port}\"\n\
             admin_socket_path = \"{admin}\"\n\
             data_dir = \"{data}\"\n\
             default_x509_ttl = \"{x509}\"\n\
             default_jwt_ttl = \"{jwt}\"\n\
             agent_ttl = \"{agent}\"\n{extra}",
            admin = dir.join("admin.sock").display(),
            data = dir.join("authority").display(),
            x509 = opts.default_x509_ttl,
            jwt = opts.default_jwt_ttl,
            agent = opts.agent_ttl,
            extra = opts.authority_extra,
        );
        fs::write(dir.join("authority.toml"), cfg).unwrap();
        let mut d = Deployment {
            dir,
            _tmp: tmp,
            port,
            token: String::new(),
            agent_id: String::new(),
            authority: None,
            agent: None,
            extra: Vec::new(),
            agent_extra: opts.agent_extra.clone(),
        };
        d.start_authority().await;
        d.token = d.generate_token().await;
        d.agent_id = format!("spiffe://{TD}/tessera/agent/join_token/{}", d.token);
        let pem = d.admin_ok(&["bundle", "show", "--format", "pem"]).await;
        assert!(
            pem.contains("-----BEGIN CERTIFICATE-----"),
            "bundle show --format pem printed no certificate: {pem:?}"
        );
        fs::write(d.dir.join("bundle.pem"), pem).unwrap();
        let (cfg, token) = (d.agent_config(), d.token.clone());
        d.write_agent_config(&cfg, &d.socket_path(), &d.dir.join("agent-data"), &token);
        d
    }

    /// `new` + an entry for this test process (`unix:uid:0`) with SPIFFE ID
    /// `spiffe://example.org/<path>` + the agent. Returns the SPIFFE ID.
    pub async fn up(path: &str) -> (Deployment, String) {
        let mut d = Deployment::new(Opts::default()).await;
        let (id, _) = d.register_self(path, &[]).await;
        d.start_agent().await;
        (d, id)
    }

    // ---- paths

    pub fn admin_socket(&self) -> PathBuf {
        self.dir.join("admin.sock")
    }
    pub fn authority_config(&self) -> PathBuf {
        self.dir.join("authority.toml")
    }
    pub fn authority_data(&self) -> PathBuf {
        self.dir.join("authority")
    }
    pub fn agent_config(&self) -> PathBuf {
        self.dir.join("agent.toml")
    }
    pub fn socket_path(&self) -> PathBuf {
        self.dir.join("agent").join("api.sock")
    }
    pub fn socket_uri(&self) -> String {
        format!("unix://{}", self.socket_path().display())
    }

    pub fn write_agent_config(&self, path: &Path, socket: &Path, data_dir: &Path, token: &str) {
        let cfg = format!(
            "trust_domain = \"{TD}\"\n\
             authority_address = \"127.0.0.1:{port}\"\n\
             trust_bundle_path = \"{bundle}\"\n\
             socket_path = \"{socket}\"\n\
             data_dir = \"{data}\"\n\
             sync_interval = \"500ms\"\n\
             \n\
             [node_attestation]\n\
             method = \"join_token\"\n\
             join_token = \"{token}\"\n",
            port = self.port,
            bundle = self.dir.join("bundle.pem").display(),
            socket = socket.display(),
            data = data_dir.display(),
        );
        fs::write(path, cfg + &self.agent_extra).unwrap();
    }

    // ---- logs

    pub fn logs(&self) -> String {
        let mut s = String::new();
        for (name, log) in [
            ("authority", self.dir.join("authority.log")),
            ("agent", self.dir.join("agent.log")),
        ] {
            s.push_str(&format!(
                "----- {name} log ({}) -----\n{}\n",
                log.display(),
                tail(&log, 150)
            ));
        }
        for d in &self.extra {
            s.push_str(&format!(
                "----- {} log ({}) -----\n{}\n",
                d.name,
                d.log.display(),
                tail(&d.log, 80)
            ));
        }
        s
    }

    pub fn agent_log(&self) -> String {
        fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    // ---- authority

    pub async fn start_authority(&mut self) {
        assert!(self.authority.is_none(), "authority already running");
        let cfg = self.authority_config();
        let mut daemon = Daemon::spawn(
            "authority",
            &bin("tessera-authority"),
            &[OsStr::new("run"), OsStr::new("--config"), cfg.as_os_str()],
            &self.dir.join("authority.log"),
            &[("TESSERA_LOG", "info")],
        );
        let admin = self.admin_socket();
        let port = self.port;
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(st) = daemon.exited() {
                panic!(
                    "tessera-authority exited ({st}) during startup\n{}",
                    tail(&daemon.log, 60)
                );
            }
            let admin_up = std::os::unix::net::UnixStream::connect(&admin).is_ok();
            let tcp_up = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
            if admin_up && tcp_up {
                break;
            }
            if Instant::now() > deadline {
                panic!(
                    "tessera-authority not ready after {STARTUP:?} (admin socket up: {admin_up}, \
                     port {port} up: {tcp_up})\n{}",
                    tail(&daemon.log, 60)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.authority = Some(daemon);
    }

    /// SIGTERM (SIGKILL after 5s). Panics unless it exited 0 within the grace period.
    pub async fn stop_authority(&mut self) {
        let mut daemon = self.authority.take().expect("authority running");
        let (st, in_time) = daemon.stop_async(secs(5)).await.expect("authority running");
        assert!(
            in_time,
            "tessera-authority did not exit within 5s of SIGTERM"
        );
        assert!(
            st.success(),
            "tessera-authority should exit 0 on SIGTERM, got {st}"
        );
    }

    pub async fn admin(&self, args: &[&str]) -> CmdOut {
        let sock = self.admin_socket();
        let mut all: Vec<&str> = args.to_vec();
        let sock = sock.to_str().unwrap().to_string();
        all.push("--admin-socket");
        all.push(&sock);
        run_cmd(&bin("tessera-authority"), &all, None, &[]).await
    }

    /// Runs an admin command that must succeed; returns its stdout.
    pub async fn admin_ok(&self, args: &[&str]) -> String {
        let out = self.admin(args).await;
        assert!(
            out.success(),
            "tessera-authority {} failed ({}): {}",
            args.join(" "),
            out.status,
            out.stderr
        );
        out.stdout
    }

    pub async fn generate_token(&self) -> String {
        let token = self
            .admin_ok(&["token", "generate"])
            .await
            .trim()
            .to_string();
        assert!(
            !token.is_empty() && !token.contains(char::is_whitespace),
            "token generate printed {token:?}"
        );
        token
    }

    /// Creates an entry under this deployment's agent; returns the entry ID.
    pub async fn create_entry(
        &self,
        spiffe_id: &str,
        selectors: &[&str],
        extra: &[&str],
    ) -> String {
        let mut args = vec![
            "entry",
            "create",
            "--parent-id",
            &self.agent_id,
            "--spiffe-id",
            spiffe_id,
        ];
        for s in selectors {
            args.push("--selector");
            args.push(s);
        }
        args.extend_from_slice(extra);
        let id = self.admin_ok(&args).await.trim().to_string();
        assert!(
            !id.is_empty() && !id.contains(char::is_whitespace),
            "entry create printed {id:?} instead of an entry ID"
        );
        id
    }

    /// An entry matching this test process (it runs as root): `unix:uid:0`.
    /// Returns (SPIFFE ID, entry ID).
    pub async fn register_self(&self, path: &str, extra: &[&str]) -> (String, String) {
        let spiffe_id = format!("spiffe://{TD}/{path}");
        let entry = self.create_entry(&spiffe_id, &["unix:uid:0"], extra).await;
        (spiffe_id, entry)
    }

    pub async fn delete_entry(&self, entry_id: &str) {
        self.admin_ok(&["entry", "delete", entry_id]).await;
    }

    /// `Agent ID : ...` lines of `agent list`.
    pub async fn agent_ids(&self) -> Vec<String> {
        self.admin_ok(&["agent", "list"])
            .await
            .lines()
            .filter_map(|l| l.strip_prefix("Agent ID"))
            .map(|rest| rest.trim_start().trim_start_matches(':').trim().to_string())
            .collect()
    }

    pub fn bundle_pem(&self) -> String {
        fs::read_to_string(self.dir.join("bundle.pem")).unwrap()
    }

    /// The authority's JWT signing key (PKCS#8 DER) and its kid, read from its data_dir,
    /// so tests can mint tokens that differ from a valid one in exactly one respect.
    pub fn jwt_signing_key(&self) -> (Vec<u8>, String) {
        let data = self.authority_data();
        let der = fs::read(data.join("jwt_key.pk8")).unwrap_or_else(|e| {
            panic!(
                "cannot read the authority's JWT key {}/jwt_key.pk8: {e}",
                data.display()
            )
        });
        let kid = fs::read_to_string(data.join("jwt_key.kid")).unwrap();
        (der, kid.trim().to_string())
    }

    // ---- agent

    /// Starts the agent and waits until its Workload API socket accepts connections.
    pub async fn start_agent(&mut self) {
        assert!(self.agent.is_none(), "agent already running");
        let daemon =
            self.spawn_agent_daemon("agent", &self.agent_config(), &self.dir.join("agent.log"));
        self.agent = Some(daemon);
        let sock = self.socket_path();
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(st) = self.agent.as_mut().unwrap().exited() {
                panic!(
                    "tessera-agent exited ({st}) before serving its socket {}",
                    sock.display()
                );
            }
            if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "tessera-agent did not serve {} within {STARTUP:?}",
                    sock.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts the agent without waiting for anything.
    pub fn spawn_agent(&mut self) {
        assert!(self.agent.is_none(), "agent already running");
        let daemon =
            self.spawn_agent_daemon("agent", &self.agent_config(), &self.dir.join("agent.log"));
        self.agent = Some(daemon);
    }

    pub fn spawn_agent_daemon(&self, name: &str, config: &Path, log: &Path) -> Daemon {
        Daemon::spawn(
            name,
            &bin("tessera-agent"),
            &[
                OsStr::new("run"),
                OsStr::new("--config"),
                config.as_os_str(),
            ],
            log,
            &[("TESSERA_LOG", "info,tessera_agent=debug")],
        )
    }

    /// SIGTERM and up to 5s to exit (then SIGKILL). Returns (status, exited in time).
    pub async fn stop_agent(&mut self) -> (ExitStatus, bool) {
        let mut daemon = self.agent.take().expect("agent running");
        daemon.stop_async(secs(5)).await.expect("agent running")
    }

    /// `stop_agent`, asserting a clean exit 0 within the grace period.
    pub async fn stop_agent_cleanly(&mut self) {
        let (st, in_time) = self.stop_agent().await;
        assert!(in_time, "tessera-agent did not exit within 5s of SIGTERM");
        assert!(
            st.success(),
            "tessera-agent should exit 0 on SIGTERM, got {st}"
        );
    }

    pub fn agent_pid(&self) -> u32 {
        self.agent.as_ref().expect("agent running").pid()
    }

    /// `Some(status)` if the agent process has exited.
    pub fn agent_exited(&mut self) -> Option<ExitStatus> {
        self.agent.as_mut().and_then(|d| d.exited())
    }

    pub async fn agent_cli(&self, args: &[&str]) -> CmdOut {
        run_cmd(&bin("tessera-agent"), args, None, &[]).await
    }

    // ---- Workload API clients

    /// The `spiffe` crate's client on `unix://<socket>`.
    pub async fn client(&self) -> spiffe::WorkloadApiClient {
        within(
            secs(10),
            "connect the spiffe WorkloadApiClient",
            spiffe::WorkloadApiClient::connect_to(self.socket_uri()),
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "spiffe WorkloadApiClient::connect_to({}): {e}",
                self.socket_uri()
            )
        })
    }

    /// A raw tonic client on the agent socket (a new connection).
    pub async fn raw(&self) -> Raw {
        SpiffeWorkloadApiClient::new(self.channel().await)
    }

    pub async fn channel(&self) -> Channel {
        uds_channel(&self.socket_path()).await
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "\n===== test failed; daemon logs from {} =====\n{}",
                self.dir.display(),
                self.logs()
            );
        }
        for mut d in self.extra.drain(..) {
            d.stop();
        }
        if let Some(mut d) = self.agent.take() {
            d.stop();
        }
        if let Some(mut d) = self.authority.take() {
            d.stop();
        }
    }
}

// ---------------------------------------------------------------------------------------
// gRPC plumbing

pub async fn uds_channel(path: &Path) -> Channel {
    let path = path.to_path_buf();
    let p = path.clone();
    let ep = Endpoint::from_static("http://localhost");
    let fut = ep.connect_with_connector(tower::service_fn(move |_: Uri| {
        let p = p.clone();
        async move { Ok::<_, io::Error>(TokioIo::new(tokio::net::UnixStream::connect(p).await?)) }
    }));
    within(secs(10), "connect to the agent socket", fut)
        .await
        .unwrap_or_else(|e| panic!("connect {}: {e}", path.display()))
}

/// A channel over one already-connected socket (no reconnects).
pub async fn channel_from_fd(fd: OwnedFd) -> Channel {
    let std = std::os::unix::net::UnixStream::from(fd);
    std.set_nonblocking(true).unwrap();
    let stream = tokio::net::UnixStream::from_std(std).unwrap();
    let slot = Arc::new(Mutex::new(Some(stream)));
    let ep = Endpoint::from_static("http://localhost");
    let fut = ep.connect_with_connector(tower::service_fn(move |_: Uri| {
        let s = slot.lock().unwrap().take();
        async move {
            s.map(TokioIo::new).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotConnected,
                    "the pre-connected socket was closed; it cannot be redialled",
                )
            })
        }
    }));
    within(secs(10), "HTTP/2 handshake on a pre-connected socket", fut)
        .await
        .expect("HTTP/2 handshake on the pre-connected socket")
}

/// Connects a Unix socket to `path` *from a child process* that runs `program args` as
/// `uid`/`gid`: the connect(2) happens in the child (after setuid, before exec), so the
/// agent's SO_PEERCRED names the child, while this process keeps the connected socket
/// (the fd is shared across fork). Returns the socket and the running child.
pub fn connect_from_child(
    path: &Path,
    uid: u32,
    gid: u32,
    program: &str,
    args: &[&str],
) -> io::Result<(OwnedFd, ChildGuard)> {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let addr = UnixAddr::new(path)?;
    let raw = fd.as_raw_fd();
    let mut cmd = child_command(program);
    cmd.args(args)
        .uid(uid)
        .gid(gid)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: connect(2) is async-signal-safe; `addr` was built before the fork.
    unsafe {
        cmd.pre_exec(move || connect(raw, &addr).map_err(io::Error::from));
    }
    let child = cmd.spawn()?;
    Ok((fd, ChildGuard(child)))
}

/// A caller no entry matches: `/bin/sleep 30` as nobody, connected from the child and
/// exec'd (so it is attested as `sleep`). Returns the socket, the child and its pid.
pub async fn connect_as_nobody(d: &Deployment) -> (OwnedFd, ChildGuard, u32) {
    let (fd, child) =
        connect_from_child(&d.socket_path(), NOBODY, NOBODY, "/bin/sleep", &["30"]).unwrap();
    let child_pid = child.0.id();
    poll(secs(10), "the child to exec sleep", || async move {
        let exe = fs::read_link(format!("/proc/{child_pid}/exe")).ok()?;
        exe.to_str()?.ends_with("sleep").then_some(())
    })
    .await;
    (fd, child, child_pid)
}

/// Request options for the security header.
#[derive(Clone, Copy, Debug)]
pub enum Header {
    /// `workload.spiffe.io: true`.
    Ok,
    Missing,
    Value(&'static str),
    /// The header twice, both `true`.
    Twice,
}

pub fn request<T>(msg: T, h: Header) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    let md = r.metadata_mut();
    match h {
        Header::Ok => {
            md.insert(SECURITY_HEADER, "true".parse().unwrap());
        }
        Header::Missing => {}
        Header::Value(v) => {
            md.insert(SECURITY_HEADER, v.parse().unwrap());
        }
        Header::Twice => {
            md.append(SECURITY_HEADER, "true".parse().unwrap());
            md.append(SECURITY_HEADER, "true".parse().unwrap());
        }
    }
    r
}

/// A request with the correct security header.
pub fn req<T>(msg: T) -> tonic::Request<T> {
    request(msg, Header::Ok)
}

/// The first message of a server stream, or the status it failed with (whether the
/// status came as the response or as the stream's first item).
pub async fn first<T>(
    opened: impl Future<Output = Result<tonic::Response<tonic::Streaming<T>>, Status>>,
) -> Result<T, Status> {
    within(secs(20), "first message of a Workload API stream", async {
        let mut s = opened.await?.into_inner();
        match s.message().await? {
            Some(m) => Ok(m),
            None => Err(Status::new(
                Code::Ok,
                "<test harness: the stream ended without any message>",
            )),
        }
    })
    .await
}

/// Opens a stream (panics on failure).
pub async fn open<T>(
    what: &str,
    opened: impl Future<Output = Result<tonic::Response<tonic::Streaming<T>>, Status>>,
) -> tonic::Streaming<T> {
    within(secs(20), what, opened)
        .await
        .unwrap_or_else(|st| panic!("{what}: {st:?}"))
        .into_inner()
}

/// Next item of a stream within `limit` (panics on timeout). `Ok(None)`: the stream ended.
pub async fn next<T>(
    s: &mut tonic::Streaming<T>,
    limit: Duration,
    what: &str,
) -> Result<Option<T>, Status> {
    within(limit, what, s.message()).await
}

/// Asserts `res` is an error with `code` that the server sent (not a client-side
/// transport error that tonic also reports as a status).
pub fn assert_code<T: Debug>(res: Result<T, Status>, code: Code, what: &str) -> Status {
    match res {
        Ok(v) => panic!("{what}: expected {code:?}, got a successful answer: {v:?}"),
        Err(st) => {
            assert_eq!(
                st.code(),
                code,
                "{what}: expected {code:?}, got {:?} ({:?})",
                st.code(),
                st.message()
            );
            assert!(
                std::error::Error::source(&st).is_none(),
                "{what}: the {code:?} came from the client's transport, not from the agent: {st:?}"
            );
            st
        }
    }
}

pub fn ids(resp: &pb::X509svidResponse) -> Vec<String> {
    resp.svids.iter().map(|s| s.spiffe_id.clone()).collect()
}

pub fn svid<'a>(resp: &'a pb::X509svidResponse, id: &str) -> &'a pb::X509svid {
    resp.svids
        .iter()
        .find(|s| s.spiffe_id == id)
        .unwrap_or_else(|| panic!("no SVID for {id} in the response (have {:?})", ids(resp)))
}

/// Polls FetchX509SVID until a response holds every SPIFFE ID in `want` (the agent needs
/// a sync or two after a change). Returns that response.
pub async fn wait_x509(raw: &mut Raw, want: &[&str]) -> pb::X509svidResponse {
    let deadline = Instant::now() + PROPAGATION;
    let mut last = String::from("<no answer yet>");
    loop {
        let attempt = async {
            let mut s = raw
                .fetch_x509svid(req(pb::X509svidRequest {}))
                .await?
                .into_inner();
            // Follow the stream for a while: the change may arrive as a later message.
            loop {
                match s.message().await? {
                    Some(m) => {
                        let have = ids(&m);
                        if want.iter().all(|w| have.iter().any(|h| h == w)) {
                            return Ok::<_, Status>(Some(m));
                        }
                        last = format!("a response with {have:?}");
                    }
                    None => return Ok(None),
                }
            }
        };
        let result = tokio::time::timeout(secs(3), attempt).await;
        match result {
            Ok(Ok(Some(m))) => return m,
            Ok(Ok(None)) => last = "the stream ended".into(),
            Ok(Err(st)) => last = format!("{:?}: {}", st.code(), st.message()),
            Err(_) => {}
        }
        if Instant::now() > deadline {
            panic!("the agent never served X.509-SVIDs for {want:?} within {PROPAGATION:?}; last: {last}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls `probe` until it returns `Some`, panicking after `limit`.
pub async fn poll<T, F, Fut>(limit: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
