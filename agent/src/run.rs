//! `tessera-agent run`: attest the node, keep the agent SVID fresh, keep the
//! SVID cache current and serve the Workload API.

use crate::cache::manager::{Manager, SystemClock};
use crate::cache::rotation::{backoff, random_jitter, rotate_at};
use crate::config::{Config, NodeAttestation, Trust};
use crate::metrics::{timed_evidence, Metrics};
use crate::node::{self, AgentSvid};
use crate::ops;
use crate::upstream::{authority_id, mtls_client, AgentClient, AuthorityError, GrpcUpstream};
use crate::workload_api::{self, WorkloadApi};
use rustls::pki_types::CertificateDer;
use std::sync::Arc;
use std::time::Duration;
use tessera_attestors::node::join_token::JoinTokenEvidence;
use tessera_attestors::node::tpm::device::Tpm;
use tessera_attestors::node::tpm::evidence::TpmEvidence;
use tessera_attestors::node::NodeEvidence;
use tessera_attestors::workload::docker_api::DockerApi;
use tessera_attestors::workload::unix::UnixAttestor;
use tessera_common::{fsutil, systemd, tls, unix_now, x509};
use tokio::sync::watch;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

const MAX_RETRY: Duration = Duration::from_secs(30);
/// Longest a shutdown waits for open connections.
const DRAIN: Duration = Duration::from_secs(5);

/// What the agent trusts before it has an SVID.
struct Bootstrap {
    roots: Option<Vec<CertificateDer<'static>>>,
}

impl Bootstrap {
    fn client_config(&self, cfg: &Config) -> Result<rustls::ClientConfig, BoxError> {
        Ok(match &self.roots {
            Some(r) => tls::client_config(r, authority_id(&cfg.trust_domain)?, None)?,
            None => tls::insecure_bootstrap_client_config()?,
        })
    }
}

fn evidence(cfg: &Config) -> Result<Box<dyn NodeEvidence>, BoxError> {
    Ok(match &cfg.node_attestation {
        NodeAttestation::JoinToken(t) => Box::new(JoinTokenEvidence(t.clone())),
        NodeAttestation::Tpm {
            tcti,
            event_log_path,
            ek_template,
        } => Box::new(TpmEvidence {
            tpm: Tpm::open_with_ek(tcti, *ek_template)
                .map_err(|e| format!("tpm.tcti {tcti:?}: {e}"))?,
            key_dir: cfg.data_dir.clone(),
            event_log_path: event_log_path.clone(),
        }),
    })
}

