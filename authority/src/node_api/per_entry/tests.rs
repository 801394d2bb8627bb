//! Per-entry answers through the real Node handlers: a real authority (SQLite in a
//! temp dir, real CA) and requests carrying a real agent SVID from a TLS handshake.

use crate::caller::tests::{copy, fixture, Fixture, Identity, AGENT, HOUR};
use crate::datastore::{test_records, AuditFilter, AuditKind, NewEntry};
use crate::node_api::NodeApi;
use tessera_common::Selector;
use tessera_proto::authority as pb;
use tessera_proto::authority::node_server::Node;
use tonic::{Code, Request};

async fn entry(fx: &Fixture, path: &str) -> String {
    let e = NewEntry {
        selectors: vec![Selector::parse("unix:uid:0").unwrap()],
        ..test_records::new_entry(&format!("spiffe://example.org/{path}"), AGENT)
    };
    fx.authority.datastore.create_entry(e).await.unwrap().id
}

/// `body` sent by the agent presenting `svid`.
async fn request<T>(fx: &Fixture, svid: &Identity, body: T) -> Request<T> {
    let (meta, ext, ()) = fx.request(Some(copy(svid))).await.into_parts();
    Request::from_parts(meta, ext, body)
}

fn csr() -> Vec<u8> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let params = rcgen::CertificateParams::default();
    params.serialize_request(&key).unwrap().der().to_vec()
}

fn sign_req(entry_id: &str, csr: Vec<u8>) -> pb::X509SignRequest {
    pb::X509SignRequest {
        entry_id: entry_id.into(),
        csr,
        spiffe_id: String::new(),
    }
}

/// An attested agent and the node API it calls.
async fn attested() -> (Fixture, Identity, NodeApi) {
    let fx = fixture().await;
    let svid = fx.svid(AGENT, HOUR);
    fx.attest(AGENT, &svid).await;
    let api = NodeApi(fx.authority.clone());
    (fx, svid, api)
}

fn code(s: &Option<pb::ItemStatus>) -> Code {
    Code::from(s.as_ref().map_or(-1, |s| s.code))
}

#[tokio::test]
async fn a_deleted_entry_or_a_bad_csr_fails_alone_in_request_order() {
    let (fx, svid, api) = attested().await;
    let (a, gone, c) = (
        entry(&fx, "a").await,
        entry(&fx, "gone").await,
        entry(&fx, "c").await,
    );
    // Deleted between the agent's sync and its signing request.
    assert!(fx.authority.datastore.delete_entry(&gone).await.unwrap());
    let body = pb::BatchSignX509Request {
        requests: vec![
            sign_req(&a, csr()),
            sign_req(&gone, csr()),
            sign_req(&c, b"not a CSR".to_vec()),
            sign_req(&c, csr()),
        ],
    };
    let resp = api
        .batch_sign_x509(request(&fx, &svid, body).await)
        .await
        .expect("the call succeeds for the agent")
        .into_inner();
    let r = &resp.results;
    assert_eq!(r.len(), 4, "one result per request: {r:?}");
    assert_eq!(code(&r[0].status), Code::Ok);
    assert_eq!(
        r[0].svid.as_ref().map(|s| s.entry_id.as_str()),
        Some(a.as_str())
    );
    assert_eq!(code(&r[1].status), Code::PermissionDenied, "{:?}", r[1]);
    assert!(r[1].status.as_ref().unwrap().message.contains(&gone));
    assert!(r[1].svid.is_none());
    assert_eq!(code(&r[2].status), Code::InvalidArgument, "{:?}", r[2]);
    assert!(r[2].svid.is_none());
    assert_eq!(code(&r[3].status), Code::Ok);
    assert_eq!(
        r[3].svid.as_ref().map(|s| s.entry_id.as_str()),
        Some(c.as_str())
    );
    // Only what was handed out is in the audit trail.
    let audit = fx
        .authority
        .datastore
        .list_audit(&AuditFilter::default())
        .await
        .unwrap();
    let signed: Vec<_> = audit
        .iter()
        .filter(|e| e.kind == AuditKind::X509Svid)
        .collect();
    assert_eq!(signed.len(), 2, "{signed:?}");
    assert!(signed.iter().all(|e| e.entry_id != gone));
}

