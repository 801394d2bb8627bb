//! The operator CLI as scripts use it, against a real authority over its admin
//! socket: `--output json` parsed, `entry update` reaching the agent's SVIDs,
//! `entry create --data` all or nothing, list filters, `audit --since/--until`,
//! `agent show`, man pages, and `api fetch x509 --write` making its directory.

use crate::harness::*;
use crate::pki;
use serde_json::Value;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Runs an admin command that must succeed and parses its stdout as JSON.
async fn admin_json(d: &Deployment, args: &[&str]) -> Value {
    let out = d.admin_ok(args).await.expect("admin command");
    serde_json::from_str(&out).unwrap_or_else(|e| {
        panic!(
            "tessera-authority {}: not JSON ({e}): {out}",
            args.join(" ")
        )
    })
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().expect("a string"))
        .collect()
}

fn entry_ids(v: &Value) -> Vec<&str> {
    v["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("no entries array: {v}"))
        .iter()
        .map(|e| e["id"].as_str().expect("id"))
        .collect()
}

/// `YYYY-MM-DDTHH:MM:SSZ`, what the JSON promises for every time.
fn assert_rfc3339(v: &Value) {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("not a time string: {v}"));
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.into_iter().all(|i| b[i].is_ascii_digit());
    assert!(
        b.len() == 20
            && digits(0..4)
            && b[4] == b'-'
            && b[7] == b'-'
            && b[10] == b'T'
            && b[13] == b':'
            && b[16] == b':'
            && b[19] == b'Z'
            && digits(11..13),
        "not RFC 3339 UTC: {s}"
    );
}

/// The leaf of the SVID for `spiffe_id` the agent serves now.
async fn leaf(d: &Deployment, spiffe_id: &str) -> Vec<u8> {
    let mut raw = d.raw().await.expect("connect to the agent");
    let resp = wait_x509(&mut raw, &[spiffe_id]).await;
    let chain = &svid(&resp, spiffe_id).x509_svid;
    pki::split_der(chain).remove(0)
}

