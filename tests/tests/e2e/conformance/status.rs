//! Status codes.

use super::*;

#[tokio::test]
async fn unregistered_caller_gets_permission_denied() {
    let (d, id) = Deployment::up("conf/unregistered")
        .await
        .expect("start a deployment");
    let mut raw = d.raw().await.expect("connect to the agent");
    // The agent is synced: an unregistered caller now gets a definite PermissionDenied.
    wait_x509(&mut raw, &[&id]).await;

    // The connection is made by `sleep` running as nobody (uid 65534), which no entry
    // matches; it stays alive while we talk over its connection.
    let (mut nobody, _child) = client_via_child(&d, NOBODY, "sleep", &["60"]).await;
    assert_code(
        first(nobody.fetch_x509svid(req(pb::X509svidRequest {}))).await,
        Code::PermissionDenied,
        "FetchX509SVID by an unregistered caller",
    );
    assert_code(
        first(nobody.fetch_x509_bundles(req(pb::X509BundlesRequest {}))).await,
        Code::PermissionDenied,
        "FetchX509Bundles by an unregistered caller",
    );
    assert_code(
        first(nobody.fetch_jwt_bundles(req(pb::JwtBundlesRequest {}))).await,
        Code::PermissionDenied,
        "FetchJWTBundles by an unregistered caller",
    );
    assert_code(
        fetch_jwt(&mut nobody, &["some-audience"], "").await,
        Code::PermissionDenied,
        "FetchJWTSVID by an unregistered caller",
    );

    // The same through the agent's own CLI, run as nobody.
    let out = run_cmd(
        &bin("tessera-agent").expect("binary built"),
        &["api", "fetch", "x509", "--socket", &d.socket_uri()],
        Some(NOBODY),
        &[],
    )
    .await
    .expect("run a command");
    let line = out.assert_one_line_error("`tessera-agent api fetch x509` as uid 65534");
    let lower = line.to_lowercase();
    assert!(
        lower.contains("permission") || lower.contains("no identity"),
        "the CLI error should say the caller has no identity / permission denied: {line}"
    );
}

#[tokio::test]
async fn exited_caller_gets_unavailable() {
    let (d, id) = Deployment::up("conf/exited-caller")
        .await
        .expect("start a deployment");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_x509(&mut raw, &[&id]).await;

    // Control: a connection made by a live root child (which the entry matches) is served,
    // so the fd hand-over itself is not what fails below.
    let (mut live, _sleeper) = client_via_child(&d, 0, "sleep", &["60"]).await;
    let resp = first(live.fetch_x509svid(req(pb::X509svidRequest {})))
        .await
        .unwrap_or_else(|st| panic!("a live root caller must get its SVID: {st:?}"));
    assert!(ids(&resp).contains(&id));

    // A root process connects and exits; its connection is then used by this process.
    // The agent can no longer attest the peer, and must not serve the peer's identity.
    let (mut dead, mut child) = client_via_child(&d, 0, "true", &[]).await;
    let st = child.0.wait().unwrap();
    assert!(st.success());
    assert_code(
        first(dead.fetch_x509svid(req(pb::X509svidRequest {}))).await,
        Code::Unavailable,
        "FetchX509SVID on a connection whose caller has exited",
    );
    assert_code(
        fetch_jwt(&mut dead, &["aud"], "").await,
        Code::Unavailable,
        "FetchJWTSVID on a connection whose caller has exited",
    );
}