#[tokio::test]
async fn a_refused_agent_is_refused_for_the_whole_call() {
    let (fx, svid, api) = attested().await;
    let a = entry(&fx, "a").await;
    assert!(fx.authority.datastore.evict_agent(AGENT).await.unwrap());
    let body = pb::BatchSignX509Request {
        requests: vec![sign_req(&a, csr())],
    };
    let err = api
        .batch_sign_x509(request(&fx, &svid, body).await)
        .await
        .expect_err("an evicted agent gets no answer per entry");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
}

#[tokio::test]
async fn a_jwt_for_a_deleted_entry_is_refused_in_the_answer() {
    let (fx, svid, api) = attested().await;
    let (live, gone) = (entry(&fx, "live").await, entry(&fx, "gone").await);
    assert!(fx.authority.datastore.delete_entry(&gone).await.unwrap());
    let jwt = |entry_id: &str| pb::SignJwtRequest {
        entry_id: entry_id.into(),
        audience: vec!["aud".into()],
        spiffe_id: String::new(),
    };
    let refused = api
        .sign_jwt(request(&fx, &svid, jwt(&gone)).await)
        .await
        .expect("the call succeeds for the agent")
        .into_inner();
    assert_eq!(code(&refused.status), Code::PermissionDenied, "{refused:?}");
    assert!(refused.token.is_empty());
    let signed = api
        .sign_jwt(request(&fx, &svid, jwt(&live)).await)
        .await
        .expect("signed")
        .into_inner();
    assert_eq!(code(&signed.status), Code::Ok, "{signed:?}");
    assert!(!signed.token.is_empty());
}

#[tokio::test]
async fn an_agent_gets_nothing_for_another_agents_or_an_unmatched_alias_entry() {
    let (fx, svid, api) = attested().await;
    let other = "spiffe://example.org/tessera/agent/join_token/t2";
    let other_svid = fx.svid(other, HOUR);
    fx.attest(other, &other_svid).await;
    let theirs = entry(&fx, "theirs").await;
    // A node alias whose selector neither agent has, and an entry under it.
    let alias = |spiffe: &str, parent: &str| NewEntry {
        selectors: vec![Selector::parse("tpm:secure_boot:enabled").unwrap()],
        ..test_records::new_entry(&format!("spiffe://example.org/{spiffe}"), parent)
    };
    let ds = &fx.authority.datastore;
    ds.create_entry(alias("sb-hosts", "spiffe://example.org/tessera/authority"))
        .await
        .unwrap();
    let under_alias = ds
        .create_entry(alias("sb-workload", "spiffe://example.org/sb-hosts"))
        .await
        .unwrap()
        .id;
    let synced = api
        .sync_entries(request(&fx, &other_svid, pb::SyncEntriesRequest {}).await)
        .await
        .expect("sync")
        .into_inner();
    assert!(synced.entries.is_empty(), "{:?}", synced.entries);
    for id in [&theirs, &under_alias] {
        let body = pb::BatchSignX509Request {
            requests: vec![sign_req(id, csr())],
        };
        let r = api
            .batch_sign_x509(request(&fx, &other_svid, body).await)
            .await
            .expect("the call succeeds for the agent")
            .into_inner();
        assert_eq!(code(&r.results[0].status), Code::PermissionDenied, "{r:?}");
        assert!(r.results[0].svid.is_none());
        let jwt = pb::SignJwtRequest {
            entry_id: id.clone(),
            audience: vec!["aud".into()],
            spiffe_id: String::new(),
        };
        let r = api
            .sign_jwt(request(&fx, &other_svid, jwt).await)
            .await
            .expect("the call succeeds for the agent")
            .into_inner();
        assert_eq!(code(&r.status), Code::PermissionDenied, "{r:?}");
        assert!(r.token.is_empty());
    }
    // The entry's own agent is signed for.
    let body = pb::BatchSignX509Request {
        requests: vec![sign_req(&theirs, csr())],
    };
    let r = api
        .batch_sign_x509(request(&fx, &svid, body).await)
        .await
        .expect("signed")
        .into_inner();
    assert_eq!(code(&r.results[0].status), Code::Ok, "{r:?}");
}
