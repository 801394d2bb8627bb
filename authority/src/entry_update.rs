//! `UpdateEntry`: the requested changes applied to a stored entry, and which
//! fields they really changed (an update that changes nothing writes nothing).

use crate::datastore::Entry;
use tessera_common::Selector;
use tessera_proto::authority as pb;

/// `e` with every field set in `req` replaced; the names of the fields whose
/// value differs, in a fixed order (empty: nothing to store).
pub fn apply(e: &Entry, req: &pb::UpdateEntryRequest) -> (Entry, Vec<&'static str>) {
    let mut next = e.clone();
    let mut changed = Vec::new();
    let positive = |v: i64| (v != 0).then_some(v);
    if let Some(s) = &req.selectors {
        next.selectors = s.selectors.iter().map(Selector::from).collect();
        if same_set(&next.selectors, &e.selectors) {
            // Same set: keep the stored order, so nothing changes.
            next.selectors.clone_from(&e.selectors);
        } else {
            changed.push("selectors");
        }
    }
    if let Some(t) = req.x509_ttl {
        next.x509_ttl = positive(t);
        if next.x509_ttl != e.x509_ttl {
            changed.push("x509_ttl");
        }
    }
    if let Some(t) = req.jwt_ttl {
        next.jwt_ttl = positive(t);
        if next.jwt_ttl != e.jwt_ttl {
            changed.push("jwt_ttl");
        }
    }
    if let Some(d) = &req.dns_names {
        next.dns_names.clone_from(&d.names);
        if next.dns_names != e.dns_names {
            changed.push("dns_names");
        }
    }
    if let Some(h) = &req.hint {
        next.hint.clone_from(h);
        if next.hint != e.hint {
            changed.push("hint");
        }
    }
    if let Some(a) = req.admin {
        next.admin = a;
        if next.admin != e.admin {
            changed.push("admin");
        }
    }
    if let Some(t) = req.expires_at {
        next.expires_at = positive(t);
        if next.expires_at != e.expires_at {
            changed.push("expires_at");
        }
    }
    (next, changed)
}

fn same_set(a: &[Selector], b: &[Selector]) -> bool {
    let sorted = |v: &[Selector]| {
        let mut v = v.to_vec();
        v.sort();
        v.dedup();
        v
    };
    sorted(a) == sorted(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored() -> Entry {
        Entry {
            id: "e1".into(),
            spiffe_id: "spiffe://td/web".into(),
            parent_id: "spiffe://td/agent".into(),
            selectors: vec![
                Selector::new("unix", "uid:1"),
                Selector::new("unix", "gid:1"),
            ],
            x509_ttl: Some(3600),
            dns_names: vec!["web".into()],
            hint: "h".into(),
            revision: 3,
            ..Default::default()
        }
    }

    #[test]
    fn unset_fields_and_equal_values_change_nothing() {
        let e = stored();
        let (next, changed) = apply(&e, &pb::UpdateEntryRequest::default());
        assert_eq!((next, changed.len()), (e.clone(), 0));
        let same = pb::UpdateEntryRequest {
            selectors: Some(pb::Selectors {
                selectors: vec![
                    Selector::new("unix", "gid:1").into(),
                    Selector::new("unix", "uid:1").into(),
                ],
            }),
            x509_ttl: Some(3600),
            hint: Some("h".into()),
            dns_names: Some(pb::DnsNames {
                names: vec!["web".into()],
            }),
            ..Default::default()
        };
        let (next, changed) = apply(&e, &same);
        assert_eq!(next, e);
        assert!(changed.is_empty(), "{changed:?}");
    }

    #[test]
    fn set_and_cleared_fields_are_named() {
        let e = stored();
        let req = pb::UpdateEntryRequest {
            x509_ttl: Some(0),
            jwt_ttl: Some(60),
            dns_names: Some(pb::DnsNames::default()),
            admin: Some(true),
            expires_at: Some(1_900_000_000),
            ..Default::default()
        };
        let (next, changed) = apply(&e, &req);
        assert_eq!(
            changed,
            ["x509_ttl", "jwt_ttl", "dns_names", "admin", "expires_at"]
        );
        assert_eq!(next.x509_ttl, None);
        assert_eq!(next.jwt_ttl, Some(60));
        assert!(next.dns_names.is_empty() && next.admin);
        assert_eq!(next.expires_at, Some(1_900_000_000));
        assert_eq!((next.id, next.revision), (e.id, e.revision));
    }
}
