//! Writes each target's seeds into `<dir>/<target>/` (default `fuzz/corpus`)
//! for `cargo fuzz run`, named by content hash so reruns add nothing twice.

use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let dir = std::env::args_os().nth(1).map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/corpus")),
        PathBuf::from,
    );
    for t in tessera_fuzz::TARGETS {
        let out = dir.join(t.name);
        let seeds = (t.seeds)();
        let written = std::fs::create_dir_all(&out).and_then(|()| {
            seeds
                .iter()
                .try_for_each(|s| std::fs::write(out.join(hex::encode(&Sha256::digest(s)[..8])), s))
        });
        if let Err(e) = written {
            eprintln!("seed: {}: {e}", out.display());
            return ExitCode::FAILURE;
        }
        println!("{}: {} seeds", t.name, seeds.len());
    }
    ExitCode::SUCCESS
}
