//! The repository's test data (`tests/data`, sources and licences in its
//! MANIFEST.md) that the seeds are made from.

use std::path::{Path, PathBuf};

/// `rel` under the repository root.
pub fn path(rel: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join(rel)
}

/// The bytes of `rel` (under the repository root); a missing file is a
/// broken checkout, so it panics naming the file.
pub fn read(rel: &str) -> Vec<u8> {
    let p = path(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every file under `rel` whose name ends in `suffix`, recursively, sorted.
pub fn files(rel: &str, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![path(rel)];
    while let Some(d) = dirs.pop() {
        let entries = std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.to_string_lossy().ends_with(suffix) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The bytes of every file under `rel` ending in `suffix`.
pub fn read_all(rel: &str, suffix: &str) -> Vec<Vec<u8>> {
    files(rel, suffix)
        .iter()
        .map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .collect()
}

/// The DER certificates in a PEM file (none if it holds more than a chain may).
pub fn pem_certs(file: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    tessera_common::x509::certs_from_pem(&bytes)
        .map(|certs| certs.into_iter().map(|c| c.to_vec()).collect())
        .unwrap_or_default()
}

/// The two swtpm fixtures: a fresh swtpm, and one with a RHEL 8 boot replayed.
pub const SWTPM_FIXTURES: [&str; 2] = [
    "tests/data/fixtures/swtpm-sample",
    "tests/data/fixtures/swtpm-replayed-rhel8",
];
