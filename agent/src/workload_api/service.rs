//! The Workload API handlers: attest the caller, then answer from the
//! snapshot; streams follow the snapshot watch.

use super::blocking::Attestations;
use super::exit::ExitWatch;
use super::follow::Stream_;
use super::responses;
use super::told::Told;
use super::track::Peer;
use super::WorkloadError;
use crate::authority_client::AuthorityClient;
use crate::cache::jwt::JwtCache;
use crate::cache::templates::{Demands, Leases};
use crate::cache::{CachedSvid, Snapshot};
use crate::metrics::Metrics;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Instant;
use tessera_attestors::workload::unix::{PinnedProcess, ProcessMark};
use tessera_common::{jwt, unix_now, Selector, SpiffeId, TrustDomain};
use tessera_proto::workload as wl;
use tessera_proto::workload::spiffe_workload_api_server::SpiffeWorkloadApi;
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

/// How the handlers identify the process pinned at connect.
pub trait Attest: Send + Sync + 'static {
    /// Ok while the pinned process lives (and its pid is still its own).
    fn check(&self, process: &PinnedProcess) -> Result<(), String>;
    /// The process's selectors; an error when it is gone.
    fn attest(&self, process: &PinnedProcess) -> Result<Vec<Selector>, String>;
    /// A cheap reading of what would change the live process's selectors. `Some` only when
    /// read from the pinned process itself and that process was alive after the read: an
    /// unchanged mark alone lets a call go on. `None` (gone, or no cheap way to tell):
    /// every call attests in full.
    fn mark(&self, _process: &PinnedProcess) -> Option<ProcessMark> {
        None
    }
}

/// What a stream needs to check, before each answer, that its process is still as attested.
#[derive(Clone)]
pub(crate) struct Recheck {
    attestor: Arc<dyn Attest>,
    attestations: Arc<Attestations>,
}

/// How the handlers limit a uid's calls, before any expensive work.
pub trait RateLimit: Send + Sync + 'static {
    /// False: the uid is over its rate; answer `ResourceExhausted`.
    fn admit(&self, uid: u32) -> bool;
}

#[derive(Clone)]
pub struct WorkloadApi {
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    pub attestor: Arc<dyn Attest>,
    pub limiter: Arc<dyn RateLimit>,
    pub authority: Arc<dyn AuthorityClient>,
    pub jwt_cache: Arc<JwtCache>,
    /// Signs expansions of templated entries when a caller first needs them.
    pub demands: Demands,
    pub trust_domain: TrustDomain,
    /// Turns true when the agent stops: every stream ends.
    pub shutdown: watch::Receiver<bool>,
    pub metrics: Arc<Metrics>,
    /// Where attestations run (see `blocking`).
    pub attestations: Arc<Attestations>,
}

/// Who is calling, as the kernel and /proc tell it: every issuance (once per
/// connection and credential) and every denial log names the pid, uid, binary
/// path and SPIFFE ID, so the journal answers "who got which identity, when and why".
#[derive(Debug, Clone)]
pub struct Caller {
    pub pid: i32,
    /// From SO_PEERCRED; the `unix:uid` selector says the same once attested.
    pub uid: Option<u32>,
    pub selectors: Arc<[Selector]>,
    /// The process that connected; streams end when it exits.
    pub process: Arc<PinnedProcess>,
    /// The connection's watch on that process's exit.
    exit: Arc<ExitWatch>,
    /// What the connection was already logged as issued.
    told: Arc<Told>,
    /// The process's mark when `selectors` were attested (`None`: no cheap way to tell).
    mark: Option<ProcessMark>,
    /// Keeps the caller's templated SVIDs cached while the call (or stream) lasts.
    pub leases: Leases,
}

impl Caller {
    fn of(peer: &Peer, selectors: Arc<[Selector]>) -> Caller {
        Caller {
            pid: peer.process.pid(),
            uid: Some(peer.uid),
            selectors,
            process: peer.process.clone(),
            exit: peer.exit.clone(),
            told: peer.told.clone(),
            mark: None,
            leases: Leases::default(),
        }
    }

    /// Resolves when the process that connected exits (never without a pidfd).
    pub(crate) fn exited(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.exit.exited(&self.process)
    }

    fn unix(&self, key: &str) -> Option<&str> {
        self.selectors
            .iter()
            .filter(|s| s.kind == "unix")
            .find_map(|s| s.value.strip_prefix(key)?.strip_prefix(':'))
    }

