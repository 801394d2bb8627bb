//! `tessera-agent run`: attest the node, keep the agent SVID fresh, keep the
//! SVID cache current and serve the Workload API.

use crate::authority_client::{GrpcAuthority, IdentityChannel, Replicas};
use crate::cache::manager::{Manager, SystemClock};
use crate::config::{Config, NodeAttestation, Trust};
use crate::identity::Keeper;
use crate::metrics::{timed_evidence, Metrics};
use crate::ops;
use crate::workload_api::{self, WorkloadApi};
use rustls::pki_types::CertificateDer;
use std::sync::Arc;
use std::time::Duration;
use tessera_attestors::node::join_token::JoinTokenEvidence;
use tessera_attestors::node::tpm::evidence::TpmEvidence;
use tessera_attestors::node::NodeEvidence;
use tessera_attestors::workload::docker_api::DockerApi;
use tessera_attestors::workload::unix::UnixAttestor;
use tessera_common::shutdown::Shutdown;
use tessera_common::{fsutil, systemd, tls, x509};
use tokio::sync::watch;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Longest a shutdown waits for open connections.
const DRAIN: Duration = Duration::from_secs(5);

/// What the agent trusts before it has an SVID: the configured bundle, or
/// nothing (None: insecure bootstrap).
fn bootstrap_roots(cfg: &Config) -> Result<Option<Vec<CertificateDer<'static>>>, BoxError> {
    Ok(match &cfg.trust {
        Trust::BundleFile(p) => {
            let pem =
                std::fs::read(p).map_err(|e| format!("trust_bundle_path {}: {e}", p.display()))?;
            Some(
                x509::certs_from_pem(&pem)
                    .map_err(|e| format!("trust_bundle_path {}: {e}", p.display()))?,
            )
        }
        Trust::InsecureBootstrap => {
            tracing::warn!("INSECURE BOOTSTRAP: the authority is not authenticated on first contact; anyone on the path can impersonate it. Use trust_bundle_path in production.");
            None
        }
    })
}

async fn evidence(cfg: &Config) -> Result<Box<dyn NodeEvidence>, BoxError> {
    Ok(match &cfg.node_attestation {
        NodeAttestation::JoinToken(t) => Box::new(JoinTokenEvidence(t.clone())),
        NodeAttestation::Tpm {
            tcti,
            event_log_path,
            ek_template,
        } => Box::new(TpmEvidence {
            tpm: crate::tpm_helper::start(cfg, tcti, *ek_template).await?,
            key_dir: cfg.data_dir.clone(),
            event_log_path: event_log_path.clone(),
        }),
    })
}

/// aws-lc seeds its random generator from CPU timing jitter when the process
/// first asks for a random byte: tens of milliseconds of CPU (most of the
/// TPM start's CPU time in a profile). Asked for here, on a blocking thread,
/// it overlaps opening the TPM and gathering the evidence instead of holding
/// up the attestation's first key. A failure is left to that key generation,
/// which reports it.
fn seed_rng() {
    tokio::task::spawn_blocking(|| aws_lc_rs::rand::fill(&mut [0u8; 1]).is_ok());
}

