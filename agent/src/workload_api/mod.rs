//! The SPIFFE Workload API on a Unix socket: plain HTTP/2, callers identified
//! by the kernel (the process pinned at connect), health and reflection on the
//! same socket, every connection bounded (see `limits`, `track`).

mod blocking;
mod error;
mod exit;
mod follow;
mod header;
mod limits;
mod listener;
mod memo;
mod responses;
mod service;
mod told;
mod track;

pub use blocking::Attestations;
pub use error::WorkloadError;
pub use limits::Limits;
pub use responses::identities;
pub use service::{jwtsvid_request, Attest, Caller, RateLimit, WorkloadApi};
pub(crate) use service::{process_exit, stopped, Recheck};

use crate::cache::{Snapshot, State};
use crate::sds::{Sds, SdsNames};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::SecretDiscoveryServiceServer;
use std::path::Path;
use std::sync::Arc;
use tessera_attestors::workload::unix::{PinnedProcess, ProcessMark, UnixAttestor};
use tessera_common::Selector;
use tessera_proto::workload::spiffe_workload_api_server::SpiffeWorkloadApiServer;
use tokio::sync::watch;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::server::NamedService;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// Binds the socket open to every local user (0666: attestation decides what
/// a caller gets), replacing a stale socket but never one a live agent is
/// serving on; see `tessera_common::uds::bind` for why it cannot be redirected.
pub fn bind(path: &Path) -> Result<UnixListenerStream, String> {
    let err = |e: std::io::Error| format!("socket_path {}: {e}", path.display());
    let listener = tessera_common::uds::bind(path, 0o666).map_err(err)?;
    let listener = tokio::net::UnixListener::from_std(listener).map_err(err)?;
    Ok(UnixListenerStream::new(listener))
}

impl Attest for UnixAttestor {
    fn check(&self, process: &PinnedProcess) -> Result<(), String> {
        UnixAttestor::check(self, process).map_err(|e| e.to_string())
    }

    fn attest(&self, process: &PinnedProcess) -> Result<Vec<Selector>, String> {
        self.attest_pinned(process).map_err(|e| e.to_string())
    }

    fn mark(&self, process: &PinnedProcess) -> Option<ProcessMark> {
        UnixAttestor::mark(self, process).ok().flatten()
    }
}

impl RateLimit for Limits {
    fn admit(&self, uid: u32) -> bool {
        self.take_attestation(uid)
    }
}

/// Serves the Workload API, Envoy SDS, health and reflection until `shutdown` resolves.
/// Connections are admitted under `limits` and their callers pinned by `pinner`.
pub async fn serve(
    incoming: UnixListenerStream,
    api: WorkloadApi,
    sds: SdsNames,
    limits: Arc<Limits>,
    pinner: Arc<UnixAttestor>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let max_streams = limits.config().max_streams_per_connection;
    let incoming = listener::incoming(incoming.into_inner(), limits, pinner);
    let (health, health_service) = tonic_health::server::health_reporter();
    tokio::spawn(follow_health(
        health,
        api.snapshots.clone(),
        api.shutdown.clone(),
    ));
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tessera_proto::WORKLOAD_FILE_DESCRIPTOR_SET)
        .build_v1()
        .ok();
    // Small per-connection HTTP/2 windows: many idle clients must stay cheap.
    let mut builder = tonic::transport::Server::builder()
        .initial_connection_window_size(256 * 1024)
        .initial_stream_window_size(64 * 1024)
        .max_concurrent_streams(max_streams)
        .layer(track::TrackLayer)
        .layer(api.metrics.workload_layer());
    let sds = Sds::new(api.clone(), sds);
    let router = builder
        .add_service(tonic::service::interceptor::InterceptedService::new(
            SpiffeWorkloadApiServer::new(api),
            header::require_security_header,
        ))
        // Envoy sends no security header: SDS is served without it.
        .add_service(
            SecretDiscoveryServiceServer::new(sds)
                .max_decoding_message_size(crate::sds::MAX_REQUEST_BYTES),
        )
        .add_service(health_service)
        .add_optional_service(reflection);
    router
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

/// gRPC health says SERVING only while identities can be served (entries
/// synced, not shutting down), so `tessera-agent healthcheck` means "ready".
async fn follow_health(
    health: HealthReporter,
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    mut shutdown: watch::Receiver<bool>,
) {
    const API: &str = <SpiffeWorkloadApiServer<WorkloadApi> as NamedService>::NAME;
    let mut last = None;
    loop {
        let ready = snapshots.borrow_and_update().state == State::Ready && !*shutdown.borrow();
        if last != Some(ready) {
            let status = if ready {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            health.set_service_status("", status).await;
            health.set_service_status(API, status).await;
            last = Some(ready);
        }
        tokio::select! {
            r = snapshots.changed() => if r.is_err() { return },
            r = shutdown.changed() => if r.is_err() { return },
        }
    }
}
