//! Rotation fan-out and the memory of open streams: N FetchX509SVID streams
//! of one workload, over as many HTTP/2 connections as the agent's default
//! per-connection stream cap needs; then entry updates (a new DNS name) make
//! the agent re-sign that SVID, and every stream must carry the new one.
//! Delays are measured from the first stream's delivery (the agent's publish
//! is not visible from outside; the first delivery follows it by one message).

use crate::bench_agent::{deployment, settled_rss, start_agent};
use crate::report::Row;
use crate::Sizes;
use anyhow::{anyhow, bail, ensure, Context, Result};
use std::time::{Duration, Instant};
use tessera_proto::workload::{X509svidRequest, X509svidResponse};
use tessera_tests::{deadline, req, secs, Deployment};
use tokio::sync::mpsc;

const SCENARIO: &str = "rotation fan-out";
/// The agent's default `workload_api.max_streams_per_connection`.
const STREAMS_PER_CONNECTION: usize = 32;
const TARGET_MS: f64 = 100.0;
const TARGET_KIB_PER_STREAM: f64 = 30.0;

/// (stream index, when its new message arrived, the message's SVID chain).
type Arrival = (usize, Instant, Vec<u8>);

pub fn run(sizes: Sizes) -> Result<Vec<Row>> {
    tokio::runtime::Runtime::new()?.block_on(measure(sizes))
}

async fn measure(sizes: Sizes) -> Result<Vec<Row>> {
    let (streams, rotations) = if sizes.smoke { (40, 1) } else { (1000, 5) };
    let mut d = deployment().await?;
    let (me, entry) = d.register_self("bench/fanout", &[]).await?;
    let pid = start_agent(&mut d, &me).await?;
    let before = settled_rss(pid).await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (connections, mut current) = open_streams(&d, streams, tx).await?;
    let after = settled_rss(pid).await?;
    let per_stream = after.saturating_sub(before) as f64 / streams as f64 / 1024.0;

    let mut delays = Vec::with_capacity(streams * rotations);
    let mut lasts = Vec::with_capacity(rotations);
    for r in 0..rotations {
        let dns = format!("rotation-{r}.bench.example");
        d.admin_ok(&["entry", "update", &entry, "--dns", &dns])
            .await?;
        let arrivals = collect(&mut rx, streams).await?;
        let chain = &arrivals[0].2;
        ensure!(
            chain != &current,
            "rotation {r}: a stream got the old SVID again"
        );
        ensure!(
            arrivals.iter().all(|a| &a.2 == chain),
            "rotation {r}: the streams got different SVIDs"
        );
        current = chain.clone();
        let first = arrivals
            .iter()
            .map(|a| a.1)
            .min()
            .unwrap_or_else(Instant::now);
        let mut last = Duration::ZERO;
        for a in &arrivals {
            let late = a.1 - first;
            last = last.max(late);
            delays.push(late);
        }
        lasts.push(last);
    }
    drop(connections);
    delays.sort();
    lasts.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let p99 = ms(delays[(delays.len() * 99 / 100).min(delays.len() - 1)]);
    let n = format!(
        "{streams} streams on {} connections",
        streams.div_ceil(STREAMS_PER_CONNECTION)
    );
    Ok(vec![
        Row::new(
            SCENARIO,
            &format!("new SVID on a stream after the first, p99 over {n} x {rotations} rotations"),
            "ms",
            p99,
        )
        .at_most(TARGET_MS),
        Row::new(
            SCENARIO,
            &format!("until the last stream has it, worst of {rotations} rotations"),
            "ms",
            ms(lasts[lasts.len() - 1]),
        ),
        Row::new(
            "agent memory",
            &format!("RSS per open FetchX509SVID stream, {n}"),
            "KiB",
            per_stream,
        )
        .at_most(TARGET_KIB_PER_STREAM),
    ])
}

/// Opens `n` streams, each read to its first message, then followed by a task
/// that reports every later message on `tx`. Returns the connections' tasks
/// (aborted on drop) and the SVID chain the streams started with.
async fn open_streams(
    d: &Deployment,
    n: usize,
    tx: mpsc::UnboundedSender<Arrival>,
) -> Result<(Followers, Vec<u8>)> {
    let mut tasks = Vec::with_capacity(n);
    let mut channels = Vec::new();
    let mut start = None;
    for c in 0..n.div_ceil(STREAMS_PER_CONNECTION) {
        let raw = d.raw().await?;
        for i in c * STREAMS_PER_CONNECTION..n.min((c + 1) * STREAMS_PER_CONNECTION) {
            let mut s = raw
                .clone()
                .fetch_x509svid(req(X509svidRequest {}))
                .await
                .with_context(|| format!("open stream {i}"))?
                .into_inner();
            let first = s
                .message()
                .await?
                .ok_or_else(|| anyhow!("stream {i} ended without a message"))?;
            let chain = chain_of(&first)?;
            if start.get_or_insert_with(|| chain.clone()) != &chain {
                bail!("stream {i} started with another SVID");
            }
            let tx = tx.clone();
            tasks.push(tokio::spawn(async move {
                while let Ok(Some(m)) = s.message().await {
                    let Ok(chain) = chain_of(&m) else { return };
                    if tx.send((i, Instant::now(), chain)).is_err() {
                        return;
                    }
                }
            }));
        }
        channels.push(raw);
    }
    let start = start.ok_or_else(|| anyhow!("no stream opened"))?;
    Ok((Followers { tasks, channels }, start))
}

/// Exactly one new message from each of `n` streams.
async fn collect(rx: &mut mpsc::UnboundedReceiver<Arrival>, n: usize) -> Result<Vec<Arrival>> {
    let mut seen = vec![false; n];
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let a = deadline(secs(30), "every stream's new SVID", rx.recv())
            .await?
            .ok_or_else(|| anyhow!("every stream ended"))?;
        ensure!(
            !seen[a.0],
            "stream {} got two messages for one rotation",
            a.0
        );
        seen[a.0] = true;
        out.push(a);
    }
    Ok(out)
}

fn chain_of(m: &X509svidResponse) -> Result<Vec<u8>> {
    m.svids
        .first()
        .map(|s| s.x509_svid.clone())
        .ok_or_else(|| anyhow!("a message without an SVID"))
}

/// The stream-following tasks and their connections; dropping them closes both.
struct Followers {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    channels: Vec<tessera_tests::Raw>,
}

impl Drop for Followers {
    fn drop(&mut self) {
        self.channels.clear();
        for t in &self.tasks {
            t.abort();
        }
    }
}
