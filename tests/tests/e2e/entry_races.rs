//! Entries deleted while the agent signs (issue 11): the authority refuses each
//! deleted entry alone, the agent drops that one SVID, and a workload's open
//! stream for an entry that stays never ends and keeps getting valid SVIDs.

use crate::harness::*;
use crate::pki;
use futures::StreamExt as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// More than one signing batch (100 CSRs): the entries of a later batch wait
/// while the authority signs the earlier one, which is when deletions land.
const VICTIMS: usize = 250;
/// How long the deletions go on while every SVID keeps rotating.
const RACE: Duration = Duration::from_secs(20);

/// What the workload saw on its stream.
#[derive(Default)]
struct Seen {
    updates: usize,
    serials: Vec<String>,
    /// Why the stream is no good: it ended, failed, or held no valid SVID.
    broken: Option<String>,
}

/// The serial of `id`'s SVID in one update, if that SVID is valid now.
fn valid_serial(ctx: &spiffe::X509Context, id: &str) -> Result<String, String> {
    let svid = ctx
        .svids()
        .iter()
        .find(|s| s.spiffe_id().to_string() == id)
        .ok_or_else(|| format!("an update without {id}"))?;
    let leaf = svid.leaf().as_bytes();
    let now = now();
    if pki::not_after(leaf) <= now || pki::not_before(leaf) > now + 60 {
        return Err(format!("an SVID outside its validity at {now}"));
    }
    Ok(pki::serial(leaf))
}

/// Follows the stream (until aborted), checking that every update holds a valid SVID for `id`.
async fn watch(
    mut stream: impl futures::Stream<Item = Result<spiffe::X509Context, spiffe::WorkloadApiError>>
        + Unpin,
    id: String,
    seen: Arc<Mutex<Seen>>,
) {
    loop {
        let checked = match stream.next().await {
            None => Err("the stream ended".to_string()),
            Some(Err(e)) => Err(format!("the stream failed: {e}")),
            Some(Ok(ctx)) => valid_serial(&ctx, &id),
        };
        let mut s = seen.lock().unwrap();
        match checked {
            Ok(serial) => {
                s.updates += 1;
                if !s.serials.contains(&serial) {
                    s.serials.push(serial);
                }
            }
            Err(why) => {
                s.broken = Some(why);
                return;
            }
        }
    }
}

#[tokio::test]
async fn entries_deleted_while_the_agent_signs_fail_alone() {
    let mut d = Deployment::new(Opts::default())
        .await
        .expect("start a deployment");
    let (id, _) = d
        .register_self("race/survivor", &["--x509-ttl", "4s"])
        .await
        .expect("create the surviving entry");
    // Short-lived: every victim is signed again about every second.
    let victims: Vec<_> = (0..VICTIMS)
        .map(|i| {
            serde_json::json!({
                "spiffe_id": format!("spiffe://example.org/race/victim-{i}"),
                "parent_id": d.agent_id,
                "selectors": [{"type": "unix", "value": "uid:4242"}],
                "x509_svid_ttl": 2,
            })
        })
        .collect();
    let file = d.dir.join("victims.json");
    std::fs::write(&file, serde_json::json!({ "entries": victims }).to_string()).unwrap();
    d.admin_ok(&["entry", "create", "--data", file.to_str().unwrap()])
        .await
        .expect("create the victims");
    let listed = d
        .admin_ok(&["entry", "list", "--output", "json"])
        .await
        .expect("list entries");
    let listed: serde_json::Value = serde_json::from_str(&listed).expect("entry list JSON");
    let mut victim_ids: Vec<String> = listed["entries"]
        .as_array()
        .expect("an array of entries")
        .iter()
        .filter(|e| {
            e["spiffe_id"]
                .as_str()
                .is_some_and(|s| s.contains("victim"))
        })
        .filter_map(|e| e["id"].as_str().map(String::from))
        .collect();
    assert_eq!(victim_ids.len(), VICTIMS);
    d.start_agent().await.expect("start the agent");

    wait_x509(&mut d.raw().await.expect("connect to the agent"), &[&id]).await;
    let client = d.client().await.expect("connect the spiffe client");
    let stream = within(
        secs(20),
        "stream_x509_contexts",
        client.stream_x509_contexts(),
    )
    .await
    .unwrap_or_else(|e| panic!("stream_x509_contexts: {e}"));
    let stream = Box::pin(stream);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let watcher = tokio::spawn(watch(stream, id.clone(), seen.clone()));
    poll(secs(30), "the first update on the stream", || async {
        (seen.lock().unwrap().updates > 0).then_some(())
    })
    .await;

    // Delete victims one after another while they keep being signed again;
    // keep ten so that signing goes on to the end.
    let start = Instant::now();
    let mut deleted = 0;
    while start.elapsed() < RACE && victim_ids.len() > 10 {
        let victim = victim_ids.swap_remove(deleted * 7919 % victim_ids.len());
        d.delete_entry(&victim).await.expect("delete a victim");
        deleted += 1;
        if let Some(why) = &seen.lock().unwrap().broken {
            panic!("after {deleted} deletions: {why}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The survivor keeps rotating on the same stream after the deletions.
    let serials_then = seen.lock().unwrap().serials.len();
    poll(secs(15), "two more rotations of the survivor", || async {
        let s = seen.lock().unwrap();
        (s.broken.is_some() || s.serials.len() >= serials_then + 2).then_some(())
    })
    .await;
    watcher.abort();
    let s = seen.lock().unwrap();
    assert_eq!(
        s.broken, None,
        "the survivor's stream after {deleted} deletions"
    );
    assert!(s.serials.len() >= 5, "rotations seen: {}", s.serials.len());
    // The race was really run: the authority refused entries deleted after the sync.
    let log = d.agent_log();
    let refused = log.matches("authority refused one entry").count();
    assert!(
        refused > 0,
        "no entry was deleted between a sync and its signing in {deleted} deletions"
    );
    assert!(!log.contains("refused this agent"), "{log}");
    eprintln!(
        "{deleted} deletions, {refused} entries refused alone, {} survivor SVIDs",
        s.serials.len()
    );
}
