//! Workload API responses built from a snapshot and the caller's selectors;
//! pure, so every rule here is unit-tested without a socket.

use super::{Caller, WorkloadError};
use crate::cache::manager::{Clock, SystemClock};
use crate::cache::{Bundle, CachedSvid, Snapshot, State};
use std::collections::HashSet;
use std::sync::Arc;
use tessera_common::Selector;
use tessera_proto::workload as wl;

/// The caller's identities: entry order (so `svids[0]` is stable and default),
/// with later duplicates of a non-empty hint dropped. None past its notAfter: the
/// expiry task takes each out of the snapshot then, but its timer can fire late on
/// a busy machine, and a call in between must not get it.
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
    let now_ms = SystemClock.now_millis();
    let ids: Vec<_> = snap
        .matching(selectors)
        .into_iter()
        .filter(|s| s.ms_left(now_ms) > 0)
        .filter(|s| s.entry.hint.is_empty() || hints.insert(s.entry.hint.clone()))
        .collect();
    if ids.is_empty() {
        return Err(WorkloadError::NoIdentity);
    }
    Ok(ids)
}

fn bundle(snap: &Snapshot) -> Result<Arc<Bundle>, WorkloadError> {
    snap.bundle.clone().ok_or(WorkloadError::NotSynced)
}

/// What a stream sends, held as shared parts of the snapshot: a stream compares it with
/// what it sent last and builds the message only when it differs, so an open stream keeps
/// no copy of its last message and a call builds its message once.
pub trait Content: PartialEq + Send + 'static {
    type Message: Send + 'static;
    fn message(&self) -> Self::Message;
    /// Logs each identity this hands out that `prev` did not (first answer or rotation).
    fn log_issued(&self, _caller: &Caller, _prev: Option<&Self>) {}
}

/// A FetchX509SVID message: the caller's SVIDs and the bundle.
pub struct X509Svids {
    svids: Vec<Arc<CachedSvid>>,
    bundle: Arc<Bundle>,
}

/// The same SVID as the message carries it.
fn same_svid(a: &CachedSvid, b: &CachedSvid) -> bool {
    std::ptr::eq(a, b)
        || (a.chain == b.chain
            && a.key == b.key
            && a.spiffe_id == b.spiffe_id
            && a.entry.hint == b.entry.hint)
}

impl PartialEq for X509Svids {
    fn eq(&self, other: &Self) -> bool {
        self.bundle.x509_der == other.bundle.x509_der
            && self.svids.len() == other.svids.len()
            && self
                .svids
                .iter()
                .zip(&other.svids)
                .all(|(a, b)| same_svid(a, b))
    }
}

impl Content for X509Svids {
    type Message = wl::X509svidResponse;

    fn message(&self) -> wl::X509svidResponse {
        let svids = self
            .svids
            .iter()
            .map(|s| wl::X509svid {
                spiffe_id: s.spiffe_id.to_string(),
                x509_svid: s.chain.clone(),
                // The response owns a plain copy (prost types cannot wipe); it is
                // dropped once sent.
                x509_svid_key: s.key.to_vec(),
                bundle: self.bundle.x509_der.clone(),
                hint: s.entry.hint.clone(),
            })
            .collect();
        wl::X509svidResponse {
            svids,
            crl: Vec::new(),
            federated_bundles: Default::default(),
        }
    }

    fn log_issued(&self, caller: &Caller, prev: Option<&Self>) {
        let prev = prev.map_or(&[][..], |p| &p.svids);
        caller.issued_new("X509-SVID", prev, &self.svids);
    }
}

pub fn x509_svid(snap: &Snapshot, selectors: &[Selector]) -> Result<X509Svids, WorkloadError> {
    let svids = identities(snap, selectors)?;
    Ok(X509Svids {
        svids,
        bundle: bundle(snap)?,
    })
}

/// A FetchX509Bundles message: the trust domain's X.509 bundle.
pub struct X509Bundle(Arc<Bundle>);

impl PartialEq for X509Bundle {
    fn eq(&self, other: &Self) -> bool {
        self.0.trust_domain == other.0.trust_domain && self.0.x509_der == other.0.x509_der
    }
}

impl Content for X509Bundle {
    type Message = wl::X509BundlesResponse;

    fn message(&self) -> wl::X509BundlesResponse {
        wl::X509BundlesResponse {
            crl: Vec::new(),
            bundles: [(self.0.trust_domain.clone(), self.0.x509_der.clone())]
                .into_iter()
                .collect(),
        }
    }
}

pub fn x509_bundles(snap: &Snapshot, selectors: &[Selector]) -> Result<X509Bundle, WorkloadError> {
    identities(snap, selectors)?;
    bundle(snap).map(X509Bundle)
}

/// A FetchJWTBundles message: the trust domain's JWKS.
pub struct JwtBundle(Arc<Bundle>);

impl PartialEq for JwtBundle {
    fn eq(&self, other: &Self) -> bool {
        self.0.trust_domain == other.0.trust_domain && self.0.jwks_json == other.0.jwks_json
    }
}

impl Content for JwtBundle {
    type Message = wl::JwtBundlesResponse;

    fn message(&self) -> wl::JwtBundlesResponse {
        wl::JwtBundlesResponse {
            bundles: [(self.0.trust_domain.clone(), self.0.jwks_json.clone())]
                .into_iter()
                .collect(),
        }
    }
}

