//! Running as a service: the telemetry endpoint of both daemons (a live scrape
//! linted by `promtool check metrics`), readiness and liveness, the healthcheck
//! commands, SIGHUP reloads, SIGTERM draining and the issuance/denial logs.

use crate::harness::*;
use std::ffi::OsStr;
use std::fs;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;
use tessera_proto::workload as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

pub fn free_listen() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    format!("127.0.0.1:{}", l.local_addr().unwrap().port())
}

/// A deployment whose authority and agent both serve telemetry. Returns the
/// deployment and the (authority, agent) telemetry addresses.
pub(crate) async fn deployment(authority_top: &str) -> (Deployment, String, String) {
    let (auth, agent) = (free_listen(), free_listen());
    let d = Deployment::new(Opts {
        authority_extra: format!("{authority_top}[telemetry]\nlisten = \"{auth}\"\n"),
        agent_extra: format!("\n[telemetry]\nlisten = \"{agent}\"\n"),
        ..Opts::default()
    })
    .await
    .expect("start a deployment");
    (d, auth, agent)
}

/// One raw HTTP/1.1 exchange: (status, head, body). Err if nothing listens.
async fn http(addr: &str, request: &str) -> std::io::Result<(u16, String, String)> {
    let exchange = async {
        let mut tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.write_all(request.as_bytes()).await?;
        let mut out = String::new();
        tcp.read_to_string(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    let out = within(secs(15), &format!("HTTP exchange with {addr}"), exchange).await?;
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response from {addr}: {out:?}"));
    Ok((status, head.to_string(), body.to_string()))
}

async fn get(addr: &str, path: &str) -> (u16, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let (status, _, body) = http(addr, &req)
        .await
        .unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"));
    (status, body)
}

/// Waits until the endpoint answers at all (it binds shortly after the socket).
async fn get_when_up(addr: &str, path: &str) -> (u16, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    poll(secs(20), &format!("telemetry on {addr} to answer"), || {
        let req = req.clone();
        async move { http(addr, &req).await.ok().map(|(s, _, b)| (s, b)) }
    })
    .await
}

/// Scrapes `/metrics`, checks the content type and lints the text with promtool.
pub async fn scrape(addr: &str, what: &str) -> String {
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let (status, head, body) = http(addr, &req)
        .await
        .unwrap_or_else(|e| panic!("scrape {what} at {addr}: {e}"));
    assert_eq!(status, 200, "{what} /metrics: {head}\n{body}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{what} /metrics content type: {head}"
    );
    promtool_check(&body, what);
    body
}

/// `promtool check metrics` (Debian package `prometheus`) must accept the text.
fn promtool_check(text: &str, what: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}): install it (`apt-get install --no-install-recommends \
                 prometheus`, or scripts/install-deps.sh)"
            )
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics rejects the {what}'s exposition:\n{}{}\n--- exposition ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of the sample `name` whose labels include all of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (n, set) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}')?),
            None => (series, ""),
        };
        if n != name {
            return None;
        }
        let have: Vec<(&str, &str)> = set
            .split("\",")
            .filter(|p| !p.is_empty())
            .filter_map(|p| {
                let (k, v) = p.split_once("=\"")?;
                Some((k, v.trim_end_matches('"')))
            })
            .collect();
        labels
            .iter()
            .all(|want| have.contains(want))
            .then(|| value.parse().ok())?
    })
}

pub fn at_least(text: &str, name: &str, labels: &[(&str, &str)], min: f64) {
    match sample(text, name, labels) {
        Some(v) if v >= min => {}
        other => panic!("{name}{labels:?}: want >= {min}, got {other:?}\n{text}"),
    }
}

