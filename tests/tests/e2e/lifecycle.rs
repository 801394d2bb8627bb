//! Restarts, outages, eviction, audit and the command-line tools.

use crate::harness::*;
use crate::pki;
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};
use tessera_proto::workload as pb;
use tokio::io::AsyncBufReadExt as _;
use tonic::Code;

async fn fetch_jwt(
    raw: &mut Raw,
    audience: &str,
    spiffe_id: &str,
) -> Result<String, tonic::Status> {
    let mut r = req(pb::JwtsvidRequest {
        audience: vec![audience.to_string()],
        spiffe_id: spiffe_id.to_string(),
    });
    r.set_timeout(secs(10));
    let resp = within(secs(20), "FetchJWTSVID", raw.fetch_jwtsvid(r))
        .await?
        .into_inner();
    assert_eq!(resp.svids.len(), 1, "{resp:?}");
    Ok(resp.svids[0].svid.clone())
}

async fn wait_jwt(raw: &mut Raw, audience: &str, spiffe_id: &str) -> String {
    let deadline = Instant::now() + PROPAGATION;
    loop {
        match fetch_jwt(raw, audience, spiffe_id).await {
            Ok(t) => return t,
            Err(st) if Instant::now() > deadline => {
                panic!("no JWT-SVID for {spiffe_id} within {PROPAGATION:?}: {st:?}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

fn leaf_of(resp: &pb::X509svidResponse, id: &str) -> Vec<u8> {
    pki::split_der(&svid(resp, id).x509_svid).remove(0)
}

fn jwt_kids(spiffe_bundle_json: &str) -> BTreeSet<String> {
    let v: serde_json::Value = serde_json::from_str(spiffe_bundle_json).expect("bundle JSON");
    v["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter(|k| k["use"] == "jwt-svid")
        .filter_map(|k| k["kid"].as_str().map(str::to_string))
        .collect()
}

/// Audit lines, once the predicate holds for them (audit records may land asynchronously).
async fn audit_until(
    d: &Deployment,
    args: &[&str],
    what: &str,
    pred: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let mut all = vec!["audit"];
    all.extend_from_slice(args);
    let deadline = Instant::now() + secs(15);
    loop {
        let lines: Vec<String> = d
            .admin_ok(&all)
            .await
            .expect("admin command")
            .lines()
            .map(str::to_string)
            .collect();
        if pred(&lines) {
            return lines;
        }
        if Instant::now() > deadline {
            panic!("audit {args:?}: {what}; got:\n{}", lines.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn kind(line: &str) -> &str {
    line.split('\t').nth(1).unwrap_or("")
}

fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split('\t')
        .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
}

// ---------------------------------------------------------------------------------------
// restarts and outages

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

// ---------------------------------------------------------------------------------------
// audit and join tokens

#[tokio::test]
async fn audit_records_issuance() {
    let (d, id) = Deployment::up("life/audit")
        .await
        .expect("start a deployment");
    let mut raw = d.raw().await.expect("connect to the agent");
    let m = wait_x509(&mut raw, &[&id]).await;
    let serial = pki::serial(&leaf_of(&m, &id));
    wait_jwt(&mut raw, "audit-aud", &id).await;

    let lines = audit_until(
        &d,
        &["--spiffe-id", &id],
        "x509_svid and jwt_svid events",
        |l| l.iter().any(|l| kind(l) == "x509_svid") && l.iter().any(|l| kind(l) == "jwt_svid"),
    )
    .await;
    for l in &lines {
        assert_eq!(
            field(l, "spiffe_id"),
            Some(id.as_str()),
            "--spiffe-id filter: {l}"
        );
        assert_eq!(
            field(l, "agent"),
            Some(d.agent_id.as_str()),
            "issuing agent: {l}"
        );
    }
    let x = lines
        .iter()
        .find(|l| {
            kind(l) == "x509_svid"
                && field(l, "serial").map(|s| s.to_lowercase().trim_start_matches('0').to_string())
                    == Some(serial.trim_start_matches('0').to_string())
        })
        .unwrap_or_else(|| {
            panic!(
                "no x509_svid event with the served serial {serial}:\n{}",
                lines.join("\n")
            )
        });
    assert!(field(x, "expires_at").is_some_and(|e| !e.is_empty()), "{x}");
    let j = lines.iter().find(|l| kind(l) == "jwt_svid").unwrap();
    assert_eq!(field(j, "audience"), Some("audit-aud"), "{j}");

    let by_agent = audit_until(
        &d,
        &["--agent", &d.agent_id],
        "a node_attestation event",
        |l| l.iter().any(|l| kind(l) == "node_attestation"),
    )
    .await;
    assert!(by_agent
        .iter()
        .all(|l| field(l, "agent") == Some(d.agent_id.as_str())));
    let none = d
        .admin_ok(&[
            "audit",
            "--spiffe-id",
            "spiffe://example.org/life/never-issued",
        ])
        .await
        .expect("admin command");
    assert!(
        none.trim().is_empty(),
        "audit for an ID never issued: {none}"
    );
}

#[tokio::test]
async fn token_is_single_use() {
    let (mut d, id) = Deployment::up("life/token")
        .await
        .expect("start a deployment");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_x509(&mut raw, &[&id]).await;

    // A second agent with the same (spent) token.
    let cfg2 = d.dir.join("agent2.toml");
    let sock2 = d.dir.join("agent2").join("api.sock");
    d.write_agent_config(&cfg2, &sock2, &d.dir.join("agent2-data"), &d.token.clone())
        .expect("write the agent config");
    let log2 = d.dir.join("agent2.log");
    let second = d
        .spawn_agent_daemon("agent2", &cfg2, &log2)
        .expect("start an agent");
    d.extra.push(second);
    let deadline = Instant::now() + secs(20);
    let verdict = loop {
        if let Some(st) = d.extra[0].exited() {
            assert!(
                !st.success(),
                "the second agent exited 0 although it could not attest"
            );
            break format!("exited with {st}");
        }
        let log = std::fs::read_to_string(&log2).unwrap_or_default();
        let failure = log.lines().find(|l| {
            let lower = l.to_lowercase();
            (l.contains("ERROR") || l.contains("WARN") || lower.contains("error"))
                && (lower.contains("token") || lower.contains("attest") || lower.contains("denied"))
        });
        if let Some(line) = failure {
            break format!("logged: {line}");
        }
        if Instant::now() > deadline {
            panic!("the second agent with a spent token neither exited nor logged an attestation error in 20s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Whatever it does, it must not serve identities.
    if std::os::unix::net::UnixStream::connect(&sock2).is_ok() {
        let mut r2 = Raw::new(uds_channel(&sock2).await.expect("connect to the socket"));
        if let Ok(m) = first(r2.fetch_x509svid(req(pb::X509svidRequest {}))).await {
            panic!(
                "an agent with a spent join token serves {:?} ({verdict})",
                ids(&m)
            );
        }
    }
    assert_eq!(
        d.agent_ids().await.expect("list agents"),
        vec![d.agent_id.clone()],
        "a spent token attested a second agent"
    );
    // The first agent is unaffected.
    wait_x509(&mut raw, &[&id]).await;
}

// ---------------------------------------------------------------------------------------
// command-line tools

#[tokio::test]
async fn cli_bad_input_exits_nonzero_with_one_line() {
    let (d, id) = Deployment::up("life/cli-bad")
        .await
        .expect("start a deployment");
    let agent = d.agent_id.clone();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "entry",
                "create",
                "--parent-id",
                &agent,
                "--spiffe-id",
                &id,
                "--selector",
                "nocolon",
            ],
            "selector",
        ),
        (
            vec![
                "entry",
                "create",
                "--parent-id",
                &agent,
                "--spiffe-id",
                &id,
                "--selector",
                "unix:uid:0",
                "--x509-ttl",
                "soon",
            ],
            "x509-ttl",
        ),
        (
            vec![
                "entry",
                "create",
                "--parent-id",
                &agent,
                "--spiffe-id",
                &id,
                "--selector",
                "unix:uid:0",
                "--jwt-ttl=-5s",
            ],
            "jwt-ttl",
        ),
        (
            vec![
                "entry",
                "create",
                "--parent-id",
                &agent,
                "--spiffe-id",
                "not-a-spiffe-id",
                "--selector",
                "unix:uid:0",
            ],
            "spiffe_id",
        ),
        (vec!["entry", "show", "deadbeef"], "deadbeef"),
        (vec!["entry", "delete", "deadbeef"], "deadbeef"),
        (
            vec![
                "agent",
                "evict",
                "spiffe://example.org/tessera/agent/join_token/nope",
            ],
            "nope",
        ),
    ];
    let mut problems = Vec::new();
    for (args, names) in cases {
        let out = d.admin(&args).await.expect("run the admin CLI");
        let what = format!("tessera-authority {}", args.join(" "));
        check_line(&mut problems, &what, &out, names);
    }
    let entries = d.admin_ok(&["entry", "list"]).await.expect("admin command");
    assert!(
        entries.contains("Found 1 entries"),
        "a bad command created something: {entries}"
    );

    // The agent: config problems name the file/field.
    let missing = d.dir.join("nope.toml").display().to_string();
    let out = d
        .agent_cli(&["run", "--config", &missing])
        .await
        .expect("run tessera-agent");
    check_line(
        &mut problems,
        "tessera-agent run with a missing config",
        &out,
        "nope.toml",
    );
    let base = std::fs::read_to_string(d.agent_config()).unwrap();
    for (bad, names) in [
        (
            base.replace("sync_interval = \"500ms\"", "sync_interval = \"soon\""),
            "sync_interval",
        ),
        (
            base.replace(
                "trust_domain = \"example.org\"",
                "trust_domain = \"example.org\"\ncolour = \"blue\"",
            ),
            "colour",
        ),
        (
            base.replace("method = \"join_token\"", "method = \"telepathy\""),
            "method",
        ),
    ] {
        let p = d.dir.join("bad-agent.toml");
        std::fs::write(&p, bad).unwrap();
        let out = d
            .agent_cli(&["run", "--config", p.to_str().unwrap()])
            .await
            .expect("run tessera-agent");
        check_line(
            &mut problems,
            &format!("tessera-agent run with a bad {names}"),
            &out,
            names,
        );
    }
    let cfg = d.agent_config().display().to_string();
    let out = d
        .agent_cli(&["inspect", "--pid", "999999999", "--config", &cfg])
        .await
        .expect("run tessera-agent");
    check_line(
        &mut problems,
        "tessera-agent inspect of a PID that does not exist",
        &out,
        "999999999",
    );
    assert!(
        problems.is_empty(),
        "bad input handling:\n  {}",
        problems.join("\n  ")
    );
}

/// Records a problem unless `out` is a non-zero exit with one `error:` line naming `names`.
fn check_line(problems: &mut Vec<String>, what: &str, out: &CmdOut, names: &str) {
    match out.check_one_line_error() {
        Ok(line) if line.to_lowercase().contains(&names.to_lowercase()) => {}
        Ok(line) => problems.push(format!(
            "{what}: the error line does not name {names:?}: {line}"
        )),
        Err(e) => problems.push(format!("{what}: {e}")),
    }
}

#[tokio::test]
async fn cli_bad_flag_exits_nonzero_with_one_line() {
    // DESIGN: "a bad flag ... gets one clear line naming the field and the reason".
    let (d, _id) = Deployment::up("life/cli-flags")
        .await
        .expect("start a deployment");
    let mut problems = Vec::new();
    let out = d
        .admin(&[
            "entry",
            "create",
            "--parent-id",
            &d.agent_id,
            "--selector",
            "unix:uid:0",
        ])
        .await
        .expect("run the admin CLI");
    check_line(
        &mut problems,
        "tessera-authority entry create without --spiffe-id",
        &out,
        "--spiffe-id",
    );
    let out = d
        .admin(&["entry", "list", "--bogus"])
        .await
        .expect("run the admin CLI");
    check_line(
        &mut problems,
        "tessera-authority entry list --bogus",
        &out,
        "--bogus",
    );
    let out = d
        .agent_cli(&["api", "fetch", "jwt", "--socket", &d.socket_uri()])
        .await
        .expect("run tessera-agent");
    check_line(
        &mut problems,
        "tessera-agent api fetch jwt without --audience",
        &out,
        "--audience",
    );
    let out = d
        .agent_cli(&["api", "fetch", "x509", "--bogus"])
        .await
        .expect("run tessera-agent");
    check_line(
        &mut problems,
        "tessera-agent api fetch x509 --bogus",
        &out,
        "--bogus",
    );
    assert!(
        problems.is_empty(),
        "bad flags:\n  {}",
        problems.join("\n  ")
    );
}

#[tokio::test]
async fn cli_fetch_x509_write_files() {
    let (d, id) = Deployment::up("life/cli-write")
        .await
        .expect("start a deployment");
    let mut raw = d.raw().await.expect("connect to the agent");
    let m = wait_x509(&mut raw, &[&id]).await;
    let out_dir = d.dir.join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = d
        .agent_cli(&[
            "api",
            "fetch",
            "x509",
            "--socket",
            &d.socket_uri(),
            "--write",
            out_dir.to_str().unwrap(),
        ])
        .await
        .expect("run tessera-agent");
    assert!(out.success(), "api fetch x509 --write: {out:?}");
    let read =
        |n: &str| std::fs::read(out_dir.join(n)).unwrap_or_else(|e| panic!("{n} not written: {e}"));
    let certs = pki::pem_certs(&read("svid.0.pem"));
    assert!(!certs.is_empty(), "svid.0.pem holds no certificate");
    pki::assert_leaf_profile(&certs[0], &id);
    assert_eq!(certs[0], leaf_of(&m, &id), "svid.0.pem is the served SVID");
    let keys = pki::pem_blocks(&read("svid.0.key"));
    assert_eq!(keys.len(), 1, "svid.0.key holds one PEM block");
    assert_eq!(keys[0].0, "PRIVATE KEY", "svid.0.key should be PKCS#8 PEM");
    pki::assert_key_matches(&keys[0].1, &certs[0]);
    let mode = std::fs::metadata(out_dir.join("svid.0.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "svid.0.key mode is {mode:o}");
    let bundle = pki::pem_certs(&read("bundle.0.pem"));
    assert_eq!(
        bundle.iter().collect::<BTreeSet<_>>(),
        pki::pem_certs(d.bundle_pem().expect("read bundle.pem").as_bytes())
            .iter()
            .collect::<BTreeSet<_>>(),
        "bundle.0.pem is the trust bundle"
    );
    assert!(
        out.stdout.contains(&id),
        "the CLI names the SVID it wrote: {}",
        out.stdout
    );
}

#[tokio::test]
async fn cli_fetch_and_validate_jwt() {
    let (d, id) = Deployment::up("life/cli-jwt")
        .await
        .expect("start a deployment");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_jwt(&mut raw, "warm", &id).await;
    let sock = d.socket_uri();
    let out = d
        .agent_cli(&[
            "api",
            "fetch",
            "jwt",
            "--audience",
            "cli-aud",
            "--socket",
            &sock,
        ])
        .await
        .expect("run tessera-agent");
    assert!(out.success(), "api fetch jwt: {out:?}");
    let token = out
        .stdout
        .split_whitespace()
        .find(|w| w.split('.').count() == 3 && w.len() > 40)
        .unwrap_or_else(|| panic!("no JWT in the output: {}", out.stdout))
        .to_string();
    let jws = pki::decode_jws(&token);
    assert_eq!(jws.claims["sub"], id.as_str());
    assert_eq!(jws.claims["aud"], serde_json::json!(["cli-aud"]));
    let out = d
        .agent_cli(&[
            "api",
            "fetch",
            "jwt",
            "--audience",
            "cli-aud",
            "--spiffe-id",
            &id,
            "--socket",
            &sock,
        ])
        .await
        .expect("run tessera-agent");
    assert!(
        out.success() && out.stdout.contains(&id),
        "api fetch jwt --spiffe-id: {out:?}"
    );
    let out = d
        .agent_cli(&[
            "api",
            "validate",
            "jwt",
            "--audience",
            "cli-aud",
            "--svid",
            &token,
            "--socket",
            &sock,
        ])
        .await
        .expect("run tessera-agent");
    assert!(out.success(), "api validate jwt: {out:?}");
    assert!(
        out.stdout.contains(&id),
        "validate prints the SPIFFE ID: {}",
        out.stdout
    );
    let out = d
        .agent_cli(&[
            "api",
            "validate",
            "jwt",
            "--audience",
            "other",
            "--svid",
            &token,
            "--socket",
            &sock,
        ])
        .await
        .expect("run tessera-agent");
    out.assert_one_line_error("api validate jwt with the wrong audience");
}

#[tokio::test]
async fn cli_inspect_lists_selectors_and_entries() {
    let (d, id) = Deployment::up("life/cli-inspect")
        .await
        .expect("start a deployment");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_x509(&mut raw, &[&id]).await;
    let pid = std::process::id().to_string();
    let cfg = d.agent_config().display().to_string();
    let out = d
        .agent_cli(&["inspect", "--pid", &pid, "--config", &cfg])
        .await
        .expect("run tessera-agent");
    assert!(out.success(), "inspect --pid {pid}: {out:?}");
    let lines: Vec<&str> = out.stdout.lines().map(str::trim).collect();
    assert!(
        lines.contains(&"unix:uid:0"),
        "selectors should include unix:uid:0 on a line:\n{}",
        out.stdout
    );
    assert!(
        lines.contains(&"unix:gid:0"),
        "selectors should include unix:gid:0:\n{}",
        out.stdout
    );
    let exe = std::fs::read_link("/proc/self/exe").unwrap();
    assert!(
        out.stdout.contains(&format!("unix:path:{}", exe.display())),
        "selectors should include this test binary's unix:path:\n{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(&id),
        "the matching entry should be listed:\n{}",
        out.stdout
    );
}

#[tokio::test]
async fn cli_watch_prints_updates() {
    let (d, a) = Deployment::up("life/cli-watch")
        .await
        .expect("start a deployment");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_x509(&mut raw, &[&a]).await;
    let mut child = tokio::process::Command::new(bin("tessera-agent").expect("binary built"))
        .args(["api", "watch", "--socket", &d.socket_uri()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn api watch");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = String::new();
    within(
        secs(10),
        "api watch prints the current SVID",
        read_until(&mut lines, &a, &mut seen),
    )
    .await;
    let (b, _) = d
        .register_self("life/cli-watch-b", &[])
        .await
        .expect("register an entry");
    within(
        PROPAGATION,
        "api watch prints the added SVID",
        read_until(&mut lines, &b, &mut seen),
    )
    .await;
    let _ = child.kill().await;
}

async fn read_until(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    needle: &str,
    seen: &mut String,
) {
    loop {
        match lines.next_line().await {
            Ok(Some(l)) => {
                seen.push_str(&l);
                seen.push('\n');
                if l.contains(needle) {
                    return;
                }
            }
            _ => panic!("api watch ended before printing {needle}; it printed:\n{seen}"),
        }
    }
}
