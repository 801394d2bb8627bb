//! The Workload API and SDS as a workload sees them: a real authority and agent (the
//! harness's deployment), called on the agent's Unix socket, against the bare server of
//! `baseline_server` answering the same bytes, with the same client code.

use crate::baseline_server;
use crate::load::{alternating, closed_loop, Samples, Stats};
use crate::report::{Row, Target};
use crate::Sizes;
use anyhow::{anyhow, ensure, Context, Result};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tessera_proto::workload as wl;
use tessera_tests::{bin, deadline, req, uds_channel, Daemon, Deployment, Raw};

/// The deployment under test and the baseline next to it.
pub struct Setup {
    /// Kept for its daemons, which stop when it is dropped.
    pub _deployment: Deployment,
    pub agent: PathBuf,
    pub agent_pid: u32,
    pub baseline: baseline_server::Baseline,
    pub dir: tempfile::TempDir,
}

pub fn run(sizes: Sizes) -> Result<Vec<Row>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let setup = setup().await?;
        let mut rows = x509_concurrency(sizes, &setup).await?;
        rows.extend(jwt(sizes, &setup).await.context("FetchJWTSVID")?);
        rows.extend(crate::sds_bench::run(sizes, &setup).await.context("SDS")?);
        rows.extend(
            crate::attest_cost::run(sizes, &setup)
                .await
                .context("new connection + attestation")?,
        );
        Ok(rows)
    })
}

/// Smoke runs use one or two clients; full runs the sizes of the issue.
fn client_counts(sizes: Sizes) -> &'static [usize] {
    if sizes.runs <= 3 {
        &[1, 2]
    } else {
        &[1, 16, 64, 256]
    }
}

