//! Envoy SDS v3 on the agent socket, called with the `envoy-types` crate's tonic client
//! (generated from Envoy's own protos) and without the `workload.spiffe.io` header:
//! resource names, xDS ACK/NACK/stale-nonce handling, pushes on rotation, denial,
//! logs and metrics.

use crate::harness::*;
use crate::pki;
use crate::telemetry::{at_least, scrape};
use envoy_types::pb::envoy::config::core::v3::{data_source::Specifier, DataSource, Node};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{secret, Secret};
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use envoy_types::pb::google::rpc;
use prost::Message;
use std::collections::BTreeMap;
use std::time::Duration;
use tessera_proto::workload as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

type Sds = SecretDiscoveryServiceClient<Channel>;

const SECRET_TYPE: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
/// How long "no push" is watched for: a push is sent at once, so this is generous.
const QUIET: Duration = Duration::from_secs(3);

fn dreq(names: &[&str], version: &str, nonce: &str, error: Option<&str>) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: version.into(),
        node: Some(Node {
            id: "sds-e2e".into(),
            cluster: "e2e".into(),
            ..Default::default()
        }),
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        type_url: SECRET_TYPE.into(),
        response_nonce: nonce.into(),
        error_detail: error.map(|m| rpc::Status {
            code: Code::InvalidArgument as i32,
            message: m.into(),
            details: vec![],
        }),
        ..Default::default()
    }
}

/// The response's secrets by name.
fn secrets(r: &DiscoveryResponse) -> BTreeMap<String, Secret> {
    assert_eq!(r.type_url, SECRET_TYPE);
    r.resources
        .iter()
        .map(|a| {
            assert_eq!(a.type_url, SECRET_TYPE);
            let s = Secret::decode(a.value.as_slice()).expect("a Secret");
            (s.name.clone(), s)
        })
        .collect()
}

fn names(r: &DiscoveryResponse) -> Vec<String> {
    secrets(r).into_keys().collect()
}

fn inline(d: &Option<DataSource>) -> Vec<u8> {
    match d.as_ref().and_then(|d| d.specifier.clone()) {
        Some(Specifier::InlineBytes(b)) => b,
        other => panic!("not inline bytes: {other:?}"),
    }
}

/// A `tls_certificate`: (chain DER, leaf first; PKCS#8 key DER), checked against the bundle.
fn tls(s: &Secret, bundle: &[Vec<u8>], id: &str) -> (Vec<Vec<u8>>, Vec<u8>) {
    let Some(secret::Type::TlsCertificate(t)) = &s.r#type else {
        panic!("{} is not a tls_certificate: {s:?}", s.name);
    };
    let chain = pki::pem_certs(&inline(&t.certificate_chain));
    let keys: Vec<_> = pki::pem_blocks(&inline(&t.private_key));
    assert_eq!(keys.len(), 1, "{}: one key block", s.name);
    assert_eq!(keys[0].0, "PRIVATE KEY", "{}: PKCS#8 PEM", s.name);
    pki::assert_leaf_profile(&chain[0], id);
    pki::assert_key_matches(&keys[0].1, &chain[0]);
    pki::verify_chain(&chain, bundle);
    (chain, keys[0].1.clone())
}

fn trusted_ca(s: &Secret) -> Vec<Vec<u8>> {
    let Some(secret::Type::ValidationContext(v)) = &s.r#type else {
        panic!("{} is not a validation_context: {s:?}", s.name);
    };
    pki::pem_certs(&inline(&v.trusted_ca))
}

async fn fetch(c: &mut Sds, names: &[&str]) -> Result<DiscoveryResponse, Status> {
    within(
        secs(20),
        "FetchSecrets",
        c.fetch_secrets(dreq(names, "", "", None)),
    )
    .await
    .map(|r| r.into_inner())
}

/// FetchSecrets until the agent has synced and serves `names`.
async fn fetch_when_ready(c: &mut Sds, names: &[&str]) -> DiscoveryResponse {
    poll(PROPAGATION, "FetchSecrets to answer", || {
        let mut c = c.clone();
        async move { fetch(&mut c, names).await.ok() }
    })
    .await
}

/// An open StreamSecrets: the sender for Envoy's requests and the responses.
struct Stream {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
}

impl Stream {
    async fn open(c: &mut Sds, first: DiscoveryRequest) -> Stream {
        let (tx, out) = mpsc::channel(8);
        tx.send(first).await.unwrap();
        let rx = open("StreamSecrets", c.stream_secrets(ReceiverStream::new(out))).await;
        Stream { tx, rx }
    }

