//! A synced registration entry as the cache keeps it: the fields the agent
//! uses, held once and shared (Arc) by the entry list and every SVID signed
//! for it. An SVID with its own copies of the ID and selectors cost about
//! 250 B more each (10,000 entries: 2.4 MB).

use std::collections::HashMap;
use std::sync::Arc;
use tessera_common::Selector;
use tessera_proto::authority as pb;

#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    /// A SPIFFE ID, or a template (see `spiffe_template`).
    pub spiffe_id: String,
    /// Only for the entries file (`inspect`); shared by entries with the same parent.
    pub parent_id: Arc<str>,
    pub selectors: Vec<Selector>,
    pub hint: String,
    /// Bumped by the authority on every change to the entry.
    pub revision: i64,
}

impl Entry {
    /// Whether `e` says the same in every field kept here.
    fn same_as(&self, e: &pb::Entry) -> bool {
        self.revision == e.revision
            && self.id == e.id
            && self.spiffe_id == e.spiffe_id
            && *self.parent_id == *e.parent_id
            && self.hint == e.hint
            && self.selectors.len() == e.selectors.len()
            && self
                .selectors
                .iter()
                .zip(&e.selectors)
                .all(|(a, b)| a.kind == b.r#type && a.value == b.value)
    }
}

/// `synced` as the cache keeps it, in its order: an entry unchanged since
/// `old` is `old`'s Arc (its SVID keeps sharing it). None: nothing changed.
pub fn resync<'a>(
    old: impl ExactSizeIterator<Item = &'a Arc<Entry>> + Clone,
    synced: &[pb::Entry],
) -> Option<Vec<Arc<Entry>>> {
    if old.len() == synced.len() && old.clone().zip(synced).all(|(a, b)| a.same_as(b)) {
        return None;
    }
    let by_id: HashMap<&str, &Arc<Entry>> = old.map(|e| (e.id.as_str(), e)).collect();
    let mut parent: Option<Arc<str>> = None;
    let entries = synced
        .iter()
        .map(|e| match by_id.get(e.id.as_str()) {
            Some(kept) if kept.same_as(e) => Arc::clone(kept),
            _ => {
                let parent_id = match parent.take() {
                    Some(p) if *p == *e.parent_id => p,
                    _ => Arc::from(e.parent_id.as_str()),
                };
                parent = Some(parent_id.clone());
                Arc::new(Entry {
                    id: e.id.clone(),
                    spiffe_id: e.spiffe_id.clone(),
                    parent_id,
                    selectors: e.selectors.iter().map(Selector::from).collect(),
                    hint: e.hint.clone(),
                    revision: e.revision,
                })
            }
        })
        .collect();
    Some(entries)
}

#[cfg(test)]
impl Entry {
    /// An entry with what the Workload API looks at; the rest empty.
    pub fn test(id: &str, spiffe_id: &str, selectors: Vec<Selector>, hint: &str) -> Arc<Entry> {
        Arc::new(Entry {
            id: id.into(),
            spiffe_id: spiffe_id.into(),
            parent_id: Arc::from(""),
            selectors,
            hint: hint.into(),
            revision: 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pb_entry(id: &str, revision: i64) -> pb::Entry {
        pb::Entry {
            id: id.into(),
            spiffe_id: format!("spiffe://td/{id}"),
            parent_id: "spiffe://td/agent".into(),
            selectors: vec![pb::Selector {
                r#type: "unix".into(),
                value: format!("uid:{id}"),
            }],
            revision,
            ..Default::default()
        }
    }

    #[test]
    fn unchanged_entries_keep_their_copy_and_parents_are_shared() {
        let first = resync([].iter(), &[pb_entry("a", 1), pb_entry("b", 1)]).unwrap();
        assert!(Arc::ptr_eq(&first[0].parent_id, &first[1].parent_id));
        assert_eq!(
            first[1].selectors,
            vec![Selector::parse("unix:uid:b").unwrap()]
        );
        assert!(resync(first.iter(), &[pb_entry("a", 1), pb_entry("b", 1)]).is_none());
        let next = resync(first.iter(), &[pb_entry("b", 1), pb_entry("a", 2)]).unwrap();
        assert!(Arc::ptr_eq(&next[0], &first[1]), "unchanged, moved: kept");
        assert_eq!(next[1].revision, 2);
        assert!(!Arc::ptr_eq(&next[1], &first[0]), "changed: a new copy");
        let mut hinted = pb_entry("b", 1);
        hinted.hint = "h".into();
        assert!(resync(next.iter().take(1), &[hinted]).is_some());
    }
}
