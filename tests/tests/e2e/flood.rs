//! Nobody can make the Workload API unavailable for others: connection floods from one uid,
//! descriptor exhaustion, callers that never speak or go idle, and call floods.

use crate::harness::*;
use nix::libc;
use nix::sys::socket::{SockaddrLike, UnixAddr};
use std::fs;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tessera_proto::workload as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

/// A `sleep` process of `uid` holding up to `n` connections to `sock`, all made (as `uid`)
/// before it execs. Connections the agent refused are closed sockets it still holds.
fn flood(sock: &Path, uid: u32, n: usize) -> ChildGuard {
    let addr = UnixAddr::new(sock).unwrap();
    let mut cmd = child_command("sleep");
    cmd.arg("120")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let limit = (n + 64) as libc::rlim_t;
    // SAFETY: only async-signal-safe calls (setrlimit, set*id, socket, connect, nanosleep)
    // on data prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let check = |rc: libc::c_int| match rc {
                0 => Ok(()),
                _ => Err(io::Error::last_os_error()),
            };
            let lim = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            check(libc::setrlimit(libc::RLIMIT_NOFILE, &lim))?;
            check(libc::setgroups(0, std::ptr::null()))?;
            check(libc::setgid(uid))?;
            check(libc::setuid(uid))?;
            let pause = libc::timespec {
                tv_sec: 0,
                tv_nsec: 1_000_000,
            };
            for _ in 0..n {
                let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
                if fd < 0 {
                    break;
                }
                // A full backlog says EAGAIN: give the agent a moment, a bounded number of times.
                for _ in 0..200 {
                    if libc::connect(fd, addr.as_ptr().cast(), addr.len()) == 0 {
                        break;
                    }
                    libc::nanosleep(&pause, std::ptr::null_mut());
                }
            }
            Ok(())
        });
    }
    ChildGuard(cmd.spawn().expect("spawn the flooding process"))
}

/// One FetchX509SVID on a new connection: its latency.
async fn fetch_latency(d: &Deployment, id: &str) -> Duration {
    let t = Instant::now();
    let mut raw = d.raw().await.expect("connect to the agent");
    let resp = first(raw.fetch_x509svid(req(pb::X509svidRequest {})))
        .await
        .unwrap_or_else(|st| panic!("the victim must keep getting its SVID: {st:?}"));
    assert!(ids(&resp).iter().any(|i| i == id));
    t.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// HTTP status of `GET path` on the telemetry endpoint.
async fn http_status(addr: &str, path: &str) -> u16 {
    let exchange = async {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
        let req = format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n");
        tcp.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        tcp.read_to_end(&mut buf).await.ok()?;
        String::from_utf8_lossy(&buf)
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    within(secs(10), "telemetry GET", exchange)
        .await
        .unwrap_or(0)
}

fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

/// Whether the agent serves a connection: an admitted one gets the server's HTTP/2
/// SETTINGS at once, a refused one is closed unanswered.
fn served(sock: &UnixStream) -> bool {
    sock.set_read_timeout(Some(secs(10))).unwrap();
    let mut buf = [0u8; 64];
    match (&*sock).read(&mut buf) {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) => panic!("the agent neither served nor closed a connection: {e}"),
    }
}

fn closed_by_peer(fd: &OwnedFd) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let rc = unsafe { libc::poll(&mut p, 1, 0) };
    rc > 0 && p.revents & (libc::POLLRDHUP | libc::POLLHUP) != 0
}

/// A Workload API client on its own connection, and a probe of that connection.
async fn probed_client(d: &Deployment) -> (Raw, OwnedFd) {
    let sock = UnixStream::connect(d.socket_path()).unwrap();
    let probe = OwnedFd::from(sock.try_clone().unwrap());
    let client = Raw::new(
        channel_from_fd(sock.into())
            .await
            .expect("HTTP/2 on a pre-connected socket"),
    );
    (client, probe)
}

/// Waits (at most 10 s) for the agent to close `probe`'s connection; how long it took.
async fn closed_after(probe: &OwnedFd, what: &str) -> Duration {
    let t = Instant::now();
    poll(secs(10), what, || {
        let closed = closed_by_peer(probe);
        async move { closed.then_some(()) }
    })
    .await;
    t.elapsed()
}