    async fn send(&self, r: DiscoveryRequest) {
        self.tx.send(r).await.expect("the request stream is open");
    }

    async fn next(&mut self, limit: Duration, what: &str) -> DiscoveryResponse {
        match next(&mut self.rx, limit, what).await {
            Ok(Some(r)) => {
                assert!(
                    !r.version_info.is_empty() && !r.nonce.is_empty(),
                    "{what}: {r:?}"
                );
                r
            }
            other => panic!("{what}: the stream gave {other:?}"),
        }
    }

    /// Asserts that nothing arrives for `QUIET`.
    async fn quiet(&mut self, what: &str) {
        if let Ok(got) = tokio::time::timeout(QUIET, self.rx.message()).await {
            panic!("{what}: expected no push, the stream gave {got:?}");
        }
    }

    async fn ack(&self, r: &DiscoveryResponse, names: &[&str]) {
        self.send(dreq(names, &r.version_info, &r.nonce, None))
            .await;
    }
}

#[tokio::test]
async fn fetch_serves_each_kind_of_name_and_denies_the_rest() {
    let mut d = Deployment::new(Opts {
        agent_extra: TELEMETRY.into(),
        ..Opts::default()
    })
    .await
    .expect("start a deployment");
    let (a, _) = d
        .register_self("sds/a", &[])
        .await
        .expect("register an entry");
    let (b, _) = d
        .register_self("sds/b", &[])
        .await
        .expect("register an entry");
    d.start_agent().await.expect("start the agent");
    let listen = d.agent_telemetry().expect("the agent's telemetry");
    let bundle = pki::pem_certs(d.bundle_pem().expect("read bundle.pem").as_bytes());
    let mut c = Sds::new(d.channel().await.expect("connect to the agent"));
    fetch_when_ready(&mut c, &["spiffe://example.org/sds/b"]).await;

    let all = ["default", "ROOTCA", "ALL", b.as_str(), TD_KEY];
    let r = fetch(&mut c, &all).await.expect("FetchSecrets");
    let s = secrets(&r);
    let mut want: Vec<String> = all.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(names(&r), want, "exactly the names asked for");
    // `default` is the Workload API's default (first) SVID.
    let first_id =
        ids(&wait_x509(&mut d.raw().await.expect("connect to the agent"), &[&a, &b]).await)
            .remove(0);
    tls(&s["default"], &bundle, &first_id);
    tls(&s[&b], &bundle, &b);
    for name in ["ROOTCA", "ALL", TD_KEY] {
        assert_eq!(
            trusted_ca(&s[name]),
            bundle,
            "{name}: the trust domain's bundle"
        );
    }
    // No names: every SVID by SPIFFE ID and every bundle by trust domain (as SPIRE).
    let r = fetch(&mut c, &[])
        .await
        .expect("FetchSecrets with no names");
    let mut want = vec![a.clone(), b.clone(), TD_KEY.to_string()];
    want.sort();
    assert_eq!(names(&r), want);

    for name in [
        "spiffe://example.org/sds/not-mine",
        "spiffe://other.org",
        "typo",
    ] {
        let st = assert_code(
            fetch(&mut c, &["default", name]).await,
            Code::PermissionDenied,
            &format!("FetchSecrets for {name}"),
        );
        assert!(st.message().contains(name), "{st:?}");
    }
    // The Workload API itself still wants its header.
    assert_code(
        first(
            d.raw()
                .await
                .expect("connect to the agent")
                .fetch_x509svid(request(pb::X509svidRequest {}, Header::Missing)),
        )
        .await,
        Code::InvalidArgument,
        "FetchX509SVID without the security header",
    );

    let (fd, child, child_pid) = connect_as_nobody(&d).await.expect("connect as nobody");
    let mut nobody = Sds::new(
        channel_from_fd(fd)
            .await
            .expect("HTTP/2 on a pre-connected socket"),
    );
    assert_code(
        fetch(&mut nobody, &["ROOTCA"]).await,
        Code::PermissionDenied,
        "FetchSecrets by an unregistered caller",
    );
    let (hold, out) = mpsc::channel(1);
    hold.send(dreq(&["ROOTCA"], "", "", None)).await.unwrap();
    assert_code(
        first(nobody.stream_secrets(ReceiverStream::new(out))).await,
        Code::PermissionDenied,
        "StreamSecrets by an unregistered caller",
    );

    // Logs like the Workload API's, and the same metrics.
    let me = std::process::id();
    poll(secs(10), "SDS issuance and denial log lines", || {
        let log = d.agent_log();
        let found = log.lines().any(|l| {
            l.contains("SDS X509-SVID issued")
                && l.contains(&format!("pid={me} "))
                && l.contains("uid=0 ")
                && l.contains(&format!("spiffe_id={a}"))
        }) && log.lines().any(|l| {
            l.contains("SDS X509-SVID denied")
                && l.contains(&format!("pid={child_pid} "))
                && l.contains(&format!("uid={NOBODY} "))
                && l.contains("path=/")
        });
        std::future::ready(found.then_some(()))
    })
    .await;
    let text = scrape(&listen, "agent").await;
    let counted = "tessera_agent_workload_api_requests_total";
    at_least(
        &text,
        counted,
        &[("method", "FetchSecrets"), ("code", "OK")],
        3.0,
    );
    for m in ["FetchSecrets", "StreamSecrets"] {
        at_least(
            &text,
            counted,
            &[("method", m), ("code", "PermissionDenied")],
            1.0,
        );
    }
    drop(child);
    d.stop_agent_cleanly()
        .await
        .expect("stop the agent cleanly");
}

