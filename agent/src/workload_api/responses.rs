//! Workload API responses built from a snapshot and the caller's selectors;
//! pure, so every rule here is unit-tested without a socket.

use super::WorkloadError;
use crate::cache::{Bundle, CachedSvid, Snapshot, State};
use std::collections::HashSet;
use std::sync::Arc;
use tessera_common::Selector;
use tessera_proto::workload as wl;

/// The caller's identities: entry order (so `svids[0]` is stable and default),
/// with later duplicates of a non-empty hint dropped.
pub fn identities(
    snap: &Snapshot,
    selectors: &[Selector],
) -> Result<Vec<Arc<CachedSvid>>, WorkloadError> {
    match snap.state {
        State::Syncing => return Err(WorkloadError::NotSynced),
        State::Refused => return Err(WorkloadError::NoIdentity),
        State::Ready => {}
    }
    let mut hints = HashSet::new();
    let ids: Vec<_> = snap
        .matching(selectors)
        .into_iter()
        .filter(|s| s.entry.hint.is_empty() || hints.insert(s.entry.hint.clone()))
        .collect();
    if ids.is_empty() {
        return Err(WorkloadError::NoIdentity);
    }
    Ok(ids)
}

fn bundle(snap: &Snapshot) -> Result<&Bundle, WorkloadError> {
    snap.bundle.as_deref().ok_or(WorkloadError::NotSynced)
}

pub fn x509_svid(
    snap: &Snapshot,
    selectors: &[Selector],
) -> Result<wl::X509svidResponse, WorkloadError> {
    let ids = identities(snap, selectors)?;
    let bundle = &bundle(snap)?.x509_der;
    let svids = ids
        .iter()
        .map(|s| wl::X509svid {
            spiffe_id: s.spiffe_id.to_string(),
            x509_svid: s.chain.clone(),
            // The response owns a plain copy (prost types cannot wipe); it is
            // dropped once sent.
            x509_svid_key: s.key.to_vec(),
            bundle: bundle.clone(),
            hint: s.entry.hint.clone(),
        })
        .collect();
    Ok(wl::X509svidResponse {
        svids,
        crl: Vec::new(),
        federated_bundles: Default::default(),
    })
}

pub fn x509_bundles(
    snap: &Snapshot,
    selectors: &[Selector],
) -> Result<wl::X509BundlesResponse, WorkloadError> {
    identities(snap, selectors)?;
    let b = bundle(snap)?;
    Ok(wl::X509BundlesResponse {
        crl: Vec::new(),
        bundles: [(b.trust_domain.clone(), b.x509_der.clone())]
            .into_iter()
            .collect(),
    })
}

pub fn jwt_bundles(
    snap: &Snapshot,
    selectors: &[Selector],
) -> Result<wl::JwtBundlesResponse, WorkloadError> {
    identities(snap, selectors)?;
    let b = bundle(snap)?;
    Ok(wl::JwtBundlesResponse {
        bundles: [(b.trust_domain.clone(), b.jwks_json.clone())]
            .into_iter()
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::entry::Entry;

    fn svid(entry: &str, id: &str, sel: &str, hint: &str) -> Arc<CachedSvid> {
        Arc::new(CachedSvid {
            entry: Entry::test(entry, id, vec![Selector::parse(sel).unwrap()], hint),
            spiffe_id: id.parse().unwrap(),
            template: None,
            chain: vec![1],
            key: vec![2].into(),
            not_before: 0,
            not_after: i64::MAX,
            rotate_at: i64::MAX,
            monotonic: None,
        })
    }

    fn snap(state: State, svids: Vec<Arc<CachedSvid>>) -> Snapshot {
        let bundle = Some(Arc::new(Bundle {
            trust_domain: "spiffe://td".into(),
            x509_der: vec![9],
            jwks_json: b"{\"keys\":[]}".to_vec(),
        }));
        Snapshot {
            state,
            svids,
            templates: Vec::new(),
            bundle,
            index: Default::default(),
        }
    }

    fn uid0() -> Vec<Selector> {
        vec![Selector::parse("unix:uid:0").unwrap()]
    }

    #[test]
    fn not_synced_is_unavailable_and_refused_is_denied() {
        assert!(matches!(
            x509_svid(&snap(State::Syncing, vec![]), &uid0()),
            Err(WorkloadError::NotSynced)
        ));
        let s = vec![svid("1", "spiffe://td/a", "unix:uid:0", "")];
        assert!(matches!(
            x509_svid(&snap(State::Refused, s), &uid0()),
            Err(WorkloadError::NoIdentity)
        ));
    }

    #[test]
    fn unmatched_caller_is_denied_everywhere() {
        let s = snap(
            State::Ready,
            vec![svid("1", "spiffe://td/a", "unix:uid:1000", "")],
        );
        assert!(matches!(
            x509_svid(&s, &uid0()),
            Err(WorkloadError::NoIdentity)
        ));
        assert!(matches!(
            x509_bundles(&s, &uid0()),
            Err(WorkloadError::NoIdentity)
        ));
        assert!(matches!(
            jwt_bundles(&s, &uid0()),
            Err(WorkloadError::NoIdentity)
        ));
    }

    #[test]
    fn order_is_entry_order_and_hints_unique() {
        let s = snap(
            State::Ready,
            vec![
                svid("1", "spiffe://td/a", "unix:uid:0", "internal"),
                svid("2", "spiffe://td/b", "unix:uid:0", "internal"),
                svid("3", "spiffe://td/c", "unix:uid:0", ""),
                svid("4", "spiffe://td/d", "unix:uid:0", ""),
            ],
        );
        let r = x509_svid(&s, &uid0()).unwrap();
        let ids: Vec<_> = r.svids.iter().map(|s| s.spiffe_id.as_str()).collect();
        assert_eq!(ids, vec!["spiffe://td/a", "spiffe://td/c", "spiffe://td/d"]);
        assert!(r.svids.iter().all(|s| s.bundle == vec![9]));
        let b = x509_bundles(&s, &uid0()).unwrap();
        assert_eq!(b.bundles.get("spiffe://td"), Some(&vec![9]));
    }
}
