//! A connection is attested in full once; its later calls reuse that while the pinned process
//! runs the same executable with the same effective ids. An exec in the connected process
//! attests it again, so a binary an entry names cannot connect and then hand its socket,
//! across an exec, to another program.

use crate::harness::*;
use std::fs;
use std::path::{Path, PathBuf};
use tessera_proto::workload as pb;
use tonic::Code;

fn canonical(program: &str) -> PathBuf {
    let out = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .expect("sh");
    let p = PathBuf::from(String::from_utf8(out.stdout).expect("utf-8").trim());
    fs::canonicalize(&p).unwrap_or(p)
}

async fn x509(conn: &mut Raw) -> Result<pb::X509svidResponse, tonic::Status> {
    first(conn.fetch_x509svid(req(pb::X509svidRequest {}))).await
}

/// A deployment whose entry `id` names `selector`, its agent started, and a shell
/// connected to it that execs `sleep 60` once told to (keeping the socket's peer).
pub(crate) struct ShellThenSleep {
    pub d: Deployment,
    pub fd: Option<std::os::fd::OwnedFd>,
    /// Killed with the struct.
    _child: ChildGuard,
    pub pid: u32,
    pub sh: PathBuf,
    pub sleep: PathBuf,
}

impl ShellThenSleep {
    pub async fn start(id: &str, selector: Option<&str>) -> ShellThenSleep {
        let mut d = Deployment::new(Opts::default())
            .await
            .expect("start a deployment");
        let (sh, sleep) = (canonical("sh"), canonical("sleep"));
        let selector =
            selector.map_or_else(|| format!("unix:path:{}", sh.display()), str::to_string);
        d.create_entry(id, &[&selector], &[])
            .await
            .expect("create an entry");
        d.start_agent().await.expect("start the agent");
        let script = format!(
            "while [ ! -e {} ]; do sleep 0.05; done; exec {} 60",
            d.dir.join("go").display(),
            sleep.display()
        );
        let (fd, child) = connect_from_child(
            &d.socket_path(),
            0,
            0,
            &sh.to_string_lossy(),
            &["-c", &script],
        )
        .expect("connect from a shell");
        let pid = child.0.id();
        ShellThenSleep {
            d,
            fd: Some(fd),
            _child: child,
            pid,
            sh,
            sleep,
        }
    }

    /// The connected socket as a Workload API client (once).
    pub async fn raw(&mut self) -> Raw {
        let fd = self.fd.take().expect("the socket is taken once");
        Raw::new(channel_from_fd(fd).await.expect("HTTP/2 on the socket"))
    }

    /// Tells the shell to exec sleep, and waits until it has.
    pub async fn exec(&self) {
        fs::write(self.d.dir.join("go"), "").expect("write go");
        wait_exe(self.pid, &self.sleep).await;
    }
}