#[tokio::test]
async fn stream_acks_nacks_stale_nonces_and_name_changes() {
    let (d, id) = Deployment::up("sds/stream")
        .await
        .expect("start a deployment");
    let bundle = pki::pem_certs(d.bundle_pem().expect("read bundle.pem").as_bytes());
    let mut c = Sds::new(d.channel().await.expect("connect to the agent"));
    fetch_when_ready(&mut c, &["default"]).await;

    let mut s = Stream::open(&mut c, dreq(&["default"], "", "", None)).await;
    let r1 = s.next(secs(10), "the first response").await;
    assert_eq!(names(&r1), vec!["default"]);
    tls(&secrets(&r1)["default"], &bundle, &id);

    // ACK: nothing new to say.
    s.ack(&r1, &["default"]).await;
    s.quiet("after an ACK").await;

    // A request for an older response (unknown nonce) is ignored, new names and all.
    s.send(dreq(
        &["default", "ROOTCA"],
        &r1.version_info,
        "not-a-nonce",
        None,
    ))
    .await;
    s.quiet("after a stale nonce").await;

    // New names on the current nonce: answered at once, with only those names.
    s.send(dreq(
        &["default", "ROOTCA"],
        &r1.version_info,
        &r1.nonce,
        None,
    ))
    .await;
    let r2 = s.next(secs(5), "the answer to new names").await;
    assert_eq!(names(&r2), vec!["ROOTCA", "default"]);
    assert_ne!(r2.nonce, r1.nonce, "every response has a fresh nonce");
    assert_ne!(r2.version_info, r1.version_info);
    assert_eq!(trusted_ca(&secrets(&r2)["ROOTCA"]), bundle);

    // NACK: logged with Envoy's reason, and the same version is not pushed
    // again. Repeating it (a flood) is neither logged again nor answered.
    let reason = "sds-e2e rejected this on purpose";
    let both = ["default", "ROOTCA"];
    for _ in 0..50 {
        s.send(dreq(&both, &r1.version_info, &r2.nonce, Some(reason)))
            .await;
    }
    s.quiet("after a NACK").await;
    let warnings = || {
        d.agent_log()
            .lines()
            .filter(|l| {
                l.contains("WARN")
                    && l.contains("rejected by the client")
                    && l.contains(&format!("pid={} uid=0 ", std::process::id()))
                    && l.contains(reason)
            })
            .count()
    };
    poll(secs(10), "the NACK warning in the agent log", || {
        std::future::ready((warnings() > 0).then_some(()))
    })
    .await;
    assert_eq!(warnings(), 1, "a repeated NACK is logged once");
}

