//! `tessera-soak`: holds many Workload API streams open on a real agent with many
//! entries whose SVIDs rotate every `--rotation`, for `--duration`, and fails if
//! any stream errors, ends, or ever holds an SVID that does not validate (each
//! message goes through the `spiffe` crate's parser and a chain, key and
//! validity check here), or if the agent's RSS or open fds grow. Not part of the
//! test suite: `--smoke` is, at tiny sizes. Build in release for real figures:
//! `cargo build --release --workspace --bins && target/release/tessera-soak`.

mod check;
mod entries;
mod sample;
mod streams;

use anyhow::{ensure, Context, Result};
use clap::Parser;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tessera_common::duration;
use tessera_tests::{Deployment, Opts};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Soak a real agent: many streams, many entries, rotations"
)]
struct Args {
    /// Open FetchX509SVID streams.
    #[arg(long, default_value_t = 1000)]
    streams: usize,
    /// Streams per connection (the agent allows 32 by default).
    #[arg(long, default_value_t = 25)]
    streams_per_connection: usize,
    /// Registered entries for the agent; `--matching` of them name this process.
    #[arg(long, default_value_t = 10_000)]
    entries: usize,
    /// Entries whose SVIDs every stream receives.
    #[arg(long, default_value_t = 4)]
    matching: usize,
    /// The X.509-SVID lifetime; the agent renews at about half of it.
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    x509_ttl: Duration,
    /// How long the streams are held after they are all open.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    duration: Duration,
    /// Tiny sizes in well under a minute: for the test suite.
    #[arg(long)]
    smoke: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    duration::parse(s)
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    if args.smoke {
        args.streams = 6;
        args.streams_per_connection = 3;
        args.entries = 30;
        args.matching = 2;
        args.x509_ttl = Duration::from_secs(8);
        args.duration = Duration::from_secs(10);
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start a tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    ensure!(
        args.matching >= 1 && args.matching <= args.entries,
        "--matching: 1..=--entries"
    );
    ensure!(
        args.streams_per_connection >= 1,
        "--streams-per-connection: at least 1"
    );
    let ttl = format!("{}s", args.x509_ttl.as_secs().max(1));
    let mut d = Deployment::new(Opts {
        // Once per run: Opts takes the literal strings tests write.
        default_x509_ttl: Box::leak(ttl.into_boxed_str()),
        // One uid holds every stream.
        agent_extra: tessera_tests::ONE_UID_AS_MANY.into(),
        ..Opts::default()
    })
    .await
    .context("start the authority")?;
    let started = Instant::now();
    entries::register(&d, args.entries, args.matching).await?;
    println!(
        "registered {} entries ({} for this process) in {:.1}s",
        args.entries,
        args.matching,
        started.elapsed().as_secs_f64()
    );
    d.start_agent().await.context("start the agent")?;
    let pids = sample::Pids {
        agent: d.agent_pid()?,
        authority: d.authority_pid()?,
    };
    let started = Instant::now();
    streams::ready(&d, args.matching, args.entries).await?;
    println!(
        "the agent served its first SVIDs {:.1}s after READY",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let watch = streams::open(&d, args.streams, args.streams_per_connection, args.matching)
        .await
        .context("open the streams")?;
    println!(
        "{} streams on {} connections hold their first SVIDs after {:.1}s",
        args.streams,
        args.streams.div_ceil(args.streams_per_connection),
        started.elapsed().as_secs_f64()
    );
    let samples = sample::every(pids, &watch, args.duration, args.duration / 20).await?;
    let verdict = watch.finish(args.duration, args.x509_ttl);
    print!("{}", sample::table(&samples));
    println!("{verdict}");
    let mut problems = verdict.problems;
    if let Err(e) = sample::flat(&samples) {
        problems.push(e);
    }
    ensure!(
        problems.is_empty(),
        "soak failed:\n  {}",
        problems.join("\n  ")
    );
    Ok(())
}
