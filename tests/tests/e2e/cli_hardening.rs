//! The admin CLI against values that try to mislead it: workload-chosen JWT
//! audiences with control characters, `audit` windows larger than its limit,
//! an `--until` of the epoch, `entry update --revision` after someone else's
//! change, and sub-second TTLs.

use crate::harness::*;
use serde_json::Value;
use tessera_proto::workload as pb;
use tonic::Code;

/// A workload asking for a JWT-SVID whose audience would forge a line in
/// `tessera-authority audit` is refused, and nothing of it is recorded.
#[tokio::test]
async fn jwt_audience_with_control_characters_is_refused() {
    let (d, spiffe_id) = Deployment::up("cli/hostile-audience")
        .await
        .expect("start a deployment");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_x509(&mut raw, &[&spiffe_id]).await;
    for aud in [
        "a\n1700000000\tjwt_svid\tagent=forged",
        "b\u{1b}[2K",
        "c\td",
    ] {
        let msg = pb::JwtsvidRequest {
            audience: vec![aud.to_string()],
            spiffe_id: spiffe_id.clone(),
        };
        let got = within(secs(20), "FetchJWTSVID", raw.fetch_jwtsvid(req(msg))).await;
        let status = got.expect_err(&format!("audience {aud:?} must be refused"));
        assert_eq!(status.code(), Code::InvalidArgument, "{aud:?}: {status:?}");
        assert!(status.message().contains("audience"), "{status:?}");
    }
    let audit = d
        .admin_ok(&["audit", "--output", "json"])
        .await
        .expect("admin command");
    let audit: Value = serde_json::from_str(&audit).expect("audit JSON");
    let events = audit["events"].as_array().expect("events");
    assert!(
        !events.iter().any(|e| e["kind"] == "jwt_svid"),
        "{events:?}"
    );
}

/// `audit` answers newest first and stops at its limit: a full answer says on
/// stderr that older events may be missing, in text and JSON alike.
#[tokio::test]
async fn audit_at_its_limit_warns_on_stderr() {
    let (d, spiffe_id) = Deployment::up("cli/audit-limit")
        .await
        .expect("start a deployment");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_x509(&mut raw, &[&spiffe_id]).await;
    for args in [
        &["audit", "--limit", "1", "--output", "json"][..],
        &["audit", "--limit", "1"],
    ] {
        let out = d.admin(args).await.expect("run the admin CLI");
        assert!(out.success(), "{args:?}: {}", out.stderr);
        let warn = out.stderr_lines();
        assert_eq!(warn.len(), 1, "{args:?}: {:?}", out.stderr);
        assert!(
            warn[0].starts_with("warning: ")
                && warn[0].contains("(1)")
                && warn[0].contains("--since")
                && warn[0].contains("--limit"),
            "{}",
            warn[0]
        );
        if args.contains(&"json") {
            let v: Value = serde_json::from_str(&out.stdout).expect("stdout stays JSON");
            assert_eq!(v["events"].as_array().map(Vec::len), Some(1), "{v}");
        } else {
            assert_eq!(out.stdout.lines().count(), 1, "{}", out.stdout);
        }
    }
    let all = d
        .admin(&["audit", "--output", "json"])
        .await
        .expect("run the admin CLI");
    assert!(
        all.success() && all.stderr_lines().is_empty(),
        "{}",
        all.stderr
    );
}

/// 0 on the wire means "no bound": the epoch as a bound is refused, not read as
/// "everything"; a sub-second TTL is refused, not read as "the default".
#[tokio::test]
async fn epoch_bounds_and_sub_second_ttls_are_refused() {
    let (d, spiffe_id) = Deployment::up("cli/zero-values")
        .await
        .expect("start a deployment");
    for (args, flag) in [
        (vec!["audit", "--until", "1970-01-01T00:00:00Z"], "--until"),
        (vec!["audit", "--since", "1970-01-01T00:00:00Z"], "--since"),
        (
            vec![
                "entry",
                "create",
                "--parent-id",
                &d.agent_id,
                "--spiffe-id",
                &spiffe_id,
                "--selector",
                "unix:uid:4242",
                "--x509-ttl",
                "500ms",
            ],
            "--x509-ttl",
        ),
        (
            vec!["entry", "update", "any", "--jwt-ttl", "500ms"],
            "--jwt-ttl",
        ),
    ] {
        let line = d
            .admin(&args)
            .await
            .expect("run the admin CLI")
            .assert_one_line_error(&format!("{args:?}"));
        assert!(line.contains(flag), "{args:?}: {line}");
    }
}

/// `entry update --revision N` refuses to overwrite a change made since N;
/// without it the change is merged into the entry as it is now.
#[tokio::test]
async fn entry_update_with_a_stale_revision_is_refused() {
    let d = Deployment::new(Opts::default())
        .await
        .expect("start a deployment");
    let (_, entry) = d
        .register_self("cli/revision", &[])
        .await
        .expect("register an entry");
    let update = |hint: &'static str, rev: Option<&'static str>| {
        let mut args = vec!["entry", "update", entry.as_str(), "--hint", hint];
        if let Some(r) = rev {
            args.extend(["--revision", r]);
        }
        args.extend(["--output", "json"]);
        args
    };
    let first: Value = serde_json::from_str(
        &d.admin_ok(&update("a", Some("1")))
            .await
            .expect("admin command"),
    )
    .unwrap();
    assert_eq!(
        (first["revision"].as_i64(), first["hint"].as_str()),
        (Some(2), Some("a"))
    );
    let line = d
        .admin(&update("b", Some("1")))
        .await
        .expect("run the admin CLI")
        .assert_one_line_error("stale --revision");
    assert!(line.contains("changed since revision 1 (now 2)"), "{line}");
    let merged: Value =
        serde_json::from_str(&d.admin_ok(&update("c", None)).await.expect("admin command"))
            .unwrap();
    assert_eq!(
        (merged["revision"].as_i64(), merged["hint"].as_str()),
        (Some(3), Some("c"))
    );
}
