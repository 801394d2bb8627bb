//! A new connection and a workload attestation for every call. Hit: this process calls
//! again and again, so the agent has its binary's hash cached. Miss: each sample is a fresh
//! copy of this binary (a new inode, so a new cache key) run as a child that times its own
//! first call (miss) and second call (hit) on new connections, after warming up on the bare
//! server. Baselines: the same new-connection call on the bare server, and SHA-256 of the
//! same binary read from disk (page cache, as the agent reads it).

use crate::load::{alternating, closed_loop, stats, Samples};
use crate::report::{Row, Target};
use crate::workload::{connect, server_cpu, x509_call, Setup};
use crate::Sizes;
use anyhow::{anyhow, ensure, Context, Result};
use aws_lc_rs::digest::{Context as Digest, SHA256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

const SCENARIO: &str = "new connection + attestation per call";
/// Set in a miss sample's environment: the agent's socket, a newline, the bare server's.
const ENV: &str = "TESSERA_BENCH_ONE_CALL";
/// The target's allowance over a bare new connection, for a cache hit.
const HIT_ALLOWANCE_US: f64 = 100.0;

pub async fn run(sizes: Sizes, s: &Setup) -> Result<Vec<Row>> {
    let (bare, hit) = alternating(
        sizes.window,
        (s.baseline.pid(), |w| new_conn_calls(&s.baseline.socket, w)),
        (s.agent_pid, |w| new_conn_calls(&s.agent, w)),
    )
    .await?;
    let (miss_us, child_hit_us, size) = misses(sizes.runs, s)?;
    let hash_us = plain_hash_us(sizes.runs, &std::env::current_exe()?)?;
    ensure!(
        miss_us > child_hit_us,
        "a miss ({miss_us:.0} µs) was not slower than a hit ({child_hit_us:.0} µs)"
    );
    let mbps = |us: f64| size as f64 / us;
    // `<= bare + allowance` as a ratio to bare, rounded down (never looser).
    let hit_ratio = ((bare.p50 + HIT_ALLOWANCE_US) / bare.p50 * 1000.0).floor() / 1000.0;
    Ok(vec![
        Row::new(
            SCENARIO,
            "hash cache hit, p50 (target: bare new connection + 100 µs)",
            "µs",
            hit.p50,
        )
        .against(bare.p50, Target::RatioAtMost(hit_ratio)),
        Row::new(SCENARIO, "hash cache hit, p99", "µs", hit.p99).against(bare.p99, Target::Report),
        server_cpu(SCENARIO, "hash cache hit", hit, bare)?,
        Row::new(
            SCENARIO,
            &format!("hash cache miss, p50 ({} MiB binary)", size >> 20),
            "µs",
            miss_us,
        )
        .against(bare.p50, Target::Report),
        Row::new(
            SCENARIO,
            "miss hashing speed: size / (miss - hit) (baseline: plain SHA-256 of the file)",
            "MB/s",
            mbps(miss_us - child_hit_us),
        )
        .against(mbps(hash_us), Target::RatioAtLeast(0.9)),
    ])
}

/// One call per new connection, back to back, on `socket`.
async fn new_conn_calls(socket: &Path, window: Duration) -> Result<Samples> {
    let socket = socket.to_path_buf();
    closed_loop(
        1,
        window,
        || std::future::ready(Ok(socket.clone())),
        |p: PathBuf| async move { x509_call(connect(&p).await?).await },
    )
    .await
}

/// Medians over `runs` fresh copies of this binary: (miss µs, hit µs, binary size).
fn misses(runs: usize, s: &Setup) -> Result<(f64, f64, u64)> {
    let exe = std::env::current_exe()?;
    let (mut miss, mut hit) = (Vec::new(), Vec::new());
    let mut size = 0;
    for i in 0..runs.max(1) {
        let copy = s.dir.path().join(format!("bench-copy-{i}"));
        size = std::fs::copy(&exe, &copy).context("copy tessera-bench")?;
        let out = Command::new(&copy)
            .env(
                ENV,
                format!("{}\n{}", s.agent.display(), s.baseline.socket.display()),
            )
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .context("run a copy of tessera-bench");
        let _ = std::fs::remove_file(&copy);
        let out = out?;
        let text = String::from_utf8_lossy(&out.stdout);
        ensure!(out.status.success(), "a miss sample failed: {text}");
        let mut f = text.split_whitespace().map(str::parse::<u64>);
        match (f.next(), f.next()) {
            (Some(Ok(m)), Some(Ok(h))) => {
                miss.push(Duration::from_nanos(m));
                hit.push(Duration::from_nanos(h));
            }
            _ => return Err(anyhow!("a miss sample printed {text:?}")),
        }
    }
    Ok((stats(miss, 1.0).p50, stats(hit, 1.0).p50, size))
}

/// Median µs to SHA-256 `path`, read in 64 KiB blocks.
fn plain_hash_us(runs: usize, path: &Path) -> Result<f64> {
    crate::measure::median_us(runs, || {
        let mut f = std::fs::File::open(path)?;
        let mut d = Digest::new(&SHA256);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            d.update(&buf[..n]);
        }
        std::hint::black_box(d.finish());
        Ok(())
    })
}

/// In a miss sample (`ENV` set): prints the nanoseconds of a first (miss) and a second
/// (hit) call, each on a new connection. `None` otherwise.
pub fn child_main() -> Option<ExitCode> {
    let env = std::env::var(ENV).ok()?;
    let (agent, bare) = env.split_once('\n')?;
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(sample(Path::new(agent), Path::new(bare))));
    Some(match result {
        Ok((miss, hit)) => {
            println!("{} {}", miss.as_nanos(), hit.as_nanos());
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("{e:#}");
            ExitCode::FAILURE
        }
    })
}

async fn sample(agent: &Path, bare: &Path) -> Result<(Duration, Duration)> {
    // Warm the client's own code paths, so the miss is the agent's work.
    for _ in 0..3 {
        x509_call(connect(bare).await?).await?;
    }
    let timed = || async {
        let start = Instant::now();
        x509_call(connect(agent).await?).await?;
        anyhow::Ok(start.elapsed())
    };
    let miss = timed().await?;
    let hit = timed().await?;
    Ok((miss, hit))
}
