//! `tessera-agent inspect --pid PID`: what the agent sees of a process, and
//! which synced entries that matches.

use crate::config::Config;
use crate::run::BoxError;
use tessera_attestors::workload::unix::UnixAttestor;
use tessera_common::Selector;

pub fn inspect(pid: i32, config: &Config) -> Result<(), BoxError> {
    let selectors = UnixAttestor::new()
        .attest(pid)
        .map_err(|e| format!("--pid {pid}: {e}"))?;
    for s in &selectors {
        println!("{s}");
    }
    let path = config.data_dir.join("entries.json");
    let entries: Vec<serde_json::Value> = match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", path.display()))?,
        Err(e) => {
            return Err(format!("{}: {e} (has the agent synced yet?)", path.display()).into())
        }
    };
    let mut matched = 0;
    for e in &entries {
        let wanted: Vec<Selector> = e["selectors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str())
                    .filter_map(|s| Selector::parse(s).ok())
                    .collect()
            })
            .unwrap_or_default();
        if tessera_common::selector::all_present(&wanted, &selectors) {
            matched += 1;
            println!(
                "\nEntry {} matches: {}",
                e["id"].as_str().unwrap_or("?"),
                e["spiffe_id"].as_str().unwrap_or("?")
            );
        }
    }
    if matched == 0 {
        println!("\nNo entry matches.");
    }
    Ok(())
}