#[tokio::test]
async fn live_scrape_of_both_daemons_passes_promtool_and_counts_calls() {
    let (mut d, auth, agent) = deployment("").await;
    let (id, _) = d
        .register_self("tm/scrape", &[])
        .await
        .expect("register an entry");
    d.start_agent().await.expect("start the agent");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_x509(&mut raw, &[&id]).await;
    let jwt = within(
        secs(20),
        "FetchJWTSVID",
        raw.fetch_jwtsvid(req(pb::JwtsvidRequest {
            audience: vec!["tm".into()],
            spiffe_id: String::new(),
        })),
    )
    .await;
    assert!(jwt.is_ok(), "FetchJWTSVID: {jwt:?}");
    // A call refused before attestation, counted with its code.
    assert_code(
        first(raw.fetch_x509svid(request(pb::X509svidRequest {}, Header::Missing))).await,
        Code::InvalidArgument,
        "FetchX509SVID without the security header",
    );
    // An admin call that fails at the authority.
    let out = d
        .admin(&["entry", "show", "no-such-entry"])
        .await
        .expect("run the admin CLI");
    assert!(!out.success(), "entry show of a missing entry succeeded");

    let text = scrape(&agent, "agent").await;
    let requests = "tessera_agent_workload_api_requests_total";
    at_least(
        &text,
        requests,
        &[("method", "FetchX509SVID"), ("code", "OK")],
        1.0,
    );
    at_least(
        &text,
        requests,
        &[("method", "FetchJWTSVID"), ("code", "OK")],
        1.0,
    );
    at_least(
        &text,
        requests,
        &[("method", "FetchX509SVID"), ("code", "InvalidArgument")],
        1.0,
    );
    at_least(
        &text,
        "tessera_agent_workload_api_request_duration_seconds_count",
        &[("method", "FetchX509SVID")],
        1.0,
    );
    at_least(
        &text,
        "tessera_agent_workload_attestation_duration_seconds_count",
        &[],
        1.0,
    );
    at_least(
        &text,
        "tessera_agent_binary_hash_cache_misses_total",
        &[],
        1.0,
    );
    assert!(
        sample(&text, "tessera_agent_binary_hash_cache_hits_total", &[]).is_some(),
        "{text}"
    );
    at_least(&text, "tessera_agent_x509_svids_cached", &[], 1.0);
    at_least(
        &text,
        "tessera_agent_node_attestations_total",
        &[("result", "ok")],
        1.0,
    );
    at_least(
        &text,
        "tessera_agent_entry_syncs_total",
        &[("result", "ok")],
        1.0,
    );
    let left = sample(&text, "tessera_agent_agent_svid_remaining_seconds", &[]);
    assert!(
        left.is_some_and(|s| s > 3000.0 && s <= 3600.0),
        "agent SVID (1h) remaining: {left:?}"
    );
    at_least(&text, "tessera_agent_build_info", &[], 1.0);

    let text = scrape(&auth, "authority").await;
    assert_eq!(
        sample(
            &text,
            "tessera_authority_node_attestations_total",
            &[("method", "join_token"), ("result", "ok")]
        ),
        Some(1.0),
        "{text}"
    );
    let signed = "tessera_authority_svids_signed_total";
    at_least(&text, signed, &[("type", "x509"), ("kind", "agent")], 1.0);
    at_least(
        &text,
        signed,
        &[("type", "x509"), ("kind", "workload")],
        1.0,
    );
    at_least(&text, signed, &[("type", "jwt"), ("kind", "workload")], 1.0);
    assert_eq!(
        sample(
            &text,
            "tessera_authority_rpc_errors_total",
            &[
                ("service", "admin"),
                ("method", "GetEntry"),
                ("code", "NotFound")
            ]
        ),
        Some(1.0),
        "{text}"
    );
    at_least(
        &text,
        "tessera_authority_rpc_duration_seconds_count",
        &[("service", "node"), ("method", "SyncEntries")],
        1.0,
    );
    for op in [
        "record_attestation",
        "list_entries",
        "get_agent",
        "record_audit",
    ] {
        at_least(
            &text,
            "tessera_authority_datastore_operation_duration_seconds_count",
            &[("operation", op)],
            1.0,
        );
    }

    // With the authority gone the agent's syncs fail, and say so.
    d.stop_authority().await.expect("stop the authority");
    poll(PROPAGATION, "agent to count a failed SyncEntries", || {
        let agent = agent.clone();
        async move {
            let (_, body) = get(&agent, "/metrics").await;
            sample(
                &body,
                "tessera_agent_authority_rpc_errors_total",
                &[("method", "SyncEntries")],
            )
            .filter(|v| *v >= 1.0)
        }
    })
    .await;
}

