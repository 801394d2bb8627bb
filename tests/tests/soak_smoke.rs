//! `tessera-soak --smoke` holds a few streams through several rotations and
//! passes, so the soak command cannot rot unnoticed (the full soak is run by
//! hand: README, "Soak").

use std::process::Command;

#[test]
fn smoke_soak_passes_with_every_rotation_delivered() {
    let out = Command::new(env!("CARGO_BIN_EXE_tessera-soak"))
        .arg("--smoke")
        .output()
        .expect("run tessera-soak");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tessera-soak --smoke failed ({}): {}{}",
        out.status,
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    let verdict = stdout.lines().last().unwrap_or_default();
    assert!(verdict.starts_with("6 streams, "), "{stdout}");
    assert!(verdict.ends_with(", 0 problems"), "{stdout}");
    assert!(stdout.contains("agent RSS"), "no samples table: {stdout}");
}
