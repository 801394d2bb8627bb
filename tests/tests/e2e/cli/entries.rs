//! `entry update`, `entry create --data`, `entry list` filters, the warning about an
//! entry selected only by its binary.

use super::*;

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

/// `unix:path` and `unix:sha256` name a file any process can point its exe at: an entry
/// with nothing else is stored (it is the operator's call) but warned about, on the CLI's
/// stderr and in the authority's journal, until another selector bounds it.
#[tokio::test]
async fn an_entry_selected_only_by_its_binary_is_warned_about() {
    let d = Deployment::new(Opts::default())
        .await
        .expect("start a deployment");
    let weak = format!("unix:sha256:{}", "ab".repeat(32));
    let out = d
        .admin(&[
            "entry",
            "create",
            "--spiffe-id",
            "spiffe://example.org/weak",
            "--parent-id",
            &d.agent_id,
            "--selector",
            &weak,
            "--selector",
            "unix:path:/usr/bin/passwd",
        ])
        .await
        .expect("run the admin CLI");
    assert!(out.success(), "{}", out.stderr);
    let id = out.stdout.trim().to_string();
    let warning = out.stderr_lines();
    assert!(
        warning.len() == 1
            && warning[0].starts_with(&format!(
                "warning: entry {id} (spiffe://example.org/weak): "
            ))
            && warning[0].contains("unix:uid"),
        "{}",
        out.stderr
    );
    let journal = fs::read_to_string(d.dir.join("authority.log")).expect("authority log");
    assert!(
        journal
            .lines()
            .any(|l| l.contains("WARN") && l.contains(&id) && l.contains("name a file")),
        "{journal}"
    );
    // The binary with one more selector in place of the path.
    let with = |extra: &'static str| {
        let (d, id, weak) = (&d, &id, &weak);
        async move {
            d.admin(&[
                "entry",
                "update",
                id,
                "--selector",
                weak,
                "--selector",
                extra,
            ])
            .await
            .expect("run the admin CLI")
        }
    };
    // A slice holds every system service, whatever its uid: still warned about.
    let coarse = with("systemd:slice:system.slice").await;
    assert!(
        coarse.success() && coarse.stderr.starts_with("warning: entry "),
        "{}",
        coarse.stderr
    );
    let bounded = with("unix:uid:1000").await;
    assert!(
        bounded.success() && bounded.stderr.is_empty(),
        "{}",
        bounded.stderr
    );
    // Through the API a type can hold the ':' the CLI splits on: refused, not stored
    // as an entry that never matches (and is not warned about).
    let mut admin = tessera_proto::authority::admin_client::AdminClient::new(
        tessera_tests::uds_channel(&d.admin_socket())
            .await
            .expect("connect to the admin socket"),
    );
    let joined = admin
        .create_entry(tessera_proto::authority::Entry {
            spiffe_id: "spiffe://example.org/joined".into(),
            parent_id: d.agent_id.clone(),
            selectors: vec![tessera_proto::authority::Selector {
                r#type: "unix:path".into(),
                value: "/usr/bin/passwd".into(),
            }],
            ..Default::default()
        })
        .await;
    let st = joined.expect_err("a selector type with ':' is refused");
    assert!(
        st.code() == tonic::Code::InvalidArgument && st.message().starts_with("selector: type"),
        "{st:?}"
    );
}
