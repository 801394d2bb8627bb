//! The authority's own names. Everything under `spiffe://<td>/tessera/` names the
//! authority or an agent, so no registration entry may take such an ID: an SVID
//! for `…/tessera/authority` would let its holder pose as the authority to agents,
//! one for `…/tessera/agent/…` as an agent. A parent under `/tessera/` must be the
//! authority itself (node aliases) or an agent ID.

use tessera_common::SpiffeId;

/// Why an entry's IDs are not allowed (None: they are). Applied when entries are
/// created and again before any entry is signed, so rows stored before this rule
/// (or written to the database directly) are never honoured.
pub fn violation(authority: &SpiffeId, spiffe_id: &str, parent_id: &str) -> Option<String> {
    if under_tessera(authority, spiffe_id) {
        return Some(format!(
            "spiffe_id: {spiffe_id} is reserved (IDs under spiffe://{}/tessera/ name the \
             authority and its agents)",
            authority.trust_domain()
        ));
    }
    if under_tessera(authority, parent_id)
        && parent_id != authority.as_str()
        && !is_agent(authority, parent_id)
    {
        return Some(format!(
            "parent_id: {parent_id} is reserved (a parent under spiffe://{}/tessera/ must be \
             {authority} or an agent ID)",
            authority.trust_domain()
        ));
    }
    None
}

fn under_tessera(authority: &SpiffeId, id: &str) -> bool {
    let prefix = format!("spiffe://{}/tessera", authority.trust_domain());
    id.strip_prefix(&prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Under `…/tessera/agent/`, where the authority names agents (the rule
/// the node API applies to callers).
fn is_agent(authority: &SpiffeId, id: &str) -> bool {
    let prefix = format!("spiffe://{}/tessera/agent/", authority.trust_domain());
    id.strip_prefix(&prefix)
        .is_some_and(|rest| !rest.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authority() -> SpiffeId {
        "spiffe://td/tessera/authority".parse().unwrap()
    }

    #[test]
    fn reserved_ids_are_refused() {
        let a = authority();
        let agent = "spiffe://td/tessera/agent/tpm/abcd";
        for id in [
            "spiffe://td/tessera/authority",
            "spiffe://td/tessera/agent/tpm/abcd",
            "spiffe://td/tessera",
            "spiffe://td/tessera/x",
        ] {
            let why = violation(&a, id, agent).expect(id);
            assert!(why.starts_with("spiffe_id: "), "{why}");
            assert!(violation(&a, id, a.as_str()).is_some(), "{id} as alias");
        }
        for parent in [
            "spiffe://td/tessera",
            "spiffe://td/tessera/other",
            "spiffe://td/tessera/agent",
            "spiffe://td/tessera/agent/",
            "spiffe://td/tessera/authority/x",
        ] {
            let why = violation(&a, "spiffe://td/web", parent).expect(parent);
            assert!(why.starts_with("parent_id: "), "{why}");
        }
    }

    #[test]
    fn ordinary_entries_and_aliases_pass() {
        let a = authority();
        assert_eq!(
            violation(&a, "spiffe://td/web", "spiffe://td/tessera/agent/tpm/ab"),
            None
        );
        assert_eq!(
            violation(
                &a,
                "spiffe://td/web",
                "spiffe://td/tessera/agent/join_token/t"
            ),
            None
        );
        assert_eq!(violation(&a, "spiffe://td/sb-hosts", a.as_str()), None);
        assert_eq!(
            violation(&a, "spiffe://td/web", "spiffe://td/sb-hosts"),
            None
        );
        assert_eq!(
            violation(&a, "spiffe://td/tesseract", "spiffe://td/x"),
            None
        );
        assert_eq!(
            violation(&a, "spiffe://td/x/tessera/y", "spiffe://td/x"),
            None
        );
    }
}