    pub(crate) fn uid(&self) -> String {
        self.unix("uid")
            .map(str::to_string)
            .or_else(|| self.uid.map(|u| u.to_string()))
            .unwrap_or_else(|| "?".into())
    }

    pub(crate) fn path(&self) -> &str {
        self.unix("path").unwrap_or("?")
    }

    /// Ok while the process that connected still runs as it was attested: alive, and either
    /// its mark is unchanged or a new attestation gives the same selectors (the mark also
    /// moves when only the executable's attributes do, e.g. a chmod). Without a mark (no
    /// pidfd, or one that cannot be read) every check attests in full. A stream checks this
    /// before each answer, so a program exec'd on an inherited connection gets nothing its
    /// predecessor was entitled to and it is not.
    pub(crate) async fn still_attested(&mut self, r: &Recheck) -> Result<(), WorkloadError> {
        // Read before attesting again: a change during the attestation shows next time. A
        // mark is read through the pinned process's pidfd and directory and only while it
        // lives, so an unchanged one needs no look-up of the pid (a read of its `stat`).
        let now = r.attestor.mark(&self.process);
        if now.is_some() && now == self.mark {
            return Ok(());
        }
        if r.attestor.check(&self.process).is_err() {
            return Err(WorkloadError::Attestation(
                "the connecting process has exited".into(),
            ));
        }
        let (attestor, process) = (r.attestor.clone(), self.process.clone());
        let fresh = r
            .attestations
            .run(move || attestor.attest(&process))
            .await
            .and_then(|a| a)
            .map_err(WorkloadError::Attestation)?;
        if *fresh != *self.selectors {
            return Err(WorkloadError::Attestation(
                "the connecting process ran another executable or changed its ids since the stream opened; call again".into(),
            ));
        }
        self.mark = now;
        Ok(())
    }

    /// False when this connection was already logged as issued `credential` (as `what`)
    /// under its current attestation: the line would be a copy.
    pub(crate) fn first_issue(&self, what: &str, credential: &[u8]) -> bool {
        self.told.first(&self.selectors, what, credential)
    }

    /// The issuance line for an X.509-SVID (`chain`), once per connection and attestation.
    pub(crate) fn issued(&self, what: &str, spiffe_id: &str, not_after: i64, chain: &[u8]) {
        if !self.first_issue(what, chain) {
            return;
        }
        tracing::info!(
            pid = self.pid,
            uid = %self.uid(),
            path = %self.path(),
            spiffe_id = %spiffe_id,
            not_after,
            "{what} issued"
        );
    }

    /// Logs each of `cur`'s SVIDs that `prev` did not hold (first answer or rotation).
    pub(crate) fn issued_new(&self, what: &str, prev: &[Arc<CachedSvid>], cur: &[Arc<CachedSvid>]) {
        for s in cur {
            if !prev.iter().any(|p| p.chain == s.chain) {
                self.issued(what, s.spiffe_id.as_str(), s.not_after, &s.chain);
            }
        }
    }

    /// `spiffe_id` is the identity asked for, or "-" when the caller asked for all of its.
    pub(crate) fn denied(&self, what: &str, spiffe_id: &str, e: &WorkloadError) {
        tracing::info!(
            pid = self.pid,
            uid = %self.uid(),
            path = %self.path(),
            spiffe_id = %spiffe_id,
            reason = %e,
            "{what} denied"
        );
    }
}

impl WorkloadApi {
    pub(crate) fn recheck(&self) -> Recheck {
        Recheck {
            attestor: self.attestor.clone(),
            attestations: self.attestations.clone(),
        }
    }

    /// The connection's pinned peer, once the uid's rate allows another call.
    fn admit<T>(&self, req: &Request<T>) -> Result<Peer, WorkloadError> {
        let Some(peer) = req.extensions().get::<Peer>().cloned() else {
            let e = WorkloadError::Attestation("no pinned peer on the connection".into());
            tracing::info!(reason = %e, "Workload API caller denied");
            return Err(e);
        };
        if !self.limiter.admit(peer.uid) {
            let e = WorkloadError::RateLimited;
            Caller::of(&peer, Arc::from([])).denied("Workload API call", "-", &e);
            return Err(e);
        }
        Ok(peer)
    }

