//! Agent start to first SVID served, on a TPM host whose agent already holds
//! its state: swtpm with a persistent EK, the AK blob in the agent's data_dir
//! from a first start. Each timed run execs the agent and polls new Workload
//! API connections until a FetchX509SVID first message names the workload;
//! the agent re-attests the node at every start, so that is part of it.

use crate::bench_agent::{fetch_once, first_svid, spawn_agent};
use crate::report::Row;
use crate::Sizes;
use anyhow::{bail, ensure, Result};
use std::time::{Duration, Instant};
use tessera_tests::{rhel8_log, secs, swtpm_booted, Deployment, Opts, STARTUP};

const SCENARIO: &str = "agent start to first SVID";
const TARGET_MS: f64 = 300.0;
/// The persistent handle TCG reserves for the RSA-2048 EK.
const EK_HANDLE: &str = "0x81010001";
const AUTHORITY: &str = "spiffe://example.org/tessera/authority";
const WORKLOAD: &str = "spiffe://example.org/bench/start";

pub fn run(sizes: Sizes) -> Result<Vec<Row>> {
    tokio::runtime::Runtime::new()?.block_on(measure(sizes))
}

async fn measure(sizes: Sizes) -> Result<Vec<Row>> {
    let runs = if sizes.smoke { 1 } else { 9 };
    let log = rhel8_log();
    let swtpm = swtpm_booted(&log)?;
    let handles = String::from_utf8_lossy(&swtpm.tool(&["tpm2_getcap", "handles-persistent"])?)
        .to_lowercase();
    if !handles.contains(EK_HANDLE) {
        swtpm.tool(&[
            "tpm2_createek",
            "-c",
            EK_HANDLE,
            "-G",
            "rsa",
            "-u",
            "/dev/null",
        ])?;
    }
    let d = Deployment::with_tpm(&swtpm, &log, "", Opts::default()).await?;
    // A node alias for any host whose EK certificate verified, and the workload under it.
    let alias = "spiffe://example.org/nodes/bench";
    for (parent, id, selector) in [
        (AUTHORITY, alias, "tpm:ek_cert_verified:true"),
        (alias, WORKLOAD, "unix:uid:0"),
    ] {
        d.admin_ok(&[
            "entry",
            "create",
            "--parent-id",
            parent,
            "--spiffe-id",
            id,
            "--selector",
            selector,
        ])
        .await?;
    }
    let log_file = d.dir.join("agent.log");
    // First start: attests, creates and persists the AK.
    let mut agent = spawn_agent(&d.agent_config(), &log_file)?;
    agent.wait_ready(STARTUP).await?;
    first_svid(&d, WORKLOAD, secs(60)).await?;
    agent.stop_async(secs(5)).await?;

    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let mut agent = spawn_agent(&d.agent_config(), &log_file)?;
        loop {
            if let Ok(mut raw) = d.raw().await {
                if fetch_once(&mut raw)
                    .await
                    .is_ok_and(|ids| ids.iter().any(|i| i == WORKLOAD))
                {
                    break;
                }
            }
            if let Some(st) = agent.exited() {
                bail!("the agent exited ({st}) before it served an SVID");
            }
            if start.elapsed() > secs(60) {
                bail!("no SVID within 60s of the agent's start");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        times.push(start.elapsed());
        let (st, in_time) = agent.stop_async(secs(5)).await?;
        ensure!(
            in_time && st.success(),
            "the agent did not stop cleanly: {st}"
        );
    }
    times.sort();
    let median = times[times.len() / 2].as_secs_f64() * 1e3;
    Ok(vec![Row::new(
        SCENARIO,
        &format!(
            "exec to first FetchX509SVID answer, swtpm, persisted EK and AK (median of {runs})"
        ),
        "ms",
        median,
    )
    .at_most(TARGET_MS)])
}
