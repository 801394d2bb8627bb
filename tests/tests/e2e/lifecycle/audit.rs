//! The audit trail and single-use join tokens.

use super::*;

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
