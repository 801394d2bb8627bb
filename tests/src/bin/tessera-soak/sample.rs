//! RSS and open fds of both daemons, sampled from /proc while the soak runs,
//! and the check that they stay flat.

use crate::streams::Watch;
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

#[derive(Clone, Copy)]
pub struct Pids {
    pub agent: u32,
    pub authority: u32,
}

pub struct Sample {
    pub at: Duration,
    pub agent_rss_kib: u64,
    pub agent_fds: usize,
    pub authority_rss_kib: u64,
    pub messages: u64,
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status (has the daemon exited?)"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}

fn fds(pid: u32) -> Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))
        .with_context(|| format!("list /proc/{pid}/fd"))?
        .count())
}

/// Samples every `step` for `total`, and stops early if the watch already failed.
pub async fn every(
    pids: Pids,
    watch: &Watch,
    total: Duration,
    step: Duration,
) -> Result<Vec<Sample>> {
    let start = Instant::now();
    let mut out = Vec::new();
    loop {
        out.push(Sample {
            at: start.elapsed(),
            agent_rss_kib: rss_kib(pids.agent)?,
            agent_fds: fds(pids.agent)?,
            authority_rss_kib: rss_kib(pids.authority)?,
            messages: watch.messages(),
        });
        if start.elapsed() >= total || watch.failed() {
            return Ok(out);
        }
        tokio::time::sleep(step.min(total.saturating_sub(start.elapsed()))).await;
    }
}

pub fn table(samples: &[Sample]) -> String {
    let mut s = String::from("      t  agent RSS  agent fds  authority RSS  messages\n");
    for x in samples {
        let _ = writeln!(
            s,
            "{:>6.0}s {:>7.1}MiB {:>10} {:>11.1}MiB {:>9}",
            x.at.as_secs_f64(),
            x.agent_rss_kib as f64 / 1024.0,
            x.agent_fds,
            x.authority_rss_kib as f64 / 1024.0,
            x.messages
        );
    }
    s
}

/// Flat: the last third of the run holds no more RSS than the first third
/// (after the first sample, which still sees the streams settling) plus 10%
/// and 4 MiB, and at most 2 more open fds at its peak (a sync or a state
/// write may hold one for a moment).
pub fn flat(samples: &[Sample]) -> Result<(), String> {
    let steady = samples.get(1..).unwrap_or_default();
    let third = steady.len() / 3;
    if third == 0 {
        return Err(format!(
            "only {} samples: too few to judge growth",
            samples.len()
        ));
    }
    let avg = |s: &[Sample]| s.iter().map(|x| x.agent_rss_kib).sum::<u64>() / s.len() as u64;
    let (early, late) = (avg(&steady[..third]), avg(&steady[steady.len() - third..]));
    let mut problems = Vec::new();
    if late > early + early / 10 + 4096 {
        problems.push(format!("agent RSS grew from {early} KiB to {late} KiB"));
    }
    let peak = |s: &[Sample]| s.iter().map(|x| x.agent_fds).max().unwrap_or(0);
    let (early, late) = (
        peak(&steady[..third]),
        peak(&steady[steady.len() - third..]),
    );
    if late > early + 2 {
        problems.push(format!("agent open fds went from {early} to {late}"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}
