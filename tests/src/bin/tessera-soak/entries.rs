//! Registers the soak's entries in bulk through `entry create --data`, as an
//! operator's script would: `matching` name this process's uid, the rest name
//! uids nobody runs (the agent still signs and rotates all of them).

use anyhow::{Context, Result};
use tessera_tests::{Deployment, TD};

/// `entry create --data` takes at most 4 MiB; this many entries stay well under.
const PER_FILE: usize = 2000;

pub async fn register(d: &Deployment, total: usize, matching: usize) -> Result<()> {
    let uid = nix::unistd::getuid().as_raw();
    let entry = |i: usize| {
        let selector_uid = if i < matching {
            uid
        } else {
            200_000 + i as u32
        };
        serde_json::json!({
            "spiffe_id": format!("spiffe://{TD}/soak/{i}"),
            "parent_id": d.agent_id,
            "selectors": [{"type": "unix", "value": format!("uid:{selector_uid}")}],
        })
    };
    let file = d.dir.join("soak-entries.json");
    for start in (0..total).step_by(PER_FILE) {
        let batch: Vec<_> = (start..total.min(start + PER_FILE)).map(entry).collect();
        std::fs::write(&file, serde_json::json!({ "entries": batch }).to_string())
            .with_context(|| format!("write {}", file.display()))?;
        let path = file.to_string_lossy();
        d.admin_ok(&["entry", "create", "--data", &path])
            .await
            .with_context(|| format!("entry create --data (entries {start}..)"))?;
    }
    Ok(())
}