#[tokio::test]
async fn entry_update_bumps_the_revision_and_the_agent_re_signs() {
    let mut d = Deployment::new(Opts::default())
        .await
        .expect("start a deployment");
    let (spiffe_id, entry) = d
        .register_self("cli/update", &["--hint", "h1"])
        .await
        .expect("register an entry");
    d.start_agent().await.expect("start the agent");
    let before = leaf(&d, &spiffe_id).await;
    assert!(pki::dns_sans(&before).is_empty());

    let shown = admin_json(&d, &["entry", "show", &entry, "--output", "json"]).await;
    assert_eq!(shown["revision"], 1);
    assert_eq!(shown["x509_svid_ttl"], Value::Null);
    assert_eq!(shown["expires_at"], Value::Null);
    assert_rfc3339(&shown["created_at"]);

    let updated = admin_json(
        &d,
        &[
            "entry",
            "update",
            &entry,
            "--dns",
            "web.example.org",
            "--dns",
            "web",
            "--x509-ttl",
            "30m",
            "--hint",
            "h2",
            "--expires-at",
            "2099-01-01T00:00:00Z",
            "--output",
            "json",
        ],
    )
    .await;
    assert_eq!(updated["revision"], 2, "{updated}");
    assert_eq!(strs(&updated["dns_names"]), ["web.example.org", "web"]);
    assert_eq!(updated["x509_svid_ttl"], 1800);
    assert_eq!(updated["hint"], "h2");
    assert_eq!(updated["expires_at"], "2099-01-01T00:00:00Z");
    assert_eq!(updated["spiffe_id"], spiffe_id.as_str());
    assert_eq!(
        admin_json(&d, &["entry", "show", &entry, "--output", "json"]).await,
        updated,
        "show disagrees with what update printed"
    );
    let text = d
        .admin_ok(&["entry", "show", &entry])
        .await
        .expect("admin command");
    assert!(
        text.contains("Revision      : 2") && text.contains("DNS name      : web"),
        "{text}"
    );

    // The agent sees the new revision and fetches a new SVID with the names.
    let resigned = poll(PROPAGATION, "an SVID with the new DNS names", || {
        let d = &d;
        let spiffe_id = &spiffe_id;
        async move {
            let der = leaf(d, spiffe_id).await;
            (pki::dns_sans(&der) == ["web.example.org", "web"]).then_some(der)
        }
    })
    .await;
    let life = pki::not_after(&resigned) - pki::not_before(&resigned);
    assert!(life <= 1800 + 60, "x509 TTL not applied: {life}s");

    // Setting what is already there changes nothing, not even the revision.
    let same = admin_json(
        &d,
        &[
            "entry",
            "update",
            &entry,
            "--hint",
            "h2",
            "--dns",
            "web.example.org",
            "--dns",
            "web",
            "--output",
            "json",
        ],
    )
    .await;
    assert_eq!(same["revision"], 2, "a no-op update bumped the revision");
    // Clearing: back to the defaults, no DNS names.
    let cleared = admin_json(
        &d,
        &[
            "entry",
            "update",
            &entry,
            "--clear-dns",
            "--x509-ttl",
            "default",
            "--expires-at",
            "never",
            "--output",
            "json",
        ],
    )
    .await;
    assert_eq!(cleared["revision"], 3);
    assert_eq!(cleared["dns_names"], serde_json::json!([]));
    assert_eq!(cleared["x509_svid_ttl"], Value::Null);
    assert_eq!(cleared["expires_at"], Value::Null);

    // Validated like create: one line naming the field, nothing changed.
    for (args, want) in [
        (vec!["--dns", "bad name!"], "dns_names"),
        (vec!["--selector", "nocolon"], "--selector"),
        (vec!["--hint", &"x".repeat(300)], "hint"),
        (vec!["--expires-at", "soon"], "--expires-at"),
        (vec![], "--selector"),
    ] {
        let mut all = vec!["entry", "update", &entry];
        all.extend(args.iter().copied());
        let line = d
            .admin(&all)
            .await
            .expect("run the admin CLI")
            .assert_one_line_error(&format!("update {args:?}"));
        assert!(line.contains(want), "{args:?}: {line}");
    }
    let gone = d
        .admin(&["entry", "update", "0000", "--hint", "x"])
        .await
        .expect("run the admin CLI");
    assert!(gone
        .assert_one_line_error("unknown entry")
        .contains("does not exist"));
    assert_eq!(
        admin_json(&d, &["entry", "show", &entry, "--output", "json"]).await,
        cleared,
        "a refused update changed the entry"
    );
}

