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
mod watchdog;
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
    /// Run only these scenarios (all when absent).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Scenario>,
}

/// One scenario's entry point.
type RunScenario = fn(Sizes) -> Result<Vec<report::Row>>;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Scenario {
    Eventlog,
    Signing,
    Fleet,
    Workload,
    Tpm,
    Start,
    Fanout,
    Memory,
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
    // A hung call must fail the run, not hold it until CI's own timeout.
    let budget = std::time::Duration::from_secs(if args.smoke { 300 } else { 900 });
    let scenarios: [(Scenario, &str, RunScenario); 8] = [
        (Scenario::Eventlog, "eventlog", eventlog::run),
        (Scenario::Signing, "signing", signing::run),
        (Scenario::Fleet, "fleet", fleet::run),
        (Scenario::Workload, "workload API", workload::run),
        (Scenario::Tpm, "TPM verification", tpm_verify::run),
        (Scenario::Start, "agent start", agent_start::run),
        (Scenario::Fanout, "rotation fan-out", fanout::run),
        (Scenario::Memory, "agent memory", memory::run),
    ];
    let mut rows = Vec::new();
    for (which, name, run) in scenarios {
        if args.only.is_empty() || args.only.contains(&which) {
            let _watch = watchdog::Watchdog::start(name, budget);
            rows.extend(run(sizes).with_context(|| format!("scenario {name}"))?);
        }
    }
    print!("{}", report::table(&rows));
    if let Some(path) = args.json {
        std::fs::write(&path, report::json(&rows))
            .with_context(|| format!("--json {}", path.display()))?;
    }
    Ok(())
}
