//! Entry writes beyond create/delete: a batch in one transaction, updates as a
//! compare-and-swap on the revision, filtered listing; and the audit time window.

use super::*;

fn ids(entries: &[Entry]) -> Vec<&str> {
    entries.iter().map(|e| e.id.as_str()).collect()
}

pub(super) async fn check_batch_create(ds: &Datastore) {
    let existing = ds
        .create_entry(new_entry("spiffe://td/old", &["unix:uid:9"]))
        .await
        .unwrap();
    let before = ds.list_entries().await.unwrap();
    let rev = ds.entries_revision().await.unwrap();
    // The third duplicates a stored entry: the first two must not stay behind.
    let batch = vec![
        new_entry("spiffe://td/a", &["unix:uid:1"]),
        new_entry("spiffe://td/b", &["unix:uid:2"]),
        new_entry("spiffe://td/old", &["unix:uid:9"]),
    ];
    match ds.create_entries(batch).await {
        Err((2, DatastoreError::AlreadyExists(m))) => assert!(m.contains(&existing.id), "{m}"),
        other => panic!("want entry 2 AlreadyExists, got {other:?}"),
    }
    assert_eq!(ds.list_entries().await.unwrap(), before, "half-written");
    assert_eq!(ds.entries_revision().await.unwrap(), rev);
    // A duplicate inside the batch is named by its index, nothing is written.
    let batch = vec![
        new_entry("spiffe://td/a", &["unix:uid:1", "unix:gid:1"]),
        new_entry("spiffe://td/b", &["unix:uid:2"]),
        new_entry("spiffe://td/a", &["unix:gid:1", "unix:uid:1"]),
    ];
    match ds.create_entries(batch).await {
        Err((2, DatastoreError::AlreadyExists(m))) => assert!(m.contains("entries[0]"), "{m}"),
        other => panic!("want entry 2 AlreadyExists, got {other:?}"),
    }
    assert_eq!(ds.list_entries().await.unwrap(), before, "half-written");
    // A good batch: every entry, one counter bump.
    let created = ds
        .create_entries(vec![
            new_entry("spiffe://td/a", &["unix:uid:1"]),
            new_entry("spiffe://td/b", &["unix:uid:2"]),
        ])
        .await
        .unwrap();
    assert_eq!(created.len(), 2);
    assert!(created.iter().all(|e| e.revision == 1));
    assert_eq!(ds.entries_revision().await.unwrap(), rev + 1);
    let all = ds.list_entries().await.unwrap();
    assert_eq!(all.len(), 3);
    for c in &created {
        assert_eq!(ds.get_entry(&c.id).await.unwrap().as_ref(), Some(c));
    }
}

pub(super) async fn check_update_entry(ds: &Datastore) {
    let e = ds
        .create_entry(new_entry("spiffe://td/web", &["unix:uid:0"]))
        .await
        .unwrap();
    let other = ds
        .create_entry(new_entry("spiffe://td/web", &["unix:uid:1"]))
        .await
        .unwrap();
    let rev = ds.entries_revision().await.unwrap();
    let mut next = e.clone();
    next.dns_names = vec!["new.example".into()];
    next.x509_ttl = None;
    next.selectors = vec![sel("unix:uid:0"), sel("unix:gid:0")];
    next.expires_at = None;
    let updated = ds.update_entry(&next).await.unwrap();
    assert_eq!(updated.revision, e.revision + 1);
    assert_eq!(ds.get_entry(&e.id).await.unwrap(), Some(updated.clone()));
    assert_eq!(updated.created_at, e.created_at);
    assert_eq!(ds.entries_revision().await.unwrap(), rev + 1);
    // Written from a stale read: refused, the newer write stays.
    let mut stale = e.clone();
    stale.hint = "stale".into();
    match ds.update_entry(&stale).await {
        Err(DatastoreError::Changed(m)) => assert!(m.contains("retry"), "{m}"),
        other => panic!("want Changed, got {other:?}"),
    }
    assert_eq!(ds.get_entry(&e.id).await.unwrap(), Some(updated.clone()));
    // New selectors that make it equal to another entry.
    let mut clash = updated.clone();
    clash.selectors = other.selectors.clone();
    match ds.update_entry(&clash).await {
        Err(DatastoreError::AlreadyExists(m)) => assert!(m.contains(&other.id), "{m}"),
        other => panic!("want AlreadyExists, got {other:?}"),
    }
    let mut gone = updated.clone();
    gone.id = "nope".into();
    assert!(matches!(
        ds.update_entry(&gone).await,
        Err(DatastoreError::NotFound(_))
    ));
    assert_eq!(
        ds.entries_revision().await.unwrap(),
        rev + 1,
        "failed updates bumped"
    );
}

