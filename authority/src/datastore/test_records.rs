//! Records for tests, every field not named empty: struct-update bases
//! (`..test_records::entry(..)`) now that IDs have no empty default.

use super::{AgentRecord, Entry, EntrySpiffeId, NewEntry};
use tessera_common::{SpiffeId, UnixTime};

pub(crate) fn id(s: &str) -> SpiffeId {
    s.parse().unwrap()
}

pub(crate) fn new_entry(spiffe_id: &str, parent_id: &str) -> NewEntry {
    NewEntry {
        spiffe_id: EntrySpiffeId::parse(spiffe_id).unwrap(),
        parent_id: id(parent_id),
        selectors: Vec::new(),
        x509_ttl: None,
        jwt_ttl: None,
        dns_names: Vec::new(),
        hint: String::new(),
        admin: false,
        expires_at: None,
    }
}

pub(crate) fn entry(entry_id: &str, spiffe_id: &str, parent_id: &str) -> Entry {
    new_entry(spiffe_id, parent_id).stored(entry_id.into(), UnixTime::from_secs(0))
}

pub(crate) fn agent(agent_id: &str) -> AgentRecord {
    AgentRecord {
        id: id(agent_id),
        method: String::new(),
        selectors: Vec::new(),
        serial: String::new(),
        prev_serial: None,
        expires_at: UnixTime::from_secs(0),
        attested_at: UnixTime::from_secs(0),
        evicted: false,
    }
}
