//! Agent memory, from /proc/<pid>/status and /proc/<pid>/fd: RSS when idle
//! (attested, one entry); RSS and open fds across connect/close cycles (a new
//! connection, one FetchX509SVID first message, close), from after a warm-up
//! to the end; then RSS per cached X.509-SVID as the RSS delta over N more
//! entries, read once the agent has signed them all. (Open streams: fanout.rs.)

use crate::bench_agent::{deployment, fds, fetch_once, settled_rss, start_agent, MIB};
use crate::report::{Row, Target};
use crate::Sizes;
use anyhow::{bail, Context, Result};
use std::time::{Duration, Instant};
use tessera_tests::{secs, Deployment};

const SCENARIO: &str = "agent memory";
const TARGET_IDLE_MIB: f64 = 15.0;
const TARGET_KIB_PER_SVID: f64 = 2.0;
/// "Flat" across churn: the end at most this much above the start.
const FLAT: f64 = 1.1;
/// Connect/close cycles in flight at once.
const WORKERS: usize = 4;

pub fn run(sizes: Sizes) -> Result<Vec<Row>> {
    tokio::runtime::Runtime::new()?.block_on(measure(sizes))
}

async fn measure(sizes: Sizes) -> Result<Vec<Row>> {
    let (cycles, entries) = if sizes.smoke {
        (400, 1000)
    } else {
        (100_000, 10_000)
    };
    let mut d = deployment().await?;
    let (me, _) = d.register_self("bench/memory", &[]).await?;
    let pid = start_agent(&mut d, &me).await?;
    let idle = settled_rss(pid).await?;
    let mut rows = vec![
        Row::new(SCENARIO, "idle agent RSS", "MiB", idle as f64 / MIB).at_most(TARGET_IDLE_MIB),
    ];
    rows.extend(churn(&d, pid, cycles).await?);

    let before = settled_rss(pid).await?;
    create_entries(&d, entries).await?;
    // Every entry's SVID, and this bench's own, signed since the agent started.
    wait_log_count(&d, "X509-SVID updated", entries + 1, secs(300)).await?;
    let after = settled_rss(pid).await?;
    let per = after.saturating_sub(before) as f64 / entries as f64 / 1024.0;
    rows.push(
        Row::new(
            SCENARIO,
            &format!("RSS per cached X.509-SVID, {entries} entries"),
            "KiB",
            per,
        )
        .at_most(TARGET_KIB_PER_SVID),
    );
    Ok(rows)
}

/// `cycles` connect/call/close cycles; RSS and fds after a tenth of them
/// (allocator and runtime warmed up) and at the end, both once settled.
async fn churn(d: &Deployment, pid: u32, cycles: usize) -> Result<Vec<Row>> {
    let warm = cycles / 10;
    cycle(d, warm).await?;
    let (rss0, fds0) = (settled_rss(pid).await?, settled_fds(pid, usize::MAX).await?);
    let start = Instant::now();
    cycle(d, cycles - warm).await?;
    let rate = (cycles - warm) as f64 / start.elapsed().as_secs_f64();
    let (rss1, fds1) = (settled_rss(pid).await?, settled_fds(pid, fds0).await?);
    let n = format!("{cycles} connect/close cycles");
    Ok(vec![
        Row::new(
            SCENARIO,
            &format!("RSS after {n}"),
            "MiB",
            rss1 as f64 / MIB,
        )
        .against(rss0 as f64 / MIB, Target::RatioAtMost(FLAT)),
        Row::new(SCENARIO, &format!("open fds after {n}"), "fds", fds1 as f64)
            .against(fds0 as f64, Target::RatioAtMost(1.0)),
        Row::new(SCENARIO, &format!("{n}, {WORKERS} at a time"), "1/s", rate),
    ])
}

/// `n` cycles of: new connection, one FetchX509SVID first message, close.
async fn cycle(d: &Deployment, n: usize) -> Result<()> {
    let mut set = tokio::task::JoinSet::new();
    for w in 0..WORKERS {
        let share = n / WORKERS + usize::from(w < n % WORKERS);
        let socket = d.socket_path();
        set.spawn(async move {
            for _ in 0..share {
                let mut raw = tessera_tests::Raw::new(tessera_tests::uds_channel(&socket).await?);
                fetch_once(&mut raw).await?;
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(r) = set.join_next().await {
        r.context("a churn worker panicked")??;
    }
    Ok(())
}

/// Open fds once at most `want` (closed connections are reaped asynchronously),
/// or whatever they are after 10s.
async fn settled_fds(pid: u32, want: usize) -> Result<usize> {
    let until = Instant::now() + secs(10);
    let mut last = fds(pid)?;
    while last > want && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
        last = fds(pid)?;
    }
    Ok(last)
}

/// `n` entries under the agent that no process here matches, in one batch.
async fn create_entries(d: &Deployment, n: usize) -> Result<()> {
    let entries: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "spiffe_id": format!("spiffe://example.org/bench/cached/{i}"),
                "parent_id": d.agent_id,
                "selectors": [{"type": "unix", "value": format!("uid:{}", 100_000 + i)}],
            })
        })
        .collect();
    let file = d.dir.join("bench-entries.json");
    std::fs::write(&file, serde_json::json!({ "entries": entries }).to_string())?;
    let path = file.to_string_lossy().into_owned();
    d.admin_ok(&["entry", "create", "--data", &path]).await?;
    Ok(())
}

/// Waits until `needle` occurs `n` times in the agent's log.
async fn wait_log_count(d: &Deployment, needle: &str, n: usize, limit: Duration) -> Result<()> {
    let until = Instant::now() + limit;
    loop {
        let seen = d.agent_log().matches(needle).count();
        if seen >= n {
            return Ok(());
        }
        if Instant::now() > until {
            bail!("the agent logged {needle:?} {seen} times in {limit:?}, not {n}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
