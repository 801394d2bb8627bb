//! Every fuzz target over its seeds and its regression inputs
//! (`fuzz/regressions/<target>/`, crashes found and fixed), as an ordinary
//! test: the same `fuzz_one` the libFuzzer target calls.

use tessera_fuzz::TARGETS;

fn regressions(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("regressions")
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries
        .map(|e| {
            let p = e.expect("regression entry").path();
            let bytes = std::fs::read(&p).expect("regression file");
            (p.display().to_string(), bytes)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_target_runs_its_seeds_and_regressions() {
    for t in TARGETS {
        let seeds = (t.seeds)();
        assert!(!seeds.is_empty(), "{}: no seeds", t.name);
        for s in &seeds {
            (t.fuzz_one)(s);
        }
        for (name, bytes) in regressions(t.name) {
            eprintln!("{}: {name}", t.name);
            (t.fuzz_one)(&bytes);
        }
    }
}

/// Every target binary is in the table (and so in the corpus test and the smoke run).
#[test]
fn every_fuzz_target_file_is_a_target() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz_targets");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .expect("fuzz_targets")
        .map(|e| {
            let p = e.expect("entry").path();
            p.file_stem().expect("stem").to_string_lossy().into_owned()
        })
        .collect();
    files.sort();
    let mut names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
    names.sort();
    assert_eq!(files, names);
}
