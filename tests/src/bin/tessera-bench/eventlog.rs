//! TCG event log parse + replay of every log in `tests/data/eventlogs`: in process,
//! and as `tessera-agent eventlog` processes, against `tpm2_eventlog` processes
//! less the cost of exec'ing `/bin/true`; and the agent's CLI start-up against
//! `/bin/true`, the two run in turn.

use crate::measure::{exec_pair_us, exec_us, median_us};
use crate::report::{Row, Target};
use crate::Sizes;
use anyhow::{bail, Context, Result};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use tessera_attestors::node::tpm::eventlog;

const SCENARIO: &str = "eventlog parse + replay";

pub fn run(sizes: Sizes) -> Result<Vec<Row>> {
    let logs = logs(&Path::new(env!("CARGO_MANIFEST_DIR")).join("data/eventlogs"))?;
    let agent = tessera_tests::bin("tessera-agent")?;
    let tpm2 = Path::new("/usr/bin/tpm2_eventlog");
    if !tpm2.is_file() {
        bail!("{} is missing (Debian package tpm2-tools)", tpm2.display());
    }
    let truth = Path::new("/bin/true");

    // Per log, over the logs tpm2_eventlog itself can read (it crashes on some).
    // `/bin/true` is timed beside each log's tpm2_eventlog, so both see the same
    // load: one reading taken apart from them can exceed tpm2_eventlog's.
    let (mut inproc, mut ours, mut theirs, mut trues) = (0.0, 0.0, 0.0, 0.0);
    let mut n = 0;
    for log in &logs {
        let arg = [log.as_os_str()];
        let (tpm2_us, read) = exec_us(sizes.runs, tpm2, &arg)?;
        if !read {
            continue;
        }
        let (true_us, ok) = exec_us(sizes.runs, truth, &[])?;
        if !ok {
            bail!("{} did not exit 0", truth.display());
        }
        trues += true_us;
        let bytes = std::fs::read(log).with_context(|| format!("read {}", log.display()))?;
        // Some logs are malformed on purpose: an error is a result too.
        inproc += median_us(sizes.runs, || {
            let _ = eventlog::parse(&bytes).and_then(|l| l.replay());
            Ok(())
        })?;
        let cli = [OsStr::new("eventlog"), log.as_os_str()];
        // Refusing a malformed log is a result too.
        ours += exec_us(sizes.runs, &agent, &cli)?.0;
        theirs += tpm2_us;
        n += 1;
    }
    if n == 0 {
        bail!("tpm2_eventlog read none of the {} logs", logs.len());
    }
    let per = |total: f64| total / n as f64;
    let (true_us, tpm2_work) = (per(trues), per(theirs) - per(trues));
    if tpm2_work <= 0.0 {
        bail!(
            "tpm2_eventlog took no longer than /bin/true ({:.0} µs against {true_us:.0} µs a run): \
             the machine's noise swamps the baseline; run again",
            per(theirs)
        );
    }
    // Start-up against `/bin/true` run in turn with it, in many more runs: the two
    // differ by a millisecond, which one burst of other work swamps.
    let (startup, true_startup) = exec_pair_us(
        sizes.runs * 8,
        (&agent, &[OsStr::new("--version")]),
        (truth, &[]),
    )?;
    let per_log = format!("per log ({n} logs)");
    Ok(vec![
        Row::new(
            SCENARIO,
            &format!("in process, {per_log}"),
            "us",
            per(inproc),
        )
        .against(tpm2_work, Target::RatioAtMost(0.1)),
        Row::new(
            SCENARIO,
            &format!("tessera-agent eventlog process, {per_log}"),
            "us",
            per(ours),
        )
        .against(per(theirs), Target::Report),
        Row::new("cli start-up", "tessera-agent --version", "us", startup)
            .against(true_startup, Target::RatioAtMost(2.0)),
    ])
}

/// Every `*.bin` under `dir`, sorted.
fn logs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("read {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension() == Some(OsStr::new("bin")) {
                out.push(p);
            }
        }
    }
    out.sort();
    if out.is_empty() {
        bail!("no event logs (*.bin) under {}", dir.display());
    }
    Ok(out)
}
