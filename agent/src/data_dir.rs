//! The agent's files in `data_dir`, and what a killed agent left there.

use crate::node;
use std::path::Path;
use tessera_attestors::node::tpm::ops::AK_BLOB_FILE;
use tessera_common::fsutil;

/// Every file the agent writes in `data_dir`, each through `fsutil::write_atomic`.
const FILES: &[&str] = &[
    "entries.json",
    node::SVID_FILE,
    node::KEY_FILE,
    node::BUNDLE_FILE,
    node::PENDING_FILE,
    AK_BLOB_FILE,
];

/// Removes the temp files of writes a kill interrupted (only those names,
/// only regular files). Not fatal: the agent runs without it.
pub fn remove_stale_temps(dir: &Path) {
    match fsutil::remove_stale_temps(dir, FILES) {
        Ok(removed) => {
            for p in removed {
                tracing::info!(path = %p.display(), "removed a temp file an interrupted write left");
            }
        }
        Err(e) => {
            tracing::warn!(data_dir = %dir.display(), error = %e, "cannot clean stale temp files")
        }
    }
}
