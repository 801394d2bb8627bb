//! The rule over entries held in memory; `datastore::tests::agent_entries`
//! checks the per-agent queries against it on each backend.

use super::*;
use crate::datastore::test_records;
use tessera_common::Selector;

/// The rule over a set of entries held in memory: what reading every entry
/// and filtering did before the per-agent queries, and what they must equal.
pub(crate) fn authorized(
    all: &[Entry],
    agent: &AgentRecord,
    authority: &SpiffeId,
    now: UnixTime,
) -> Vec<Entry> {
    signable(all, &parents(all, agent, authority, now), authority, now)
}

fn entry(id: &str, parent: &str, spiffe: &str, sel: &[&str]) -> Entry {
    Entry {
        selectors: sel.iter().map(|s| Selector::parse(s).unwrap()).collect(),
        ..test_records::entry(id, spiffe, parent)
    }
}

fn authority_and_secure_boot_agent() -> (SpiffeId, AgentRecord) {
    let agent = AgentRecord {
        selectors: vec![Selector::parse("tpm:secure_boot:enabled").unwrap()],
        ..test_records::agent("spiffe://td/tessera/agent/a")
    };
    ("spiffe://td/tessera/authority".parse().unwrap(), agent)
}

#[test]
fn agent_gets_own_and_matching_alias_entries_only() {
    let (authority, agent) = authority_and_secure_boot_agent();
    let alias = authority.as_str();
    let all = vec![
        entry(
            "1",
            "spiffe://td/tessera/agent/a",
            "spiffe://td/w1",
            &["unix:uid:0"],
        ),
        entry(
            "2",
            "spiffe://td/tessera/agent/b",
            "spiffe://td/w2",
            &["unix:uid:0"],
        ),
        entry(
            "3",
            alias,
            "spiffe://td/sb-hosts",
            &["tpm:secure_boot:enabled"],
        ),
        entry(
            "4",
            "spiffe://td/sb-hosts",
            "spiffe://td/w4",
            &["unix:uid:0"],
        ),
        entry(
            "5",
            alias,
            "spiffe://td/other",
            &["tpm:secure_boot:disabled"],
        ),
        entry("6", "spiffe://td/other", "spiffe://td/w6", &["unix:uid:0"]),
    ];
    let ids: Vec<_> = authorized(&all, &agent, &authority, UnixTime::from_secs(0))
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, vec!["1", "4"]);
}

#[test]
fn stored_entries_with_reserved_ids_are_never_authorized() {
    let (authority, agent) = authority_and_secure_boot_agent();
    let all = vec![
        entry(
            "1",
            "spiffe://td/tessera/agent/a",
            "spiffe://td/tessera/authority",
            &["unix:uid:0"],
        ),
        entry(
            "2",
            authority.as_str(),
            "spiffe://td/tessera/agent/tpm/x",
            &["tpm:secure_boot:enabled"],
        ),
        entry(
            "3",
            "spiffe://td/tessera/agent/tpm/x",
            "spiffe://td/w3",
            &["unix:uid:0"],
        ),
        entry(
            "4",
            "spiffe://td/tessera/agent/a",
            "spiffe://td/w4",
            &["unix:uid:0"],
        ),
    ];
    let ids: Vec<_> = authorized(&all, &agent, &authority, UnixTime::from_secs(0))
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, vec!["4"]);
}

#[test]
fn expired_entries_are_not_authorized() {
    let agent = test_records::agent("spiffe://td/tessera/agent/a");
    let mut e = entry(
        "1",
        "spiffe://td/tessera/agent/a",
        "spiffe://td/w1",
        &["unix:uid:0"],
    );
    e.expires_at = Some(UnixTime::from_secs(100));
    let authority: SpiffeId = "spiffe://td/tessera/authority".parse().unwrap();
    assert_eq!(
        authorized(&[e.clone()], &agent, &authority, UnixTime::from_secs(50)).len(),
        1
    );
    assert!(authorized(&[e], &agent, &authority, UnixTime::from_secs(100)).is_empty());
}
