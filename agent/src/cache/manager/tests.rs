//! The manager driven by a fake authority and a fake clock: every rotation
//! rule is checked without waiting.

use super::*;
use crate::cache::templates::Leases;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, IsCa, Issuer, KeyPair,
    SanType,
};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Mutex;

struct FakeClock(AtomicI64);

impl Clock for FakeClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

struct FakeAuthority {
    clock: Arc<FakeClock>,
    issuer: Issuer<'static, KeyPair>,
    entries: Mutex<Vec<pb::Entry>>,
    fail: Mutex<Option<tonic::Code>>,
    fail_sign: Mutex<Option<tonic::Code>>,
    /// Entries deleted after the agent's sync: signing refuses each alone.
    deleted: Mutex<Vec<String>>,
    signed: AtomicUsize,
    ttl: i64,
    /// Set by a test: at each signing call, how many SVIDs in the published
    /// snapshot expire after `seen_after`.
    watch: Mutex<Option<(watch::Receiver<Arc<Snapshot>>, i64)>>,
    seen: Mutex<Vec<usize>>,
}

#[tonic::async_trait]
impl AuthorityClient for FakeAuthority {
    async fn sync_entries(&self) -> Result<pb::SyncEntriesResponse, AuthorityError> {
        if let Some(code) = *self.fail.lock().unwrap() {
            return Err(tonic::Status::new(code, "fake failure").into());
        }
        let bundle = pb::Bundle {
            trust_domain: "td".into(),
            x509_authorities: vec![1],
            jwt_authorities: b"{\"keys\":[]}".to_vec(),
            sequence: 1,
        };
        Ok(pb::SyncEntriesResponse {
            entries: self.entries.lock().unwrap().clone(),
            bundle: Some(bundle),
        })
    }

    async fn batch_sign_x509(
        &self,
        reqs: Vec<pb::X509SignRequest>,
    ) -> Result<Vec<Result<pb::X509Svid, AuthorityError>>, AuthorityError> {
        if let Some(code) = *self.fail_sign.lock().unwrap() {
            return Err(tonic::Status::new(code, "fake signing failure").into());
        }
        if let Some((rx, after)) = self.watch.lock().unwrap().as_ref() {
            let n = rx
                .borrow()
                .svids
                .iter()
                .filter(|s| s.not_after > *after)
                .count();
            self.seen.lock().unwrap().push(n);
        }
        let entries = self.entries.lock().unwrap().clone();
        let deleted = self.deleted.lock().unwrap().clone();
        let now = self.clock.now();
        Ok(reqs
            .into_iter()
            .map(|r| {
                if deleted.contains(&r.entry_id) {
                    return Err(AuthorityError::EntryRefused(format!(
                        "{} deleted",
                        r.entry_id
                    )));
                }
                let e = entries.iter().find(|e| e.id == r.entry_id).unwrap();
                let csr = CertificateSigningRequestParams::from_der(&r.csr.into()).unwrap();
                let mut p = CertificateParams::default();
                // A templated entry's SVID names the expansion asked for.
                let id = if r.spiffe_id.is_empty() {
                    &e.spiffe_id
                } else {
                    &r.spiffe_id
                };
                p.subject_alt_names = vec![SanType::URI(id.clone().try_into().unwrap())];
                // Back-dated like the real authority does for clock skew.
                p.not_before = time::OffsetDateTime::from_unix_timestamp(now - 30).unwrap();
                p.not_after = time::OffsetDateTime::from_unix_timestamp(now + self.ttl).unwrap();
                let cert = p.signed_by(&csr.public_key, &self.issuer).unwrap();
                self.signed.fetch_add(1, Ordering::SeqCst);
                Ok(pb::X509Svid {
                    entry_id: e.id.clone(),
                    svid_chain: cert.der().to_vec(),
                    expires_at: now + self.ttl,
                })
            })
            .collect())
    }

    async fn sign_jwt(
        &self,
        _: &str,
        _: &str,
        _: &[String],
    ) -> Result<pb::SignJwtResponse, AuthorityError> {
        Err(AuthorityError::RequestRefused("not in these tests".into()))
    }
}

fn entry(id: &str, spiffe: &str, revision: i64) -> pb::Entry {
    pb::Entry {
        id: id.into(),
        spiffe_id: spiffe.into(),
        parent_id: "spiffe://td/tessera/agent/a".into(),
        selectors: vec![pb::Selector {
            r#type: "unix".into(),
            value: "uid:0".into(),
        }],
        revision,
        ..Default::default()
    }
}

