//! The operator CLI as scripts use it, against a real authority over its admin
//! socket: `--output json` parsed, `entry update` reaching the agent's SVIDs,
//! `entry create --data` all or nothing, list filters, `audit --since/--until`,
//! `agent show`, man pages, and `api fetch x509 --write` making its directory.

mod entries;
mod other;

use crate::harness::*;
use crate::pki;
use serde_json::Value;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Runs an admin command that must succeed and parses its stdout as JSON.
async fn admin_json(d: &Deployment, args: &[&str]) -> Value {
    let out = d.admin_ok(args).await.expect("admin command");
    serde_json::from_str(&out).unwrap_or_else(|e| {
        panic!(
            "tessera-authority {}: not JSON ({e}): {out}",
            args.join(" ")
        )
    })
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().expect("a string"))
        .collect()
}

fn entry_ids(v: &Value) -> Vec<&str> {
    v["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("no entries array: {v}"))
        .iter()
        .map(|e| e["id"].as_str().expect("id"))
        .collect()
}

/// `YYYY-MM-DDTHH:MM:SSZ`, what the JSON promises for every time.
fn assert_rfc3339(v: &Value) {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("not a time string: {v}"));
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.into_iter().all(|i| b[i].is_ascii_digit());
    assert!(
        b.len() == 20
            && digits(0..4)
            && b[4] == b'-'
            && b[7] == b'-'
            && b[10] == b'T'
            && b[13] == b':'
            && b[16] == b':'
            && b[19] == b'Z'
            && digits(11..13),
        "not RFC 3339 UTC: {s}"
    );
}

/// The leaf of the SVID for `spiffe_id` the agent serves now.
async fn leaf(d: &Deployment, spiffe_id: &str) -> Vec<u8> {
    let mut raw = d.raw().await.expect("connect to the agent");
    let resp = wait_x509(&mut raw, &[spiffe_id]).await;
    let chain = &svid(&resp, spiffe_id).x509_svid;
    pki::split_der(chain).remove(0)
}
