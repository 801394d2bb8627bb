//! Readiness, liveness and the healthcheck commands.

use super::*;

#[tokio::test]
async fn agent_is_ready_only_once_attested_and_synced() {
    let mut d = deployment("").await;
    d.register_self("tm/ready", &[])
        .await
        .expect("register an entry");
    // No authority: the agent serves its socket but cannot attest.
    d.stop_authority().await.expect("stop the authority");
    d.start_agent().await.expect("start the agent");
    let agent = d.agent_telemetry().expect("the agent's telemetry");
    let (status, _) = get_when_up(&agent, "/live").await;
    assert_eq!(status, 200, "/live of a working (unattested) agent");
    let (status, body) = get(&agent, "/ready").await;
    assert_eq!(status, 503, "/ready before attestation: {body}");
    assert!(body.contains("not attested"), "/ready body: {body}");
    let out = d
        .agent_cli(&["healthcheck", "--socket", &d.socket_uri()])
        .await
        .expect("run tessera-agent");
    out.assert_one_line_error("agent healthcheck before attestation");
    assert_eq!(out.status.code(), Some(1), "{out:?}");

    d.start_authority().await.expect("start the authority");
    poll(
        PROPAGATION + secs(15),
        "agent /ready to turn 200 after attesting",
        || {
            let agent = agent.clone();
            async move { (get(&agent, "/ready").await.0 == 200).then_some(()) }
        },
    )
    .await;
    let out = d
        .agent_cli(&["healthcheck", "--socket", &d.socket_uri()])
        .await
        .expect("run tessera-agent");
    assert!(out.success(), "agent healthcheck once ready: {out:?}");
    assert_eq!(get(&agent, "/live").await.0, 200);
}

#[tokio::test]
async fn authority_ready_live_and_healthcheck_exit_codes() {
    let mut d = deployment("").await;
    let auth = d.authority_telemetry().expect("the authority's telemetry");
    let (status, body) = get_when_up(&auth, "/ready").await;
    assert_eq!((status, body.trim()), (200, "ready"));
    assert_eq!(get(&auth, "/live").await.0, 200);
    // Only GET, only the three paths.
    let (status, head, _) = http(
        &auth,
        "POST /ready HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(status, 405, "{head}");
    assert_eq!(get(&auth, "/admin").await.0, 404);

    // The deployment's config asks for telemetry on port 0, which the healthcheck
    // cannot ask: it asks the admin socket, as without [telemetry]; a config that
    // names the port the authority got is asked on /ready.
    let cfg = d.authority_config();
    let cfg = cfg.to_str().unwrap();
    let text = fs::read_to_string(cfg).unwrap();
    let any_port = "listen = \"127.0.0.1:0\"";
    assert!(text.contains(any_port), "{text}");
    let named = d.dir.join("authority-named-telemetry.toml");
    fs::write(
        &named,
        text.replace(any_port, &format!("listen = \"{auth}\"")),
    )
    .unwrap();
    let named = named.to_str().unwrap();
    let (top, _) = text
        .split_once("[telemetry]")
        .expect("config has [telemetry]");
    let no_telemetry = d.dir.join("authority-no-telemetry.toml");
    fs::write(&no_telemetry, top).unwrap();
    let no_telemetry = no_telemetry.to_str().unwrap();
    let authority = bin("tessera-authority").expect("binary built");
    for c in [cfg, named, no_telemetry] {
        let out = run_cmd(&authority, &["healthcheck", "--config", c], None, &[])
            .await
            .expect("run a command");
        assert!(
            out.success(),
            "healthcheck --config {c} while ready: {out:?}"
        );
        assert!(out.stdout.contains("healthy"), "{out:?}");
    }
    d.stop_authority().await.expect("stop the authority");
    for c in [cfg, named, no_telemetry] {
        let out = run_cmd(&authority, &["healthcheck", "--config", c], None, &[])
            .await
            .expect("run a command");
        out.assert_one_line_error("healthcheck with the authority down");
        assert_eq!(out.status.code(), Some(1), "{out:?}");
    }
    let missing = d.dir.join("nope.toml");
    let out = run_cmd(
        &authority,
        &["healthcheck", "--config", missing.to_str().unwrap()],
        None,
        &[],
    )
    .await
    .expect("run a command");
    out.assert_one_line_error("healthcheck with a missing config");
}
