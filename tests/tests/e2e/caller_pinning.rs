//! A Workload API caller is the process that connected (pinned at accept), never a later
//! owner of its pid nor whoever holds the socket afterwards; and `unix:path` is the agent's
//! view of the file the caller runs, not a path the caller arranged in its own namespace.

use crate::harness::*;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tessera_proto::workload as pb;
use tonic::Code;

/// A uid no test runs as; the "victim" whose identity must not be borrowed.
const VICTIM: u32 = 4321;

/// Starts `program args` as `uid` with pid `pid` (via ns_last_pid; other forks on the host
/// may take it first, hence the retries). `None` if it never got that pid.
fn spawn_with_pid(pid: u32, uid: u32, program: &str, args: &[&str]) -> Option<ChildGuard> {
    for _ in 0..50 {
        fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string())
            .expect("write /proc/sys/kernel/ns_last_pid (tests run as root)");
        let child = child_command(program)
            .args(args)
            .uid(uid)
            .gid(uid)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let guard = ChildGuard(child);
        if guard.0.id() == pid {
            return Some(guard);
        }
    }
    None
}

/// Waits until process `pid` runs `want` (its exec completed).
async fn wait_exe(pid: u32, want: &Path) {
    poll(
        secs(10),
        &format!("pid {pid} to exec {}", want.display()),
        || {
            let link = fs::read_link(format!("/proc/{pid}/exe")).ok();
            async move { (link.as_deref() == Some(want)).then_some(()) }
        },
    )
    .await
}

fn which(program: &str) -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .unwrap();
    let p = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    fs::canonicalize(&p).unwrap_or(p)
}

#[tokio::test]
async fn reused_pid_does_not_inherit_the_connection() {
    let mut d = Deployment::new(Opts::default())
        .await
        .expect("start a deployment");
    let victim = format!("spiffe://{TD}/pin/victim");
    d.create_entry(&victim, &[&format!("unix:uid:{VICTIM}")], &[])
        .await
        .expect("create an entry");
    let (holder, _) = d
        .register_self("pin/holder", &[])
        .await
        .expect("register an entry");
    d.start_agent().await.expect("start the agent");
    let mut own = d.raw().await.expect("connect to the agent");
    wait_x509(&mut own, &[&holder]).await;

    // Control: a live process of the victim's uid is served the victim's identity.
    let (fd, _sleeper) =
        connect_from_child(&d.socket_path(), VICTIM, VICTIM, "sleep", &["60"]).unwrap();
    let mut live = Raw::new(
        channel_from_fd(fd)
            .await
            .expect("HTTP/2 on a pre-connected socket"),
    );
    let resp = first(live.fetch_x509svid(req(pb::X509svidRequest {})))
        .await
        .unwrap_or_else(|st| panic!("a live victim-uid caller must get its SVID: {st:?}"));
    assert_eq!(ids(&resp), vec![victim.clone()]);

    // The attack: a process of another uid connects and exits; this process keeps the
    // socket, and a victim process is started under the freed pid.
    // pids are host-wide: a process forked elsewhere can take the freed pid before the
    // reuser does, so the whole step is retried with a fresh connector.
    let (fd, pid, reuser) = (0..10)
        .find_map(|_| {
            let (fd, mut connector) =
                connect_from_child(&d.socket_path(), NOBODY, NOBODY, "true", &[]).unwrap();
            let pid = connector.0.id();
            assert!(connector.0.wait().unwrap().success());
            spawn_with_pid(pid, VICTIM, "sleep", &["60"]).map(|reuser| (fd, pid, reuser))
        })
        .expect("could not get the connector's pid reused in 10 attempts");
    let mut conn = Raw::new(
        channel_from_fd(fd)
            .await
            .expect("HTTP/2 on a pre-connected socket"),
    );
    wait_exe(pid, &which("sleep")).await;

    let st = assert_code(
        first(conn.fetch_x509svid(req(pb::X509svidRequest {}))).await,
        Code::Unavailable,
        "FetchX509SVID on a connection whose connector exited and whose pid was reused",
    );
    assert!(
        st.message().contains("exited") || st.message().contains("reused"),
        "{st:?}"
    );
    let jwt = within(
        secs(20),
        "FetchJWTSVID",
        conn.fetch_jwtsvid(req(pb::JwtsvidRequest {
            audience: vec!["aud".into()],
            spiffe_id: String::new(),
        })),
    )
    .await;
    assert_code(jwt, Code::Unavailable, "FetchJWTSVID after pid reuse");
    drop(reuser);
}

