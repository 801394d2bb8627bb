//! Restarts and outages: what survives them and how fast service returns.

use super::*;

#[tokio::test]
async fn authority_restart_loses_no_entry() {
    let mut d = Deployment::new(Opts::default())
        .await
        .expect("start a deployment");
    let (a, _) = d
        .register_self("life/restart-a", &["--hint", "ha"])
        .await
        .expect("register an entry");
    let other = d
        .create_entry(
            "spiffe://example.org/life/restart-other",
            &["unix:uid:1234", "unix:gid:1234"],
            &[
                "--x509-ttl",
                "10m",
                "--jwt-ttl",
                "1m",
                "--dns",
                "other.example.org",
            ],
        )
        .await
        .expect("create an entry");
    d.start_agent().await.expect("start the agent");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_x509(&mut raw, &[&a]).await;
    let entries = d.admin_ok(&["entry", "list"]).await.expect("admin command");
    let shown = d
        .admin_ok(&["entry", "show", &other])
        .await
        .expect("admin command");
    let bundle = d
        .admin_ok(&["bundle", "show", "--format", "pem"])
        .await
        .expect("admin command");
    let kids = jwt_kids(
        &d.admin_ok(&["bundle", "show", "--format", "spiffe"])
            .await
            .expect("admin command"),
    );
    assert!(entries.contains("Found 2 entries"), "{entries}");

    d.stop_authority().await.expect("stop the authority");
    d.start_authority().await.expect("start the authority");

    assert_eq!(
        d.admin_ok(&["entry", "list"]).await.expect("admin command"),
        entries,
        "entries changed across a restart"
    );
    assert_eq!(
        d.admin_ok(&["entry", "show", &other])
            .await
            .expect("admin command"),
        shown
    );
    assert!(
        shown.contains("600s") && shown.contains("60s") && shown.contains("other.example.org"),
        "{shown}"
    );
    assert_eq!(
        d.admin_ok(&["bundle", "show", "--format", "pem"])
            .await
            .expect("admin command"),
        bundle,
        "the CA changed across a restart"
    );
    assert_eq!(
        jwt_kids(
            &d.admin_ok(&["bundle", "show", "--format", "spiffe"])
                .await
                .expect("admin command")
        ),
        kids,
        "the JWT keys changed across a restart"
    );
    assert_eq!(
        d.agent_ids().await.expect("list agents"),
        vec![d.agent_id.clone()],
        "the attested agent was forgotten"
    );
    // The agent reconnects to the restarted authority: a new entry reaches it.
    let (b, _) = d
        .register_self("life/restart-b", &[])
        .await
        .expect("register an entry");
    wait_x509(&mut raw, &[&a, &b]).await;
}

#[tokio::test]
async fn agent_restart_resumes_without_new_token() {
    let (mut d, id) = Deployment::up("life/agent-restart")
        .await
        .expect("start a deployment");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_x509(&mut raw, &[&id]).await;
    drop(raw);
    d.stop_agent_cleanly()
        .await
        .expect("stop the agent cleanly");
    // Same config: its join token is spent; the agent must resume with its stored identity.
    d.start_agent().await.expect("start the agent");
    let mut raw = d.raw().await.expect("connect to the agent");
    let m = wait_x509(&mut raw, &[&id]).await;
    pki::assert_leaf_profile(&leaf_of(&m, &id), &id);
    wait_jwt(&mut raw, "after-restart", &id).await;
    assert_eq!(
        d.agent_ids().await.expect("list agents"),
        vec![d.agent_id.clone()],
        "exactly the one agent"
    );
    let lines = audit_until(&d, &["--agent", &d.agent_id], "one node_attestation", |l| {
        l.iter().any(|l| kind(l) == "node_attestation")
    })
    .await;
    let attestations = lines
        .iter()
        .filter(|l| kind(l) == "node_attestation")
        .count();
    assert_eq!(
        attestations,
        1,
        "the restarted agent attested again:\n{}",
        lines.join("\n")
    );
    let log = d.agent_log();
    assert!(!log.contains("panicked"), "agent log has a panic");
}