#[tokio::test]
async fn entry_create_data_stores_all_or_nothing() {
    let d = Deployment::new(Opts::default())
        .await
        .expect("start a deployment");
    let existing = d
        .create_entry("spiffe://example.org/cli/existing", &["unix:uid:77"], &[])
        .await
        .expect("create an entry");
    let list = || admin_json(&d, &["entry", "list", "--output", "json"]);
    let before = list().await;
    assert_eq!(entry_ids(&before), [existing.as_str()]);
    let entry = |path: &str, uid: u32| {
        serde_json::json!({
            "spiffe_id": format!("spiffe://example.org/{path}"),
            "parent_id": d.agent_id,
            "selectors": [{"type": "unix", "value": format!("uid:{uid}")}],
        })
    };
    let file = d.dir.join("entries.json");
    let write = |entries: Vec<Value>| {
        fs::write(&file, serde_json::json!({ "entries": entries }).to_string()).unwrap()
    };
    let mut foreign = entry("cli/c", 3);
    foreign["spiffe_id"] = "spiffe://elsewhere.org/c".into();
    let mut no_selectors = entry("cli/c", 3);
    no_selectors["selectors"] = serde_json::json!([]);
    let mut bad_expiry = entry("cli/c", 3);
    bad_expiry["expires_at"] = "tomorrow".into();
    for (third, want) in [
        (foreign, "spiffe_id"),
        (no_selectors, "selectors"),
        (bad_expiry, "expires_at"),
        (entry("cli/existing", 77), &existing[..]),
        (entry("cli/a", 1), "entries[0]"),
    ] {
        write(vec![entry("cli/a", 1), entry("cli/b", 2), third.clone()]);
        let out = d
            .admin(&["entry", "create", "--data", file.to_str().unwrap()])
            .await
            .expect("run the admin CLI");
        let line = out.assert_one_line_error(&format!("third entry {third}"));
        assert!(
            line.contains("entries[2]") && line.contains(want),
            "{third}: {line}"
        );
        assert_eq!(list().await, before, "half-written by {third}");
    }

    write(vec![
        entry("cli/a", 1),
        entry("cli/b", 2),
        entry("cli/c", 3),
    ]);
    let created = admin_json(
        &d,
        &[
            "entry",
            "create",
            "--data",
            file.to_str().unwrap(),
            "--output",
            "json",
        ],
    )
    .await;
    let ids = entry_ids(&created);
    assert_eq!(ids.len(), 3);
    let after = list().await;
    let mut stored = entry_ids(&after);
    stored.retain(|id| *id != existing);
    let mut ids = ids;
    stored.sort();
    ids.sort();
    assert_eq!(stored, ids);
    assert_eq!(
        created["entries"][2]["spiffe_id"],
        "spiffe://example.org/cli/c"
    );
    assert_eq!(created["entries"][0]["revision"], 1);
    // Text: the new IDs, one a line.
    write(vec![entry("cli/d", 4), entry("cli/e", 5)]);
    let text = d
        .admin_ok(&["entry", "create", "--data", file.to_str().unwrap()])
        .await
        .expect("admin command");
    let new: Vec<&str> = text.lines().collect();
    assert_eq!(new.len(), 2, "{text}");
    let shown = admin_json(&d, &["entry", "show", new[1], "--output", "json"]).await;
    assert_eq!(shown["spiffe_id"], "spiffe://example.org/cli/e");
    // The flags of one entry do not mix with --data.
    let mixed = d
        .admin(&[
            "entry",
            "create",
            "--data",
            "x.json",
            "--spiffe-id",
            "spiffe://example.org/x",
        ])
        .await
        .expect("run the admin CLI");
    mixed.assert_one_line_error("--data with --spiffe-id");
    let missing = d
        .admin(&["entry", "create", "--data", "/nonexistent.json"])
        .await
        .expect("run the admin CLI");
    assert!(missing
        .assert_one_line_error("missing file")
        .contains("--data"));
}

#[tokio::test]
async fn entry_list_filters_and_single_create_json() {
    let d = Deployment::new(Opts::default())
        .await
        .expect("start a deployment");
    let create = |spiffe: &'static str, parent: String, sels: &'static [&'static str]| {
        let d = &d;
        async move {
            let mut args = vec![
                "entry",
                "create",
                "--spiffe-id",
                spiffe,
                "--parent-id",
                &parent,
            ];
            for s in sels {
                args.extend(["--selector", s]);
            }
            args.extend(["--output", "json"]);
            let v = admin_json(d, &args).await;
            entry_ids(&v)[0].to_string()
        }
    };
    let other_parent = "spiffe://example.org/tessera/agent/join_token/other".to_string();
    let a = create(
        "spiffe://example.org/f/a",
        d.agent_id.clone(),
        &["unix:uid:1", "unix:gid:5"],
    )
    .await;
    let b = create(
        "spiffe://example.org/f/b",
        d.agent_id.clone(),
        &["unix:uid:1"],
    )
    .await;
    let c = create(
        "spiffe://example.org/f/a",
        other_parent.clone(),
        &["unix:uid:2", "unix:gid:5"],
    )
    .await;
    for (filter, want) in [
        (vec![], vec![&a, &b, &c]),
        (
            vec!["--spiffe-id", "spiffe://example.org/f/a"],
            vec![&a, &c],
        ),
        (vec!["--parent-id", &other_parent], vec![&c]),
        (vec!["--selector", "unix:gid:5"], vec![&a, &c]),
        (
            vec!["--selector", "unix:gid:5", "--selector", "unix:uid:1"],
            vec![&a],
        ),
        (
            vec![
                "--spiffe-id",
                "spiffe://example.org/f/a",
                "--parent-id",
                &d.agent_id,
            ],
            vec![&a],
        ),
        (vec!["--selector", "unix:uid:3"], vec![]),
        (vec!["--selector", "unix:uid"], vec![]),
    ] {
        let mut args = vec!["entry", "list", "--output", "json"];
        args.extend(filter.iter().copied());
        let got = admin_json(&d, &args).await;
        let mut want: Vec<&str> = want.iter().map(|s| s.as_str()).collect();
        let mut got = entry_ids(&got);
        // Oldest first, then by ID: these may share a second.
        want.sort();
        got.sort();
        assert_eq!(got, want, "{filter:?}");
    }
    let text = d
        .admin_ok(&["entry", "list", "--selector", "unix:uid:1"])
        .await
        .expect("admin command");
    assert!(text.contains("Found 2 entries"), "{text}");
    let bad = d
        .admin(&["entry", "list", "--selector", "nocolon"])
        .await
        .expect("run the admin CLI");
    assert!(bad
        .assert_one_line_error("bad selector")
        .contains("--selector"));
}