async fn setup() -> Result<Setup> {
    let mut d = crate::bench_agent::deployment().await?;
    d.register_self("bench/workload", &[]).await?;
    // The agent at its default log level (the harness's own start adds debug logs).
    let config = d.agent_config();
    let mut agent = Daemon::spawn(
        "agent",
        &bin("tessera-agent")?,
        &[
            OsStr::new("run"),
            OsStr::new("--config"),
            config.as_os_str(),
        ],
        &d.dir.join("agent.log"),
        &[("TESSERA_LOG", "info")],
    )?;
    agent.wait_ready(tessera_tests::STARTUP).await?;
    let agent_pid = agent.pid();
    eprintln!("workload scenarios: agent pid {agent_pid}");
    d.extra.push(agent);
    let socket = d.socket_path();
    let x509 = deadline(
        tessera_tests::PROPAGATION,
        "the agent's first SVID",
        async {
            loop {
                if let Ok(m) = fetch_x509(connect(&socket).await?).await {
                    return anyhow::Ok(m);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        },
    )
    .await??;
    let jwt = connect(&socket)
        .await?
        .fetch_jwtsvid(jwt_req("bench"))
        .await?
        .into_inner();
    let dir = tempfile::tempdir()?;
    let baseline = baseline_server::start(dir.path(), &x509, &jwt)?;
    Ok(Setup {
        _deployment: d,
        agent: socket,
        agent_pid,
        baseline,
        dir,
    })
}

pub async fn connect(socket: &Path) -> Result<Raw> {
    Ok(Raw::new(uds_channel(socket).await?))
}

/// FetchX509SVID up to its first message (then the stream is dropped, as a client that
/// only needed the SVID does).
pub async fn fetch_x509(mut c: Raw) -> Result<wl::X509svidResponse> {
    let mut s = c
        .fetch_x509svid(req(wl::X509svidRequest {}))
        .await?
        .into_inner();
    let m = s
        .message()
        .await?
        .ok_or_else(|| anyhow!("FetchX509SVID ended before its first message"))?;
    ensure!(!m.svids.is_empty(), "FetchX509SVID answered no SVID");
    Ok(m)
}

pub async fn x509_call(c: Raw) -> Result<()> {
    fetch_x509(c).await.map(drop)
}

fn jwt_req(audience: &str) -> tonic::Request<wl::JwtsvidRequest> {
    req(wl::JwtsvidRequest {
        audience: vec![audience.into()],
        spiffe_id: String::new(),
    })
}

async fn jwt_call(mut c: Raw, audience: String) -> Result<()> {
    let r = c.fetch_jwtsvid(jwt_req(&audience)).await?.into_inner();
    ensure!(!r.svids.is_empty(), "FetchJWTSVID answered no SVID");
    Ok(())
}

/// One client per connection, `clients` of them, on `socket`.
pub async fn x509_load(socket: &Path, clients: usize, window: Duration) -> Result<Samples> {
    closed_loop(clients, window, || connect(socket), x509_call).await
}

async fn x509_concurrency(sizes: Sizes, s: &Setup) -> Result<Vec<Row>> {
    const SCENARIO: &str = "FetchX509SVID first message";
    let mut rows = Vec::new();
    for &n in client_counts(sizes) {
        let who = if n == 1 {
            "1 client".into()
        } else {
            format!("{n} clients")
        };
        let (base, agent) = alternating(
            sizes.window,
            (s.baseline.pid(), |w| x509_load(&s.baseline.socket, n, w)),
            (s.agent_pid, |w| x509_load(&s.agent, n, w)),
        )
        .await
        .with_context(|| who.clone())?;
        let rate_target = if n == 64 {
            Target::RatioAtLeast(0.8)
        } else {
            Target::Report
        };
        rows.push(
            Row::new(SCENARIO, &format!("p50, {who}"), "µs", agent.p50)
                .against(base.p50, Target::RatioAtMost(1.3)),
        );
        rows.push(
            Row::new(SCENARIO, &format!("p99, {who}"), "µs", agent.p99)
                .against(base.p99, Target::RatioAtMost(2.0)),
        );
        rows.push(
            Row::new(SCENARIO, &format!("calls/s, {who}"), "1/s", agent.rate)
                .against(base.rate, rate_target),
        );
        rows.push(server_cpu(SCENARIO, &who, agent, base)?);
    }
    Ok(rows)
}

async fn jwt(sizes: Sizes, s: &Setup) -> Result<Vec<Row>> {
    const SCENARIO: &str = "FetchJWTSVID, 1 client";
    let cached = |c| jwt_call(c, "bench".into());
    let (base, agent) = alternating(
        sizes.window,
        (s.baseline.pid(), |w| {
            closed_loop(1, w, || connect(&s.baseline.socket), cached)
        }),
        (s.agent_pid, |w| {
            closed_loop(1, w, || connect(&s.agent), cached)
        }),
    )
    .await?;
    // Every call a new audience: the agent has the authority sign each.
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let fresh = move |c| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        jwt_call(c, format!("bench-{n}"))
    };
    let uncached = closed_loop(1, sizes.window, || connect(&s.agent), fresh)
        .await?
        .stats();
    Ok(vec![
        Row::new(SCENARIO, "cached, p50", "µs", agent.p50)
            .against(base.p50, Target::RatioAtMost(1.3)),
        Row::new(SCENARIO, "cached, p99", "µs", agent.p99).against(base.p99, Target::Report),
        server_cpu(SCENARIO, "cached", agent, base)?,
        Row::new(SCENARIO, "uncached (new audience), p50", "µs", uncached.p50)
            .against(base.p50, Target::Report),
        Row::new(SCENARIO, "uncached (new audience), p99", "µs", uncached.p99)
            .against(base.p99, Target::Report),
    ])
}

/// The server's CPU time per call (user + system, all its threads, connection set-up and
/// close included), agent against its baseline: what the call rate follows where client
/// and server share the cores.
pub fn server_cpu(scenario: &str, who: &str, agent: Stats, base: Stats) -> Result<Row> {
    let cpu = |s: Stats| {
        s.cpu_us
            .ok_or_else(|| anyhow!("{scenario}: no CPU time measured"))
    };
    Ok(Row::new(
        scenario,
        &format!("server CPU per call, {who}"),
        "µs",
        cpu(agent)?,
    )
    .against(cpu(base)?, Target::Report))
}