#[tokio::test]
async fn agent_exits_promptly_on_sigterm_with_open_stream() {
    let (mut d, id) = Deployment::up("life/sigterm")
        .await
        .expect("start a deployment");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_x509(&mut raw, &[&id]).await;
    // A workload watching its SVIDs, as every X509Source does all the time.
    let mut s = open(
        "FetchX509SVID",
        raw.fetch_x509svid(req(pb::X509svidRequest {})),
    )
    .await;
    next(&mut s, secs(5), "first message")
        .await
        .unwrap()
        .unwrap();
    let (st, in_time) = d.stop_agent().await.expect("stop the agent");
    assert!(
        in_time,
        "tessera-agent did not exit within 5s of SIGTERM while a Workload API stream was open \
         (it was SIGKILLed; systemd would wait TimeoutStopSec on every stop/restart)"
    );
    assert!(
        st.success(),
        "tessera-agent should exit 0 on SIGTERM, got {st}"
    );
    let end = next(
        &mut s,
        secs(5),
        "the open stream to end when the agent stops",
    )
    .await;
    assert!(
        !matches!(end, Ok(Some(_))),
        "the stream went on after the agent exited: {end:?}"
    );
}

/// systemd may stop a daemon the moment it says READY=1: that is a clean stop (exit 0,
/// "stopped"), not death by the default action of SIGTERM.
#[tokio::test]
async fn a_sigterm_right_after_ready_is_a_clean_stop() {
    let mut d = Deployment::new(Opts::default())
        .await
        .expect("start a deployment");
    d.register_self("life/sigterm-at-ready", &[])
        .await
        .expect("register an entry");
    // Repeated: the window the stop must not fall into is short.
    for round in 0..5 {
        d.stop_authority()
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e:#}"));
        d.start_authority().await.expect("start the authority");
        d.stop_authority()
            .await
            .unwrap_or_else(|e| panic!("round {round}, right after READY: {e:#}"));
        d.start_authority().await.expect("start the authority");
        d.start_agent().await.expect("start the agent");
        d.stop_agent_cleanly()
            .await
            .unwrap_or_else(|e| panic!("round {round}, right after READY: {e:#}"));
    }
    assert_eq!(d.agent_log().matches("stopped").count(), 5, "agent stops");
}

#[tokio::test]
async fn agent_serves_cached_svids_while_authority_down_and_recovers() {
    let (mut d, id) = Deployment::up("life/authority-down")
        .await
        .expect("start a deployment");
    let mut raw = d.raw().await.expect("connect to the agent");
    let m0 = wait_x509(&mut raw, &[&id]).await;
    let leaf0 = leaf_of(&m0, &id);
    let cached_jwt = wait_jwt(&mut raw, "cached-aud", &id).await;
    d.stop_authority().await.expect("stop the authority");

    // New connections and new streams are still served from the agent's cache.
    let mut raw = d.raw().await.expect("connect to the agent");
    let m1 = first(raw.fetch_x509svid(req(pb::X509svidRequest {})))
        .await
        .unwrap_or_else(|st| panic!("FetchX509SVID with the authority down: {st:?}"));
    assert_eq!(
        leaf_of(&m1, &id),
        leaf0,
        "the cached SVID is served unchanged"
    );
    first(raw.fetch_x509_bundles(req(pb::X509BundlesRequest {})))
        .await
        .unwrap_or_else(|st| panic!("FetchX509Bundles with the authority down: {st:?}"));
    first(raw.fetch_jwt_bundles(req(pb::JwtBundlesRequest {})))
        .await
        .unwrap_or_else(|st| panic!("FetchJWTBundles with the authority down: {st:?}"));
    let started = Instant::now();
    let again = fetch_jwt(&mut raw, "cached-aud", &id)
        .await
        .unwrap_or_else(|st| {
            panic!("a cached JWT-SVID must be served while the authority is down: {st:?}")
        });
    assert!(
        started.elapsed() < secs(5),
        "serving a cached JWT-SVID took {:?}",
        started.elapsed()
    );
    assert_eq!(pki::decode_jws(&again).claims["sub"], id.as_str());
    let _ = cached_jwt;
    // A JWT-SVID for a new audience needs the authority: Unavailable, within the deadline.
    let started = Instant::now();
    assert_code(
        fetch_jwt(&mut raw, "new-aud", &id).await,
        Code::Unavailable,
        "FetchJWTSVID for a new audience with the authority down",
    );
    assert!(
        started.elapsed() < secs(11),
        "the caller waited {:?} (past its 10s deadline)",
        started.elapsed()
    );
    // Validation works offline (the bundle is cached).
    let mut v = req(pb::ValidateJwtsvidRequest {
        audience: "cached-aud".into(),
        svid: again.clone(),
    });
    v.set_timeout(secs(10));
    within(secs(20), "ValidateJWTSVID", raw.validate_jwtsvid(v))
        .await
        .unwrap_or_else(|st| panic!("ValidateJWTSVID with the authority down: {st:?}"));

    // Recovery: the authority returns, the agent resyncs.
    d.start_authority().await.expect("start the authority");
    let (b, _) = d
        .register_self("life/authority-down-b", &[])
        .await
        .expect("register an entry");
    wait_x509(&mut raw, &[&id, &b]).await;
    wait_jwt(&mut raw, "new-aud", &id).await;
}