#[tokio::test]
async fn agent_show_audit_window_and_token_json() {
    let (d, spiffe_id) = Deployment::up("cli/audit")
        .await
        .expect("start a deployment");
    leaf(&d, &spiffe_id).await;

    let agents = admin_json(&d, &["agent", "list", "--output", "json"]).await;
    let listed = &agents["agents"][0];
    assert_eq!(listed["id"], d.agent_id.as_str());
    assert_eq!(listed["attestation_method"], "join_token");
    assert_eq!(listed["evicted"], false);
    assert_rfc3339(&listed["expires_at"]);
    assert_rfc3339(&listed["attested_at"]);
    let shown = admin_json(&d, &["agent", "show", &d.agent_id, "--output", "json"]).await;
    assert_eq!(&shown, listed);
    let text = d
        .admin_ok(&["agent", "show", &d.agent_id])
        .await
        .expect("admin command");
    assert!(
        text.contains(&format!("Agent ID      : {}", d.agent_id)),
        "{text}"
    );
    let unknown = d
        .admin(&["agent", "show", "spiffe://example.org/nobody"])
        .await
        .expect("run the admin CLI");
    assert!(unknown
        .assert_one_line_error("unknown agent")
        .contains("not known"));

    let all = admin_json(&d, &["audit", "--output", "json"]).await;
    let events = all["events"].as_array().expect("events");
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert!(
        kinds.contains(&"node_attestation") && kinds.contains(&"x509_svid"),
        "{kinds:?}"
    );
    for e in events {
        assert_rfc3339(&e["time"]);
        assert!(e["id"].is_i64() && e["node_selectors"].is_array(), "{e}");
    }
    let count = |v: Value| v["events"].as_array().expect("events").len();
    let n = events.len();
    assert_eq!(
        count(admin_json(&d, &["audit", "--since", "1h", "--output", "json"]).await),
        n
    );
    assert_eq!(
        count(admin_json(&d, &["audit", "--until", "1h", "--output", "json"]).await),
        0
    );
    let window = [
        "audit",
        "--since",
        "2000-01-01T00:00:00Z",
        "--until",
        "2099-01-01T00:00:00Z",
    ];
    assert_eq!(
        count(admin_json(&d, &[&window[..], &["--output", "json"]].concat()).await),
        n
    );
    let future = [
        "audit",
        "--since",
        "2099-01-01T00:00:00Z",
        "--output",
        "json",
    ];
    assert_eq!(count(admin_json(&d, &future).await), 0);
    let x509_only = admin_json(
        &d,
        &[
            "audit",
            "--spiffe-id",
            &spiffe_id,
            "--since",
            "1h",
            "--output",
            "json",
        ],
    )
    .await;
    assert!(count(x509_only.clone()) >= 1);
    assert!(x509_only["events"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["spiffe_id"] == spiffe_id.as_str()));
    for (args, want) in [
        (vec!["--since", "yesterday"], "--since"),
        (vec!["--until", "2026-13-01T00:00:00Z"], "--until"),
        (vec!["--since", "1h", "--until", "2h"], "--since"),
    ] {
        let mut all = vec!["audit"];
        all.extend(args.iter().copied());
        let line = d
            .admin(&all)
            .await
            .expect("run the admin CLI")
            .assert_one_line_error(&format!("audit {args:?}"));
        assert!(line.contains(want), "{args:?}: {line}");
    }

    let token = admin_json(
        &d,
        &["token", "generate", "--ttl", "10m", "--output", "json"],
    )
    .await;
    assert!(
        token["token"].as_str().is_some_and(|t| t.len() > 16),
        "{token}"
    );
    assert_rfc3339(&token["expires_at"]);
}