pub(super) async fn check_entry_filters(ds: &Datastore) {
    // Selector values with LIKE wildcards, quotes, backslashes and case.
    let a = ds
        .create_entry(new_entry("spiffe://td/a", &["unix:uid:1", "k8s:ns:pro_d%"]))
        .await
        .unwrap();
    let b = ds
        .create_entry(new_entry(
            "spiffe://td/b",
            &["unix:uid:1", r#"k8s:ns:q"u\ote"#],
        ))
        .await
        .unwrap();
    let mut other_parent = new_entry("spiffe://td/a", &["unix:uid:2", "k8s:ns:PRO_D%"]);
    other_parent.parent_id = test_records::id("spiffe://td/other");
    let c = ds.create_entry(other_parent).await.unwrap();
    let find = |spiffe: Option<&str>, parent: Option<&str>, sels: &[&str]| EntryFilter {
        spiffe_id: spiffe.map(String::from),
        parent_id: parent.map(String::from),
        selectors: sels.iter().map(|s| sel(s)).collect(),
    };
    for (f, want) in [
        (find(None, None, &[]), vec![&a.id, &b.id, &c.id]),
        (find(Some("spiffe://td/a"), None, &[]), vec![&a.id, &c.id]),
        (find(None, Some("spiffe://td/other"), &[]), vec![&c.id]),
        (
            find(Some("spiffe://td/a"), Some("spiffe://td/other"), &[]),
            vec![&c.id],
        ),
        (find(None, None, &["unix:uid:1"]), vec![&a.id, &b.id]),
        (
            find(None, None, &["unix:uid:1", "k8s:ns:pro_d%"]),
            vec![&a.id],
        ),
        (find(None, None, &["k8s:ns:PRO_D%"]), vec![&c.id]),
        (find(None, None, &[r#"k8s:ns:q"u\ote"#]), vec![&b.id]),
        // Wildcards are literal: `_` and `%` match nothing else.
        (find(None, None, &["k8s:ns:pro_%"]), vec![]),
        (find(None, None, &["k8s:ns:proXd%"]), vec![]),
        (find(None, None, &["unix:uid:"]), vec![]),
        (find(None, None, &["unix:uid:1", "unix:uid:2"]), vec![]),
        (find(Some("spiffe://td/zzz"), None, &[]), vec![]),
    ] {
        let got = ds.find_entries(&f).await.unwrap();
        let mut want: Vec<&str> = want.iter().map(|s| s.as_str()).collect();
        want.sort();
        assert_eq!(ids(&got), want, "{f:?} (same second: by ID)");
    }
}

pub(super) async fn check_audit_time_window(ds: &Datastore) {
    let events: Vec<AuditEvent> = (0..5)
        .map(|i| {
            event(
                at(i * 10),
                AuditKind::X509Svid,
                "spiffe://td/tessera/agent/a",
                "spiffe://td/a",
            )
        })
        .collect();
    ds.record_audit(&events).await.unwrap();
    let window = |since, until| AuditFilter {
        since,
        until,
        ..Default::default()
    };
    for (f, want) in [
        (
            window(Some(at(10)), None),
            vec![at(40), at(30), at(20), at(10)],
        ),
        (window(None, Some(at(10))), vec![NOW]),
        (window(Some(at(10)), Some(at(30))), vec![at(20), at(10)]),
        (window(Some(at(11)), Some(at(20))), vec![]),
    ] {
        let got: Vec<UnixTime> = ds
            .list_audit(&f)
            .await
            .unwrap()
            .iter()
            .map(|e| e.time)
            .collect();
        assert_eq!(got, want, "{f:?}");
    }
    let both = AuditFilter {
        spiffe_id: Some("spiffe://td/a".into()),
        since: Some(at(30)),
        limit: Some(1),
        ..Default::default()
    };
    let got = ds.list_audit(&both).await.unwrap();
    assert_eq!(got.iter().map(|e| e.time).collect::<Vec<_>>(), vec![at(40)]);
}

#[tokio::test]
async fn batch_create_is_all_or_nothing() {
    let (_dir, ds) = fresh().await;
    check_batch_create(&ds).await;
}

#[tokio::test]
async fn update_is_a_compare_and_swap_on_the_revision() {
    let (_dir, ds) = fresh().await;
    check_update_entry(&ds).await;
}

#[tokio::test]
async fn entry_filters_match_exactly() {
    let (_dir, ds) = fresh().await;
    check_entry_filters(&ds).await;
}

#[tokio::test]
async fn audit_since_until_window() {
    let (_dir, ds) = fresh().await;
    check_audit_time_window(&ds).await;
}