#[tokio::test]
async fn evicted_agent_stops_serving() {
    let (mut d, id) = Deployment::up("life/evicted")
        .await
        .expect("start a deployment");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_x509(&mut raw, &[&id]).await;
    let mut stream = open(
        "FetchX509SVID",
        raw.fetch_x509svid(req(pb::X509svidRequest {})),
    )
    .await;
    next(&mut stream, secs(5), "first message")
        .await
        .unwrap()
        .unwrap();

    d.admin_ok(&["agent", "evict", &d.agent_id])
        .await
        .expect("admin command");
    let listing = d.admin_ok(&["agent", "list"]).await.expect("admin command");
    assert!(listing.contains("Evicted       : true"), "{listing}");

    // New callers stop getting SVIDs (an error status, or the agent went away).
    let deadline = Instant::now() + PROPAGATION;
    let outcome = loop {
        if d.agent_exited().is_some() {
            break "the agent exited".to_string();
        }
        if std::os::unix::net::UnixStream::connect(d.socket_path()).is_err() {
            break "the agent closed its socket".to_string();
        }
        let mut r = d.raw().await.expect("connect to the agent");
        match first(r.fetch_x509svid(req(pb::X509svidRequest {}))).await {
            Err(st) => {
                assert!(
                    matches!(st.code(), Code::PermissionDenied | Code::Unavailable),
                    "an evicted agent should answer PermissionDenied or Unavailable, got {st:?}"
                );
                break format!("{:?}", st.code());
            }
            Ok(_) if Instant::now() > deadline => {
                panic!("the agent still serves SVIDs {PROPAGATION:?} after its eviction")
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    };
    // The open stream ends too, without having pushed a fresh SVID.
    while let Ok(Some(m)) = next(
        &mut stream,
        PROPAGATION,
        "the open stream to end after eviction",
    )
    .await
    {
        assert!(
            !m.svids.is_empty(),
            "eviction was pushed as an empty svids list instead of ending the stream"
        );
    }
    // A restart does not bring the identity back.
    d.stop_agent().await.expect("stop the agent");
    d.spawn_agent().expect("start the agent");
    let deadline = Instant::now() + secs(10);
    while Instant::now() < deadline && d.agent_exited().is_none() {
        if std::os::unix::net::UnixStream::connect(d.socket_path()).is_ok() {
            let mut r = d.raw().await.expect("connect to the agent");
            if let Ok(m) = first(r.fetch_x509svid(req(pb::X509svidRequest {}))).await {
                panic!(
                    "a restarted evicted agent serves {:?} (after: {outcome})",
                    ids(&m)
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