pub async fn run(cfg: Config) -> Result<(), BoxError> {
    seed_rng();
    tls::install_default_provider();
    tessera_common::limits::raise_nofile_limit();
    let registry = prometheus::Registry::new();
    let metrics = Metrics::new(&registry).map_err(|e| format!("metrics: {e}"))?;
    // Early, so a SIGHUP during attestation reloads rather than kills.
    let (wake_tx, wake_rx) = watch::channel(0u64);
    ops::handle_sighup(cfg.clone(), wake_tx.clone())?;
    fsutil::ensure_private_dir(&cfg.data_dir, 0o700)
        .map_err(|e| format!("data_dir {}: {e}", cfg.data_dir.display()))?;
    crate::data_dir::remove_stale_temps(&cfg.data_dir);
    let roots = bootstrap_roots(&cfg)?;
    // Serve from the start: until the node is attested and synced every
    // caller gets Unavailable rather than a hanging connection.
    let incoming = workload_api::bind(&cfg.socket_path)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (credential_tx, credential) = watch::channel(None);
    let replicas = Arc::new(Replicas::new(cfg.authority_addresses.clone()));
    let channel = IdentityChannel::new(replicas.clone(), credential)
        .map_err(|e| format!("TLS to the authority: {e}"))?;
    let td = cfg.trust_domain.clone();
    let authority = GrpcAuthority::new(replicas, td, roots, channel)
        .map_err(|e| format!("trust_bundle_path: {e}"))?;
    let authority = Arc::new(authority.with_metrics(metrics.clone()));
    let (manager, snapshots) = Manager::new(
        authority.clone(),
        Arc::new(SystemClock),
        Some(cfg.data_dir.join("entries.json")),
    );
    let manager = manager.with_template_limits(cfg.templates.clone());
    let attestor = Arc::new(workload_attestor(&cfg));
    let limits = workload_api::Limits::new(cfg.workload_api.clone());
    let probes = ops::AgentProbes {
        registry,
        metrics: metrics.clone(),
        snapshots: snapshots.clone(),
        attestor: attestor.clone(),
        socket_path: cfg.socket_path.clone(),
        shutdown: stop_rx.clone(),
    };
    ops::start_telemetry(&cfg, probes).await?;
    let api = WorkloadApi {
        snapshots,
        attestor: attestor.clone(),
        limiter: limits.clone(),
        authority: authority.clone(),
        jwt_cache: Arc::default(),
        demands: manager.demands(),
        trust_domain: cfg.trust_domain.clone(),
        shutdown: stop_rx.clone(),
        metrics: metrics.clone(),
        attestations: Arc::default(),
    };
    let mut server = tokio::spawn(workload_api::serve(
        incoming,
        api,
        cfg.sds.clone(),
        limits,
        attestor,
        wait_stop(stop_rx),
    ));
    tracing::info!(socket = %cfg.socket_path.display(), "Workload API listening");

    let evidence = timed_evidence(evidence(&cfg).await?, metrics.clone());
    // Ready once serving (callers get Unavailable until attested) and the TPM
    // is open; a stop from then on is a clean one.
    let mut shutdown = Shutdown::install().map_err(|e| format!("cannot handle SIGTERM: {e}"))?;
    systemd::spawn_watchdog();
    systemd::ready();
    systemd::status("serving the Workload API; attesting the node");
    let refusals = authority.refusals();
    let keeper = Keeper::new(
        authority,
        evidence,
        cfg.trust_domain.clone(),
        cfg.data_dir.clone(),
        Arc::new(SystemClock),
        credential_tx,
    )
    .with_wake(wake_tx)
    .with_refusals(refusals)
    .with_metrics(metrics.clone());
    // A TPM host proves itself again at every start (a reboot may have changed
    // what it runs); only a join-token agent, whose token is spent, resumes.
    let resume = matches!(cfg.node_attestation, NodeAttestation::JoinToken(_));
    let credential = tokio::select! {
        c = keeper.start(resume) => c?,
        _ = shutdown.requested() => return stop(&cfg, &stop_tx, server).await,
        _ = &mut server => return Err("the Workload API server stopped".into()),
    };
    systemd::status(&format!(
        "attested as {}; serving the Workload API",
        credential.svid.id
    ));
    tokio::spawn(
        manager
            .with_metrics(metrics.clone())
            .run(cfg.sync_interval, wake_rx),
    );
    tokio::spawn(keeper.run());
    tracing::info!("agent ready");
    tokio::select! {
        _ = shutdown.requested() => stop(&cfg, &stop_tx, server).await,
        r = &mut server => Err(format!("the Workload API server stopped: {r:?}").into()),
    }
}

/// Ends every stream, then gives the server a bounded time to finish.
async fn stop(
    cfg: &Config,
    stop_tx: &watch::Sender<bool>,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
) -> Result<(), BoxError> {
    tracing::info!("shutting down");
    systemd::stopping();
    let _ = stop_tx.send(true);
    if tokio::time::timeout(DRAIN, server).await.is_err() {
        tracing::warn!("connections still open after {DRAIN:?}; closing them");
    }
    let _ = std::fs::remove_file(&cfg.socket_path);
    tracing::info!("stopped");
    Ok(())
}

async fn wait_stop(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// The workload attestor, enriched from the container runtime's API when one is configured.
/// Its lookups run on the current runtime.
pub fn workload_attestor(cfg: &Config) -> UnixAttestor {
    let attestor = UnixAttestor::new();
    match &cfg.docker_api {
        Some(c) => attestor.with_enricher(Arc::new(DockerApi::new(
            c.clone(),
            tokio::runtime::Handle::current(),
        ))),
        None => attestor,
    }
}