#[tokio::test]
async fn agent_is_ready_only_once_attested_and_synced() {
    let (mut d, _auth, agent) = deployment("").await;
    d.register_self("tm/ready", &[])
        .await
        .expect("register an entry");
    // No authority: the agent serves its socket but cannot attest.
    d.stop_authority().await.expect("stop the authority");
    d.start_agent().await.expect("start the agent");
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
    let (mut d, auth, _) = deployment("").await;
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

    let cfg = d.authority_config();
    let cfg = cfg.to_str().unwrap();
    // Without [telemetry] the healthcheck asks the admin socket instead.
    let text = fs::read_to_string(cfg).unwrap();
    let (top, _) = text
        .split_once("[telemetry]")
        .expect("config has [telemetry]");
    let no_telemetry = d.dir.join("authority-no-telemetry.toml");
    fs::write(&no_telemetry, top).unwrap();
    let no_telemetry = no_telemetry.to_str().unwrap();
    let authority = bin("tessera-authority").expect("binary built");
    for c in [cfg, no_telemetry] {
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
    for c in [cfg, no_telemetry] {
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

pub(crate) fn sighup(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("send SIGHUP");
}

fn debug_lines(log: &str) -> usize {
    log.lines().filter(|l| l.contains(" DEBUG ")).count()
}

#[tokio::test]
async fn agent_sighup_sets_log_level_syncs_now_and_names_restart_fields() {
    let (mut d, _auth, agent) = deployment("").await;
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
    let daemon = Daemon::spawn(
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
    let (d, _auth, _) = deployment("").await;
    // A second authority, without TESSERA_LOG, on its own port, socket and data.
    let port = free_listen();
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
    poll(secs(20), "second authority to listen", || {
        let port = port.clone();
        async move { tokio::net::TcpStream::connect(&port).await.ok().map(|_| ()) }
    })
    .await;
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

#[tokio::test]
async fn issuance_and_denial_logs_name_pid_uid_path_and_spiffe_id() {
    let (d, id) = Deployment::up("tm/audit-log")
        .await
        .expect("start a deployment");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_x509(&mut raw, &[&id]).await;
    within(
        secs(20),
        "FetchJWTSVID",
        raw.fetch_jwtsvid(req(pb::JwtsvidRequest {
            audience: vec!["tm".into()],
            spiffe_id: String::new(),
        })),
    )
    .await
    .expect("FetchJWTSVID");
    let me = std::process::id();
    let exe = fs::read_link("/proc/self/exe").unwrap();
    let has = |log: &str, what: &str, pid: u32, uid: u32, path: &str, spiffe: &str| {
        log.lines().any(|l| {
            l.contains(what)
                && l.contains(&format!("pid={pid} "))
                && l.contains(&format!("uid={uid} "))
                && l.contains(&format!("path={path}"))
                && l.contains(&format!("spiffe_id={spiffe}"))
        })
    };
    let exe = exe.to_str().unwrap();
    poll(secs(10), "issuance log lines", || {
        let log = d.agent_log();
        std::future::ready(
            (has(&log, "X509-SVID issued", me, 0, exe, &id)
                && has(&log, "JWT-SVID issued", me, 0, exe, &id))
            .then_some(()),
        )
    })
    .await;

    // A caller no entry matches: `sleep` as nobody, connected from the child.
    let sleep = fs::canonicalize("/bin/sleep").unwrap();
    let (fd, child, child_pid) = connect_as_nobody(&d).await.expect("connect as nobody");
    let mut nobody =
        tessera_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient::new(
            channel_from_fd(fd)
                .await
                .expect("HTTP/2 on a pre-connected socket"),
        );
    assert_code(
        first(nobody.fetch_x509svid(req(pb::X509svidRequest {}))).await,
        Code::PermissionDenied,
        "FetchX509SVID by an unregistered caller",
    );
    let sleep = sleep.to_str().unwrap();
    poll(secs(10), "the denial log line", || {
        let log = d.agent_log();
        std::future::ready(
            has(&log, "X509-SVID denied", child_pid, NOBODY, sleep, "-").then_some(()),
        )
    })
    .await;
    drop(child);
}

#[tokio::test]
async fn authority_sigterm_ends_open_attest_streams_promptly() {
    let (mut d, _, _) = deployment("server_names = [\"127.0.0.1\"]\n").await;
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(
            d.bundle_pem().expect("read bundle.pem"),
        ))
        .domain_name("127.0.0.1");
    let channel = tonic::transport::Endpoint::from_shared(format!("https://127.0.0.1:{}", d.port))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("TLS connection to the authority");
    let mut node = tessera_proto::authority::node_client::NodeClient::new(channel);
    // An exchange the agent never continues: the authority waits for `begin`.
    let (_tx, rx) = tokio::sync::mpsc::channel::<tessera_proto::authority::AttestRequest>(1);
    let mut stream = within(
        secs(10),
        "open Attest",
        node.attest(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
    .await
    .expect("Attest opens")
    .into_inner();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // stop_authority asserts exit 0 within 5s of SIGTERM.
    d.stop_authority().await.expect("stop the authority");
    let end = within(secs(5), "the Attest stream to end", stream.message()).await;
    match end {
        Ok(None) => {}
        Err(st) => assert!(
            matches!(
                st.code(),
                Code::Unavailable | Code::Cancelled | Code::Unknown
            ),
            "{st:?}"
        ),
        Ok(Some(m)) => panic!("unexpected attest message after SIGTERM: {m:?}"),
    }
}
