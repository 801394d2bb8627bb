//! The authority stays available under floods, and no TLS connection outlives
//! the limits or the credential that opened it: per-address connection caps
//! (dropped at accept), handshake and idle timeouts, connections closed at the
//! client certificate's notAfter, the Attest gate, message size limits, and
//! anonymous peers kept to Attest and GetBundle.

use crate::harness::*;
use std::ffi::OsStr;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tessera_proto::authority as apb;
use tessera_proto::authority::node_client::NodeClient;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;

/// A deployment whose authority certificate names 127.0.0.1, with `limits`
/// as its `[limits]` section.
async fn deployment(agent_ttl: &'static str, limits: &str) -> Deployment {
    Deployment::new(Opts {
        agent_ttl,
        authority_extra: format!("server_names = [\"127.0.0.1\"]\n[limits]\n{limits}"),
        ..Opts::default()
    })
    .await
    .expect("start a deployment")
}

/// A TCP connection to the authority from the loopback address `source`.
async fn tcp_from(source: &str, port: u16) -> std::io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(source.parse::<IpAddr>().unwrap(), 0))?;
    sock.connect(SocketAddr::from(([127, 0, 0, 1], port))).await
}

/// A node API channel over TLS from `source`, counting the TCP connections it
/// makes (a second one means the first was closed).
fn node_channel(
    d: &Deployment,
    source: &'static str,
    identity: Option<Identity>,
    dials: Arc<AtomicUsize>,
) -> Channel {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(
            d.bundle_pem().expect("read bundle.pem"),
        ))
        .domain_name("127.0.0.1");
    if let Some(id) = identity {
        tls = tls.identity(id);
    }
    let port = d.port;
    let connector = tower::service_fn(move |_| {
        dials.fetch_add(1, Ordering::SeqCst);
        async move {
            tcp_from(source, port)
                .await
                .map(hyper_util::rt::TokioIo::new)
        }
    });
    Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_with_connector_lazy(connector)
}

fn anonymous(d: &Deployment, source: &'static str) -> NodeClient<Channel> {
    let ch = node_channel(d, source, None, Arc::new(AtomicUsize::new(0)));
    NodeClient::new(ch).max_decoding_message_size(64 << 20)
}

