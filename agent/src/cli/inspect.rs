//! `tessera-agent inspect --pid PID [--output json]`: what the agent sees of a process,
//! and which synced entries that matches.

use crate::config::Config;
use crate::run::BoxError;
use tessera_attestors::workload::unix::UnixAttestor;
use tessera_common::Selector;

/// `--output`: how the result is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// The selectors one `type:value` a line, then the matching entries.
    Text,
    /// `{"pid": N, "selectors": ["type:value", ...], "entries": [{"id", "spiffe_id"}, ...]}`.
    Json,
}

/// Blocks (the attestation may wait on a container runtime's API): call it off the runtime's
/// worker threads.
pub fn inspect(
    attestor: &UnixAttestor,
    pid: i32,
    config: &Config,
    output: Output,
) -> Result<(), BoxError> {
    let selectors = attestor
        .attest(pid)
        .map_err(|e| format!("--pid {pid}: {e}"))?;
    let path = config.data_dir.join("entries.json");
    let entries: Vec<serde_json::Value> = match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", path.display()))?,
        Err(e) => {
            return Err(format!("{}: {e} (has the agent synced yet?)", path.display()).into())
        }
    };
    let matched: Vec<(&str, &str)> = entries
        .iter()
        .filter(|e| {
            let wanted: Vec<Selector> = e["selectors"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str())
                        .filter_map(|s| Selector::parse(s).ok())
                        .collect()
                })
                .unwrap_or_default();
            tessera_common::selector::all_present(&wanted, &selectors)
        })
        .map(|e| {
            (
                e["id"].as_str().unwrap_or("?"),
                e["spiffe_id"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    match output {
        Output::Text => print_text(&selectors, &matched),
        Output::Json => {
            let doc = serde_json::json!({
                "pid": pid,
                "selectors": selectors.iter().map(Selector::to_string).collect::<Vec<_>>(),
                "entries": matched
                    .iter()
                    .map(|(id, spiffe_id)| serde_json::json!({"id": id, "spiffe_id": spiffe_id}))
                    .collect::<Vec<_>>(),
            });
            println!("{doc}");
        }
    }
    Ok(())
}

fn print_text(selectors: &[Selector], matched: &[(&str, &str)]) {
    for s in selectors {
        println!("{s}");
    }
    for (id, spiffe_id) in matched {
        println!("\nEntry {id} matches: {spiffe_id}");
    }
    if matched.is_empty() {
        println!("\nNo entry matches.");
    }
}
