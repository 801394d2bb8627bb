//! What an agent may sign for, read per agent (`crate::authorized`) from a
//! fleet's entries: exactly what reading every entry and filtering gave.

use super::*;
use crate::authorized::tests::authorized;
use crate::authorized::{entries_among, entries_for};
use tessera_common::SpiffeId;

const AUTHORITY: &str = "spiffe://td/tessera/authority";
const AGENTS: usize = 40;
const PER_AGENT: usize = 25;

fn agent_id(i: usize) -> String {
    format!("spiffe://td/tessera/agent/tpm/{i:04}")
}

fn child(parent: &str, spiffe: &str, sels: &[&str], expires_at: Option<UnixTime>) -> NewEntry {
    NewEntry {
        selectors: sels.iter().map(|s| sel(s)).collect(),
        expires_at,
        ..test_records::new_entry(&format!("spiffe://td/{spiffe}"), parent)
    }
}

/// Every agent's own entries; for agent 0 also expired and reserved-name rows;
/// node aliases: one whose selectors all hold for agent 0, one needing a
/// selector it lacks, one expired; a child under each.
async fn fleet(ds: &Datastore) -> (SpiffeId, AgentRecord, AgentRecord) {
    let mut all = Vec::new();
    for i in 0..AGENTS {
        for j in 0..PER_AGENT {
            all.push(child(
                &agent_id(i),
                &format!("a{i}/w{j}"),
                &["unix:uid:0"],
                None,
            ));
        }
    }
    let a0 = agent_id(0);
    let sb = "tpm:secure_boot:enabled";
    all.extend([
        child(&a0, "a0/expired", &["unix:uid:0"], Some(NOW)),
        child(&a0, "a0/later", &["unix:uid:0"], Some(at(1))),
        child(&a0, "tessera/agent/tpm/evil", &["unix:uid:0"], None),
        child(AUTHORITY, "sb-hosts", &[sb], None),
        child("spiffe://td/sb-hosts", "sb/w", &["unix:uid:0"], None),
        child(
            "spiffe://td/sb-hosts",
            "sb/expired",
            &["unix:uid:0"],
            Some(at(-5)),
        ),
        child(AUTHORITY, "strict-hosts", &[sb, "tpm:pcr7:ab"], None),
        child(
            "spiffe://td/strict-hosts",
            "strict/w",
            &["unix:uid:0"],
            None,
        ),
        child(AUTHORITY, "old-hosts", &[sb], Some(NOW)),
        child("spiffe://td/old-hosts", "old/w", &["unix:uid:0"], None),
    ]);
    ds.create_entries(all).await.unwrap();
    let agent = |i: usize, sels: &[&str]| AgentRecord {
        selectors: sels.iter().map(|s| sel(s)).collect(),
        ..test_records::agent(&agent_id(i))
    };
    (AUTHORITY.parse().unwrap(), agent(0, &[sb]), agent(1, &[]))
}

fn names(entries: &[Entry]) -> Vec<&str> {
    let mut n: Vec<&str> = entries
        .iter()
        .map(|e| e.spiffe_id.as_str().trim_start_matches("spiffe://td/"))
        .collect();
    n.sort_unstable();
    n
}

fn own(i: usize) -> Vec<String> {
    (0..PER_AGENT).map(|j| format!("a{i}/w{j}")).collect()
}

/// The per-agent queries return exactly the agent's own live entries and those
/// under the aliases it matches, as reading every entry did.
pub(crate) async fn check_per_agent_queries(ds: &Datastore) {
    let (authority, a0, a1) = fleet(ds).await;
    let everything = ds.list_entries().await.unwrap();

    let got = entries_for(ds, &a0, &authority, NOW).await.unwrap();
    let mut want = own(0);
    want.extend(["a0/later".to_string(), "sb/w".to_string()]);
    want.sort_unstable();
    assert_eq!(names(&got), want);
    assert_eq!(got, authorized(&everything, &a0, &authority, NOW));

    let got = entries_for(ds, &a1, &authority, NOW).await.unwrap();
    let mut want = own(1);
    want.sort_unstable();
    assert_eq!(names(&got), want, "another agent's or an alias's entries");
    assert_eq!(got, authorized(&everything, &a1, &authority, NOW));
    // Before agent 0's `expired` entry and the old alias expire.
    let earlier = entries_for(ds, &a0, &authority, at(-1)).await.unwrap();
    assert!(names(&earlier).contains(&"a0/expired"));
    assert!(names(&earlier).contains(&"old/w"));
    assert_eq!(earlier, authorized(&everything, &a0, &authority, at(-1)));
}

/// Signing requests read only the entries asked for, with the same rule.
pub(crate) async fn check_entries_asked_for(ds: &Datastore) {
    let (authority, a0, a1) = fleet(ds).await;
    let everything = ds.list_entries().await.unwrap();
    let id = |name: &str| {
        let e = everything
            .iter()
            .find(|e| e.spiffe_id.as_str() == format!("spiffe://td/{name}"));
        e.unwrap().id.clone()
    };
    let mut asked: Vec<String> = ["a0/w0", "a1/w0", "sb/w", "strict/w", "old/w", "a0/expired"]
        .map(id)
        .into();
    asked.extend([asked[0].clone(), "no such entry".into()]);
    let got = entries_among(ds, &a0, &authority, &asked, NOW)
        .await
        .unwrap();
    assert_eq!(names(&got), ["a0/w0", "sb/w"]);
    let got = entries_among(ds, &a1, &authority, &asked, NOW)
        .await
        .unwrap();
    assert_eq!(names(&got), ["a1/w0"]);
    let theirs = entries_among(ds, &a1, &authority, &asked[..1], NOW).await;
    assert!(theirs.unwrap().is_empty(), "agent 1 got agent 0's entry");

    // The lookups themselves, past one `IN` list's worth of values.
    let mut ids: Vec<String> = everything.iter().map(|e| e.id.clone()).collect();
    ids.push(ids[0].clone());
    assert_eq!(ds.entries_with_ids(&ids).await.unwrap(), everything);
    let parents =
        [agent_id(1), "spiffe://td/strict-hosts".into()].map(|p: String| test_records::id(&p));
    let got = ds.entries_with_parents(&parents).await.unwrap();
    let mut want = own(1);
    want.push("strict/w".into());
    want.sort_unstable();
    assert_eq!(names(&got), want);
    assert!(ds.entries_with_parents(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn per_agent_queries_return_what_reading_everything_did() {
    let (_dir, ds) = fresh().await;
    check_per_agent_queries(&ds).await;
}

#[tokio::test]
async fn signing_reads_only_the_entries_asked_for() {
    let (_dir, ds) = fresh().await;
    check_entries_asked_for(&ds).await;
}
