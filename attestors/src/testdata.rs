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

/// Every vendored file is named in MANIFEST.md (source, commit, licence), and
/// one with a recorded size and hash still has them.
#[test]
fn every_vendored_file_is_in_the_manifest() {
    let manifest = String::from_utf8(read("MANIFEST.md")).expect("UTF-8");
    // name (or `dir/*`) -> the row's cells
    let mut rows: Vec<(String, Vec<&str>)> = Vec::new();
    for row in manifest.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let names: Vec<&str> = cells[1].split('`').skip(1).step_by(2).collect();
        let dir = names[0].rsplit_once('/').map_or("", |(d, _)| d);
        for n in names {
            let rel = if n.contains('/') {
                n.into()
            } else {
                format!("{dir}/{n}")
            };
            rows.push((rel, cells.clone()));
        }
    }
    let mut dirs = vec![path("")];
    let mut checked = 0;
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("tests/data") {
            let p = entry.expect("dir entry").path();
            let rel = p.strip_prefix(path("")).expect("under tests/data");
            let rel = rel.to_str().expect("UTF-8 name");
            if p.is_dir() {
                if rel != "LICENSES" {
                    dirs.push(p);
                }
                continue;
            }
            if rel == "MANIFEST.md" {
                continue;
            }
            let row = rows.iter().find(|(name, _)| {
                name == rel || name.strip_suffix("/*").is_some_and(|d| rel.starts_with(d))
            });
            let (_, cells) =
                row.unwrap_or_else(|| panic!("{rel} is not in tests/data/MANIFEST.md"));
            let bytes = read(rel);
            if let Some(size) = cells.get(2).and_then(|c| c.parse::<usize>().ok()) {
                assert_eq!(bytes.len(), size, "{rel}: size in MANIFEST.md");
                let sum = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
                let hex: String = sum.as_ref()[..8]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                assert_eq!(cells[3], hex, "{rel}: sha256 in MANIFEST.md");
            }
            checked += 1;
        }
    }
    assert!(checked > 100, "only {checked} files under tests/data");
}