    /// The selectors of the process that connected (never of a later owner of its pid).
    pub(crate) async fn attest<T>(&self, req: &Request<T>) -> Result<Caller, WorkloadError> {
        let peer = self.admit(req)?;
        let (selectors, mark) = match self.selectors(&peer).await {
            Ok(s) => s,
            Err(e) => {
                Caller::of(&peer, Arc::from([])).denied("Workload API call", "-", &e);
                return Err(e);
            }
        };
        let mut caller = Caller::of(&peer, selectors);
        caller.mark = mark;
        let snap = self.snapshots.borrow().clone();
        caller.leases = self
            .demands
            .ensure(&snap, &caller.selectors)
            .await
            .map_err(WorkloadError::Upstream)
            .inspect_err(|e| caller.denied("Workload API call", "-", e))?;
        Ok(caller)
    }

    /// The connection's selectors from its last full attestation while the process's mark
    /// is unchanged (it lives, runs the same executable with the same ids); else attested now.
    async fn selectors(
        &self,
        peer: &Peer,
    ) -> Result<(Arc<[Selector]>, Option<ProcessMark>), WorkloadError> {
        // Read before attesting: a change during the attestation shows at the next call.
        let mark = self.attestor.mark(&peer.process);
        if let Some(s) = mark.and_then(|m| peer.memo.get(m)) {
            return Ok((s, mark));
        }
        let attestor = self.attestor.clone();
        let process = peer.process.clone();
        let start = Instant::now();
        let selectors = self
            .attestations
            .run(move || attestor.attest(&process))
            .await
            .and_then(|r| r)
            .map_err(WorkloadError::Attestation);
        self.metrics.workload_attested(start.elapsed());
        let selectors: Arc<[Selector]> = selectors?.into();
        tracing::debug!(pid = peer.process.pid(), ?selectors, "workload attested");
        if let Some(m) = mark {
            peer.memo.set(m, &selectors);
        }
        Ok((selectors, mark))
    }
}

pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Resolves when the process behind `pidfd` exits; never without one.
pub(crate) async fn process_exit(pidfd: Option<OwnedFd>) {
    let watched = pidfd.and_then(|fd| {
        // SAFETY: the AsyncFd owns `fd`, so it stays open for as long as it is registered.
        unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .inspect_err(|e| tracing::debug!(error = %e, "cannot watch a pidfd"))
            .ok()
    });
    match watched {
        Some(fd) => {
            let _ = fd.readable().await;
        }
        None => std::future::pending().await,
    }
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadApi {
    type FetchX509SVIDStream = Stream_<wl::X509svidResponse>;
    type FetchX509BundlesStream = Stream_<wl::X509BundlesResponse>;
    type FetchJWTBundlesStream = Stream_<wl::JwtBundlesResponse>;
    type FetchWITSVIDStream = Stream_<wl::WitsvidResponse>;
    type FetchWITBundlesStream = Stream_<wl::WitBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        req: Request<wl::X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        let caller = self.attest(&req).await?;
        Ok(Response::new(self.follow(
            caller,
            "X509-SVID",
            responses::x509_svid,
        )?))
    }

    async fn fetch_x509_bundles(
        &self,
        req: Request<wl::X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        let caller = self.attest(&req).await?;
        Ok(Response::new(self.follow(
            caller,
            "X.509 bundle",
            responses::x509_bundles,
        )?))
    }

    async fn fetch_jwt_bundles(
        &self,
        req: Request<wl::JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        let caller = self.attest(&req).await?;
        Ok(Response::new(self.follow(
            caller,
            "JWT bundle",
            responses::jwt_bundles,
        )?))
    }

    async fn fetch_jwtsvid(
        &self,
        req: Request<wl::JwtsvidRequest>,
    ) -> Result<Response<wl::JwtsvidResponse>, Status> {
        let r = req.get_ref();
        let wanted = jwtsvid_request(r)?;
        let caller = self.attest(&req).await?;
        let asked = wanted.as_ref().map_or("-".into(), |w| w.to_string());
        let snap = self.snapshots.borrow().clone();
        let mut ids = responses::identities(&snap, &caller.selectors)
            .inspect_err(|e| caller.denied("JWT-SVID", &asked, e))?;
        if let Some(w) = &wanted {
            ids.retain(|s| &s.spiffe_id == w);
            if ids.is_empty() {
                let e = WorkloadError::NotEntitled(w.to_string());
                caller.denied("JWT-SVID", &asked, &e);
                return Err(e.into());
            }
        }
        let mut svids = Vec::with_capacity(ids.len());
        for s in ids {
            let token = self
                .jwt_cache
                .get(
                    self.authority.as_ref(),
                    &s.entry.id,
                    // A templated entry's JWT-SVID names the caller's expansion.
                    s.template.as_ref().map_or("", |_| s.spiffe_id.as_str()),
                    &r.audience,
                    unix_now(),
                )
                .await
                .map_err(|e| {
                    let e = WorkloadError::from_authority(e, &s.spiffe_id);
                    caller.denied("JWT-SVID", s.spiffe_id.as_str(), &e);
                    e
                })?;
            svids.push(wl::Jwtsvid {
                spiffe_id: s.spiffe_id.to_string(),
                svid: token,
                hint: s.entry.hint.clone(),
            });
        }
        // Once every token is in hand: a call that fails on a later identity hands out none.
        for s in &svids {
            if caller.first_issue("JWT-SVID", s.svid.as_bytes()) {
                tracing::info!(
                    pid = caller.pid,
                    uid = %caller.uid(),
                    path = %caller.path(),
                    spiffe_id = %s.spiffe_id,
                    audience = ?r.audience,
                    "JWT-SVID issued"
                );
            }
        }
        Ok(Response::new(wl::JwtsvidResponse { svids }))
    }

    async fn validate_jwtsvid(
        &self,
        req: Request<wl::ValidateJwtsvidRequest>,
    ) -> Result<Response<wl::ValidateJwtsvidResponse>, Status> {
        let r = req.get_ref();
        if r.audience.is_empty() {
            return Err(WorkloadError::InvalidArgument("audience must be specified".into()).into());
        }
        if r.svid.is_empty() {
            return Err(WorkloadError::InvalidArgument("svid must be specified".into()).into());
        }
        // No identity is handed out here, but the caller must still be the one that connected.
        let peer = self.admit(&req)?;
        if let Err(e) = self.attestor.check(&peer.process) {
            let e = WorkloadError::Attestation(e);
            Caller::of(&peer, Arc::from([])).denied("JWT-SVID validation", "-", &e);
            return Err(e.into());
        }
        let bundle = self
            .snapshots
            .borrow()
            .bundle
            .clone()
            .ok_or(WorkloadError::NotSynced)?;
        let jwks = bundle.jwt().ok_or(WorkloadError::NotSynced)?;
        let v = jwt::validate(&r.svid, &r.audience, &jwks, &self.trust_domain, unix_now())
            .map_err(|e| WorkloadError::InvalidArgument(format!("invalid JWT-SVID: {e}")))?;
        Ok(Response::new(wl::ValidateJwtsvidResponse {
            spiffe_id: v.spiffe_id.to_string(),
            claims: Some(to_struct(v.claims)),
        }))
    }

    async fn fetch_witsvid(
        &self,
        _: Request<wl::WitsvidRequest>,
    ) -> Result<Response<Self::FetchWITSVIDStream>, Status> {
        Err(Status::unimplemented("WIT-SVIDs are not supported"))
    }

    async fn fetch_wit_bundles(
        &self,
        _: Request<wl::WitBundlesRequest>,
    ) -> Result<Response<Self::FetchWITBundlesStream>, Status> {
        Err(Status::unimplemented("WIT-SVIDs are not supported"))
    }
}

/// Checks a `FetchJWTSVID` request's own fields, before any attestation:
/// the SPIFFE ID asked for, if any.
pub fn jwtsvid_request(r: &wl::JwtsvidRequest) -> Result<Option<SpiffeId>, WorkloadError> {
    if r.audience.is_empty() || r.audience.iter().any(String::is_empty) {
        return Err(WorkloadError::InvalidArgument(
            "audience must be specified".into(),
        ));
    }
    match r.spiffe_id.as_str() {
        "" => Ok(None),
        s => SpiffeId::parse_workload(s)
            .map(Some)
            .map_err(|e| WorkloadError::InvalidArgument(format!("spiffe_id: {e}"))),
    }
}

fn to_struct(map: serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: map.into_iter().map(|(k, v)| (k, to_value(v))).collect(),
    }
}

fn to_value(v: serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.into_iter().map(to_value).collect(),
        }),
        serde_json::Value::Object(o) => Kind::StructValue(to_struct(o)),
    };
    prost_types::Value { kind: Some(kind) }
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