#[tokio::test]
async fn exec_after_the_first_call_is_attested_again() {
    let id = format!("spiffe://{TD}/memo/shell");
    let mut s = ShellThenSleep::start(&id, None).await;
    let mut conn = s.raw().await;
    let got = poll(PROPAGATION, "the shell's X.509-SVID", || {
        let mut c = conn.clone();
        async move { x509(&mut c).await.ok() }
    })
    .await;
    assert_eq!(ids(&got), vec![id.clone()]);
    // Served again from the connection's attestation.
    let again = x509(&mut conn)
        .await
        .expect("a second call on the connection");
    assert_eq!(ids(&again), vec![id.clone()]);

    s.exec().await;
    assert_code(
        x509(&mut conn).await,
        Code::PermissionDenied,
        "FetchX509SVID after the connected shell exec'd sleep",
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
    assert_code(jwt, Code::PermissionDenied, "FetchJWTSVID after the exec");
}

/// A program exec'd on a connection its parent opened, and entitled to the same identity,
/// gets its own issuance line: the journal names the binary that holds the SVID now, not
/// the one that connected.
#[tokio::test]
async fn an_exec_is_logged_as_a_new_issuance() {
    let id = format!("spiffe://{TD}/memo/root");
    let mut s = ShellThenSleep::start(&id, Some("unix:uid:0")).await;
    let mut conn = s.raw().await;
    poll(PROPAGATION, "the shell's X.509-SVID", || {
        let mut c = conn.clone();
        async move { x509(&mut c).await.ok() }
    })
    .await;
    let lines = |path: &Path| {
        s.d.agent_log()
            .lines()
            .filter(|l| {
                l.contains("X509-SVID issued")
                    && l.contains(&format!("pid={} ", s.pid))
                    && l.contains(&format!("path={} ", path.display()))
            })
            .count()
    };
    x509(&mut conn).await.expect("a second call from the shell");

    s.exec().await;
    let after = x509(&mut conn).await.expect("sleep is root too: entitled");
    assert_eq!(ids(&after), vec![id.clone()]);
    poll(secs(10), "the issuance line naming sleep", || {
        std::future::ready((lines(&s.sleep) == 1).then_some(()))
    })
    .await;
    assert_eq!(lines(&s.sh), 1, "the shell's two calls: one line");
}

/// A FetchX509SVID stream opened by the shell ends at its next update once the shell has
/// exec'd another program: the new program gets none of the SVIDs pushed after the exec
/// (here a second identity of the shell's): the stream ends `Unavailable`, and a call again
/// attests the new program as itself.
#[tokio::test]
async fn a_stream_across_an_exec_ends_before_its_next_update() {
    let id = format!("spiffe://{TD}/memo/stream");
    let mut s = ShellThenSleep::start(&id, None).await;
    let conn = s.raw().await;
    let mut stream = open_x509_stream(&conn, &id).await;

    s.exec().await;
    let second = format!("spiffe://{TD}/memo/stream-second");
    let sel = format!("unix:path:{}", s.sh.display());
    s.d.create_entry(&second, &[&sel], &[])
        .await
        .expect("create a second entry for the shell");
    match within(PROPAGATION, "the stream's next item", stream.message()).await {
        Err(status) => {
            assert_eq!(status.code(), Code::Unavailable, "{status:?}");
            assert!(
                status.message().contains("another executable"),
                "{status:?}"
            );
        }
        Ok(Some(m)) => panic!("sleep was streamed the shell's SVIDs: {:?}", ids(&m)),
        Ok(None) => panic!("the stream ended without an error"),
    }
}

/// Once `conn` is served `id`: a FetchX509SVID stream on it, past its first message.
async fn open_x509_stream(conn: &Raw, id: &str) -> tonic::Streaming<pb::X509svidResponse> {
    poll(PROPAGATION, "the caller's X.509-SVID", || {
        let mut c = conn.clone();
        async move { x509(&mut c).await.ok() }
    })
    .await;
    let mut stream = within(
        secs(20),
        "open a FetchX509SVID stream",
        conn.clone().fetch_x509svid(req(pb::X509svidRequest {})),
    )
    .await
    .expect("FetchX509SVID")
    .into_inner();
    let opened = within(secs(20), "the stream's first message", stream.message())
        .await
        .expect("first message")
        .expect("a message");
    assert_eq!(ids(&opened), vec![id.to_string()]);
    stream
}

/// A change of the running executable's attributes alone (here a chmod, as a package
/// upgrade or a relabel would make) moves the process's mark but not its selectors: the
/// stream is attested again and goes on, and is told of the process's next identity.
#[tokio::test]
async fn a_stream_outlives_a_chmod_of_its_executable() {
    let mut d = Deployment::new(Opts::default())
        .await
        .expect("start a deployment");
    let exe = d.dir.join("sleeper");
    fs::copy(canonical("sleep"), &exe).expect("copy sleep");
    let sel = format!("unix:path:{}", exe.display());
    let id = format!("spiffe://{TD}/memo/sleeper");
    d.create_entry(&id, &[&sel], &[])
        .await
        .expect("create an entry");
    d.start_agent().await.expect("start the agent");
    let (fd, child) = connect_from_child(&d.socket_path(), 0, 0, &exe.to_string_lossy(), &["60"])
        .expect("connect from the copy of sleep");
    wait_exe(child.0.id(), &exe).await;
    let conn = Raw::new(channel_from_fd(fd).await.expect("HTTP/2 on the socket"));
    let mut stream = open_x509_stream(&conn, &id).await;

    let mut perms = fs::metadata(&exe).expect("stat the copy").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o700);
    fs::set_permissions(&exe, perms).expect("chmod the running executable");
    let second = format!("spiffe://{TD}/memo/sleeper-second");
    d.create_entry(&second, &[&sel], &[])
        .await
        .expect("create a second entry");
    let next = within(PROPAGATION, "the stream's next message", stream.message())
        .await
        .expect("the stream goes on")
        .expect("a message");
    let mut got = ids(&next);
    got.sort();
    assert_eq!(got, vec![id, second]);
    drop(child);
}

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
