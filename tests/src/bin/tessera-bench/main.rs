//! `tessera-bench`: measures tessera against baselines taken in the same run and
//! prints a table (and, with `--json FILE`, one JSON object per scenario and size).
//! `--smoke` runs every scenario at tiny sizes in seconds, so the test suite can
//! keep the tool working. Numbers mean something only from a release build:
//! `cargo build --release --workspace --bins && target/release/tessera-bench`.

mod agent_start;
mod attest_cost;
mod baseline_server;
mod bench_agent;
mod eventlog;
mod fanout;
mod fleet;
mod load;
mod measure;
mod memory;
mod report;
mod sds_bench;
mod signing;
mod tpm_verify;
mod workload;

use anyhow::{Context, Result};
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(version, about = "Measure tessera against same-run baselines")]
struct Args {
    /// Tiny sizes: checks that every scenario runs, in seconds; the numbers mean little.
    #[arg(long)]
    smoke: bool,
    /// Also write the results as a JSON array to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

/// How much work each scenario does.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    /// Timed runs per measured operation (the median is reported).
    pub runs: usize,
    /// How long a throughput measurement runs.
    pub window: std::time::Duration,
    /// `--smoke`: scenarios with their own sizes (streams, entries) pick tiny ones.
    pub smoke: bool,
}

fn main() -> ExitCode {
    // This binary re-executed as a helper of the workload scenarios.
    if let Some(code) = baseline_server::child_main().or_else(attest_cost::child_main) {
        return code;
    }
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    let sizes = if args.smoke {
        Sizes {
            runs: 3,
            window: std::time::Duration::from_millis(200),
            smoke: true,
        }
    } else {
        Sizes {
            runs: 31,
            window: std::time::Duration::from_secs(3),
            smoke: false,
        }
    };
    let mut rows = Vec::new();
    rows.extend(eventlog::run(sizes).context("scenario eventlog")?);
    rows.extend(signing::run(sizes).context("scenario signing")?);
    rows.extend(fleet::run(sizes).context("scenario fleet")?);
    rows.extend(workload::run(sizes).context("scenario workload API")?);
    rows.extend(tpm_verify::run(sizes).context("scenario TPM verification")?);
    rows.extend(agent_start::run(sizes).context("scenario agent start")?);
    rows.extend(fanout::run(sizes).context("scenario rotation fan-out")?);
    rows.extend(memory::run(sizes).context("scenario agent memory")?);
    print!("{}", report::table(&rows));
    if let Some(path) = args.json {
        std::fs::write(&path, report::json(&rows))
            .with_context(|| format!("--json {}", path.display()))?;
    }
    Ok(())
}
