//! Issuance and denial log lines, and SIGTERM draining open streams.

use super::*;

#[tokio::test]
async fn issuance_and_denial_logs_name_pid_uid_path_and_spiffe_id() {
    let (d, id) = Deployment::up("tm/audit-log")
        .await
        .expect("start a deployment");
    let mut raw = d.raw().await.expect("connect to the agent");
    let svid = wait_x509(&mut raw, &[&id]).await;
    let (_, leaf) = x509_parser::parse_x509_certificate(&svid.svids[0].x509_svid).unwrap();
    let not_after = format!("not_after={}", leaf.validity().not_after.timestamp());
    within(
        secs(20),
        "FetchJWTSVID",
        raw.fetch_jwtsvid(req(pb::JwtsvidRequest {
            audience: vec!["tm".into()],
            spiffe_id: String::new(),
        })),
    )
    .await
    .expect("FetchJWTSVID");
    let me = std::process::id();
    let exe = fs::read_link("/proc/self/exe").unwrap();
    let has = |log: &str, what: &str, pid: u32, uid: u32, path: &str, spiffe: &str| {
        log.lines().any(|l| {
            l.contains(what)
                && l.contains(&format!("pid={pid} "))
                && l.contains(&format!("uid={uid} "))
                && l.contains(&format!("path={path}"))
                && l.contains(&format!("spiffe_id={spiffe}"))
        })
    };
    let exe = exe.to_str().unwrap();
    poll(secs(10), "issuance log lines", || {
        let log = d.agent_log();
        std::future::ready(
            (has(&log, "X509-SVID issued", me, 0, exe, &id)
                && log
                    .lines()
                    .any(|l| l.contains("X509-SVID issued") && l.contains(&not_after))
                && has(&log, "JWT-SVID issued", me, 0, exe, &id))
            .then_some(()),
        )
    })
    .await;

    // A caller no entry matches: `sleep` as nobody, connected from the child.
    let sleep = fs::canonicalize("/bin/sleep").unwrap();
    let (fd, child, child_pid) = connect_as_nobody(&d).await.expect("connect as nobody");
    let mut nobody =
        tessera_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient::new(
            channel_from_fd(fd)
                .await
                .expect("HTTP/2 on a pre-connected socket"),
        );
    assert_code(
        first(nobody.fetch_x509svid(req(pb::X509svidRequest {}))).await,
        Code::PermissionDenied,
        "FetchX509SVID by an unregistered caller",
    );
    let sleep = sleep.to_str().unwrap();
    poll(secs(10), "the denial log line", || {
        let log = d.agent_log();
        std::future::ready(
            has(&log, "X509-SVID denied", child_pid, NOBODY, sleep, "-").then_some(()),
        )
    })
    .await;
    drop(child);
}

/// A client that asks again on its connection for what it holds writes no second line (the
/// journal would fill with copies); the same credential on a new connection does.
#[tokio::test]
async fn an_issuance_is_logged_once_per_connection_and_credential() {
    let (d, id) = Deployment::up("tm/once").await.expect("start a deployment");
    let me = std::process::id();
    let count = |what: &str| {
        d.agent_log()
            .lines()
            .filter(|l| l.contains(what) && l.contains(&format!("pid={me} ")))
            .count()
    };
    let jwt = |mut c: Raw| async move {
        within(
            secs(20),
            "FetchJWTSVID",
            c.fetch_jwtsvid(req(pb::JwtsvidRequest {
                audience: vec!["once".into()],
                spiffe_id: String::new(),
            })),
        )
        .await
        .expect("FetchJWTSVID")
        .into_inner()
    };
    let mut raw = d.raw().await.expect("connect to the agent");
    let svid = wait_x509(&mut raw, &[&id]).await;
    let token = jwt(raw.clone()).await;
    poll(secs(10), "the first issuance lines", || {
        std::future::ready(
            (count("X509-SVID issued") >= 1 && count("JWT-SVID issued") >= 1).then_some(()),
        )
    })
    .await;
    let (x0, j0) = (count("X509-SVID issued"), count("JWT-SVID issued"));

    for _ in 0..3 {
        let again = first(raw.fetch_x509svid(req(pb::X509svidRequest {})))
            .await
            .expect("FetchX509SVID again on the connection");
        assert_eq!(
            again.svids[0].x509_svid, svid.svids[0].x509_svid,
            "same SVID"
        );
        assert_eq!(
            jwt(raw.clone()).await.svids[0].svid,
            token.svids[0].svid,
            "cached"
        );
    }
    let fresh = d.raw().await.expect("a second connection");
    first(fresh.clone().fetch_x509svid(req(pb::X509svidRequest {})))
        .await
        .expect("FetchX509SVID on a new connection");
    jwt(fresh).await;
    // The new connection's lines are written after the repeats': once they show, any
    // repeat's line would too.
    poll(secs(10), "the new connection's issuance lines", || {
        std::future::ready(
            (count("X509-SVID issued") > x0 && count("JWT-SVID issued") > j0).then_some(()),
        )
    })
    .await;
    assert_eq!(
        count("X509-SVID issued"),
        x0 + 1,
        "one X.509 line per connection"
    );
    assert_eq!(
        count("JWT-SVID issued"),
        j0 + 1,
        "one JWT line per connection"
    );
}

#[tokio::test]
async fn authority_sigterm_ends_open_attest_streams_promptly() {
    let mut d = deployment("server_names = [\"127.0.0.1\"]\n").await;
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(
            d.bundle_pem().expect("read bundle.pem"),
        ))
        .domain_name("127.0.0.1");
    let channel = tonic::transport::Endpoint::from_shared(format!("https://127.0.0.1:{}", d.port))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("TLS connection to the authority");
    let mut node = tessera_proto::authority::node_client::NodeClient::new(channel);
    // An exchange the agent never continues: the authority waits for `begin`.
    let (_tx, rx) = tokio::sync::mpsc::channel::<tessera_proto::authority::AttestRequest>(1);
    let mut stream = within(
        secs(10),
        "open Attest",
        node.attest(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
    .await
    .expect("Attest opens")
    .into_inner();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // stop_authority asserts exit 0 within 5s of SIGTERM.
    d.stop_authority().await.expect("stop the authority");
    let end = within(secs(5), "the Attest stream to end", stream.message()).await;
    match end {
        Ok(None) => {}
        Err(st) => assert!(
            matches!(
                st.code(),
                Code::Unavailable | Code::Cancelled | Code::Unknown
            ),
            "{st:?}"
        ),
        Ok(Some(m)) => panic!("unexpected attest message after SIGTERM: {m:?}"),
    }
}