fn setup(
    entries: Vec<pb::Entry>,
) -> (
    Manager,
    watch::Receiver<Arc<Snapshot>>,
    Arc<FakeAuthority>,
    Arc<FakeClock>,
) {
    let clock = Arc::new(FakeClock(AtomicI64::new(1_800_000_000)));
    let key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let issuer = Issuer::new(ca, key);
    let fake = Arc::new(FakeAuthority {
        clock: clock.clone(),
        issuer,
        entries: Mutex::new(entries),
        fail: Mutex::new(None),
        fail_sign: Mutex::new(None),
        deleted: Mutex::new(Vec::new()),
        signed: AtomicUsize::new(0),
        ttl: 1000,
        watch: Mutex::new(None),
        seen: Mutex::new(Vec::new()),
    });
    let (m, rx) = Manager::new(fake.clone(), clock.clone(), None);
    let limits = TemplateLimits {
        max_per_entry: 2,
        idle: Duration::from_secs(100),
        wait: Duration::from_secs(5),
    };
    (m.with_template_limits(limits), rx, fake, clock)
}

fn serial_of(rx: &watch::Receiver<Arc<Snapshot>>, i: usize) -> Vec<u8> {
    rx.borrow().svids[i].chain.clone()
}

#[tokio::test]
async fn first_sync_publishes_ready_snapshot_with_svids() {
    let (mut m, rx, fake, _) = setup(vec![
        entry("1", "spiffe://td/a", 1),
        entry("2", "spiffe://td/b", 1),
    ]);
    assert_eq!(rx.borrow().state, State::Syncing);
    m.step().await.unwrap();
    let snap = rx.borrow().clone();
    assert_eq!(snap.state, State::Ready);
    let ids: Vec<_> = snap.svids.iter().map(|s| s.spiffe_id.to_string()).collect();
    assert_eq!(ids, vec!["spiffe://td/a", "spiffe://td/b"]);
    assert_eq!(fake.signed.load(Ordering::SeqCst), 2);
    assert!(snap.bundle.is_some());
}

#[tokio::test]
async fn nothing_is_resigned_before_rotation_time() {
    let (mut m, rx, fake, clock) = setup(vec![entry("1", "spiffe://td/a", 1)]);
    m.step().await.unwrap();
    let first = serial_of(&rx, 0);
    clock.0.fetch_add(300, Ordering::SeqCst); // 30% of life: never due (earliest is 40%)
    m.step().await.unwrap();
    assert_eq!(fake.signed.load(Ordering::SeqCst), 1);
    assert_eq!(serial_of(&rx, 0), first);
}

#[tokio::test]
async fn rotates_between_forty_and_sixty_percent_of_life() {
    let (mut m, mut rx, fake, clock) = setup(vec![entry("1", "spiffe://td/a", 1)]);
    m.step().await.unwrap();
    let rotate_at = rx.borrow().svids[0].rotate_at;
    // Timed from receipt, not from the back-dated notBefore.
    let got = clock.now();
    assert!(
        (got + 400..=got + 600).contains(&rotate_at),
        "{rotate_at} - {got}"
    );
    rx.mark_unchanged();
    clock.0.store(rotate_at, Ordering::SeqCst);
    m.step().await.unwrap();
    assert_eq!(fake.signed.load(Ordering::SeqCst), 2);
    assert!(rx.has_changed().unwrap(), "rotation must be published");
}

#[tokio::test]
async fn revision_change_resigns_and_removed_entry_disappears() {
    let (mut m, rx, fake, _) = setup(vec![
        entry("1", "spiffe://td/a", 1),
        entry("2", "spiffe://td/b", 1),
    ]);
    m.step().await.unwrap();
    *fake.entries.lock().unwrap() = vec![entry("1", "spiffe://td/a", 2)];
    m.step().await.unwrap();
    assert_eq!(fake.signed.load(Ordering::SeqCst), 3);
    let snap = rx.borrow().clone();
    assert_eq!(snap.svids.len(), 1);
    assert_eq!(snap.svids[0].entry.revision, 2);
}

#[tokio::test]
async fn authority_down_keeps_serving_until_expiry() {
    let (mut m, rx, fake, clock) = setup(vec![entry("1", "spiffe://td/a", 1)]);
    m.step().await.unwrap();
    *fake.fail.lock().unwrap() = Some(tonic::Code::Unavailable);
    clock.0.fetch_add(900, Ordering::SeqCst);
    assert!(matches!(m.step().await, Err(AuthorityError::RetryLater(_))));
    assert_eq!(rx.borrow().svids.len(), 1, "still valid: still served");
    clock.0.fetch_add(100, Ordering::SeqCst);
    assert!(m.step().await.is_err());
    assert!(
        rx.borrow().svids.is_empty(),
        "expired SVIDs are never served"
    );
    assert_eq!(rx.borrow().state, State::Ready);
    *fake.fail.lock().unwrap() = None;
    m.step().await.unwrap();
    assert_eq!(
        rx.borrow().svids.len(),
        1,
        "recovers when the authority returns"
    );
}

