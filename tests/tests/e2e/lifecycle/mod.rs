//! Restarts, outages, eviction, audit and the command-line tools.

mod audit;
mod cli_tools;
mod restarts;

use crate::harness::*;
use crate::pki;
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};
use tessera_proto::workload as pb;
use tokio::io::AsyncBufReadExt as _;
use tonic::Code;

async fn fetch_jwt(
    raw: &mut Raw,
    audience: &str,
    spiffe_id: &str,
) -> Result<String, tonic::Status> {
    let mut r = req(pb::JwtsvidRequest {
        audience: vec![audience.to_string()],
        spiffe_id: spiffe_id.to_string(),
    });
    r.set_timeout(secs(10));
    let resp = within(secs(20), "FetchJWTSVID", raw.fetch_jwtsvid(r))
        .await?
        .into_inner();
    assert_eq!(resp.svids.len(), 1, "{resp:?}");
    Ok(resp.svids[0].svid.clone())
}

async fn wait_jwt(raw: &mut Raw, audience: &str, spiffe_id: &str) -> String {
    let deadline = Instant::now() + PROPAGATION;
    loop {
        match fetch_jwt(raw, audience, spiffe_id).await {
            Ok(t) => return t,
            Err(st) if Instant::now() > deadline => {
                panic!("no JWT-SVID for {spiffe_id} within {PROPAGATION:?}: {st:?}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

fn leaf_of(resp: &pb::X509svidResponse, id: &str) -> Vec<u8> {
    pki::split_der(&svid(resp, id).x509_svid).remove(0)
}

fn jwt_kids(spiffe_bundle_json: &str) -> BTreeSet<String> {
    let v: serde_json::Value = serde_json::from_str(spiffe_bundle_json).expect("bundle JSON");
    v["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter(|k| k["use"] == "jwt-svid")
        .filter_map(|k| k["kid"].as_str().map(str::to_string))
        .collect()
}

/// Audit lines, once the predicate holds for them (audit records may land asynchronously).
async fn audit_until(
    d: &Deployment,
    args: &[&str],
    what: &str,
    pred: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let mut all = vec!["audit"];
    all.extend_from_slice(args);
    let deadline = Instant::now() + secs(15);
    loop {
        let lines: Vec<String> = d
            .admin_ok(&all)
            .await
            .expect("admin command")
            .lines()
            .map(str::to_string)
            .collect();
        if pred(&lines) {
            return lines;
        }
        if Instant::now() > deadline {
            panic!("audit {args:?}: {what}; got:\n{}", lines.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn kind(line: &str) -> &str {
    line.split('\t').nth(1).unwrap_or("")
}

fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split('\t')
        .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
}
