//! The agent's command-line tools against a live deployment.

use super::*;

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