pub fn jwt_bundles(snap: &Snapshot, selectors: &[Selector]) -> Result<JwtBundle, WorkloadError> {
    identities(snap, selectors)?;
    bundle(snap).map(JwtBundle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::entry::Entry;

    fn svid(entry: &str, id: &str, sel: &str, hint: &str) -> Arc<CachedSvid> {
        svid_until(entry, id, sel, hint, i64::MAX)
    }

    fn svid_until(entry: &str, id: &str, sel: &str, hint: &str, not_after: i64) -> Arc<CachedSvid> {
        Arc::new(CachedSvid {
            entry: Entry::test(entry, id, vec![Selector::parse(sel).unwrap()], hint),
            spiffe_id: id.parse().unwrap(),
            template: None,
            chain: vec![1],
            key: vec![2].into(),
            not_before: 0,
            not_after,
            rotate_at: i64::MAX,
            monotonic: None,
        })
    }

    /// The expiry task late (the snapshot still holds an SVID past its notAfter):
    /// the call gets the caller's other identity, or none, never the expired one,
    /// and a later one with the same hint takes its place.
    #[test]
    fn an_svid_past_its_not_after_is_not_handed_out_before_the_expiry_task_runs() {
        let past = tessera_common::unix_now() - 1;
        let s = snap(
            State::Ready,
            vec![
                svid_until("1", "spiffe://td/old", "unix:uid:0", "web", past),
                svid("2", "spiffe://td/new", "unix:uid:0", "web"),
            ],
        );
        let got = identities(&s, &uid0()).unwrap();
        let ids: Vec<String> = got.iter().map(|s| s.spiffe_id.to_string()).collect();
        assert_eq!(ids, ["spiffe://td/new"]);
        let alone = snap(
            State::Ready,
            vec![svid_until("1", "spiffe://td/old", "unix:uid:0", "", past)],
        );
        assert!(matches!(
            x509_svid(&alone, &uid0()),
            Err(WorkloadError::NoIdentity)
        ));
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
        let r = x509_svid(&s, &uid0()).unwrap().message();
        let ids: Vec<_> = r.svids.iter().map(|s| s.spiffe_id.as_str()).collect();
        assert_eq!(ids, vec!["spiffe://td/a", "spiffe://td/c", "spiffe://td/d"]);
        assert!(r.svids.iter().all(|s| s.bundle == vec![9]));
        let b = x509_bundles(&s, &uid0()).unwrap().message();
        assert_eq!(b.bundles.get("spiffe://td"), Some(&vec![9]));
    }

    /// A stream sends again only when what the message would hold changed: the same SVIDs
    /// re-signed into new snapshot entries are no update; a new chain or bundle is one.
    #[test]
    fn content_compares_what_the_message_holds() {
        let caller = uid0();
        let s = |svids| snap(State::Ready, svids);
        let a = x509_svid(
            &s(vec![svid("1", "spiffe://td/a", "unix:uid:0", "")]),
            &caller,
        );
        let same = x509_svid(
            &s(vec![svid("1", "spiffe://td/a", "unix:uid:0", "")]),
            &caller,
        );
        assert!(a.as_ref().unwrap() == same.as_ref().unwrap());

        let mut rotated = svid("1", "spiffe://td/a", "unix:uid:0", "");
        Arc::get_mut(&mut rotated).unwrap().chain = vec![7];
        let rotated = x509_svid(&s(vec![rotated]), &caller).unwrap();
        assert!(a.as_ref().unwrap() != &rotated);
        let mut rekeyed = svid("1", "spiffe://td/a", "unix:uid:0", "");
        Arc::get_mut(&mut rekeyed).unwrap().key = vec![3].into();
        let rekeyed = x509_svid(&s(vec![rekeyed]), &caller).unwrap();
        assert!(a.as_ref().unwrap() != &rekeyed);
        let hinted = x509_svid(
            &s(vec![svid("1", "spiffe://td/a", "unix:uid:0", "h")]),
            &caller,
        );
        assert!(a.as_ref().unwrap() != hinted.as_ref().unwrap());
        let two = |x, y| {
            let (x, y) = (
                svid("1", x, "unix:uid:0", ""),
                svid("2", y, "unix:uid:0", ""),
            );
            x509_svid(&s(vec![x, y]), &caller).unwrap()
        };
        assert!(two("spiffe://td/a", "spiffe://td/b") != two("spiffe://td/b", "spiffe://td/a"));

        let mut other_bundle = s(vec![svid("1", "spiffe://td/a", "unix:uid:0", "")]);
        other_bundle.bundle = Some(Arc::new(Bundle {
            trust_domain: "spiffe://td".into(),
            x509_der: vec![8],
            jwks_json: b"{\"keys\":[]}".to_vec(),
        }));
        let new_x509 = x509_svid(&other_bundle, &caller).unwrap();
        assert!(a.as_ref().unwrap() != &new_x509);
        let old = s(vec![svid("1", "spiffe://td/a", "unix:uid:0", "")]);
        assert!(
            x509_bundles(&old, &caller).unwrap() != x509_bundles(&other_bundle, &caller).unwrap()
        );
        // The JWKS did not change: no JWT bundle update.
        assert!(
            jwt_bundles(&old, &caller).unwrap() == jwt_bundles(&other_bundle, &caller).unwrap()
        );
    }
}