#[tokio::test]
async fn connection_handed_on_stops_when_its_connector_exits() {
    let mut d = Deployment::new(Opts::default())
        .await
        .expect("start a deployment");
    let victim = format!("spiffe://{TD}/pin/connector");
    d.create_entry(&victim, &[&format!("unix:uid:{VICTIM}")], &[])
        .await
        .expect("create an entry");
    let (holder, _) = d
        .register_self("pin/fd-holder", &[])
        .await
        .expect("register an entry");
    d.start_agent().await.expect("start the agent");
    let mut own = d.raw().await.expect("connect to the agent");
    wait_x509(&mut own, &[&holder]).await;

    // The connector (victim uid) connects; this process (root) holds the socket.
    let (fd, mut connector) =
        connect_from_child(&d.socket_path(), VICTIM, VICTIM, "sleep", &["60"]).unwrap();
    let mut conn = Raw::new(
        channel_from_fd(fd)
            .await
            .expect("HTTP/2 on a pre-connected socket"),
    );
    let mut stream = open(
        "FetchX509SVID while the connector lives",
        conn.fetch_x509svid(req(pb::X509svidRequest {})),
    )
    .await;
    let m = next(&mut stream, secs(20), "first X.509-SVID message")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ids(&m), vec![victim.clone()]);

    connector.0.kill().unwrap();
    connector.0.wait().unwrap();
    // The open stream ends with Unavailable (no rotation needed to notice)...
    match next(
        &mut stream,
        secs(10),
        "the stream after the connector exited",
    )
    .await
    {
        Err(st) => assert_eq!(st.code(), Code::Unavailable, "{st:?}"),
        Ok(m) => {
            panic!("the stream must end with Unavailable once its connector exited, got {m:?}")
        }
    }
    // ...and every new call too: neither the connector's identity nor the holder's.
    assert_code(
        first(conn.fetch_x509svid(req(pb::X509svidRequest {}))).await,
        Code::Unavailable,
        "FetchX509SVID from the holder of a dead connector's socket",
    );
    let validate = within(
        secs(20),
        "ValidateJWTSVID",
        conn.validate_jwtsvid(req(pb::ValidateJwtsvidRequest {
            audience: "aud".into(),
            svid: "x.y.z".into(),
        })),
    )
    .await;
    assert_code(
        validate,
        Code::Unavailable,
        "ValidateJWTSVID on a dead connector's socket",
    );
}

#[tokio::test]
async fn path_claimed_in_own_mount_namespace_is_not_a_selector() {
    let mut d = Deployment::new(Opts::default())
        .await
        .expect("start a deployment");
    let bin = d.dir.join("bin");
    fs::create_dir(&bin).unwrap();
    let trusted = bin.join("trusted");
    let evil = bin.join("evil");
    // Two copies of sleep: same hash, different files. The entry names the path only.
    fs::copy(which("sleep"), &trusted).unwrap();
    fs::copy(which("sleep"), &evil).unwrap();
    let id = format!("spiffe://{TD}/pin/by-path");
    d.create_entry(&id, &[&format!("unix:path:{}", trusted.display())], &[])
        .await
        .expect("create an entry");
    let (holder, _) = d
        .register_self("pin/path-holder", &[])
        .await
        .expect("register an entry");
    d.start_agent().await.expect("start the agent");
    let mut own = d.raw().await.expect("connect to the agent");
    wait_x509(&mut own, &[&holder]).await;

    // Control: the real file at that path gets the identity.
    let (fd, _real) = retry_txtbsy(|| {
        connect_from_child(&d.socket_path(), 0, 0, trusted.to_str().unwrap(), &["60"])
    });
    let mut honest = Raw::new(
        channel_from_fd(fd)
            .await
            .expect("HTTP/2 on a pre-connected socket"),
    );
    let resp = first(honest.fetch_x509svid(req(pb::X509svidRequest {})))
        .await
        .unwrap_or_else(|st| panic!("the binary at the entry's path must be served: {st:?}"));
    assert!(ids(&resp).contains(&id), "{:?}", ids(&resp));

    // The attack: in a mount namespace of its own, another binary mounted over the path.
    let script = format!(
        "mount --bind {evil} {trusted} && exec {trusted} 60",
        evil = evil.display(),
        trusted = trusted.display()
    );
    let (fd, attacker) = retry_txtbsy(|| {
        connect_from_child(
            &d.socket_path(),
            0,
            0,
            "unshare",
            &["-m", "--propagation", "private", "sh", "-c", &script],
        )
    });
    wait_exe(attacker.0.id(), &trusted).await;
    let mut claimed = Raw::new(
        channel_from_fd(fd)
            .await
            .expect("HTTP/2 on a pre-connected socket"),
    );
    let resp = first(claimed.fetch_x509svid(req(pb::X509svidRequest {})))
        .await
        .unwrap_or_else(|st| panic!("root still has its uid entry: {st:?}"));
    assert!(
        !ids(&resp).contains(&id),
        "a path claimed with a private bind mount must not select {id}: got {:?}",
        ids(&resp)
    );
    assert_eq!(ids(&resp), vec![holder]);
}

/// ETXTBSY: a freshly copied binary may still be open for writing in a concurrent fork.
fn retry_txtbsy<T>(mut f: impl FnMut() -> std::io::Result<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if e.raw_os_error() == Some(nix::libc::ETXTBSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("spawn: {e}"),
        }
    }
}
