//! SIGHUP: log level, an immediate sync, and the fields a reload cannot change.

use super::*;

fn debug_lines(log: &str) -> usize {
    log.lines().filter(|l| l.contains(" DEBUG ")).count()
}

#[tokio::test]
async fn agent_sighup_sets_log_level_syncs_now_and_names_restart_fields() {
    let mut d = deployment("").await;
    let (a, _) = d
        .register_self("tm/hup-a", &[])
        .await
        .expect("register an entry");
    // A sync an hour apart: only SIGHUP can make the next one happen soon.
    let cfg_path = d.agent_config();
    let base = fs::read_to_string(&cfg_path)
        .unwrap()
        .replace("sync_interval = \"500ms\"", "sync_interval = \"1h\"");
    fs::write(&cfg_path, format!("{base}\n[log]\nlevel = \"info\"\n")).unwrap();
    // TESSERA_LOG empty: the config's level rules (the harness sets it otherwise).
    let log = d.dir.join("agent-hup.log");
    let mut daemon = Daemon::spawn(
        "agent-hup",
        &bin("tessera-agent").expect("binary built"),
        &[
            OsStr::new("run"),
            OsStr::new("--config"),
            cfg_path.as_os_str(),
        ],
        &log,
        &[("TESSERA_LOG", "")],
    )
    .expect("start a daemon");
    let pid = daemon.pid();
    daemon.wait_ready(STARTUP).await.expect("the agent ready");
    let agent = daemon.telemetry().expect("the agent's telemetry");
    d.extra.push(daemon);
    poll(PROPAGATION, "agent /ready", || {
        let agent = agent.clone();
        async move {
            let up = http(
                &agent,
                "GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .await;
            matches!(up, Ok((200, _, _))).then_some(())
        }
    })
    .await;
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_x509(&mut raw, &[&a]).await;
    let text = fs::read_to_string(&log).unwrap();
    assert_eq!(debug_lines(&text), 0, "debug lines at level info:\n{text}");

    let (b, _) = d
        .register_self("tm/hup-b", &[])
        .await
        .expect("register an entry");
    tokio::time::sleep(secs(2)).await;
    let resp = first(raw.fetch_x509svid(req(pb::X509svidRequest {})))
        .await
        .expect("FetchX509SVID");
    assert!(
        !ids(&resp).contains(&b),
        "the agent synced without being asked (sync_interval is 1h): {:?}",
        ids(&resp)
    );

    let edited = base.replace("sync_interval = \"1h\"", "sync_interval = \"2h\"");
    fs::write(&cfg_path, format!("{edited}\n[log]\nlevel = \"debug\"\n")).unwrap();
    sighup(pid);
    // The new entry arrives well before any scheduled sync: SIGHUP synced.
    within(
        PROPAGATION,
        "the new entry after SIGHUP",
        wait_x509(&mut raw, &[&a, &b]),
    )
    .await;
    poll(secs(10), "a DEBUG line after SIGHUP", || {
        let log = log.clone();
        async move { (debug_lines(&fs::read_to_string(&log).unwrap()) > 0).then_some(()) }
    })
    .await;
    let text = fs::read_to_string(&log).unwrap();
    assert!(
        text.lines()
            .any(|l| l.contains("WARN") && l.contains("sync_interval") && l.contains("restart")),
        "no warning that sync_interval needs a restart:\n{text}"
    );
    assert!(
        !text
            .lines()
            .any(|l| l.contains("WARN") && l.contains("log.level")),
        "log.level was reported as needing a restart:\n{text}"
    );
    let agent_daemon = d.extra.last_mut().unwrap();
    assert!(agent_daemon.exited().is_none(), "agent died on SIGHUP");
}

/// A connection without a TLS handshake: the authority logs it at DEBUG only.
async fn knock(addr: &str) {
    drop(tokio::net::TcpStream::connect(addr).await.unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn authority_sighup_sets_log_level_and_names_restart_fields() {
    let d = deployment("").await;
    // A second authority, without TESSERA_LOG, on its own port, socket and data.
    let port = "127.0.0.1:0";
    let cfg = d.dir.join("authority2.toml");
    let base = format!(
        "trust_domain = \"{TD}\"\nlisten_address = \"{port}\"\nadmin_socket_path = \"{}\"\n\
         data_dir = \"{}\"\n",
        d.dir.join("admin2.sock").display(),
        d.dir.join("authority2").display(),
    );
    fs::write(&cfg, format!("{base}[log]\nlevel = \"info\"\n")).unwrap();
    let log = d.dir.join("authority2.log");
    let mut daemon = Daemon::spawn(
        "authority2",
        &bin("tessera-authority").expect("binary built"),
        &[OsStr::new("run"), OsStr::new("--config"), cfg.as_os_str()],
        &log,
        &[("TESSERA_LOG", "")],
    )
    .expect("start a daemon");
    daemon
        .wait_ready(STARTUP)
        .await
        .expect("the second authority ready");
    let port = daemon.listening().expect("the second authority's address");
    knock(&port).await;
    assert_eq!(debug_lines(&fs::read_to_string(&log).unwrap()), 0);
    fs::write(
        &cfg,
        format!("{base}agent_ttl = \"30m\"\n[log]\nlevel = \"debug\"\n"),
    )
    .unwrap();
    sighup(daemon.pid());
    poll(secs(10), "the authority's SIGHUP log line", || {
        let log = log.clone();
        async move {
            let text = fs::read_to_string(&log).unwrap();
            text.contains("log level set").then_some(())
        }
    })
    .await;
    knock(&port).await;
    poll(secs(10), "a DEBUG line after SIGHUP", || {
        let log = log.clone();
        async move { (debug_lines(&fs::read_to_string(&log).unwrap()) > 0).then_some(()) }
    })
    .await;
    let text = fs::read_to_string(&log).unwrap();
    assert!(
        text.lines()
            .any(|l| l.contains("WARN") && l.contains("agent_ttl") && l.contains("restart")),
        "no warning that agent_ttl needs a restart:\n{text}"
    );
    assert!(
        daemon.exited().is_none(),
        "authority died on SIGHUP:\n{text}"
    );
    let (st, in_time) = daemon.stop_async(secs(5)).await.unwrap();
    assert!(in_time && st.success(), "{st:?}\n{text}");
}