#[tokio::test]
async fn rotation_is_pushed_only_to_streams_that_asked_for_it() {
    let mut d = Deployment::new(Opts::default())
        .await
        .expect("start a deployment");
    let (short, _) = d
        .register_self("sds/short", &["--x509-ttl", "20s"])
        .await
        .expect("register an entry");
    let (long, _) = d
        .register_self("sds/long", &[])
        .await
        .expect("register an entry");
    d.start_agent().await.expect("start the agent");
    let bundle = pki::pem_certs(d.bundle_pem().expect("read bundle.pem").as_bytes());
    let mut c = Sds::new(d.channel().await.expect("connect to the agent"));
    fetch_when_ready(&mut c, &[&short, &long]).await;

    let mut rotating = Stream::open(&mut c, dreq(&[&short], "", "", None)).await;
    let mut steady = Stream::open(&mut c, dreq(&[&long], "", "", None)).await;
    let r1 = rotating
        .next(secs(10), "first response (short-lived SVID)")
        .await;
    let l1 = steady
        .next(secs(10), "first response (long-lived SVID)")
        .await;
    rotating.ack(&r1, &[&short]).await;
    steady.ack(&l1, &[&long]).await;
    let (chain1, _) = tls(&secrets(&r1)[&short], &bundle, &short);

    let r2 = rotating.next(secs(40), "a push after rotation").await;
    let (chain2, _) = tls(&secrets(&r2)[&short], &bundle, &short);
    assert_ne!(
        pki::serial(&chain2[0]),
        pki::serial(&chain1[0]),
        "a new leaf"
    );
    assert_ne!(r2.version_info, r1.version_info, "a new version");
    assert_ne!(r2.nonce, r1.nonce);
    assert_eq!(names(&r2), vec![short.clone()]);
    // The other stream's SVID did not change: it hears nothing.
    steady.quiet("a stream whose SVID did not rotate").await;
    // The agent stopping ends an open stream with Unavailable, and is not held by it.
    let (stopped, end) = tokio::join!(
        d.stop_agent_cleanly(),
        next(&mut steady.rx, secs(10), "the stream as the agent stops")
    );
    stopped.expect("the agent stops with a stream open");
    let st = assert_code(end, Code::Unavailable, "the stream as the agent stops");
    assert!(st.message().contains("shutting down"), "{st:?}");
}

#[tokio::test]
async fn name_changes_on_a_stream_are_charged_to_the_uid_rate() {
    let mut d = Deployment::new(Opts {
        agent_extra: "\n[workload_api]\nattestations_per_second = 1\nattestation_burst = 3\n"
            .into(),
        ..Opts::default()
    })
    .await
    .expect("start a deployment");
    d.register_self("sds/churn", &[])
        .await
        .expect("register an entry");
    d.start_agent().await.expect("start the agent");
    let mut c = Sds::new(d.channel().await.expect("connect to the agent"));
    fetch_when_ready(&mut c, &["default"]).await;
    // Polling until the agent was ready may have spent the burst; let it refill.
    tokio::time::sleep(secs(3)).await;
    let mut s = Stream::open(&mut c, dreq(&["default"], "", "", None)).await;
    let mut last = s.next(secs(10), "the first response").await;
    // Each new set of names is an answer to build; a client churning them is throttled
    // like one calling in a loop (the bucket refills at 1/s, so 20 fast changes cannot pass).
    for i in 0..20 {
        let names: &[&str] = if i % 2 == 0 {
            &["ROOTCA"]
        } else {
            &["default"]
        };
        s.send(dreq(names, &last.version_info, &last.nonce, None))
            .await;
        match next(&mut s.rx, secs(5), "the answer to new names").await {
            Ok(Some(r)) => last = r,
            Err(st) => {
                assert_code(Err::<(), _>(st), Code::ResourceExhausted, "name churn");
                return;
            }
            Ok(None) => panic!("the stream ended without a status"),
        }
    }
    panic!("20 name changes within a few seconds were all answered: no rate limit");
}

/// A StreamSecrets opened by a shell that then exec'd another program: the program can send
/// requests on the open stream, and gets an error instead of the shell's secrets.
#[tokio::test]
async fn a_request_on_a_stream_across_an_exec_is_refused() {
    use crate::attest_memo::ShellThenSleep;
    let id = format!("spiffe://{TD}/sds/shell");
    let mut sh = ShellThenSleep::start(&id, None).await;
    let fd = sh.fd.take().expect("the socket");
    let mut c = Sds::new(channel_from_fd(fd).await.expect("HTTP/2 on the socket"));
    fetch_when_ready(&mut c, &[&id]).await;
    let mut s = Stream::open(&mut c, dreq(&[&id], "", "", None)).await;
    let r = s.next(secs(20), "the shell's secret").await;
    s.ack(&r, &[&id]).await;

    sh.exec().await;
    s.send(dreq(&[&id, "ROOTCA"], &r.version_info, &r.nonce, None))
        .await;
    match next(&mut s.rx, secs(20), "the answer to sleep's request").await {
        Err(status) => {
            assert_eq!(status.code(), Code::Unavailable, "{status:?}");
            assert!(
                status.message().contains("another executable"),
                "{status:?}"
            );
        }
        Ok(got) => panic!(
            "sleep was answered with {} secrets",
            got.map_or(0, |r| r.resources.len())
        ),
    }
}
