//! A closed-loop load generator: N clients, each on its own connection, calling back to
//! back for a time window; every call's latency is kept. Two such loads compared are run
//! in turn, a slice of the window each, so a change in the machine's load meets both, and
//! each is charged the CPU time its server process used in its slices.

use anyhow::{anyhow, Result};
use std::future::Future;
use std::time::{Duration, Instant};

/// Latency percentiles (µs) and throughput (calls/s) of one run.
#[derive(Clone, Copy, Debug)]
pub struct Stats {
    pub p50: f64,
    pub p99: f64,
    pub rate: f64,
    /// The server process's CPU time (user + system) per call, when measured.
    pub cpu_us: Option<f64>,
}

/// Every call's latency from one or more runs, and the time they ran.
#[derive(Default)]
pub struct Samples {
    times: Vec<Duration>,
    /// Calls that ended within their windows.
    done: u64,
    /// Calls made but not timed (each client's first).
    untimed: u64,
    elapsed: f64,
    /// The server's CPU time over the runs, when measured.
    cpu: Option<Duration>,
}

impl Samples {
    pub fn stats(self) -> Stats {
        let rate = self.done as f64 / self.elapsed.max(1e-9);
        let calls = (self.times.len() as u64 + self.untimed).max(1) as f64;
        let cpu_us = self.cpu.map(|c| c.as_secs_f64() * 1e6 / calls);
        Stats {
            rate,
            cpu_us,
            ..stats(self.times, self.elapsed)
        }
    }

    fn add(&mut self, other: Samples) {
        self.times.extend(other.times);
        self.done += other.done;
        self.untimed += other.untimed;
        self.elapsed += other.elapsed;
        self.cpu = match (self.cpu, other.cpu) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
    }
}

/// How many slices each of two compared loads gets.
const SLICES: u32 = 6;

/// The loads `a(w)` and `b(w)`, each for `window` in all, in alternating slices of
/// `window / 6` (a, b, b, a, a, b, ...): a burst of other work, or a drift of the
/// machine's load, lands on both alike instead of on whichever ran at the time. Each
/// side is charged the CPU time of its server (the pid beside it) over its slices,
/// the closing of the slice's connections included.
pub async fn alternating<A, AFut, B, BFut>(
    window: Duration,
    (a_pid, a): (u32, A),
    (b_pid, b): (u32, B),
) -> Result<(Stats, Stats)>
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
            sa.add(charged(a_pid, a(slice)).await?);
            sb.add(charged(b_pid, b(slice)).await?);
        } else {
            sb.add(charged(b_pid, b(slice)).await?);
            sa.add(charged(a_pid, a(slice)).await?);
        }
    }
    Ok((sa.stats(), sb.stats()))
}

/// One slice's samples with the CPU time server `pid` used for them.
async fn charged(pid: u32, load: impl Future<Output = Result<Samples>>) -> Result<Samples> {
    let before = tessera_tests::cpu_time(pid)?;
    let mut samples = load.await?;
    settle().await;
    samples.cpu = Some(tessera_tests::cpu_time(pid)?.saturating_sub(before));
    Ok(samples)
}

/// Lets the server just measured close the slice's connections before the next slice
/// starts, so that work is not charged to the other side.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(50)).await;
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
                let (mut t, mut done) = (Vec::new(), 0u64);
                while Instant::now() < end {
                    let s = Instant::now();
                    call(c.clone()).await?;
                    let now = Instant::now();
                    t.push(now - s);
                    done += u64::from(now <= end);
                }
                anyhow::Ok((t, done))
            })
        })
        .collect();
    let (mut all, mut done) = (Vec::new(), 0);
    for t in tasks {
        let (t, d) = t
            .await
            .map_err(|e| anyhow!("a client task failed: {e}"))??;
        all.extend(t);
        done += d;
    }
    // Every call's latency counts, but the rate only the calls that ended within the
    // window: the last ones end after it, while the other clients sit idle.
    Ok(Samples {
        times: all,
        done,
        untimed: clients.max(1) as u64,
        elapsed: window.as_secs_f64(),
        cpu: None,
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
        cpu_us: None,
    }
}
