//! Timing primitives: medians of repeated runs, process exec times, and
//! throughput on every core.

use anyhow::{bail, Context, Result};
use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Median of `runs` timings of `f`, in microseconds.
pub fn median_us(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let mut t = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        f()?;
        t.push(start.elapsed());
    }
    t.sort();
    Ok(t[t.len() / 2].as_secs_f64() * 1e6)
}

/// Median wall time of running `program args` to completion (output discarded),
/// in microseconds, and whether every run exited 0.
pub fn exec_us(runs: usize, program: &Path, args: &[&OsStr]) -> Result<(f64, bool)> {
    let mut failed = false;
    let us = median_us(runs, || {
        failed |= !exec(program, args)?;
        Ok(())
    })?;
    Ok((us, !failed))
}

/// `exec_us` of `a` and of `b`, run in turn (a, b, b, a, a, b, ...) so both meet the
/// same load and neither always follows the other; fails unless every run exited 0.
pub fn exec_pair_us(
    runs: usize,
    a: (&Path, &[&OsStr]),
    b: (&Path, &[&OsStr]),
) -> Result<(f64, f64)> {
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for i in 0..runs.max(1) {
        let mut pair = [(a, &mut ta), (b, &mut tb)];
        if i % 2 == 1 {
            pair.reverse();
        }
        for ((program, args), t) in pair {
            let start = Instant::now();
            if !exec(program, args)? {
                bail!("{} did not exit 0", program.display());
            }
            t.push(start.elapsed());
        }
    }
    let median = |mut t: Vec<Duration>| {
        t.sort();
        t[t.len() / 2].as_secs_f64() * 1e6
    };
    Ok((median(ta), median(tb)))
}

/// Runs `program args` to completion, output discarded; whether it exited 0.
fn exec(program: &Path, args: &[&OsStr]) -> Result<bool> {
    let st = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("run {}", program.display()))?;
    Ok(st.success())
}

/// Operations per second of `op` run in a loop on `threads` threads for `window`.
/// `make` builds each thread's operation (its own keys, inputs).
pub fn rate<F, Op>(threads: usize, window: Duration, make: F) -> Result<f64>
where
    F: Fn() -> Result<Op> + Sync,
    Op: FnMut() -> Result<()>,
{
    let counts: Vec<Result<u64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|_| {
                s.spawn(|| -> Result<u64> {
                    let mut op = make()?;
                    let end = Instant::now() + window;
                    let mut n = 0u64;
                    while Instant::now() < end {
                        op()?;
                        n += 1;
                    }
                    Ok(n)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| bail!("a worker thread panicked"))
            })
            .collect()
    });
    let mut total = 0;
    for c in counts {
        total += c?;
    }
    Ok(total as f64 / window.as_secs_f64())
}

/// The cores to measure throughput on.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