#[tokio::test]
async fn connection_flood_from_one_uid_leaves_others_served() {
    let mut d = Deployment::new(Opts {
        // The silent flood connections the agent accepts outlive the test, so only the
        // agent's own closing of those it refuses can bring its descriptors under the cap.
        agent_extra: format!("{TELEMETRY}[workload_api]\nfirst_request_timeout = \"60s\"\n"),
        ..Opts::default()
    })
    .await
    .expect("start a deployment");
    let (id, _) = d
        .register_self("flood/victim", &[])
        .await
        .expect("register an entry");
    d.start_agent().await.expect("start the agent");
    let tel = d.agent_telemetry().expect("the agent's telemetry");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_x509(&mut raw, &[&id]).await;
    drop(raw);
    fetch_latency(&d, &id).await; // warms the hash cache
    let mut unloaded = Vec::new();
    for _ in 0..10 {
        unloaded.push(fetch_latency(&d, &id).await);
    }
    let unloaded = median(unloaded);

    let fds_before = open_fds(d.agent_pid().expect("agent running"));
    let flooder = flood(&d.socket_path(), NOBODY, 3000);
    let mut loaded = Vec::new();
    for _ in 0..20 {
        loaded.push(fetch_latency(&d, &id).await);
        assert_eq!(
            http_status(&tel, "/ready").await,
            200,
            "/ready under a flood"
        );
    }
    let loaded_median = median(loaded);
    eprintln!("unloaded median {unloaded:?}, loaded median {loaded_median:?}");
    // Starved, the victim would wait for a slot that a silent flood connection frees
    // only after a minute; the slack is for other tests loading the machine meanwhile.
    assert!(
        loaded_median <= (unloaded * 4).max(unloaded + Duration::from_millis(500)),
        "a flood from another uid slowed the victim from {unloaded:?} to {loaded_median:?}"
    );
    // The flood holds its 3000 sockets; the agent keeps only that uid's share: 64
    // connections, each a socket, the caller's pidfd and its /proc/<pid> directory
    // (once the refused ones it is closing are closed).
    let pid = d.agent_pid().expect("agent running");
    let cap = fds_before + 3 * 64 + 8;
    let fds = poll(
        secs(10),
        "the agent's descriptors within the per-uid cap",
        || {
            let fds = open_fds(pid);
            std::future::ready((fds <= cap).then_some(fds))
        },
    )
    .await;
    eprintln!("the agent holds {fds} descriptors under the flood (was {fds_before})");
    drop(flooder);
}

