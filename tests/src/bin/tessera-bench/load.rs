//! A closed-loop load generator: N clients, each on its own connection, calling back to
//! back for a time window; every call's latency is kept. Two such loads compared are run
//! in turn, a slice of the window each, so a change in the machine's load meets both.

use anyhow::{anyhow, Result};
use std::future::Future;
use std::time::{Duration, Instant};

/// Latency percentiles (µs) and throughput (calls/s) of one run.
#[derive(Clone, Copy, Debug)]
pub struct Stats {
    pub p50: f64,
    pub p99: f64,
    pub rate: f64,
}

/// Every call's latency from one or more runs, and the time they ran.
#[derive(Default)]
pub struct Samples {
    times: Vec<Duration>,
    elapsed: f64,
}

impl Samples {
    pub fn stats(self) -> Stats {
        stats(self.times, self.elapsed)
    }

    fn add(&mut self, other: Samples) {
        self.times.extend(other.times);
        self.elapsed += other.elapsed;
    }
}

/// How many slices each of two compared loads gets.
const SLICES: u32 = 6;

/// The loads `a(w)` and `b(w)`, each for `window` in all, in alternating slices of
/// `window / 6` (a, b, b, a, a, b, ...): a burst of other work, or a drift of the
/// machine's load, lands on both alike instead of on whichever ran at the time.
pub async fn alternating<A, AFut, B, BFut>(window: Duration, a: A, b: B) -> Result<(Stats, Stats)>
where
    A: Fn(Duration) -> AFut,
    AFut: Future<Output = Result<Samples>>,
    B: Fn(Duration) -> BFut,
    BFut: Future<Output = Result<Samples>>,
{
    let slice = window / SLICES;
    let (mut sa, mut sb) = (Samples::default(), Samples::default());
    for i in 0..SLICES {
        if i % 2 == 0 {
            sa.add(a(slice).await?);
            sb.add(b(slice).await?);
        } else {
            sb.add(b(slice).await?);
            sa.add(a(slice).await?);
        }
    }
    Ok((sa.stats(), sb.stats()))
}

/// `clients` tasks, each with the client `connect` made for it (connected before the clock
/// starts, and warmed with one untimed call), calling `call` back to back for `window`.
pub async fn closed_loop<C, Conn, ConnFut, Call, CallFut>(
    clients: usize,
    window: Duration,
    connect: Conn,
    call: Call,
) -> Result<Samples>
where
    C: Clone + Send + 'static,
    Conn: Fn() -> ConnFut,
    ConnFut: Future<Output = Result<C>>,
    Call: Fn(C) -> CallFut + Clone + Send + 'static,
    CallFut: Future<Output = Result<()>> + Send + 'static,
{
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients.max(1) {
        let c = connect().await?;
        call(c.clone()).await?;
        conns.push(c);
    }
    let start = Instant::now();
    let end = start + window;
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|c| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut t = Vec::new();
                while Instant::now() < end {
                    let s = Instant::now();
                    call(c.clone()).await?;
                    t.push(s.elapsed());
                }
                anyhow::Ok(t)
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(
            t.await
                .map_err(|e| anyhow!("a client task failed: {e}"))??,
        );
    }
    Ok(Samples {
        times: all,
        elapsed: start.elapsed().as_secs_f64(),
    })
}

/// Percentiles of `t`; the rate is calls per second over `elapsed` seconds.
pub fn stats(mut t: Vec<Duration>, elapsed: f64) -> Stats {
    t.sort();
    let at = |q: f64| {
        let i = ((t.len() as f64 * q) as usize).min(t.len().saturating_sub(1));
        t.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    Stats {
        p50: at(0.5),
        p99: at(0.99),
        rate: t.len() as f64 / elapsed.max(1e-9),
    }
}