#[tokio::test]
async fn refusal_drops_every_identity() {
    let (mut m, rx, fake, _) = setup(vec![entry("1", "spiffe://td/a", 1)]);
    m.step().await.unwrap();
    *fake.fail.lock().unwrap() = Some(tonic::Code::PermissionDenied);
    assert!(matches!(
        m.step().await,
        Err(AuthorityError::AgentRefused(_))
    ));
    let snap = rx.borrow().clone();
    assert_eq!(snap.state, State::Refused);
    assert!(snap.svids.is_empty());
}

/// The race of issue 11: entries deleted between the sync and the signing
/// request fail alone; every other SVID is rotated and kept.
#[tokio::test]
async fn an_entry_refused_at_signing_drops_only_its_svid() {
    let entries: Vec<_> = (0..5)
        .map(|i| entry(&i.to_string(), &format!("spiffe://td/w{i}"), 1))
        .collect();
    let (mut m, rx, fake, clock) = setup(entries);
    m.step().await.unwrap();
    assert_eq!(rx.borrow().svids.len(), 5);
    // All due; two are deleted after the sync answered.
    clock.0.fetch_add(700, Ordering::SeqCst);
    *fake.deleted.lock().unwrap() = vec!["1".into(), "3".into()];
    m.step()
        .await
        .expect("one refused entry is not a failed round");
    let snap = rx.borrow().clone();
    assert_eq!(snap.state, State::Ready);
    let ids: Vec<_> = snap.svids.iter().map(|s| s.entry.id.as_str()).collect();
    assert_eq!(ids, vec!["0", "2", "4"]);
    assert!(
        snap.svids.iter().all(|s| s.rotate_at > clock.now()),
        "the rest rotated"
    );
}

#[tokio::test]
async fn a_transient_failure_for_one_entry_keeps_its_svid() {
    let (mut m, rx, fake, clock) = setup(vec![entry("1", "spiffe://td/a", 1)]);
    m.step().await.unwrap();
    clock.0.fetch_add(700, Ordering::SeqCst);
    *fake.fail_sign.lock().unwrap() = Some(tonic::Code::ResourceExhausted);
    assert!(matches!(m.step().await, Err(AuthorityError::RetryLater(_))));
    assert_eq!(rx.borrow().state, State::Ready);
    assert_eq!(rx.borrow().svids.len(), 1, "still valid: still served");
}

#[tokio::test]
async fn a_refused_signing_call_drops_every_identity() {
    let (mut m, rx, fake, clock) = setup(vec![entry("1", "spiffe://td/a", 1)]);
    m.step().await.unwrap();
    clock.0.fetch_add(700, Ordering::SeqCst);
    *fake.fail_sign.lock().unwrap() = Some(tonic::Code::PermissionDenied);
    assert!(matches!(
        m.step().await,
        Err(AuthorityError::AgentRefused(_))
    ));
    assert_eq!(rx.borrow().state, State::Refused);
    assert!(rx.borrow().svids.is_empty());
}

#[tokio::test]
async fn svid_for_another_id_is_not_cached() {
    let (mut m, rx, _, _) = setup(vec![entry("1", "spiffe://td/a", 1)]);
    m.step().await.unwrap();
    // An SVID naming another ID than its entry is refused.
    let e = rx.borrow().svids[0].entry.clone();
    let chain = rx.borrow().svids[0].chain.clone();
    let wrong = crate::cache::entry::Entry::test("1", "spiffe://td/b", Vec::new(), "");
    assert!(cached_svid(&wrong, None, None, chain.clone(), Vec::new().into(), 0).is_err());
    assert!(cached_svid(&e, None, None, chain, Vec::new().into(), 0).is_ok());
}

mod templated;
mod urgency;

#[tokio::test]
async fn reordered_entries_keep_their_svids_and_share_the_entry() {
    let (mut m, rx, fake, _) = setup(vec![
        entry("1", "spiffe://td/a", 1),
        entry("2", "spiffe://td/b", 1),
        entry("3", "spiffe://td/c", 1),
    ]);
    m.step().await.unwrap();
    let first: Vec<_> = rx.borrow().svids.iter().map(|s| s.chain.clone()).collect();
    *fake.entries.lock().unwrap() = vec![
        entry("3", "spiffe://td/c", 1),
        entry("1", "spiffe://td/a", 1),
    ];
    m.step().await.unwrap();
    assert_eq!(
        fake.signed.load(Ordering::SeqCst),
        3,
        "nothing signed again"
    );
    let snap = rx.borrow().clone();
    let ids: Vec<_> = snap.svids.iter().map(|s| s.spiffe_id.to_string()).collect();
    assert_eq!(ids, ["spiffe://td/c", "spiffe://td/a"]);
    assert_eq!(snap.svids[0].chain, first[2]);
    assert_eq!(snap.svids[1].chain, first[0]);
    for (s, e) in snap.svids.iter().zip(&m.entries) {
        assert!(Arc::ptr_eq(&s.entry, e), "one copy of the entry");
    }
}