#[tokio::test]
async fn per_uid_connection_cap_closes_extra_connections() {
    let mut d = Deployment::new(Opts {
        agent_extra: "\n[workload_api]\nmax_connections_per_uid = 4\n".into(),
        ..Opts::default()
    })
    .await
    .expect("start a deployment");
    let (id, _) = d
        .register_self("flood/cap", &[])
        .await
        .expect("register an entry");
    d.start_agent().await.expect("start the agent");
    let mut own = d.raw().await.expect("connect to the agent");
    wait_x509(&mut own, &[&id]).await;

    let mut held = Vec::new();
    for i in 0..4 {
        let (fd, child) =
            connect_from_child(&d.socket_path(), NOBODY, NOBODY, "sleep", &["60"]).unwrap();
        let s = UnixStream::from(fd);
        assert!(
            served(&s),
            "connection {i} of uid {NOBODY} is within the cap"
        );
        held.push((s, child));
    }
    let (fd, _c) = connect_from_child(&d.socket_path(), NOBODY, NOBODY, "sleep", &["60"]).unwrap();
    assert!(
        !served(&UnixStream::from(fd)),
        "a 5th connection of uid {NOBODY} (cap 4) must be closed"
    );
    // Another uid is unaffected.
    let resp = first(own.fetch_x509svid(req(pb::X509svidRequest {}))).await;
    assert!(ids(&resp.unwrap()).contains(&id));
    let (fd, _r) = connect_from_child(&d.socket_path(), 0, 0, "sleep", &["60"]).unwrap();
    assert!(served(&UnixStream::from(fd)), "root's connection is served");
    // A closed connection frees its place.
    held.pop();
    poll(secs(10), "a freed place to be usable again", || {
        let (fd, c) =
            connect_from_child(&d.socket_path(), NOBODY, NOBODY, "sleep", &["60"]).unwrap();
        let ok = served(&UnixStream::from(fd));
        drop(c);
        async move { ok.then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn attestation_rate_limit_is_per_uid() {
    let mut d = Deployment::new(Opts {
        agent_extra: "\n[workload_api]\nattestations_per_second = 1\nattestation_burst = 5\n"
            .into(),
        ..Opts::default()
    })
    .await
    .expect("start a deployment");
    let (id, _) = d
        .register_self("flood/rate", &[])
        .await
        .expect("register an entry");
    d.start_agent().await.expect("start the agent");
    let mut own = d.raw().await.expect("connect to the agent");
    wait_x509(&mut own, &[&id]).await;

    let mut exhausted = None;
    for _ in 0..12 {
        match first(own.fetch_x509svid(req(pb::X509svidRequest {}))).await {
            Ok(_) => {}
            Err(st) if st.code() == Code::ResourceExhausted => {
                exhausted = Some(st);
                break;
            }
            Err(st) => panic!("unexpected {st:?}"),
        }
    }
    let st = exhausted.expect("12 calls at once from one uid (rate 1/s, burst 5) must be limited");
    assert!(st.message().contains("too many"), "{st:?}");
    // Another uid has its own budget: it is told it has no identity, not to slow down.
    let (fd, _c) = connect_from_child(&d.socket_path(), NOBODY, NOBODY, "sleep", &["60"]).unwrap();
    let mut other = Raw::new(
        channel_from_fd(fd)
            .await
            .expect("HTTP/2 on a pre-connected socket"),
    );
    assert_code(
        first(other.fetch_x509svid(req(pb::X509svidRequest {}))).await,
        Code::PermissionDenied,
        "a call from another uid while root is rate limited",
    );
    // The budget refills.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    first(own.fetch_x509svid(req(pb::X509svidRequest {})))
        .await
        .unwrap_or_else(|st| panic!("after a pause root is served again: {st:?}"));
}

#[tokio::test]
async fn silent_and_idle_connections_are_closed() {
    let mut d = Deployment::new(Opts {
        agent_extra: "\n[workload_api]\nfirst_request_timeout = \"1s\"\nidle_timeout = \"2s\"\n"
            .into(),
        ..Opts::default()
    })
    .await
    .expect("start a deployment");
    let (id, _) = d
        .register_self("flood/idle", &[])
        .await
        .expect("register an entry");
    d.start_agent().await.expect("start the agent");
    let mut own = d.raw().await.expect("connect to the agent");
    wait_x509(&mut own, &[&id]).await;

    // Never sends a request: closed after first_request_timeout.
    let t = Instant::now();
    let mut silent = UnixStream::connect(d.socket_path()).unwrap();
    silent.set_read_timeout(Some(secs(15))).unwrap();
    let mut sink = Vec::new();
    silent
        .read_to_end(&mut sink)
        .expect("the agent closes a connection that never sends a request");
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < secs(6),
        "closed after {took:?}, want about 1s"
    );

    // One call, then idle: closed after idle_timeout. One open stream: kept.
    let (mut stream_client, stream_probe) = probed_client(&d).await;
    let mut stream = open(
        "a long-lived FetchX509SVID stream",
        stream_client.fetch_x509svid(req(pb::X509svidRequest {})),
    )
    .await;
    next(&mut stream, secs(20), "first message").await.unwrap();
    // Connected just before its call: a connection silent for 1s is closed.
    let (mut idle_client, idle_probe) = probed_client(&d).await;
    first(idle_client.fetch_x509svid(req(pb::X509svidRequest {})))
        .await
        .unwrap();
    let took = closed_after(&idle_probe, "the idle connection to be closed").await;
    assert!(took >= Duration::from_millis(1500), "closed too early");
    assert!(
        !closed_by_peer(&stream_probe),
        "a connection with an open stream is not idle"
    );
    // The stream ends after both timeouts have passed: idle from then on, and closed.
    drop(stream);
    let took = closed_after(&stream_probe, "the connection whose stream ended to close").await;
    assert!(
        took >= Duration::from_millis(1500),
        "closed too early after its stream ended"
    );

    // Calls every 0.7 s: idle_timeout runs from the last call, so the connection outlives
    // both timeouts counted from its first.
    let (mut busy_client, busy_probe) = probed_client(&d).await;
    for _ in 0..6 {
        first(busy_client.fetch_x509svid(req(pb::X509svidRequest {})))
            .await
            .expect("a call on a connection in use");
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(
            !closed_by_peer(&busy_probe),
            "a connection called every 0.7 s was closed as idle"
        );
    }
}

#[tokio::test]
async fn accept_backs_off_when_out_of_descriptors() {
    let (mut d, id) = Deployment::up("flood/emfile")
        .await
        .expect("start a deployment");
    let mut own = d.raw().await.expect("connect to the agent");
    wait_x509(&mut own, &[&id]).await;
    let pid = d.agent_pid().expect("agent running");
    // The soft limit only: lowering the hard one could not be undone without CAP_SYS_RESOURCE.
    let prlimit = |n: usize| {
        let out = std::process::Command::new("prlimit")
            .args(["--pid", &pid.to_string(), &format!("--nofile={n}:")])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "prlimit --pid {pid} --nofile={n}: {out:?}"
        );
    };
    // Only fds 0-2 (stdio, all open) allowed: every new descriptor fails with EMFILE, so a
    // waiting connection stays in the backlog and the listening socket stays readable.
    prlimit(3);
    let waiting = UnixStream::connect(d.socket_path()).unwrap();
    poll(secs(10), "the agent to report it cannot accept", || {
        let logged = d.agent_log().contains("cannot accept connections");
        async move { logged.then_some(()) }
    })
    .await;
    let before = tessera_tests::cpu_time(pid).unwrap();
    tokio::time::sleep(secs(3)).await;
    let used = tessera_tests::cpu_time(pid).unwrap().saturating_sub(before);
    // Retrying accept at once would burn about 3 s.
    assert!(
        used < Duration::from_millis(600),
        "the agent used {used:?} of CPU in 3 s while out of descriptors: it must back off"
    );
    // Descriptors back: the waiting connection is served, and new ones too.
    prlimit(1024);
    assert!(served(&waiting), "the connection that waited is served");
    first(
        d.raw()
            .await
            .expect("connect to the agent")
            .fetch_x509svid(req(pb::X509svidRequest {})),
    )
    .await
    .unwrap_or_else(|st| panic!("served again once descriptors are back: {st:?}"));
    assert!(d.agent_exited().is_none());
}

#[tokio::test]
async fn streams_per_connection_are_capped() {
    let mut d = Deployment::new(Opts {
        agent_extra: "\n[workload_api]\nmax_streams_per_connection = 2\n".into(),
        ..Opts::default()
    })
    .await
    .expect("start a deployment");
    let (id, _) = d
        .register_self("flood/streams", &[])
        .await
        .expect("register an entry");
    d.start_agent().await.expect("start the agent");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_x509(&mut raw, &[&id]).await;

    let one = open("stream 1", raw.fetch_x509svid(req(pb::X509svidRequest {}))).await;
    let _two = open("stream 2", raw.fetch_x509svid(req(pb::X509svidRequest {}))).await;
    // The server allows 2 concurrent streams on this connection: a third waits.
    let mut third_client = raw.clone();
    let third = tokio::spawn(async move {
        third_client
            .fetch_x509svid(req(pb::X509svidRequest {}))
            .await
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !third.is_finished(),
        "a third stream on a connection capped at 2 must wait"
    );
    drop(one);
    let resp = within(secs(10), "the third stream once one closed", third)
        .await
        .unwrap();
    resp.unwrap_or_else(|st| panic!("the third stream opens once a slot is free: {st:?}"));
}
