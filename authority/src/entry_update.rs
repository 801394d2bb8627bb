//! `UpdateEntry`: the requested changes applied to a stored entry, and which
//! fields they really changed (an update that changes nothing writes nothing).

use crate::authority::ttl;
use crate::datastore::{Datastore, DatastoreError, Entry};
use crate::error::ApiError;
use tessera_common::Selector;
use tessera_proto::authority as pb;

/// Reads, merges and writes before giving up when others keep changing the entry.
const ATTEMPTS: usize = 5;

/// Applies `req` to the stored entry; `validate` checks the result before it is
/// written. With `req.revision` the entry must still be at that revision (an
/// operator's change based on what they saw); without it the requested fields
/// are merged into the current entry, re-read and merged again if someone else
/// changed it in between. Returns the entry and the names of changed fields.
pub async fn update(
    ds: &Datastore,
    req: &pb::UpdateEntryRequest,
    validate: impl Fn(&Entry) -> Result<(), ApiError>,
) -> Result<(Entry, Vec<&'static str>), ApiError> {
    // Checked here: a TTL is a duration once applied, where "negative" cannot show.
    if [req.x509_ttl, req.jwt_ttl]
        .into_iter()
        .flatten()
        .any(|t| t < 0)
    {
        return Err(ApiError::InvalidArgument(
            "ttl: must not be negative".into(),
        ));
    }
    let mut attempt = 1;
    loop {
        let Some(stored) = ds.get_entry(&req.id).await? else {
            return Err(ApiError::NotFound(format!(
                "entry {:?} does not exist",
                req.id
            )));
        };
        if let Some(want) = req.revision.filter(|&w| w != stored.revision) {
            return Err(ApiError::FailedPrecondition(format!(
                "entry {} changed since revision {want} (now {}); show it and retry",
                req.id, stored.revision
            )));
        }
        let (next, changed) = apply(&stored, req);
        if changed.is_empty() {
            return Ok((stored, changed));
        }
        validate(&next)?;
        match ds.update_entry(&next).await {
            Ok(updated) => return Ok((updated, changed)),
            // Re-read: a merge tries again, a revision check now reports the change.
            Err(DatastoreError::Changed(_)) if attempt < ATTEMPTS => attempt += 1,
            Err(e) => return Err(e.into()),
        }
    }
}

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
        next.x509_ttl = ttl(t);
        if next.x509_ttl != e.x509_ttl {
            changed.push("x509_ttl");
        }
    }
    if let Some(t) = req.jwt_ttl {
        next.jwt_ttl = ttl(t);
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
        next.expires_at = positive(t).map(tessera_common::UnixTime::from_secs);
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
    use crate::datastore::test_records;
    use std::time::Duration;
    use tessera_common::UnixTime;

    fn stored() -> Entry {
        Entry {
            selectors: vec![
                Selector::new("unix", "uid:1"),
                Selector::new("unix", "gid:1"),
            ],
            x509_ttl: Some(Duration::from_secs(3600)),
            dns_names: vec!["web".into()],
            hint: "h".into(),
            revision: 3,
            ..test_records::entry("e1", "spiffe://td/web", "spiffe://td/agent")
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
        assert_eq!(next.jwt_ttl, Some(Duration::from_secs(60)));
        assert!(next.dns_names.is_empty() && next.admin);
        assert_eq!(next.expires_at, Some(UnixTime::from_secs(1_900_000_000)));
        assert_eq!((next.id, next.revision), (e.id, e.revision));
    }

    async fn fresh() -> (tempfile::TempDir, Datastore, Entry) {
        let dir = tempfile::tempdir().unwrap();
        let ds = Datastore::open_sqlite(&dir.path().join("authority.db"))
            .await
            .unwrap();
        let e = ds
            .create_entry(crate::datastore::NewEntry {
                selectors: vec![Selector::new("unix", "uid:1")],
                ..test_records::new_entry("spiffe://td/web", "spiffe://td/agent")
            })
            .await
            .unwrap();
        (dir, ds, e)
    }

    fn hint(h: &str, revision: Option<i64>) -> pb::UpdateEntryRequest {
        pb::UpdateEntryRequest {
            id: String::new(),
            hint: Some(h.into()),
            revision,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_negative_ttl_is_refused_not_taken_for_the_default() {
        let (_dir, ds, e) = fresh().await;
        let ok = |_: &Entry| Ok(());
        for req in [
            pb::UpdateEntryRequest {
                x509_ttl: Some(-1),
                ..hint("a", None)
            },
            pb::UpdateEntryRequest {
                jwt_ttl: Some(-60),
                ..hint("a", None)
            },
        ] {
            let req = pb::UpdateEntryRequest {
                id: e.id.clone(),
                ..req
            };
            let err = update(&ds, &req, ok).await.unwrap_err();
            assert!(
                err.to_string().contains("ttl: must not be negative"),
                "{err}"
            );
        }
        assert_eq!(ds.get_entry(&e.id).await.unwrap(), Some(e));
    }

    #[tokio::test]
    async fn a_stale_revision_is_refused_naming_both() {
        let (_dir, ds, e) = fresh().await;
        let ok = |_: &Entry| Ok(());
        let req = |h, r| pb::UpdateEntryRequest {
            id: e.id.clone(),
            ..hint(h, r)
        };
        let (first, _) = update(&ds, &req("a", Some(e.revision)), ok).await.unwrap();
        assert_eq!(first.revision, e.revision + 1);
        // A second operator still working from what they saw before.
        let err = update(&ds, &req("b", Some(e.revision)), ok)
            .await
            .unwrap_err();
        assert!(matches!(err, ApiError::FailedPrecondition(_)), "{err:?}");
        let want = format!(
            "changed since revision {} (now {})",
            e.revision, first.revision
        );
        assert!(err.to_string().contains(&want), "{err}");
        let now = ds.get_entry(&e.id).await.unwrap().unwrap();
        assert_eq!((now.hint.as_str(), now.revision), ("a", first.revision));
    }

    /// Concurrent updates of different fields without `revision` all land:
    /// none fails with "changed", none is lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_merges_all_land() {
        let (_dir, ds, e) = fresh().await;
        let ds = std::sync::Arc::new(ds);
        for round in 1..=20i64 {
            let reqs = [
                pb::UpdateEntryRequest {
                    hint: Some(format!("h{round}")),
                    ..Default::default()
                },
                pb::UpdateEntryRequest {
                    x509_ttl: Some(600 + round),
                    ..Default::default()
                },
                pb::UpdateEntryRequest {
                    jwt_ttl: Some(300 + round),
                    ..Default::default()
                },
                pb::UpdateEntryRequest {
                    expires_at: Some(2_000_000_000 + round),
                    ..Default::default()
                },
            ];
            let tasks: Vec<_> = reqs
                .into_iter()
                .map(|r| {
                    let (ds, id) = (ds.clone(), e.id.clone());
                    tokio::spawn(async move {
                        let r = pb::UpdateEntryRequest { id, ..r };
                        update(&ds, &r, |_| Ok(())).await
                    })
                })
                .collect();
            for t in tasks {
                let res = t.await.unwrap();
                assert!(res.is_ok(), "round {round}: {res:?}");
            }
            let now = ds.get_entry(&e.id).await.unwrap().unwrap();
            assert_eq!(now.hint, format!("h{round}"));
            assert_eq!(
                (now.x509_ttl, now.jwt_ttl, now.expires_at),
                (
                    Some(Duration::from_secs(600 + round as u64)),
                    Some(Duration::from_secs(300 + round as u64)),
                    Some(UnixTime::from_secs(2_000_000_000 + round))
                ),
                "round {round}"
            );
        }
    }
}
