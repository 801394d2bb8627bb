//! The authority under a fleet: simulated agents, each a real mTLS client of
//! the node API from its own loopback address with an agent SVID it got by
//! attesting (join token), each with its own entries. Two phases:
//! - the herd: every agent syncs and signs all its entries at once, as after
//!   a partition; calls the authority sheds are retried after its hint;
//! - the fleet at rest: every agent syncs once per sync interval (the agent's
//!   default, 5s) from a random phase; the latency of each SyncEntries.

use crate::report::Row;
use crate::Sizes;
use anyhow::{anyhow, Context, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tessera_proto::authority as pb;
use tessera_tests::fleet::{csr, loopback, retry_hint, rss_kib, SimAgent, SERVER_NAME};
use tessera_tests::{Deployment, Opts, TD};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

const SCENARIO: &str = "authority under a fleet";
/// The agent's default sync_interval.
const SYNC_INTERVAL: Duration = Duration::from_secs(5);
/// Attestations in flight while the fleet is set up.
const ATTEST_AT_ONCE: usize = 32;

struct Fleet {
    agents: usize,
    entries: usize,
    interval: Duration,
    rounds: usize,
}

pub fn run(sizes: Sizes) -> Result<Vec<Row>> {
    // Smoke runs (sub-second windows) take a handful of agents.
    let fleet = if sizes.window < Duration::from_secs(1) {
        Fleet {
            agents: 3,
            entries: 5,
            interval: Duration::from_millis(100),
            rounds: 2,
        }
    } else {
        Fleet {
            agents: 1000,
            entries: 100,
            interval: SYNC_INTERVAL,
            rounds: 3,
        }
    };
    tessera_common::limits::raise_nofile_limit();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(measure(fleet))
}

async fn measure(f: Fleet) -> Result<Vec<Row>> {
    let d = Deployment::new(Opts {
        authority_extra: SERVER_NAME.into(),
        ..Opts::default()
    })
    .await
    .context("start the authority")?;
    let tokens = d.generate_tokens(f.agents).await?;
    let mut entries = Vec::with_capacity(f.agents * f.entries);
    for t in &tokens {
        let parent = format!("spiffe://{TD}/tessera/agent/join_token/{t}");
        for i in 0..f.entries {
            entries.push((parent.clone(), format!("spiffe://{TD}/fleet/{t}/w{i}")));
        }
    }
    d.create_entries(&entries).await?;
    drop(entries);
    let agents = attest_all(&d, tokens).await?;

    let shed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut herd = JoinSet::new();
    for a in &agents {
        let (node, shed, n) = (a.node.clone(), shed.clone(), f.entries);
        herd.spawn(async move { sync_and_sign(node, n, &shed).await });
    }
    let signed: usize = join_all(herd).await?.into_iter().sum();
    let herd_time = start.elapsed();
    anyhow::ensure!(
        signed == f.agents * f.entries,
        "the herd got {signed} SVIDs, expected {}",
        f.agents * f.entries
    );
    let (_, herd_peak) = rss_kib(d.authority_pid()?)?;

    let mut at_rest = JoinSet::new();
    for a in &agents {
        let (node, shed) = (a.node.clone(), shed.clone());
        let (interval, rounds, n) = (f.interval, f.rounds, f.entries);
        at_rest.spawn(async move { periodic_syncs(node, interval, rounds, n, &shed).await });
    }
    let mut lat: Vec<Duration> = join_all(at_rest).await?.into_iter().flatten().collect();
    lat.sort();
    let (rss, _) = rss_kib(d.authority_pid()?)?;
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
    let size = format!("{} agents x {} entries", f.agents, f.entries);
    let mib = |kib: u64| kib as f64 / 1024.0;
    Ok(vec![
        Row::new(
            SCENARIO,
            &format!("{size}, all at once: entries synced and signed/s"),
            "1/s",
            signed as f64 / herd_time.as_secs_f64(),
        ),
        Row::new(
            SCENARIO,
            &format!("{size}, all at once: until the last agent has its SVIDs"),
            "s",
            herd_time.as_secs_f64(),
        ),
        Row::new(
            SCENARIO,
            &format!("{size}: calls shed with a retry hint"),
            "calls",
            shed.load(Ordering::Relaxed) as f64,
        ),
        Row::new(
            SCENARIO,
            &format!("{size}, sync every {:?}: SyncEntries p50", f.interval),
            "ms",
            pct(0.5),
        ),
        Row::new(
            SCENARIO,
            &format!("{size}, sync every {:?}: SyncEntries p99", f.interval),
            "ms",
            pct(0.99),
        )
        .at_most(250.0),
        Row::new(
            SCENARIO,
            &format!("{size}: authority peak RSS"),
            "MiB",
            mib(herd_peak),
        ),
        Row::new(
            SCENARIO,
            &format!("{size}: authority RSS at rest"),
            "MiB",
            mib(rss),
        ),
    ])
}

/// Attests every agent, `ATTEST_AT_ONCE` at a time, each from its own address.
async fn attest_all(d: &Deployment, tokens: Vec<String>) -> Result<Vec<SimAgent>> {
    let gate = Arc::new(Semaphore::new(ATTEST_AT_ONCE));
    let target = d.node_target()?;
    let mut set = JoinSet::new();
    for (i, token) in tokens.into_iter().enumerate() {
        let permit = gate.clone().acquire_owned().await?;
        let target = target.clone();
        set.spawn(async move {
            let r = SimAgent::attest(&target, &token, loopback(i)).await;
            drop(permit);
            r
        });
    }
    join_all(set).await
}

/// Syncs, then signs every entry it got, as an agent does on start; calls
/// the authority sheds are retried after the hint it gives.
async fn sync_and_sign(
    node: pb::node_client::NodeClient<tonic::transport::Channel>,
    expect: usize,
    shed: &AtomicU64,
) -> Result<usize> {
    let entries = retry(shed, || {
        let mut n = node.clone();
        async move { n.sync_entries(pb::SyncEntriesRequest {}).await }
    })
    .await?
    .entries;
    anyhow::ensure!(entries.len() == expect, "synced {} entries", entries.len());
    let mut requests = Vec::with_capacity(entries.len());
    for e in &entries {
        requests.push(pb::X509SignRequest {
            entry_id: e.id.clone(),
            csr: csr()?.0,
            spiffe_id: String::new(),
        });
    }
    let req = pb::BatchSignX509Request { requests };
    let results = retry(shed, || {
        let (mut n, r) = (node.clone(), req.clone());
        async move { n.batch_sign_x509(r).await }
    })
    .await?
    .results;
    // Per-entry results: count only the entries actually signed.
    Ok(results
        .iter()
        .filter(|r| r.svid.is_some() && r.status.as_ref().is_some_and(|s| s.code == 0))
        .count())
}

/// `rounds` SyncEntries one `interval` apart from a random phase; the
/// latency of each.
async fn periodic_syncs(
    node: pb::node_client::NodeClient<tonic::transport::Channel>,
    interval: Duration,
    rounds: usize,
    expect: usize,
    shed: &AtomicU64,
) -> Result<Vec<Duration>> {
    tokio::time::sleep(interval.mul_f64(rand_unit())).await;
    let mut tick = tokio::time::interval(interval);
    let mut out = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        tick.tick().await;
        let start = Instant::now();
        let resp = retry(shed, || {
            let mut n = node.clone();
            async move { n.sync_entries(pb::SyncEntriesRequest {}).await }
        })
        .await?;
        out.push(start.elapsed());
        anyhow::ensure!(
            resp.entries.len() == expect,
            "synced {} entries",
            resp.entries.len()
        );
    }
    Ok(out)
}

/// Runs `call` until it succeeds, sleeping for the retry hint of each shed
/// call; any other error ends the run.
async fn retry<T, F, Fut>(shed: &AtomicU64, mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    for _ in 0..100 {
        match call().await {
            Ok(r) => return Ok(r.into_inner()),
            Err(st) => match retry_hint(&st) {
                Some(wait) => {
                    shed.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(wait).await;
                }
                None => return Err(anyhow!("{st:?}")),
            },
        }
    }
    Err(anyhow!("still shed after 100 tries"))
}

async fn join_all<T: 'static>(mut set: JoinSet<Result<T>>) -> Result<Vec<T>> {
    let mut out = Vec::with_capacity(set.len());
    while let Some(r) = set.join_next().await {
        out.push(r??);
    }
    Ok(out)
}

/// A uniform random number in [0, 1) from the CSR key material's source.
fn rand_unit() -> f64 {
    let mut b = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut b);
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}
