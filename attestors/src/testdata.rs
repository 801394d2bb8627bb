//! The repository's test data, `tests/data` (sources and licences in its
//! MANIFEST.md): the one place the attestors' tests find it.

use std::path::{Path, PathBuf};

/// `rel` under `tests/data`.
pub(crate) fn path(rel: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data")).join(rel)
}

/// The bytes of `rel`; a missing file fails the test, naming it.
pub(crate) fn read(rel: &str) -> Vec<u8> {
    let path = path(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
