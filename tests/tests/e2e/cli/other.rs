//! `agent show`, the audit window, token JSON, man pages, `api fetch x509 --write`, a closed stdout.

use super::*;

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

/// `tessera-agent eventlog LOG | head -c0`: the reader is gone before the first
/// write. The command ends by SIGPIPE, as a Unix tool does, never by a panic.
#[test]
fn a_closed_stdout_ends_a_command_by_sigpipe_not_a_panic() {
    use std::os::unix::process::ExitStatusExt;
    let (read_end, write_end) = nix::unistd::pipe().expect("pipe");
    drop(read_end);
    let out = std::process::Command::new(bin("tessera-agent").expect("binary built"))
        .arg("eventlog")
        .arg(crate::tpm::rhel8_log())
        .stdout(std::process::Stdio::from(write_end))
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run tessera-agent eventlog");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    let sigpipe = nix::sys::signal::Signal::SIGPIPE as i32;
    assert_eq!(
        out.status.signal(),
        Some(sigpipe),
        "{:?}: {stderr}",
        out.status
    );
}
