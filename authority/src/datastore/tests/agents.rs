//! Agent rows: re-attestation, renewal and eviction, and which agent SVIDs
//! (serials) still work.

use super::*;

pub(super) async fn check_eviction(ds: &Datastore) {
    let a = agent("spiffe://td/tessera/agent/tpm/aa", "01");
    ds.record_attestation(&a, &attest_event(NOW, a.id.as_str()), None)
        .await
        .unwrap();
    // Re-attestation of a live agent replaces its row.
    let a2 = AgentRecord {
        serial: "02".into(),
        attested_at: at(5),
        ..a.clone()
    };
    ds.record_attestation(&a2, &attest_event(at(5), a.id.as_str()), None)
        .await
        .unwrap();
    assert_eq!(ds.get_agent(a.id.as_str()).await.unwrap(), Some(a2.clone()));
    ds.renew_agent(
        &a.id,
        "02",
        "03",
        at(7200),
        &renew_event(at(6), a.id.as_str()),
    )
    .await
    .unwrap();
    let renewed = ds.get_agent(a.id.as_str()).await.unwrap().unwrap();
    assert_eq!(
        (renewed.serial.as_str(), renewed.expires_at),
        ("03", at(7200))
    );
    assert_eq!(audit_count(ds).await, 3);

    assert!(ds.evict_agent(a.id.as_str()).await.unwrap());
    assert!(!ds.evict_agent("spiffe://td/unknown").await.unwrap());
    ds.create_join_token("tok", at(600)).await.unwrap();
    let res = ds
        .record_attestation(&a, &attest_event(at(7), a.id.as_str()), Some("tok"))
        .await;
    assert!(matches!(res, Err(DatastoreError::Evicted(_))), "{res:?}");
    assert!(
        ds.join_token_valid("tok", NOW).await.unwrap(),
        "token consumed on failure"
    );
    let res = ds
        .renew_agent(
            &a.id,
            "03",
            "04",
            at(9000),
            &renew_event(at(8), a.id.as_str()),
        )
        .await;
    assert!(matches!(res, Err(DatastoreError::Evicted(_))), "{res:?}");
    let kept = ds.get_agent(a.id.as_str()).await.unwrap().unwrap();
    assert!(kept.evicted);
    assert_eq!(kept.serial, "03");
    assert_eq!(ds.list_agents().await.unwrap(), vec![kept]);
    assert_eq!(audit_count(ds).await, 3);

    let res = ds
        .renew_agent(
            &test_records::id("spiffe://td/nobody"),
            "00",
            "01",
            NOW,
            &renew_event(NOW, "spiffe://td/x"),
        )
        .await;
    assert!(matches!(res, Err(DatastoreError::NotFound(_))), "{res:?}");
    assert_eq!(audit_count(ds).await, 3);
}

/// The latest SVID and the one before it are accepted; using the latest ends the
/// overlap; a fresh attestation supersedes everything.
pub(super) async fn check_serial_overlap(ds: &Datastore) {
    let id = "spiffe://td/tessera/agent/join_token/t";
    let typed = test_records::id(id);
    let serials = |ds: &Datastore| {
        let ds = ds.clone();
        async move {
            let a = ds.get_agent(id).await.unwrap().unwrap();
            (a.serial, a.prev_serial)
        }
    };
    let a = agent(id, "01");
    ds.record_attestation(&a, &attest_event(NOW, id), None)
        .await
        .unwrap();
    let reattest = AgentRecord {
        serial: "02".into(),
        prev_serial: Some("01".into()),
        ..a.clone()
    };
    ds.record_attestation(&reattest, &attest_event(NOW, id), None)
        .await
        .unwrap();
    assert_eq!(serials(ds).await, ("02".into(), Some("01".into())));
    // A copy of 01 renews during the overlap; the holder of 02 is then locked out.
    ds.renew_agent(&typed, "01", "03", at(60), &renew_event(NOW, id))
        .await
        .unwrap();
    assert_eq!(serials(ds).await, ("03".into(), Some("01".into())));
    let res = ds
        .renew_agent(&typed, "02", "04", at(60), &renew_event(NOW, id))
        .await;
    assert!(matches!(res, Err(DatastoreError::Superseded(_))), "{res:?}");
    ds.retire_prev_serial(&typed, "01").await.unwrap();
    assert_eq!(
        serials(ds).await.1,
        Some("01".into()),
        "only the latest retires"
    );
    ds.retire_prev_serial(&typed, "03").await.unwrap();
    assert_eq!(serials(ds).await, ("03".into(), None));
    let res = ds
        .renew_agent(&typed, "01", "05", at(60), &renew_event(NOW, id))
        .await;
    assert!(matches!(res, Err(DatastoreError::Superseded(_))), "{res:?}");
    let stale = AgentRecord {
        serial: "06".into(),
        prev_serial: Some("02".into()),
        ..a.clone()
    };
    let res = ds
        .record_attestation(&stale, &attest_event(NOW, id), None)
        .await;
    assert!(matches!(res, Err(DatastoreError::Superseded(_))), "{res:?}");
    assert_eq!(serials(ds).await, ("03".into(), None));
    assert_eq!(
        audit_count(ds).await,
        3,
        "refused writes leave no audit event"
    );
    let fresh = agent(id, "07");
    ds.record_attestation(&fresh, &attest_event(NOW, id), None)
        .await
        .unwrap();
    assert_eq!(serials(ds).await, ("07".into(), None));
}

#[tokio::test]
async fn evicted_agent_cannot_be_upserted_or_renewed() {
    let (_dir, ds) = fresh().await;
    check_eviction(&ds).await;
}

#[tokio::test]
async fn superseded_agent_svids_stop_working() {
    let (_dir, ds) = fresh().await;
    check_serial_overlap(&ds).await;
}
