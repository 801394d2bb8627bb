//! The soak's streams: `connections` × `per_connection` FetchX509SVID streams
//! through the `spiffe` crate, each message checked by [`crate::check`], and a
//! watchdog that fails a stream the moment its newest SVID has expired.

use crate::check;
use anyhow::{bail, Result};
use futures::StreamExt as _;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tessera_tests::{now, Deployment};
use tokio::task::JoinHandle;

/// Problems kept word for word; beyond this only counted.
const KEPT: usize = 20;

#[derive(Default)]
struct Stream {
    /// Earliest notAfter of the newest message; 0 before the first.
    not_after: AtomicI64,
    messages: AtomicU64,
}

#[derive(Default)]
struct Shared {
    streams: Vec<Stream>,
    problems: Mutex<(Vec<String>, usize)>,
    failed: AtomicBool,
}

impl Shared {
    fn problem(&self, p: String) {
        self.failed.store(true, Relaxed);
        if let Ok(mut g) = self.problems.lock() {
            g.1 += 1;
            if g.0.len() < KEPT {
                g.0.push(p);
            }
        }
    }
}

pub struct Watch {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

pub struct Verdict {
    pub problems: Vec<String>,
    streams: usize,
    messages: u64,
    fewest: u64,
    expected: u64,
}

pub async fn open(
    d: &Deployment,
    total: usize,
    per_connection: usize,
    want: usize,
) -> Result<Watch> {
    let shared = Arc::new(Shared {
        streams: (0..total).map(|_| Stream::default()).collect(),
        ..Shared::default()
    });
    let mut tasks = Vec::new();
    for first in (0..total).step_by(per_connection) {
        let client = d.client().await?;
        for i in first..total.min(first + per_connection) {
            let mut stream = match client.stream_x509_contexts().await {
                Ok(s) => s,
                Err(e) => bail!("stream {i}: FetchX509SVID: {e}"),
            };
            let shared = shared.clone();
            tasks.push(tokio::spawn(async move {
                let s = &shared.streams[i];
                loop {
                    match stream.next().await {
                        Some(Ok(ctx)) => match check::validate(&ctx, want, now()) {
                            Ok(not_after) => {
                                s.not_after.store(not_after, Relaxed);
                                s.messages.fetch_add(1, Relaxed);
                            }
                            Err(e) => shared.problem(format!("stream {i}: {e}")),
                        },
                        Some(Err(e)) => return shared.problem(format!("stream {i}: {e}")),
                        None => return shared.problem(format!("stream {i} ended")),
                    }
                }
            }));
        }
    }
    let watchdog = shared.clone();
    tasks.push(tokio::spawn(async move {
        let mut expired = vec![false; watchdog.streams.len()];
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let t = now();
            for (i, s) in watchdog.streams.iter().enumerate() {
                let na = s.not_after.load(Relaxed);
                if na != 0 && na <= t && !expired[i] {
                    expired[i] = true;
                    watchdog.problem(format!(
                        "stream {i} holds an SVID that expired at {na} (now {t})"
                    ));
                }
            }
        }
    }));
    let watch = Watch { shared, tasks };
    let limit = std::time::Instant::now() + Duration::from_secs(60 + total as u64 / 10);
    while watch
        .shared
        .streams
        .iter()
        .any(|s| s.messages.load(Relaxed) == 0)
    {
        if watch.failed() {
            bail!("{}", watch.problems().join("\n"));
        }
        if std::time::Instant::now() > limit {
            bail!("not every stream received its first SVIDs within the limit");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(watch)
}

/// Waits until the agent serves this process all `want` SVIDs: it signals
/// READY once attested and synced, before its first signatures return, and
/// signs every entry first (allowed: 60 s plus 1 s per 50 entries).
pub async fn ready(d: &Deployment, want: usize, entries: usize) -> Result<()> {
    let client = d.client().await?;
    let allowed = Duration::from_secs(60 + entries as u64 / 50);
    let limit = std::time::Instant::now() + allowed;
    loop {
        let last = match client.fetch_x509_context().await {
            Ok(ctx) if ctx.svids().len() == want => return Ok(()),
            Ok(ctx) => format!("{} SVIDs, want {want}", ctx.svids().len()),
            Err(e) => e.to_string(),
        };
        if std::time::Instant::now() > limit {
            bail!("the agent did not serve this process its SVIDs within {allowed:?}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl Watch {
    pub fn failed(&self) -> bool {
        self.shared.failed.load(Relaxed)
    }

    pub fn messages(&self) -> u64 {
        self.shared
            .streams
            .iter()
            .map(|s| s.messages.load(Relaxed))
            .sum()
    }

    fn problems(&self) -> Vec<String> {
        match self.shared.problems.lock() {
            Ok(g) if g.1 > g.0.len() => {
                let mut p = g.0.clone();
                p.push(format!("... and {} more", g.1 - g.0.len()));
                p
            }
            Ok(g) => g.0.clone(),
            Err(_) => vec!["a stream task panicked".into()],
        }
    }

    /// Stops the streams. Besides any problem seen, every stream must have
    /// received each rotation certain to fall inside the run.
    pub fn finish(self, ran: Duration, ttl: Duration) -> Verdict {
        for t in &self.tasks {
            t.abort();
        }
        let counts: Vec<u64> = self
            .shared
            .streams
            .iter()
            .map(|s| s.messages.load(Relaxed))
            .collect();
        let fewest = counts.iter().copied().min().unwrap_or(0);
        // The agent renews 40-60% into what is left of an SVID's lifetime, at
        // its next round (every 0.5s) once signed, so consecutive SVIDs are at
        // most 0.6 × ttl apart plus a round and its signing (1s, busy or not).
        let apart = 0.6 * ttl.as_secs_f64() + 1.0;
        let expected = 1 + (ran.as_secs_f64() / apart).floor() as u64;
        let mut problems = self.problems();
        if fewest < expected {
            problems.push(format!(
                "a stream received {fewest} messages in {}s; SVIDs valid {}s mean at least {expected}",
                ran.as_secs(),
                ttl.as_secs()
            ));
        }
        Verdict {
            problems,
            streams: counts.len(),
            messages: counts.iter().sum(),
            fewest,
            expected,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} streams, {} messages (at least {} per stream, {} expected), {} problems",
            self.streams,
            self.messages,
            self.fewest,
            self.expected,
            self.problems.len()
        )
    }
}