/// Attests until it succeeds or the authority refuses the agent or its evidence.
async fn attest(
    cfg: &Config,
    boot: &Bootstrap,
    evidence: &dyn NodeEvidence,
    metrics: &Metrics,
) -> Result<AgentSvid, BoxError> {
    let mut attempt = 0;
    loop {
        let tls = boot.client_config(cfg)?;
        match node::attest(
            &cfg.authority_address,
            &cfg.trust_domain,
            tls,
            boot.roots.as_deref(),
            evidence,
            metrics,
        )
        .await
        {
            Ok(svid) => {
                tracing::info!(agent_id = %svid.id, not_after = svid.not_after, "node attested");
                return Ok(svid);
            }
            // A TPM hiccup, an RNG failure, an unreachable or confused authority:
            // try again; only a refusal ends the agent (retrying cannot help).
            Err(e) if e.is_transient() => {
                let wait = backoff(attempt, MAX_RETRY);
                tracing::warn!(error = %e, retry_in = ?wait, "node attestation failed");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            Err(e) => return Err(format!("node attestation: {e}").into()),
        }
    }
}

pub async fn run(cfg: Config) -> Result<(), BoxError> {
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
    let boot = match &cfg.trust {
        Trust::BundleFile(p) => {
            let pem =
                std::fs::read(p).map_err(|e| format!("trust_bundle_path {}: {e}", p.display()))?;
            Bootstrap {
                roots: Some(
                    x509::certs_from_pem(&pem)
                        .map_err(|e| format!("trust_bundle_path {}: {e}", p.display()))?,
                ),
            }
        }
        Trust::InsecureBootstrap => {
            tracing::warn!("INSECURE BOOTSTRAP: the authority is not authenticated on first contact; anyone on the path can impersonate it. Use trust_bundle_path in production.");
            Bootstrap { roots: None }
        }
    };
    // Serve from the start: until the node is attested and synced every
    // caller gets Unavailable rather than a hanging connection.
    let incoming = workload_api::bind(&cfg.socket_path)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (client_tx, client_rx) = watch::channel(None);
    let upstream = Arc::new(GrpcUpstream::new(client_rx).with_metrics(metrics.clone()));
    let (manager, snapshots) = Manager::new(
        upstream.clone(),
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
        upstream,
        jwt_cache: Arc::default(),
        demands: manager.demands(),
        trust_domain: cfg.trust_domain.clone(),
        shutdown: stop_rx.clone(),
        metrics: metrics.clone(),
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

    let evidence = timed_evidence(evidence(&cfg)?, metrics.clone());
    // Ready once serving (callers get Unavailable until attested) and the TPM
    // is open; the SIGTERM handler is installed by the select! just below.
    systemd::spawn_watchdog();
    systemd::ready();
    systemd::status("serving the Workload API; attesting the node");
    let startup = async {
        // A TPM host proves itself again at every start (a reboot may have changed
        // what it runs); only a join-token agent, whose token is spent, resumes.
        let stored = match cfg.node_attestation {
            NodeAttestation::JoinToken(_) => AgentSvid::load(&cfg.data_dir, &cfg.trust_domain)?,
            NodeAttestation::Tpm { .. } => None,
        };
        let svid = match stored {
            Some(s) => {
                tracing::info!(agent_id = %s.id, not_after = s.not_after, "resuming with the stored agent SVID");
                s
            }
            None => {
                let s = attest(&cfg, &boot, evidence.as_ref(), &metrics).await?;
                s.save(&cfg.data_dir)?;
                s
            }
        };
        Ok::<_, BoxError>(svid)
    };
    let svid = tokio::select! {
        svid = startup => svid?,
        _ = shutdown_signal() => return stop(&cfg, &stop_tx, server).await,
        _ = &mut server => return Err("the Workload API server stopped".into()),
    };
    client_tx.send_replace(Some((
        mtls_client(&cfg.authority_address, &cfg.trust_domain, &svid)?,
        svid.not_after,
    )));
    systemd::status(&format!(
        "attested as {}; serving the Workload API",
        svid.id
    ));
    metrics.agent_svid(svid.not_after);
    tokio::spawn(
        manager
            .with_metrics(metrics.clone())
            .run(cfg.sync_interval, wake_rx),
    );
    tokio::spawn(keep_agent_svid(
        cfg.clone(),
        boot,
        evidence,
        svid,
        client_tx,
        wake_tx,
        metrics,
    ));
    tracing::info!("agent ready");
    tokio::select! {
        _ = shutdown_signal() => stop(&cfg, &stop_tx, server).await,
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

/// Renews the agent SVID at about half its life; re-attests once it expired.
async fn keep_agent_svid(
    cfg: Config,
    boot: Bootstrap,
    evidence: Box<dyn NodeEvidence>,
    mut svid: AgentSvid,
    client_tx: watch::Sender<AgentClient>,
    wake_tx: watch::Sender<u64>,
    metrics: Arc<Metrics>,
) {
    loop {
        let at = rotate_at(svid.issued_at, svid.not_after, random_jitter());
        tokio::time::sleep(Duration::from_secs((at - unix_now()).max(0) as u64)).await;
        let mut attempt = 0;
        svid = loop {
            let result = if unix_now() >= svid.not_after {
                let boot_roots = Bootstrap {
                    roots: boot
                        .roots
                        .clone()
                        .or_else(|| Some(svid.bundle_roots.clone())),
                };
                match boot_roots.client_config(&cfg) {
                    Ok(tls) => {
                        node::attest(
                            &cfg.authority_address,
                            &cfg.trust_domain,
                            tls,
                            boot_roots.roots.as_deref(),
                            evidence.as_ref(),
                            &metrics,
                        )
                        .await
                    }
                    Err(e) => Err(AuthorityError::RetryLater(format!(
                        "TLS to the authority: {e}"
                    ))),
                }
            } else if evidence.reattest_on_renewal() {
                // Continuous verification: the node proves itself again, over mTLS.
                match node::identity_client_config(&cfg.trust_domain, &svid) {
                    Ok(tls) => {
                        node::attest(
                            &cfg.authority_address,
                            &cfg.trust_domain,
                            tls,
                            Some(&svid.bundle_roots),
                            evidence.as_ref(),
                            &metrics,
                        )
                        .await
                    }
                    Err(e) => Err(e),
                }
            } else {
                node::renew(&cfg.authority_address, &cfg.trust_domain, &svid, &metrics).await
            };
            match result {
                Ok(new) => break new,
                Err(e) => {
                    let left = (svid.not_after - unix_now()).max(1) as u64;
                    let wait = backoff(attempt, MAX_RETRY.min(Duration::from_secs(left / 4 + 1)));
                    tracing::warn!(error = %e, retry_in = ?wait, "agent SVID renewal failed");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        };
        tracing::info!(agent_id = %svid.id, not_after = svid.not_after, "agent SVID renewed");
        metrics.agent_svid(svid.not_after);
        if let Err(e) = svid.save(&cfg.data_dir) {
            tracing::error!(error = %e, "cannot store the agent SVID");
        }
        match mtls_client(&cfg.authority_address, &cfg.trust_domain, &svid) {
            Ok(c) => {
                let _ = client_tx.send(Some((c, svid.not_after)));
                wake_tx.send_modify(|n| *n += 1);
            }
            Err(e) => tracing::error!(error = %e, "cannot use the renewed agent SVID"),
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
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
