//! `tessera-agent inspect --pid PID [--output json]`: what the agent sees of a process,
//! and which synced entries that matches.

use crate::config::Config;
use crate::run::BoxError;
use tessera_attestors::workload::unix::UnixAttestor;
use tessera_common::spiffe_template::{is_template, SpiffeTemplate};
use tessera_common::Selector;

/// A matching entry, and for a template the ID it gives this process (or why none).
struct Matched<'a> {
    id: &'a str,
    spiffe_id: &'a str,
    expansion: Option<Result<String, String>>,
}

fn expansion(spiffe_id: &str, selectors: &[Selector]) -> Option<Result<String, String>> {
    if !is_template(spiffe_id) {
        return None;
    }
    Some(
        SpiffeTemplate::parse(spiffe_id)
            .map_err(|e| e.to_string())
            .and_then(|t| t.expand(selectors).map_err(|e| e.to_string()))
            .map(|id| id.to_string()),
    )
}

/// `--output`: how the result is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// The selectors one `type:value` a line, then the matching entries.
    Text,
    /// `{"pid": N, "selectors": ["type:value", ...], "entries": [{"id", "spiffe_id"}, ...]}`;
    /// a templated entry adds `expanded_spiffe_id`, or `not_expanded` (why not).
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
    let matched: Vec<Matched> = entries
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
            let spiffe_id = e["spiffe_id"].as_str().unwrap_or("?");
            Matched {
                id: e["id"].as_str().unwrap_or("?"),
                spiffe_id,
                expansion: expansion(spiffe_id, &selectors),
            }
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
                    .map(|m| {
                        let mut j = serde_json::json!({"id": m.id, "spiffe_id": m.spiffe_id});
                        match &m.expansion {
                            Some(Ok(x)) => j["expanded_spiffe_id"] = x.as_str().into(),
                            Some(Err(why)) => j["not_expanded"] = why.as_str().into(),
                            None => {}
                        }
                        j
                    })
                    .collect::<Vec<_>>(),
            });
            println!("{doc}");
        }
    }
    Ok(())
}

fn print_text(selectors: &[Selector], matched: &[Matched]) {
    for s in selectors {
        println!("{s}");
    }
    for m in matched {
        match &m.expansion {
            None => println!("\nEntry {} matches: {}", m.id, m.spiffe_id),
            Some(Ok(x)) => println!("\nEntry {} matches: {} -> {x}", m.id, m.spiffe_id),
            Some(Err(why)) => println!(
                "\nEntry {} matches: {} (no identity: {why})",
                m.id, m.spiffe_id
            ),
        }
    }
    if matched.is_empty() {
        println!("\nNo entry matches.");
    }
}