#[tokio::test]
async fn unsynced_agent_answers_unavailable() {
    let mut d = Deployment::new(Opts::default())
        .await
        .expect("start a deployment");
    let (id, _) = d
        .register_self("conf/unsynced", &[])
        .await
        .expect("register an entry");
    // The agent starts while the authority is down: it cannot attest nor sync.
    d.stop_authority().await.expect("stop the authority");
    d.spawn_agent().expect("start the agent");
    let deadline = Instant::now() + secs(15);
    loop {
        if let Some(st) = d.agent_exited() {
            panic!(
                "tessera-agent exited ({st}) because the authority was unreachable at start; \
                 it should keep retrying and answer Unavailable meanwhile"
            );
        }
        if std::os::unix::net::UnixStream::connect(d.socket_path()).is_ok() {
            break;
        }
        if Instant::now() > deadline {
            panic!(
                "tessera-agent does not serve the Workload API while it cannot reach the \
                 authority (no socket after 15s); callers get connection errors instead of \
                 Unavailable"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut problems = Vec::new();
    let mut raw = d.raw().await.expect("connect to the agent");
    let r = tokio::time::timeout(
        secs(5),
        first(raw.fetch_x509svid(req(pb::X509svidRequest {}))),
    )
    .await;
    check_prompt_code(
        &mut problems,
        "FetchX509SVID before the agent has synced",
        Code::Unavailable,
        r,
    );
    let r = tokio::time::timeout(secs(5), fetch_jwt(&mut raw, &["aud"], "")).await;
    check_prompt_code(
        &mut problems,
        "FetchJWTSVID before the agent has synced",
        Code::Unavailable,
        r,
    );
    // The authority comes up: the agent attests with its still-unused token and serves
    // (allowing for its retry backoff).
    d.start_authority().await.expect("start the authority");
    let up = Instant::now();
    let mut recovered = false;
    while up.elapsed() < secs(45) {
        let mut r = d.raw().await.expect("connect to the agent");
        let res = tokio::time::timeout(
            secs(3),
            first(r.fetch_x509svid(req(pb::X509svidRequest {}))),
        )
        .await;
        if let Ok(Ok(m)) = res {
            if ids(&m).contains(&id) {
                recovered = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if !recovered {
        problems.push(
            "the agent did not attest and serve within 45s of the authority coming up".into(),
        );
    }
    assert!(
        problems.is_empty(),
        "an agent that has not synced yet:\n  {}",
        problems.join("\n  ")
    );
}

/// Records a problem unless `r` is the server-sent status `code`, received in time.
fn check_prompt_code<T: std::fmt::Debug>(
    problems: &mut Vec<String>,
    what: &str,
    code: Code,
    r: Result<Result<T, Status>, tokio::time::error::Elapsed>,
) {
    match r {
        Err(_) => problems.push(format!(
            "{what}: no answer within 5s (the call hangs; expected {code:?} at once)"
        )),
        Ok(Ok(v)) => problems.push(format!("{what}: succeeded ({v:?}); expected {code:?}")),
        Ok(Err(st)) if st.code() != code || std::error::Error::source(&st).is_some() => problems
            .push(format!(
                "{what}: got {st:?}; expected {code:?} from the agent"
            )),
        Ok(Err(_)) => {}
    }
}

#[tokio::test]
async fn jwt_fetch_empty_audience_is_invalid_argument() {
    let (d, id) = Deployment::up("conf/jwt-empty-aud")
        .await
        .expect("start a deployment");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_jwt(&mut raw, &["control"], &id).await;
    assert_code(
        fetch_jwt(&mut raw, &[], "").await,
        Code::InvalidArgument,
        "FetchJWTSVID with no audience",
    );
    assert_code(
        fetch_jwt(&mut raw, &[], &id).await,
        Code::InvalidArgument,
        "FetchJWTSVID with no audience for an entitled spiffe_id",
    );
    assert_code(
        fetch_jwt(&mut raw, &[""], &id).await,
        Code::InvalidArgument,
        "FetchJWTSVID with an empty audience string",
    );
    // And through the spiffe crate (it passes the empty list through unchanged).
    let client = d.client().await.expect("connect the spiffe client");
    let err = within(
        secs(20),
        "spiffe fetch_jwt_svid",
        client.fetch_jwt_svid(Vec::<String>::new(), None),
    )
    .await
    .expect_err("an empty audience must be refused");
    assert!(
        err.is_invalid_argument(),
        "spiffe client: expected InvalidArgument, got {err:?}"
    );
}

#[tokio::test]
async fn jwt_fetch_malformed_spiffe_id_is_invalid_argument() {
    let (d, id) = Deployment::up("conf/jwt-malformed-id")
        .await
        .expect("start a deployment");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_jwt(&mut raw, &["control"], &id).await;
    for bad in [
        "not-a-spiffe-id",
        "http://example.org/conf/jwt-malformed-id",
        "spiffe:///conf/jwt-malformed-id",
        "spiffe://example.org/conf//jwt-malformed-id",
        "spiffe://example.org/conf/jwt-malformed-id?x=1",
        "spiffe://EXAMPLE.org/conf/jwt-malformed-id",
    ] {
        assert_code(
            fetch_jwt(&mut raw, &["aud"], bad).await,
            Code::InvalidArgument,
            &format!("FetchJWTSVID for malformed spiffe_id {bad:?}"),
        );
    }
}

#[tokio::test]
async fn jwt_fetch_unentitled_spiffe_id_is_permission_denied() {
    let (d, id) = Deployment::up("conf/jwt-unentitled")
        .await
        .expect("start a deployment");
    // A real entry, but for another uid: it exists, just not for this caller.
    let other = format!("spiffe://{TD}/conf/someone-else");
    d.create_entry(&other, &["unix:uid:65534"], &[])
        .await
        .expect("create an entry");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_jwt(&mut raw, &["control"], &id).await;
    for unentitled in [
        other.as_str(),
        "spiffe://example.org/conf/nobody-has-this",
        "spiffe://other.org/conf/jwt-unentitled",
    ] {
        assert_code(
            fetch_jwt(&mut raw, &["aud"], unentitled).await,
            Code::PermissionDenied,
            &format!("FetchJWTSVID for {unentitled}, which the caller is not entitled to"),
        );
    }
}