#[tokio::test]
async fn man_pages_are_generated_for_every_command() {
    let dir = tempfile::tempdir().unwrap();
    for (bin_name, pages) in [
        (
            "tessera-authority",
            &[
                "tessera-authority.1",
                "tessera-authority-entry-update.1",
                "tessera-authority-audit.1",
            ][..],
        ),
        (
            "tessera-agent",
            &["tessera-agent.1", "tessera-agent-api-fetch-x509.1"][..],
        ),
    ] {
        let out_dir = dir.path().join(bin_name);
        let out = run_cmd(
            &bin(bin_name).expect("binary built"),
            &["man", out_dir.to_str().unwrap()],
            None,
            &[],
        )
        .await
        .expect("run a command");
        assert!(out.success(), "{bin_name} man: {}", out.stderr);
        for page in pages {
            let text =
                fs::read_to_string(out_dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
            assert!(
                text.starts_with(".ie") || text.contains(".TH"),
                "{page}: {text}"
            );
            assert!(
                text.contains(".SH NAME") && text.contains(".SH OPTIONS"),
                "{page}"
            );
        }
        // The hidden generator documents no page of its own.
        assert!(!out_dir.join(format!("{bin_name}-man.1")).exists());
    }
    let update = fs::read_to_string(
        dir.path()
            .join("tessera-authority/tessera-authority-entry-update.1"),
    )
    .unwrap();
    assert!(
        update.contains("clear\\-dns") && update.contains("expires\\-at"),
        "{update}"
    );
}

#[tokio::test]
async fn fetch_x509_write_creates_a_private_directory() {
    let (d, _) = Deployment::up("cli/write")
        .await
        .expect("start a deployment");
    let uri = d.socket_uri();
    let target = d.dir.join("out/svids");
    let fetch = |dir: &Path| {
        let dir = dir.to_str().unwrap().to_string();
        let uri = uri.clone();
        let d = &d;
        async move {
            d.agent_cli(&["api", "fetch", "x509", "--socket", &uri, "--write", &dir])
                .await
                .expect("run tessera-agent")
        }
    };
    let out = poll(PROPAGATION, "fetch x509 --write succeeds", || {
        let f = fetch(&target);
        async move { Some(f.await).filter(|o| o.success()) }
    })
    .await;
    assert!(out.stdout.contains("Wrote svid.0.pem"), "{}", out.stdout);
    let mode = fs::metadata(&target).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "created with mode {mode:o}");
    let key_mode = fs::metadata(target.join("svid.0.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(key_mode, 0o600);
    // Not a directory: refused before anything is written.
    let file = d.dir.join("a-file");
    fs::write(&file, b"keep").unwrap();
    let dangling = d.dir.join("dangling");
    std::os::unix::fs::symlink(d.dir.join("nowhere"), &dangling).unwrap();
    for bad in [&file, &dangling] {
        let line = fetch(bad)
            .await
            .assert_one_line_error("--write to a non-directory");
        assert!(
            line.contains("--write") && line.contains("not a directory"),
            "{line}"
        );
    }
    assert_eq!(fs::read(&file).unwrap(), b"keep");
    assert!(!d.dir.join("nowhere").exists());
    // A directory another user made (open to all, as in /tmp) would let them
    // replace the trust bundle and key pair after they are written: refused.
    let planted = d.dir.join("planted");
    fs::create_dir(&planted).unwrap();
    fs::set_permissions(&planted, fs::Permissions::from_mode(0o777)).unwrap();
    std::os::unix::fs::chown(&planted, Some(65534), None).unwrap();
    let line = fetch(&planted)
        .await
        .assert_one_line_error("--write to another user's directory");
    assert!(
        line.contains("--write") && line.contains("owned by uid 65534"),
        "{line}"
    );
    assert_eq!(
        fs::read_dir(&planted).unwrap().count(),
        0,
        "nothing written"
    );
}
