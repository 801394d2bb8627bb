//! The agent under measurement: a deployment whose agent logs at the
//! production default (info) and admits one busy local user (the bench), and
//! what the kernel says about its process (RSS, open fds).

use anyhow::{anyhow, bail, Context, Result};
use std::ffi::OsStr;
use std::path::Path;
use std::time::{Duration, Instant};
use tessera_proto::workload::X509svidRequest;
use tessera_tests::{bin, req, secs, Daemon, Deployment, Opts, Raw, STARTUP};

/// The bench is also one agent minting a JWT-SVID for a new audience per call.
const AUTHORITY_LIMITS: &str =
    "\n[limits]\njwt_per_second_per_agent = 1000000\njwt_burst_per_agent = 1000000\n";

/// A deployment with the bench's limits, nothing started but the authority.
pub async fn deployment() -> Result<Deployment> {
    Deployment::new(Opts {
        agent_extra: tessera_tests::ONE_UID_AS_MANY.into(),
        authority_extra: AUTHORITY_LIMITS.into(),
        ..Opts::default()
    })
    .await
}

/// Starts `d`'s agent (its config as written) at log level info, waits for its
/// READY=1 and for `want` to be served; the daemon is kept in `d.extra`.
/// Returns its pid.
pub async fn start_agent(d: &mut Deployment, want: &str) -> Result<u32> {
    let log = d.dir.join("agent.log");
    let cfg = d.agent_config();
    let mut agent = spawn_agent(&cfg, &log)?;
    agent.wait_ready(STARTUP).await?;
    let pid = agent.pid();
    d.extra.push(agent);
    first_svid(d, want, secs(30)).await?;
    Ok(pid)
}

/// `tessera-agent run --config cfg` at log level info, not waited for.
pub fn spawn_agent(cfg: &Path, log: &Path) -> Result<Daemon> {
    Daemon::spawn(
        "agent",
        &bin("tessera-agent")?,
        &[OsStr::new("run"), OsStr::new("--config"), cfg.as_os_str()],
        log,
        &[("TESSERA_LOG", "info")],
    )
}

/// Waits until a new connection's FetchX509SVID first message names `want`.
pub async fn first_svid(d: &Deployment, want: &str, limit: Duration) -> Result<()> {
    let until = Instant::now() + limit;
    loop {
        if let Ok(ids) = fetch_once(&mut d.raw().await?).await {
            if ids.iter().any(|id| id == want) {
                return Ok(());
            }
        }
        if Instant::now() > until {
            bail!("the agent did not serve {want} within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One FetchX509SVID call on `raw`: the SPIFFE IDs of its first message.
pub async fn fetch_once(raw: &mut Raw) -> Result<Vec<String>> {
    let mut s = raw
        .fetch_x509svid(req(X509svidRequest {}))
        .await?
        .into_inner();
    let m = s
        .message()
        .await?
        .ok_or_else(|| anyhow!("the stream ended without a message"))?;
    Ok(tessera_tests::ids(&m))
}

/// Resident set size of `pid`, in bytes (`VmRSS` of /proc/<pid>/status).
pub fn rss(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    let kib = text
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .ok_or_else(|| anyhow!("no VmRSS in {path}"))?;
    Ok(kib * 1024)
}

/// Open file descriptors of `pid` (entries of /proc/<pid>/fd).
pub fn fds(pid: u32) -> Result<usize> {
    let path = format!("/proc/{pid}/fd");
    Ok(std::fs::read_dir(&path)
        .with_context(|| format!("read {path}"))?
        .count())
}

/// RSS once it has stopped moving: the agent finishes what it was doing (a
/// sync round, closing connections) before it is read.
pub async fn settled_rss(pid: u32) -> Result<u64> {
    let mut last = rss(pid)?;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let now = rss(pid)?;
        if now.abs_diff(last) < 64 * 1024 {
            return Ok(now);
        }
        last = now;
    }
    Ok(last)
}

pub const MIB: f64 = 1024.0 * 1024.0;
