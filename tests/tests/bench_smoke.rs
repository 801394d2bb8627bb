//! `tessera-bench --smoke --json FILE` runs every scenario and writes the documented
//! schema, so the tool cannot rot unnoticed.

use serde_json::Value;
use std::process::Command;

const KEYS: [&str; 8] = [
    "scenario", "metric", "unit", "value", "baseline", "ratio", "target", "met",
];

#[test]
fn smoke_run_writes_one_object_per_scenario_and_size() {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("bench.json");
    let out = Command::new(env!("CARGO_BIN_EXE_tessera-bench"))
        .arg("--smoke")
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run tessera-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tessera-bench --smoke failed ({}): {}{}",
        out.status,
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("scenario "), "no table header: {stdout}");

    let text = std::fs::read_to_string(&json).expect("the --json file");
    let rows: Vec<Value> = serde_json::from_str(&text).expect("a JSON array");
    assert_eq!(
        rows.len(),
        stdout.lines().count() - 1,
        "one JSON object per table row"
    );
    for row in &rows {
        let obj = row.as_object().expect("each row is an object");
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort();
        let mut want = KEYS.to_vec();
        want.sort();
        assert_eq!(keys, want, "fields of {row}");
        for k in ["scenario", "metric", "unit", "target"] {
            assert!(
                obj[k].as_str().is_some_and(|s| !s.is_empty()),
                "{k} is not a non-empty string in {row}"
            );
        }
        let value = obj["value"].as_f64().expect("value is a number");
        // A count (calls shed in a smoke-sized fleet) may be zero; a measure may not.
        let count = obj["unit"] == "calls";
        assert!(
            value.is_finite() && (value > 0.0 || (count && value == 0.0)),
            "value {value} in {row}"
        );
        match (&obj["baseline"], &obj["ratio"]) {
            (Value::Null, Value::Null) => {
                let absolute = obj["target"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("<= ") && !t.ends_with("baseline"));
                assert!(
                    obj["met"].is_null() || absolute,
                    "met without baseline or an absolute target: {row}"
                )
            }
            (Value::Number(b), Value::Number(r)) => {
                let (b, r) = (b.as_f64().unwrap_or(0.0), r.as_f64().unwrap_or(0.0));
                assert!(b > 0.0, "baseline {b} in {row}");
                assert!(
                    (r - value / b).abs() <= 1e-9 * r.abs().max(1.0),
                    "ratio != value/baseline in {row}"
                );
            }
            _ => panic!("baseline and ratio must both be numbers or both null: {row}"),
        }
        assert!(
            obj["met"].is_boolean() || (obj["met"].is_null() && obj["target"] == "report"),
            "met must be a boolean unless the target is `report`: {row}"
        );
    }
    for scenario in [
        "eventlog parse + replay",
        "cli start-up",
        "authority signing",
        "FetchX509SVID first message",
        "FetchJWTSVID, 1 client",
        "SDS StreamSecrets first response, 1 client",
        "new connection + attestation per call",
        "TPM attestation verification",
        "agent start to first SVID",
        "rotation fan-out",
        "agent memory",
    ] {
        assert!(
            rows.iter().any(|r| r["scenario"] == scenario),
            "scenario {scenario:?} missing from {text}"
        );
    }
}
