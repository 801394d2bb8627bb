//! The Workload API handlers: attest the caller, then answer from the
//! snapshot; streams follow the snapshot watch.

use super::responses;
use super::WorkloadError;
use crate::cache::jwt::JwtCache;
use crate::cache::Snapshot;
use crate::upstream::Upstream;
use std::pin::Pin;
use std::sync::Arc;
use tessera_attestors::workload::unix::UnixAttestor;
use tessera_common::{jwt, unix_now, Selector, SpiffeId, TrustDomain};
use tessera_proto::workload as wl;
use tessera_proto::workload::spiffe_workload_api_server::SpiffeWorkloadApi;
use tokio::sync::{mpsc, watch};
use tokio_stream::{wrappers::ReceiverStream, Stream};
use tonic::{Request, Response, Status};

type Stream_<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[derive(Clone)]
pub struct WorkloadApi {
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    pub attestor: Arc<UnixAttestor>,
    pub upstream: Arc<dyn Upstream>,
    pub jwt_cache: Arc<JwtCache>,
    pub trust_domain: TrustDomain,
    /// Turns true when the agent stops: every stream ends.
    pub shutdown: watch::Receiver<bool>,
}

impl WorkloadApi {
    /// The caller's selectors from its kernel-reported pid.
    async fn attest<T>(&self, req: &Request<T>) -> Result<Vec<Selector>, WorkloadError> {
        let pid = req
            .extensions()
            .get::<tonic::transport::server::UdsConnectInfo>()
            .and_then(|i| i.peer_cred)
            .and_then(|c| c.pid())
            .ok_or_else(|| {
                WorkloadError::Attestation("no peer credentials on the connection".into())
            })?;
        let attestor = self.attestor.clone();
        let selectors = tokio::task::spawn_blocking(move || attestor.attest(pid))
            .await
            .map_err(|e| WorkloadError::Attestation(e.to_string()))?
            .map_err(|e| WorkloadError::Attestation(e.to_string()))?;
        tracing::debug!(pid, ?selectors, "workload attested");
        Ok(selectors)
    }

    /// A stream that sends `build(snapshot)` now and again whenever it changes;
    /// it ends with the error when the caller's last identity goes away.
    fn follow<T, F>(&self, selectors: Vec<Selector>, build: F) -> Result<Stream_<T>, Status>
    where
        T: PartialEq + Send + Sync + 'static,
        T: Clone,
        F: Fn(&Snapshot, &[Selector]) -> Result<T, WorkloadError> + Send + 'static,
    {
        let mut rx = self.snapshots.clone();
        let mut shutdown = self.shutdown.clone();
        let first = build(&rx.borrow_and_update(), &selectors).map_err(Status::from)?;
        let (tx, out) = mpsc::channel(2);
        tokio::spawn(async move {
            let mut last = first.clone();
            if tx.send(Ok(first)).await.is_err() {
                return;
            }
            loop {
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() { return },
                    _ = tx.closed() => return,
                    _ = stopped(&mut shutdown) => {
                        let _ = tx.send(Err(Status::unavailable("agent is shutting down"))).await;
                        return;
                    }
                }
                let snap = rx.borrow_and_update().clone();
                match build(&snap, &selectors) {
                    Ok(msg) if msg == last => {}
                    Ok(msg) => {
                        last = msg.clone();
                        if tx.send(Ok(msg)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                }
            }
        });
        Ok(Box::pin(ReceiverStream::new(out)))
    }
}

async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

fn log_denial(what: &str, selectors: &[Selector], e: &WorkloadError) {
    let uid = selectors
        .iter()
        .find(|s| s.kind == "unix" && s.value.starts_with("uid:"))
        .map(|s| s.value.as_str())
        .unwrap_or("?");
    let path = selectors
        .iter()
        .find(|s| s.kind == "unix" && s.value.starts_with("path:"))
        .map(|s| s.value.as_str())
        .unwrap_or("?");
    tracing::info!(%uid, %path, error = %e, "{what} denied");
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
        let selectors = self.attest(&req).await?;
        if let Err(e) = responses::identities(&self.snapshots.borrow(), &selectors) {
            log_denial("X509-SVID", &selectors, &e);
        }
        let ids: Vec<String> = responses::identities(&self.snapshots.borrow(), &selectors)
            .map(|v| v.iter().map(|s| s.spiffe_id.to_string()).collect())
            .unwrap_or_default();
        tracing::info!(spiffe_ids = ?ids, "serving X509-SVIDs");
        Ok(Response::new(self.follow(selectors, responses::x509_svid)?))
    }

    async fn fetch_x509_bundles(
        &self,
        req: Request<wl::X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        let selectors = self.attest(&req).await?;
        Ok(Response::new(
            self.follow(selectors, responses::x509_bundles)?,
        ))
    }

    async fn fetch_jwt_bundles(
        &self,
        req: Request<wl::JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        let selectors = self.attest(&req).await?;
        Ok(Response::new(
            self.follow(selectors, responses::jwt_bundles)?,
        ))
    }

    async fn fetch_jwtsvid(
        &self,
        req: Request<wl::JwtsvidRequest>,
    ) -> Result<Response<wl::JwtsvidResponse>, Status> {
        let r = req.get_ref();
        if r.audience.is_empty() || r.audience.iter().any(String::is_empty) {
            return Err(WorkloadError::InvalidArgument("audience must be specified".into()).into());
        }
        let wanted = match r.spiffe_id.as_str() {
            "" => None,
            s => Some(
                SpiffeId::parse_workload(s)
                    .map_err(|e| WorkloadError::InvalidArgument(format!("spiffe_id: {e}")))?,
            ),
        };
        let selectors = self.attest(&req).await?;
        let snap = self.snapshots.borrow().clone();
        let mut ids = responses::identities(&snap, &selectors)
            .inspect_err(|e| log_denial("JWT-SVID", &selectors, e))?;
        if let Some(w) = &wanted {
            ids.retain(|s| &s.spiffe_id == w);
            if ids.is_empty() {
                return Err(WorkloadError::NotEntitled(w.to_string()).into());
            }
        }
        let mut svids = Vec::with_capacity(ids.len());
        for s in ids {
            let token = self
                .jwt_cache
                .get(self.upstream.as_ref(), &s.entry_id, &r.audience, unix_now())
                .await?;
            tracing::info!(spiffe_id = %s.spiffe_id, audience = ?r.audience, "serving JWT-SVID");
            svids.push(wl::Jwtsvid {
                spiffe_id: s.spiffe_id.to_string(),
                svid: token,
                hint: s.hint.clone(),
            });
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
