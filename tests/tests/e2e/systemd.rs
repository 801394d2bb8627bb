//! The systemd integration: the unit files pass `systemd-analyze verify` and
//! score within the hardening budget of `systemd-analyze security`, the
//! sysusers.d and tmpfiles.d entries apply, and the real daemons speak the
//! sd_notify protocol (READY, STATUS, WATCHDOG, STOPPING) to `$NOTIFY_SOCKET`.

use crate::harness::{bin, child_command, secs, Daemon};
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

/// The exposure budgets (`systemd-analyze security`, 0 = best, 10 = worst).
const AUTHORITY_MAX_EXPOSURE: f64 = 2.0;
const AGENT_MAX_EXPOSURE: f64 = 3.5;

const UNITS: [&str; 2] = ["tessera-agent.service", "tessera-authority.service"];

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn systemd_dir() -> PathBuf {
    repo().join("systemd")
}

/// Runs a tool to completion; panics if it cannot start.
pub fn run(program: &str, args: &[&OsStr]) -> Output {
    child_command(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (is it installed?): {e}"))
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The absolute programs of a unit's Exec*= lines (prefixes like `-` or `+` dropped).
fn exec_programs(unit: &str) -> BTreeSet<String> {
    unit.lines()
        .filter(|l| l.starts_with("Exec"))
        .filter_map(|l| l.split_once('=').map(|(_, v)| v.trim()))
        .filter_map(|v| {
            v.trim_start_matches(['-', '+', '!', '@', ':'])
                .split_whitespace()
                .next()
                .map(str::to_string)
        })
        .collect()
}

#[test]
fn units_pass_systemd_analyze_verify() {
    // verify wants every Exec*= program to exist: an alternate root holds the
    // host's units, the ones under test and stand-ins for the programs.
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    fs::create_dir_all(r.join("usr/lib/systemd")).unwrap();
    fs::create_dir_all(r.join("etc/systemd/system")).unwrap();
    let cp = run(
        "cp",
        &[
            OsStr::new("-a"),
            OsStr::new("/usr/lib/systemd/system"),
            r.join("usr/lib/systemd").as_os_str(),
        ],
    );
    assert!(cp.status.success(), "cp: {}", text(&cp.stderr));
    for unit in UNITS {
        let body = fs::read_to_string(systemd_dir().join(unit)).unwrap();
        fs::write(r.join("etc/systemd/system").join(unit), &body).unwrap();
        for program in exec_programs(&body) {
            assert!(
                program.starts_with('/'),
                "{unit}: {program} is not absolute"
            );
            let stub = r.join(program.trim_start_matches('/'));
            fs::create_dir_all(stub.parent().unwrap()).unwrap();
            fs::write(&stub, "#!/bin/sh\n").unwrap();
            fs::set_permissions(&stub, fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    let mut args = vec![
        OsStr::new("verify").to_owned(),
        format!("--root={}", r.display()).into(),
    ];
    args.extend(UNITS.iter().map(|u| OsStr::new(u).to_owned()));
    let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let out = run("systemd-analyze", &args);
    // verify exits 0 on mere warnings (an unknown key, say): those count too.
    assert!(
        out.status.success() && out.stderr.is_empty() && out.stdout.is_empty(),
        "systemd-analyze verify ({}):\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// `systemd-analyze security --offline=true`'s overall exposure of a unit file.
fn exposure(unit: &str) -> (f64, String) {
    let path = systemd_dir().join(unit);
    let out = run(
        "systemd-analyze",
        &[
            OsStr::new("security"),
            OsStr::new("--offline=true"),
            path.as_os_str(),
        ],
    );
    let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
    let score = report
        .lines()
        .find_map(|l| {
            l.split_once("Overall exposure level for ")?
                .1
                .split_once(": ")
        })
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no overall exposure level for {unit}:\n{report}"));
    (score, report)
}

#[test]
fn security_exposure_is_within_budget() {
    for (unit, max) in [
        ("tessera-authority.service", AUTHORITY_MAX_EXPOSURE),
        ("tessera-agent.service", AGENT_MAX_EXPOSURE),
    ] {
        let (score, report) = exposure(unit);
        eprintln!("{unit}: exposure {score}");
        assert!(score <= max, "{unit}: exposure {score} > {max}:\n{report}");
    }
}

#[test]
fn sysusers_and_tmpfiles_entries_apply() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    fs::create_dir_all(r.join("etc")).unwrap();
    for f in ["passwd", "group", "shadow", "gshadow"] {
        fs::write(r.join("etc").join(f), "").unwrap();
    }
    let mut args: Vec<PathBuf> = vec![format!("--root={}", r.display()).into()];
    args.push(systemd_dir().join("tessera-agent.sysusers"));
    args.push(systemd_dir().join("tessera-authority.sysusers"));
    let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let out = run("systemd-sysusers", &args);
    assert!(out.status.success(), "sysusers: {}", text(&out.stderr));
    let passwd = fs::read_to_string(r.join("etc/passwd")).unwrap();
    let group = fs::read_to_string(r.join("etc/group")).unwrap();
    for user in ["tessera-agent", "tessera-authority"] {
        let line = passwd
            .lines()
            .find(|l| l.starts_with(&format!("{user}:")))
            .unwrap_or_else(|| panic!("no {user} in\n{passwd}"));
        let uid: u32 = line.split(':').nth(2).unwrap().parse().unwrap();
        assert!(uid > 0 && uid < 1000, "{user} is not a system user: {line}");
    }
    let tss = group.lines().find(|l| l.starts_with("tss:")).unwrap();
    assert!(tss.ends_with(":tessera-agent"), "{tss}");

    let tmpfiles = r.join("etc/tmpfiles.d");
    fs::create_dir_all(&tmpfiles).unwrap();
    for d in ["agent", "authority"] {
        fs::copy(
            systemd_dir().join(format!("tessera-{d}.tmpfile")),
            tmpfiles.join(format!("tessera-{d}.conf")),
        )
        .unwrap();
    }
    let out = run(
        "systemd-tmpfiles",
        &[
            OsStr::new(&format!("--root={}", r.display())),
            OsStr::new("--create"),
        ],
    );
    // Both files declare the shared directories identically: no conflict is reported.
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "tmpfiles: {}",
        text(&out.stderr)
    );
    let run_dir = fs::metadata(r.join("run/tessera")).unwrap();
    assert_eq!(run_dir.permissions().mode() & 0o7777, 0o755);
    assert!(fs::metadata(r.join("var/lib/tessera")).unwrap().is_dir());
    // Clients' defaults lead into each daemon's RuntimeDirectory=.
    for (link, target) in [
        ("agent.sock", "agent/agent.sock"),
        ("authority-admin.sock", "authority/admin.sock"),
    ] {
        let got = fs::read_link(r.join("run/tessera").join(link)).unwrap();
        assert_eq!(got, Path::new(target), "{link}");
    }
}

#[test]
fn units_and_packaged_configs_agree() {
    let agent_unit = fs::read_to_string(systemd_dir().join("tessera-agent.service")).unwrap();
    let auth_unit = fs::read_to_string(systemd_dir().join("tessera-authority.service")).unwrap();
    let agent_cfg = fs::read_to_string(repo().join("packaging/agent.toml")).unwrap();
    let auth_cfg = fs::read_to_string(repo().join("packaging/authority.toml")).unwrap();
    let has = |text: &str, line: &str| text.lines().any(|l| l.trim() == line);
    assert!(has(&agent_unit, "RuntimeDirectory=tessera/agent"));
    assert!(has(&agent_unit, "RuntimeDirectoryMode=0755"));
    assert!(has(&agent_unit, "StateDirectory=tessera/agent"));
    assert!(has(
        &agent_cfg,
        "socket_path = \"/run/tessera/agent/agent.sock\""
    ));
    assert!(has(&auth_unit, "RuntimeDirectory=tessera/authority"));
    assert!(has(&auth_unit, "StateDirectory=tessera/authority"));
    assert!(has(
        &auth_cfg,
        "admin_socket_path = \"/run/tessera/authority/admin.sock\""
    ));
    assert!(has(&auth_cfg, "data_dir = \"/var/lib/tessera/authority\""));
    for unit in [&agent_unit, &auth_unit] {
        for line in [
            "Type=notify",
            "WatchdogSec=30s",
            "NoNewPrivileges=yes",
            "LimitNOFILE=65536",
        ] {
            assert!(has(unit, line), "{line} missing");
        }
    }
    // The agent's privileges are exactly these two (see the unit's comment).
    assert!(has(
        &agent_unit,
        "CapabilityBoundingSet=CAP_SYS_PTRACE CAP_DAC_READ_SEARCH"
    ));
    assert!(has(&agent_unit, "ProtectProc=default"));
    assert!(has(&auth_unit, "CapabilityBoundingSet="));
}

/// The system calls of a system-call group, its nested groups expanded.
fn syscall_group(group: &str) -> BTreeSet<String> {
    let out = run(
        "systemd-analyze",
        &[OsStr::new("syscall-filter"), OsStr::new(group)],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut calls = BTreeSet::new();
    for line in text(&out.stdout).lines().skip(1).map(str::trim) {
        match line.chars().next() {
            None | Some('#') => {}
            Some('@') => calls.extend(syscall_group(line)),
            Some(_) => {
                calls.insert(line.to_string());
            }
        }
    }
    calls
}

/// With `method = "tpm"` the agent starts tessera-agent-tpm (packaged in
/// /usr/libexec/tessera): the sandbox must let it fork, exec and set up the
/// child (close_range, dropping ambient capabilities with prctl). The child
/// stays in the unit's cgroup and mount namespace, so `DeviceAllow=` and
/// `BindPaths=` of /dev/tpmrm0 apply to it.
#[test]
fn the_agent_unit_lets_it_start_its_tpm_helper() {
    let unit = fs::read_to_string(systemd_dir().join("tessera-agent.service")).unwrap();
    let (mut allowed, mut denied) = (BTreeSet::new(), BTreeSet::new());
    for filter in unit
        .lines()
        .filter_map(|l| l.trim().strip_prefix("SystemCallFilter="))
    {
        let (set, list) = match filter.strip_prefix('~') {
            Some(list) => (&mut denied, list),
            None => (&mut allowed, filter),
        };
        for name in list.split_whitespace() {
            match name.starts_with('@') {
                true => set.extend(syscall_group(name)),
                false => {
                    set.insert(name.to_string());
                }
            }
        }
    }
    for call in ["execve", "clone3", "prctl", "close_range", "pipe2", "wait4"] {
        assert!(
            allowed.contains(call) && !denied.contains(call),
            "{call} is filtered"
        );
    }
    // KillMode= stays control-group: stopping the unit stops the helper too.
    for key in [
        "NoExecPaths=",
        "ExecPaths=",
        "InaccessiblePaths=",
        "KillMode=",
    ] {
        assert!(
            !unit.lines().any(|l| l.trim().starts_with(key)),
            "{key} set"
        );
    }
    assert!(unit
        .lines()
        .any(|l| l.trim() == "DeviceAllow=/dev/tpmrm0 rw"));
}

// ---------------------------------------------------------------------------------------
// sd_notify, spoken by the real binaries

/// A notification socket as systemd provides it, collecting datagrams.
struct NotifySocket {
    _dir: tempfile::TempDir,
    path: PathBuf,
    sock: UnixDatagram,
    seen: Vec<String>,
}

impl NotifySocket {
    fn new() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        NotifySocket {
            _dir: dir,
            path,
            sock,
            seen: Vec::new(),
        }
    }

    /// Reads what has arrived, so the sender's queue never fills up.
    fn drain(&mut self) {
        let mut buf = [0u8; 4096];
        self.sock.set_nonblocking(true).unwrap();
        while let Ok(n) = self.sock.recv(&mut buf) {
            self.seen.push(text(&buf[..n]));
        }
        self.sock.set_nonblocking(false).unwrap();
    }

    /// Waits for a datagram with `line` among its lines; returns that datagram.
    fn wait_for(&mut self, line: &str, limit: Duration, log: &Path) -> String {
        let deadline = Instant::now() + limit;
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no {line:?} within {limit:?}; got {:?}; log:\n{}",
                self.seen,
                fs::read_to_string(log).unwrap_or_default()
            );
            self.sock.set_read_timeout(Some(left)).unwrap();
            if let Ok(n) = self.sock.recv(&mut buf) {
                let msg = text(&buf[..n]);
                self.seen.push(msg.clone());
                if msg.lines().any(|l| l == line || l.starts_with(line)) {
                    return msg;
                }
            }
        }
    }
}

fn notify_env(n: &NotifySocket) -> [(&'static str, String); 2] {
    [
        ("NOTIFY_SOCKET", n.path.display().to_string()),
        // 400ms: pings every 200ms.
        ("WATCHDOG_USEC", "400000".to_string()),
    ]
}

fn terminate(d: &Daemon) {
    let pid = nix::unistd::Pid::from_raw(d.pid() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
}

#[test]
fn authority_notifies_ready_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = d.join("authority.toml");
    fs::write(
        &config,
        format!(
            "trust_domain = \"example.org\"\nlisten_address = \"127.0.0.1:0\"\n\
             admin_socket_path = \"{}\"\ndata_dir = \"{}\"\n",
            d.join("admin.sock").display(),
            d.join("data").display()
        ),
    )
    .unwrap();
    let mut n = NotifySocket::new();
    let env = notify_env(&n);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let log = d.join("authority.log");
    let daemon = Daemon::spawn(
        "authority",
        &bin("tessera-authority").expect("binary built"),
        &[
            OsStr::new("run"),
            OsStr::new("--config"),
            config.as_os_str(),
        ],
        &log,
        &env,
    )
    .expect("start a daemon");
    n.wait_for("READY=1", secs(60), &log);
    // READY means both listeners are up.
    assert!(
        d.join("admin.sock").exists(),
        "READY before the admin socket"
    );
    n.wait_for("WATCHDOG=1", secs(10), &log);
    n.wait_for("WATCHDOG=1", secs(10), &log);
    terminate(&daemon);
    n.wait_for("STOPPING=1", secs(20), &log);
}

#[test]
fn agent_notifies_ready_once_serving_then_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let socket = d.join("agent.sock");
    let config = d.join("agent.toml");
    // Nothing listens at port 1: the agent serves (Unavailable) while it retries attestation.
    fs::write(
        &config,
        format!(
            "trust_domain = \"example.org\"\nauthority_address = \"127.0.0.1:1\"\n\
             insecure_bootstrap = true\nsocket_path = \"{}\"\ndata_dir = \"{}\"\n\
             [node_attestation]\nmethod = \"join_token\"\n\
             join_token = \"0123456789abcdef0123456789abcdef\"\n",
            socket.display(),
            d.join("data").display()
        ),
    )
    .unwrap();
    let mut n = NotifySocket::new();
    let env = notify_env(&n);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let log = d.join("agent.log");
    let daemon = Daemon::spawn(
        "agent",
        &bin("tessera-agent").expect("binary built"),
        &[
            OsStr::new("run"),
            OsStr::new("--config"),
            config.as_os_str(),
        ],
        &log,
        &env,
    )
    .expect("start a daemon");
    n.wait_for("READY=1", secs(60), &log);
    assert!(socket.exists(), "READY before the Workload API socket");
    let status = n.wait_for("STATUS=", secs(10), &log);
    assert!(status.contains("attesting"), "{status}");
    n.wait_for("WATCHDOG=1", secs(10), &log);
    // SIGTERM once the agent is past READY into its attestation retries.
    let deadline = Instant::now() + secs(30);
    while !fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("node attestation failed")
    {
        assert!(Instant::now() < deadline, "no attestation attempt");
        n.drain();
        std::thread::sleep(Duration::from_millis(50));
    }
    terminate(&daemon);
    n.wait_for("STOPPING=1", secs(20), &log);
}
