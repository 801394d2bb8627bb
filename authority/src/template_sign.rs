//! Which SPIFFE ID to sign for an entry: its own, or, for a templated entry, the
//! expansion the agent asks for, once it is proven to be one and the agent has
//! not asked for too many distinct expansions lately.

use crate::datastore::{Entry, EntrySpiffeId};
use crate::error::ApiError;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use tessera_common::SpiffeId;

/// Distinct expansions one agent may get for one entry per window.
pub const MAX_EXPANSIONS: usize = 1024;
pub const WINDOW_SECS: i64 = 3600;
/// (agent, entry) pairs tracked at once; beyond it, expired windows are dropped.
const MAX_TRACKED: usize = 100_000;

/// The ID to sign, and the template it expands (for the audit trail).
#[derive(Debug)]
pub struct SignedId {
    pub id: SpiffeId,
    pub template: Option<String>,
}

/// `requested` is the agent's `spiffe_id` field: empty for the entry's own ID.
pub fn signed_id(
    authority: &SpiffeId,
    entry: &Entry,
    requested: &str,
) -> Result<SignedId, ApiError> {
    let template = match &entry.spiffe_id {
        EntrySpiffeId::Id(id) => {
            if !requested.is_empty() && requested != id.as_str() {
                return Err(ApiError::PermissionDenied(format!(
                    "spiffe_id: entry {} names {id}, not {requested:?}",
                    entry.id
                )));
            }
            return Ok(SignedId {
                id: id.clone(),
                template: None,
            });
        }
        EntrySpiffeId::Template(t) => t,
    };
    if requested.is_empty() {
        return Err(ApiError::InvalidArgument(format!(
            "spiffe_id: entry {} is a template; ask for its expansion",
            entry.id
        )));
    }
    if !template.is_expansion(requested) {
        return Err(ApiError::PermissionDenied(format!(
            "spiffe_id: {:?} is not an expansion of {template} (entry {})",
            requested.chars().take(256).collect::<String>(),
            entry.id
        )));
    }
    let id = SpiffeId::parse_workload(requested)
        .map_err(|err| ApiError::PermissionDenied(format!("spiffe_id: {err}")))?;
    // A placeholder could fill in a reserved name (`{unix:user}` = "tessera").
    if let Some(why) = crate::reserved::violation(authority, id.as_str(), entry.parent_id.as_str())
    {
        return Err(ApiError::PermissionDenied(why));
    }
    Ok(SignedId {
        id,
        template: Some(template.to_string()),
    })
}

/// Caps the distinct expansions each agent gets per entry per window, so a
/// compromised agent cannot mint an unbounded set of identities from one entry.
#[derive(Default)]
pub struct ExpansionLimit {
    windows: Mutex<HashMap<(String, String), Window>>,
}

struct Window {
    start: i64,
    ids: HashSet<String>,
}

impl ExpansionLimit {
    /// Admits `id` for (agent, entry) at `now`: always when already admitted in the window.
    pub fn admit(&self, agent: &str, entry: &str, id: &str, now: i64) -> Result<(), ApiError> {
        let mut map = self
            .windows
            .lock()
            .map_err(|_| ApiError::Internal("expansion limit poisoned".into()))?;
        if map.len() >= MAX_TRACKED {
            map.retain(|_, w| now - w.start < WINDOW_SECS);
        }
        let w = map
            .entry((agent.to_string(), entry.to_string()))
            .or_insert_with(|| Window {
                start: now,
                ids: HashSet::new(),
            });
        if now - w.start >= WINDOW_SECS {
            w.start = now;
            w.ids.clear();
        }
        if w.ids.contains(id) {
            return Ok(());
        }
        if w.ids.len() >= MAX_EXPANSIONS {
            return Err(ApiError::ResourceExhausted(format!(
                "spiffe_id: agent {agent} already got {MAX_EXPANSIONS} distinct expansions of entry {entry} this hour"
            )));
        }
        w.ids.insert(id.to_string());
        Ok(())
    }
}

#[cfg(test)]
mod tests;
