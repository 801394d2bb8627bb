//! The identity driven by a fake authority on tokio's paused clock: every
//! renewal rule is checked at the instant it applies, without waiting.

use super::*;
use crate::cache::manager::Clock;
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType,
};
use rustls::pki_types::CertificateDer;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tessera_common::TrustDomain;
use tokio::sync::watch;
use tokio::time::Instant;

mod keeper_tests;
mod tls_tests;

const TD: &str = "example.org";
/// Lifetime of every agent SVID the fake issues.
const TTL: i64 = 100;

fn td() -> TrustDomain {
    TrustDomain::new(TD).unwrap()
}

/// Unix seconds that follow tokio's (paused) clock.
struct TokioClock {
    base: i64,
    start: Instant,
}

impl Clock for TokioClock {
    fn now(&self) -> i64 {
        self.base + self.start.elapsed().as_secs() as i64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Attest,
    Reattest,
    Renew,
}

/// A CA that signs agent SVIDs and the authority's server certificate; every
/// call is logged with its time, and fails while a failure is queued for it.
struct FakeAuthority {
    issuer: Issuer<'static, KeyPair>,
    roots: Vec<CertificateDer<'static>>,
    clock: Arc<TokioClock>,
    calls: Mutex<Vec<(Call, Duration)>>,
    fail_renew: Mutex<VecDeque<AuthorityError>>,
    fail_attest: Mutex<VecDeque<AuthorityError>>,
    /// Renewal fails with RetryLater for good.
    renew_down: Mutex<bool>,
    hint: Mutex<Option<Duration>>,
    issued: Mutex<Vec<AgentSvid>>,
}

impl FakeAuthority {
    fn new() -> Arc<Self> {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = p.self_signed(&key).unwrap();
        Arc::new(Self {
            issuer: Issuer::new(p, key),
            roots: vec![cert.der().clone()],
            clock: Arc::new(TokioClock {
                base: tessera_common::unix_now(),
                start: Instant::now(),
            }),
            calls: Mutex::default(),
            fail_renew: Mutex::default(),
            fail_attest: Mutex::default(),
            renew_down: Mutex::new(false),
            hint: Mutex::default(),
            issued: Mutex::default(),
        })
    }

    /// A certificate for `id`; `server` for the authority's own.
    fn cert(&self, id: &str, server: bool) -> (CertificateDer<'static>, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
        if server {
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        }
        (p.signed_by(&key, &self.issuer).unwrap().der().clone(), key)
    }

    fn issue(&self) -> AgentSvid {
        let id = format!("spiffe://{TD}/tessera/agent/join_token/t");
        let (cert, key) = self.cert(&id, false);
        let now = self.clock.now();
        let svid = AgentSvid {
            id: id.parse().unwrap(),
            chain: vec![cert],
            key_pkcs8: key.serialize_der().into(),
            issued_at: now,
            not_after: now + TTL,
            bundle_roots: self.roots.clone(),
        };
        self.issued.lock().unwrap().push(svid.clone());
        svid
    }

    fn answer(&self, call: Call) -> Result<AgentSvid, AuthorityError> {
        self.calls
            .lock()
            .unwrap()
            .push((call, self.clock.start.elapsed()));
        let queued = match call {
            Call::Renew if *self.renew_down.lock().unwrap() => {
                Some(AuthorityError::RetryLater("down".into()))
            }
            Call::Renew => self.fail_renew.lock().unwrap().pop_front(),
            Call::Attest | Call::Reattest => self.fail_attest.lock().unwrap().pop_front(),
        };
        match queued {
            Some(e) => Err(e),
            None => Ok(self.issue()),
        }
    }

    fn calls(&self) -> Vec<(Call, Duration)> {
        self.calls.lock().unwrap().clone()
    }

    fn last_issued(&self) -> AgentSvid {
        self.issued.lock().unwrap().last().unwrap().clone()
    }
}

#[tonic::async_trait]
impl NodeAuthority for FakeAuthority {
    async fn attest(
        &self,
        _: &dyn NodeEvidence,
        how: Attestation<'_>,
    ) -> Result<AgentSvid, AuthorityError> {
        match how {
            Attestation::Fresh { .. } => self.answer(Call::Attest),
            Attestation::Renewal(_) => self.answer(Call::Reattest),
        }
    }

    async fn renew(&self, _: &AgentSvid) -> Result<AgentSvid, AuthorityError> {
        self.answer(Call::Renew)
    }

    fn retry_hint(&self) -> Option<Duration> {
        *self.hint.lock().unwrap()
    }
}

/// Evidence the fake never reads; `tpm` re-proves the node at renewal.
struct Evidence {
    tpm: bool,
}

#[tonic::async_trait]
impl NodeEvidence for Evidence {
    fn method(&self) -> &'static str {
        "fake"
    }
    async fn evidence(&self) -> Result<Vec<u8>, tessera_attestors::node::EvidenceError> {
        Ok(Vec::new())
    }
    async fn respond(&self, _: &[u8]) -> Result<Vec<u8>, tessera_attestors::node::EvidenceError> {
        Ok(Vec::new())
    }
    fn reattest_on_renewal(&self) -> bool {
        self.tpm
    }
}

struct Agent {
    fake: Arc<FakeAuthority>,
    credential: watch::Receiver<Option<Arc<Credential>>>,
    /// What the authority client reports when a call is refused as the agent's.
    refuse: watch::Sender<Option<Arc<Credential>>>,
    dir: tempfile::TempDir,
}

/// A started keeper running against a fresh fake authority.
async fn agent(tpm: bool, prepare: impl FnOnce(&FakeAuthority)) -> Agent {
    tessera_common::tls::install_default_provider();
    let fake = FakeAuthority::new();
    prepare(&fake);
    let dir = tempfile::tempdir().unwrap();
    let (tx, credential) = watch::channel(None);
    let keeper = Keeper::new(
        fake.clone(),
        Box::new(Evidence { tpm }),
        td(),
        dir.path().to_path_buf(),
        fake.clock.clone(),
        tx,
    );
    let (refuse, refusals) = watch::channel(None);
    let keeper = keeper.with_refusals(refusals);
    keeper.start(false).await.unwrap();
    tokio::spawn(keeper.run());
    Agent {
        fake,
        credential,
        refuse,
        dir,
    }
}

impl Agent {
    fn current(&self) -> Arc<Credential> {
        self.credential.borrow().clone().unwrap()
    }
}

/// Seconds, for comparing call times.
fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}
