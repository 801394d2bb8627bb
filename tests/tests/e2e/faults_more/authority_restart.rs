//! The authority SIGKILLed again and again while the agent syncs and signs
//! many entries, and brought back on the same datastore and port.

use super::{assert_valid, broken, spawn_watch, Seen};
use crate::faults::{assert_state_whole, authority_via_proxy, temp_files};
use crate::harness::*;
use std::fs;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tessera_proto::workload as pb;

/// The agent's metric `tessera_agent_authority_rpc_errors_total` for `method`.
fn rpc_errors(metrics: &str, method: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("tessera_agent_authority_rpc_errors_total{")
                && l.contains(&format!("method=\"{method}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

const LOAD: usize = 300;
const RANDOM_KILLS: usize = 6;
const SIGNING_KILLS: u64 = 2;
/// Bytes a client sends before any answer that only a BatchSignX509 request
/// reaches: the agent's batches carry up to 100 CSRs (about 27 KB), a sync
/// request is empty, a renewal of its own SVID carries one CSR.
const SIGNING_REQUEST: usize = 8 * 1024;

/// A varying number of milliseconds below `span` (kill times need only differ).
fn some_ms(span: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    u64::from(nanos.wrapping_mul(2_654_435_761)) % span
}

/// Brings the killed authority back after a varying pause; the stream must
/// not have broken meanwhile.
async fn restart(d: &mut Deployment, seen: &Mutex<Seen>, kills: usize) {
    tokio::time::sleep(Duration::from_millis(100 + some_ms(400))).await;
    d.start_authority().await.expect("restart the authority");
    if let Some(why) = broken(seen) {
        panic!("after {kills} kills: {why}");
    }
}

#[tokio::test]
async fn authority_killed_mid_sync_again_and_again_the_agent_converges() {
    let mut d = Deployment::new(Opts {
        agent_extra: TELEMETRY.into(),
        ..Opts::default()
    })
    .await
    .expect("deployment");
    let proxy = authority_via_proxy(&d).await;
    // Short-lived, so that the agent signs a few batches every second: a kill
    // at any moment is likely to land between a sync and its signing, or in a
    // BatchSignX509 (the agent's own metrics tell which happened).
    let load: Vec<String> = (0..LOAD)
        .map(|i| format!("spiffe://example.org/faults/load-{i}"))
        .collect();
    let entries: Vec<_> = load
        .iter()
        .map(|id| {
            serde_json::json!({
                "spiffe_id": id,
                "parent_id": d.agent_id,
                "selectors": [{"type": "unix", "value": "uid:0"}],
                "x509_svid_ttl": 12,
            })
        })
        .collect();
    let file = d.dir.join("load.json");
    fs::write(&file, serde_json::json!({ "entries": entries }).to_string()).unwrap();
    d.admin_ok(&["entry", "create", "--data", file.to_str().unwrap()])
        .await
        .expect("create the load entries");
    d.start_agent().await.expect("start the agent");
    let agent_telemetry = d.agent_telemetry().expect("the agent's telemetry");
    let mut raw = d.raw().await.expect("raw client");
    let want: Vec<&str> = load.iter().map(String::as_str).collect();
    let t0 = Instant::now();
    let first = wait_x509(&mut raw, &want).await;
    eprintln!(
        "{LOAD} SVIDs served {:?} after the agent's start",
        t0.elapsed()
    );
    assert_valid(&first);
    let stream = open(
        "FetchX509SVID",
        raw.fetch_x509svid(req(pb::X509svidRequest {})),
    )
    .await;
    let (seen, watcher) = spawn_watch(stream, load.clone());

    let started = Instant::now();
    let mut kills = 0;
    // Kills at random moments: mostly between or in the middle of syncs.
    while kills < RANDOM_KILLS {
        tokio::time::sleep(Duration::from_millis(150 + some_ms(700))).await;
        d.kill_authority().await.expect("SIGKILL the authority");
        kills += 1;
        restart(&mut d, &seen, kills).await;
    }
    // Kills in the middle of a signing round, which a random moment rarely
    // hits: the authority has the BatchSignX509 request and may have signed
    // and recorded it, the agent never gets the answer. The second trap
    // catches the retry of the round the first one cut off.
    let signing_errors = || async {
        rpc_errors(
            &crate::telemetry::scrape(&agent_telemetry, "agent").await,
            "BatchSignX509",
        )
    };
    // Random kills may have cut off signing rounds too: only the increase counts.
    let cut_before = signing_errors().await;
    for _ in 0..SIGNING_KILLS {
        let sprung = proxy.trap_request(SIGNING_REQUEST);
        within(secs(20), "the agent's next signing round", sprung)
            .await
            .expect("the proxy dropped its trap");
        d.kill_authority().await.expect("SIGKILL the authority");
        kills += 1;
        restart(&mut d, &seen, kills).await;
    }
    let sign_hits = poll(
        secs(10),
        "the agent counting its cut-off signing rounds",
        || async {
            let n = signing_errors().await - cut_before;
            (n >= SIGNING_KILLS).then_some(n)
        },
    )
    .await;
    eprintln!(
        "{kills} kills in {:?}; {sign_hits} BatchSignX509 calls cut off by the traps",
        started.elapsed()
    );
    // Converged: a full rotation of every SVID after the last restart, all valid.
    let before: Vec<String> = {
        let s = seen.lock().unwrap();
        load.iter()
            .map(|id| s.serials[id].last().cloned().unwrap_or_default())
            .collect()
    };
    poll(
        secs(20),
        "every SVID rotated after the last restart",
        || {
            let s = seen.lock().unwrap();
            let done = load
                .iter()
                .zip(&before)
                .all(|(id, b)| s.serials[id].last() != Some(b));
            std::future::ready((done || s.broken.is_some()).then_some(()))
        },
    )
    .await;
    watcher.abort();
    assert_eq!(broken(&seen), None, "the stream after {kills} kills");
    let last = wait_x509(&mut raw, &want).await;
    assert_valid(&last);
    assert!(d.agent_exited().is_none(), "the agent exited");
    let log = d.agent_log();
    assert!(
        !log.contains("refused this agent"),
        "the agent took a kill for a refusal"
    );
    // data_dir: whole files, no temp file left behind.
    let data = d.dir.join("agent-data");
    assert_state_whole(&data, kills);
    let listed: serde_json::Value =
        serde_json::from_slice(&fs::read(data.join("entries.json")).unwrap()).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(LOAD));
    assert_eq!(temp_files(&data), Vec::<String>::new());
}