/// True once the peer closed (EOF or reset); false if nothing came within `wait`.
async fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout(wait, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// An Attest exchange opened and left waiting (the agent never sends `begin`).
type Pending = (
    tokio::sync::mpsc::Sender<apb::AttestRequest>,
    tonic::Streaming<apb::AttestResponse>,
);

async fn open_attest(node: &mut NodeClient<Channel>) -> Result<Pending, tonic::Status> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let resp = within(
        secs(10),
        "open Attest",
        node.attest(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
    .await?;
    Ok((tx, resp.into_inner()))
}

fn begin(method: &str, payload: Vec<u8>) -> apb::AttestRequest {
    apb::AttestRequest {
        step: Some(apb::attest_request::Step::Begin(apb::AttestBegin {
            method: method.into(),
            payload,
            csr: Vec::new(),
        })),
    }
}

/// The code an Attest exchange that opens with `first` ends with.
async fn attest_outcome(node: &mut NodeClient<Channel>, first: apb::AttestRequest) -> Code {
    let out = within(secs(30), "Attest", async {
        let mut stream = node
            .attest(tokio_stream::iter(vec![first]))
            .await?
            .into_inner();
        while stream.message().await?.is_some() {}
        Ok::<_, tonic::Status>(())
    })
    .await;
    match out {
        Ok(()) => Code::Ok,
        Err(st) => st.code(),
    }
}

#[tokio::test]
async fn a_connection_flood_from_one_address_is_capped_while_others_attest() {
    // Default limits: 64 connections per address.
    let mut d = deployment("1h", "").await;
    let mut flood = Vec::new();
    for i in 0..300 {
        let s = tcp_from("127.0.0.2", d.port)
            .await
            .unwrap_or_else(|e| panic!("flood connection {i}: {e}"));
        flood.push(s);
    }
    // Past the cap the authority drops connections at accept; the first 64
    // stay open (their TLS handshake is pending, with a 10s timeout).
    let closed: Vec<bool> = futures::future::join_all(
        flood
            .iter_mut()
            .map(|s| closed_within(s, Duration::from_millis(1500))),
    )
    .await;
    let n_closed = closed.iter().filter(|c| **c).count();
    assert_eq!(
        n_closed,
        300 - 64,
        "connections from one address past max_connections_per_address (64) must be dropped"
    );
    // That address cannot get anything more in...
    let mut blocked = anonymous(&d, "127.0.0.2");
    let res = within(
        secs(10),
        "GetBundle from the flooding address",
        blocked.get_bundle(apb::GetBundleRequest {}),
    )
    .await;
    let err = res.expect_err("GetBundle from the flooding address past its cap");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    // ...while an agent on another address attests and serves SVIDs.
    let started = Instant::now();
    let (id, _) = d
        .register_self("flood/other", &[])
        .await
        .expect("register an entry");
    d.start_agent().await.expect("start the agent");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_x509(&mut raw, &[&id]).await;
    assert!(
        started.elapsed() < secs(20),
        "attestation during the flood took {:?}",
        started.elapsed()
    );
    let mut other = anonymous(&d, "127.0.0.1");
    within(
        secs(10),
        "GetBundle",
        other.get_bundle(apb::GetBundleRequest {}),
    )
    .await
    .expect("GetBundle from another address during the flood");
    drop(flood);
}

#[tokio::test]
async fn a_client_that_never_finishes_the_handshake_is_dropped() {
    let d = deployment("1h", "handshake_timeout = \"1s\"\n").await;
    let mut s = tcp_from("127.0.0.1", d.port).await.unwrap();
    let start = Instant::now();
    assert!(
        closed_within(&mut s, secs(8)).await,
        "a silent TLS client must be dropped after limits.handshake_timeout (1s)"
    );
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(800),
        "dropped after {took:?}, before the handshake timeout"
    );
}

#[tokio::test]
async fn an_idle_connection_is_closed() {
    let d = deployment("1h", "idle_timeout = \"4s\"\n").await;
    let dials = Arc::new(AtomicUsize::new(0));
    let mut node = NodeClient::new(node_channel(&d, "127.0.0.1", None, dials.clone()));
    // Activity keeps the connection: 3 calls a second apart (3 s of room each), one connection.
    for _ in 0..3 {
        within(
            secs(10),
            "GetBundle",
            node.get_bundle(apb::GetBundleRequest {}),
        )
        .await
        .expect("GetBundle");
        tokio::time::sleep(secs(1)).await;
    }
    assert_eq!(
        dials.load(Ordering::SeqCst),
        1,
        "an active connection was closed"
    );
    tokio::time::sleep(secs(6)).await;
    // The authority closed it: the next call needs a new connection.
    let mut ok = false;
    for _ in 0..3 {
        if within(
            secs(10),
            "GetBundle",
            node.get_bundle(apb::GetBundleRequest {}),
        )
        .await
        .is_ok()
        {
            ok = true;
            break;
        }
    }
    assert!(ok, "GetBundle on a new connection");
    assert_eq!(
        dials.load(Ordering::SeqCst),
        2,
        "a connection idle past limits.idle_timeout (4s) must be closed"
    );
}

#[tokio::test]
async fn a_connection_ends_when_its_client_certificate_expires() {
    let mut d = deployment("12s", "").await;
    let (id, _) = d
        .register_self("expiry/w", &[])
        .await
        .expect("register an entry");
    d.start_agent().await.expect("start the agent");
    wait_x509(&mut d.raw().await.expect("connect to the agent"), &[&id]).await;
    // The agent SVID and key it holds now; the agent stops renewing.
    d.stop_agent_cleanly()
        .await
        .expect("stop the agent cleanly");
    let data = d.dir.join("agent-data");
    let cert = std::fs::read_to_string(data.join("agent_svid.pem")).unwrap();
    let key = std::fs::read_to_string(data.join("agent_key.pem")).unwrap();
    let der = pem_first_cert(&cert);
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
    let not_after = parsed.validity().not_after.timestamp();
    assert!(
        not_after - now() >= 2,
        "the agent SVID has {}s left; too little to test",
        not_after - now()
    );
    let dials = Arc::new(AtomicUsize::new(0));
    let ch = node_channel(
        &d,
        "127.0.0.1",
        Some(Identity::from_pem(&cert, &key)),
        dials.clone(),
    );
    let mut node = NodeClient::new(ch);
    within(
        secs(10),
        "SyncEntries",
        node.sync_entries(apb::SyncEntriesRequest {}),
    )
    .await
    .expect("SyncEntries with a valid agent SVID");
    assert_eq!(dials.load(Ordering::SeqCst), 1);
    // Past notAfter, the open connection is gone: the next request cannot
    // ride on it, and a new handshake with the expired certificate fails.
    let wait = (not_after + 2 - now()).max(0) as u64;
    tokio::time::sleep(secs(wait)).await;
    let res = within(
        secs(10),
        "SyncEntries after notAfter",
        node.sync_entries(apb::SyncEntriesRequest {}),
    )
    .await;
    assert!(res.is_err(), "SyncEntries after notAfter answered {res:?}");
    assert!(
        dials.load(Ordering::SeqCst) >= 2,
        "the connection opened with the certificate was still open after its notAfter"
    );
}

fn pem_first_cert(pem: &str) -> Vec<u8> {
    use base64::Engine as _;
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

#[tokio::test]
async fn concurrent_attestations_are_capped_overall_and_per_address() {
    let d = deployment(
        "1h",
        "max_attestations = 2\nmax_attestations_per_address = 1\n",
    )
    .await;
    let mut a = anonymous(&d, "127.0.0.1");
    let mut b = anonymous(&d, "127.0.0.2");
    let mut c = anonymous(&d, "127.0.0.3");
    let held_a = open_attest(&mut a).await.expect("first Attest from .1");
    assert_code(
        open_attest(&mut a).await.map(|_| ()),
        Code::ResourceExhausted,
        "a second concurrent Attest from the same address",
    );
    let _held_b = open_attest(&mut b).await.expect("first Attest from .2");
    assert_code(
        open_attest(&mut c).await.map(|_| ()),
        Code::ResourceExhausted,
        "a third concurrent Attest overall (max_attestations = 2)",
    );
    // An exchange that ends gives its place back.
    drop(held_a);
    poll(secs(10), "a freed attestation slot", || {
        let mut c = c.clone();
        async move { open_attest(&mut c).await.ok() }
    })
    .await;
}

#[tokio::test]
async fn an_oversized_attest_message_is_resource_exhausted() {
    let d = deployment("1h", "").await;
    let mut node = anonymous(&d, "127.0.0.1");
    // Over the 5 MiB limit: refused from its length prefix.
    let code = attest_outcome(&mut node, begin("join_token", vec![b'x'; (5 << 20) + 1])).await;
    assert_eq!(code, Code::ResourceExhausted, "a 5 MiB + 1 Attest message");
    // A 4.5 MiB one (room for a 4 MiB event log) is decoded and judged.
    let code = attest_outcome(&mut node, begin("join_token", vec![b'x'; 9 << 19])).await;
    assert!(
        !matches!(code, Code::ResourceExhausted | Code::Ok),
        "a 4.5 MiB Attest message: {code:?}"
    );
}

#[tokio::test]
async fn anonymous_peers_reach_only_attest_and_get_bundle() {
    let d = deployment("1h", "").await;
    let mut node = anonymous(&d, "127.0.0.1");
    within(
        secs(10),
        "GetBundle",
        node.get_bundle(apb::GetBundleRequest {}),
    )
    .await
    .expect("anonymous GetBundle");
    // Refused before the body is read: a message over the size limit is not
    // even decoded (it would be OutOfRange).
    let big = apb::BatchSignX509Request {
        requests: vec![apb::X509SignRequest {
            entry_id: "e".into(),
            csr: vec![0; 6 << 20],
            ..Default::default()
        }],
    };
    assert_code(
        within(secs(20), "BatchSignX509", node.batch_sign_x509(big)).await,
        Code::Unauthenticated,
        "anonymous BatchSignX509",
    );
    for (what, res) in [
        (
            "SyncEntries",
            node.sync_entries(apb::SyncEntriesRequest {})
                .await
                .map(|_| ()),
        ),
        (
            "RenewAgent",
            node.renew_agent(apb::RenewAgentRequest { csr: vec![1] })
                .await
                .map(|_| ()),
        ),
        (
            "SignJwt",
            node.sign_jwt(apb::SignJwtRequest {
                entry_id: "e".into(),
                audience: vec!["a".into()],
                ..Default::default()
            })
            .await
            .map(|_| ()),
        ),
    ] {
        assert_code(res, Code::Unauthenticated, what);
    }
}

/// The soft limit on open files, from /proc/<pid>/limits.
fn soft_nofile(pid: u32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[tokio::test]
async fn the_authority_raises_its_open_files_limit_to_the_hard_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("authority.toml");
    std::fs::write(
        &cfg,
        format!(
            "trust_domain = \"{TD}\"\nlisten_address = \"127.0.0.1:0\"\n\
             admin_socket_path = \"{}\"\ndata_dir = \"{}\"\n",
            tmp.path().join("admin.sock").display(),
            tmp.path().join("data").display()
        ),
    )
    .unwrap();
    let authority = bin("tessera-authority").expect("binary built");
    // prlimit execs the authority with soft 256, hard 4096.
    let mut daemon = Daemon::spawn(
        "authority",
        Path::new("/usr/bin/prlimit"),
        &[
            OsStr::new("--nofile=256:4096"),
            authority.as_os_str(),
            OsStr::new("run"),
            OsStr::new("--config"),
            cfg.as_os_str(),
        ],
        &tmp.path().join("authority.log"),
        &[],
    )
    .expect("start a daemon");
    let pid = daemon.pid();
    daemon
        .wait_ready(secs(20))
        .await
        .expect("the authority ready");
    assert_eq!(
        soft_nofile(pid),
        Some(4096),
        "soft RLIMIT_NOFILE of the running authority\n{}",
        std::fs::read_to_string(tmp.path().join("authority.log")).unwrap_or_default()
    );
}
