//! Which entries an agent may sign for: those parented to it, and those
//! parented to a node alias whose selectors all hold for the agent. Read per
//! agent — the node aliases (few), then the entries under the agent and the
//! aliases it matches in one query — never the whole fleet's entries.

use crate::datastore::{AgentRecord, Datastore, DatastoreError, Entry, EntryFilter, EntrySpiffeId};
use crate::reserved;
use std::collections::HashSet;
use tessera_common::selector::all_present;
use tessera_common::{SpiffeId, UnixTime};

/// Every entry `agent` may sign for at `now`, oldest first.
pub async fn entries_for(
    ds: &Datastore,
    agent: &AgentRecord,
    authority: &SpiffeId,
    now: UnixTime,
) -> Result<Vec<Entry>, DatastoreError> {
    let parents = parents(&aliases(ds, authority).await?, agent, authority, now);
    let under = ds.entries_with_parents(&parents).await?;
    Ok(signable(&under, &parents, authority, now))
}

/// Of the entries `ids`, those [`entries_for`] would return: one deleted or no
/// longer authorised is simply absent, so it fails alone.
pub async fn entries_among(
    ds: &Datastore,
    agent: &AgentRecord,
    authority: &SpiffeId,
    ids: &[String],
    now: UnixTime,
) -> Result<Vec<Entry>, DatastoreError> {
    let asked = ds.entries_with_ids(ids).await?;
    // Entries parented to the agent itself need no alias to be authorised.
    let parents = if asked.iter().all(|e| e.parent_id == agent.id) {
        vec![agent.id.clone()]
    } else {
        parents(&aliases(ds, authority).await?, agent, authority, now)
    };
    let ids: HashSet<&str> = ids.iter().map(String::as_str).collect();
    Ok(signable(&asked, &parents, authority, now)
        .into_iter()
        .filter(|e| ids.contains(e.id.as_str()))
        .collect())
}

/// The node aliases: entries parented to the authority.
async fn aliases(ds: &Datastore, authority: &SpiffeId) -> Result<Vec<Entry>, DatastoreError> {
    ds.find_entries(&EntryFilter {
        parent_id: Some(authority.to_string()),
        ..Default::default()
    })
    .await
}

/// The IDs whose children `agent` may sign for: its own, and those of the live
/// aliases in `entries` whose selectors all hold for it.
fn parents(
    entries: &[Entry],
    agent: &AgentRecord,
    authority: &SpiffeId,
    now: UnixTime,
) -> Vec<SpiffeId> {
    let mut parents = vec![agent.id.clone()];
    parents.extend(
        entries
            .iter()
            .filter(|e| live(e, authority, now))
            .filter(|e| e.parent_id == *authority && all_present(&e.selectors, &agent.selectors))
            // A template cannot be an alias (refused at creation): only IDs parent.
            .filter_map(|e| match &e.spiffe_id {
                EntrySpiffeId::Id(id) => Some(id.clone()),
                EntrySpiffeId::Template(_) => None,
            }),
    );
    parents
}

/// The live entries of `entries` parented to one of `parents`, in order.
fn signable(
    entries: &[Entry],
    parents: &[SpiffeId],
    authority: &SpiffeId,
    now: UnixTime,
) -> Vec<Entry> {
    entries
        .iter()
        .filter(|e| live(e, authority, now))
        .filter(|e| parents.contains(&e.parent_id))
        .cloned()
        .collect()
}

/// Not expired, and not breaking the reserved-name rule: stored rows that do
/// (written before it existed, or straight into the database) are never
/// signed, nor do they act as aliases.
fn live(e: &Entry, authority: &SpiffeId, now: UnixTime) -> bool {
    e.expires_at.is_none_or(|t| t > now)
        && match reserved::violation(authority, e.spiffe_id.as_str(), e.parent_id.as_str()) {
            None => true,
            Some(why) => {
                tracing::warn!(entry_id = %e.id, "entry ignored: {why}");
                false
            }
        }
}

#[cfg(test)]
pub(crate) mod tests;
