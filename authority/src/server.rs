//! `tessera-authority run`: open the datastore and CA, serve agents over TLS
//! and operators over the admin socket.

use crate::admin_api::{check_peer, AdminApi};
use crate::attestation::join_token::JoinTokenVerifier;
use crate::attestation::tpm::TpmNodeVerifier;
use crate::authority::Authority;
use crate::ca::Ca;
use crate::config::Config;
use crate::datastore::Datastore;
use crate::limits::conn::tls_incoming;
use crate::limits::gate::{AnonymousOnlyLayer, AttestGate};
use crate::limits::shed::ShedLayer;
use crate::limits::MAX_MESSAGE;
use crate::metrics::Metrics;
use crate::node_api::NodeApi;
use crate::ops;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tessera_attestors::node::tpm::ekcert::EkCaStore;
use tessera_attestors::node::tpm::verifier::TpmVerifier;
use tessera_common::shutdown::Shutdown;
use tessera_common::tls::{server_config, RotatingCert};
use tessera_common::{fsutil, unix_now};
use tessera_proto::authority::admin_server::AdminServer;
use tessera_proto::authority::node_server::NodeServer;
use tokio::net::{TcpListener, UnixListener};
use tokio_stream::wrappers::UnixListenerStream;

/// Lifetime of the authority's own TLS certificate; re-issued at half-life.
const SERVER_CERT_TTL: Duration = Duration::from_secs(24 * 3600);

/// Concurrent requests on one agent connection (an agent makes a few).
const MAX_STREAMS: u32 = 32;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub async fn run(config: Config) -> Result<(), BoxError> {
    tessera_common::tls::install_default_provider();
    tessera_common::limits::raise_nofile_limit();
    let registry = prometheus::Registry::new();
    let metrics = Metrics::new(&registry).map_err(|e| format!("metrics: {e}"))?;
    ops::handle_sighup(config.clone())?;
    fsutil::ensure_private_dir(&config.data_dir, 0o700)
        .map_err(|e| format!("data_dir {}: {e}", config.data_dir.display()))?;
    let datastore = Datastore::open(&config.database_url)
        .await?
        .with_latency(metrics.datastore_latency());
    let ca = Ca::load_or_create(
        &config.data_dir,
        &config.trust_domain,
        config.ca.as_ref(),
        config.ca_ttl,
        unix_now(),
    )?;
    let jwt = crate::keys::load_or_create_jwt_signer(&config.data_dir)?;
    let mut verifiers: Vec<Arc<dyn crate::attestation::NodeVerifier>> =
        vec![Arc::new(JoinTokenVerifier {
            datastore: datastore.clone(),
            trust_domain: config.trust_domain.clone(),
        })];
    if let Some(tpm) = &config.tpm {
        verifiers.push(Arc::new(tpm_verifier(tpm, &datastore, &config)?));
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let authority = Arc::new(Authority {
        config: config.clone(),
        datastore,
        ca,
        jwt,
        verifiers,
        metrics: metrics.clone(),
        shutdown: stop_rx.clone(),
        attest_gate: AttestGate::new(&config.limits),
        jwt_limits: crate::limits::jwt::JwtLimiter::new(&config.limits),
        expansions: Default::default(),
    });

    let (chain, key) =
        authority
            .ca
            .server_identity(&config.server_names, SERVER_CERT_TTL, unix_now())?;
    let certs = Arc::new(RotatingCert::new(chain, key)?);
    let mut tls = server_config(certs.clone(), authority.ca.roots())?;
    crate::limits::conn::without_resumption(&mut tls);
    let tls = Arc::new(tls);
    tokio::spawn(rotate_server_cert(authority.clone(), certs));
    tokio::spawn(write_jwt_summaries(authority.clone()));

    let listener = TcpListener::bind(config.listen_address)
        .await
        .map_err(|e| format!("listen_address {}: {e}", config.listen_address))?;
    // The bound address, which differs from the configured one for port 0.
    let bound = listener
        .local_addr()
        .map_err(|e| format!("listen_address {}: {e}", config.listen_address))?;
    let incoming = tls_incoming(
        listener,
        tokio_rustls::TlsAcceptor::from(tls),
        &config.limits,
    );
    let admin_incoming = admin_listener(&config.admin_socket_path)?;
    let listening = Arc::new(AtomicBool::new(false));
    let probes = ops::AuthorityProbes {
        registry,
        datastore: authority.datastore.clone(),
        listening: listening.clone(),
        shutdown: stop_rx.clone(),
    };
    ops::start_telemetry(&config, probes).await?;

    let node = tonic::transport::Server::builder()
        .max_concurrent_streams(MAX_STREAMS)
        .layer(metrics.grpc_layer("node"))
        .layer(AnonymousOnlyLayer)
        .layer(ShedLayer::new(&config.limits))
        .add_service(
            NodeServer::new(NodeApi(authority.clone())).max_decoding_message_size(MAX_MESSAGE),
        )
        .serve_with_incoming_shutdown(incoming, wait_stop(stop_rx.clone()));
    let admin = tonic::transport::Server::builder()
        .layer(metrics.grpc_layer("admin"))
        .add_service(AdminServer::with_interceptor(
            AdminApi(authority.clone()),
            check_peer,
        ))
        .serve_with_incoming_shutdown(admin_incoming, wait_stop(stop_rx));
    tracing::info!(listen = %bound, admin = %config.admin_socket_path.display(), trust_domain = %config.trust_domain, "authority ready");
    let node = tokio::spawn(node);
    let admin = tokio::spawn(admin);
    listening.store(true, Ordering::SeqCst);
    // A stop from READY on is a clean one.
    let mut shutdown = Shutdown::install().map_err(|e| format!("cannot handle SIGTERM: {e}"))?;
    tessera_common::systemd::spawn_watchdog();
    tessera_common::systemd::status(&format!("listening on {bound}"));
    tessera_common::systemd::ready();
    shutdown.requested().await;
    tracing::info!("shutting down");
    tessera_common::systemd::stopping();
    listening.store(false, Ordering::SeqCst);
    // Ends open Attest exchanges too (node_api), so the drain is short.
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let _ = node.await;
        let _ = admin.await;
    })
    .await;
    let _ = std::fs::remove_file(&config.admin_socket_path);
    flush_jwt_summaries(&authority, true).await;
    // Every audit event was committed with its request; closing returns the
    // connections (and checkpoints SQLite's WAL), bounded in time.
    if tokio::time::timeout(Duration::from_secs(3), authority.datastore.close())
        .await
        .is_err()
    {
        tracing::warn!("datastore connections still busy after 3s; exiting anyway");
    }
    tracing::info!("stopped");
    Ok(())
}

fn tpm_verifier(
    tpm: &crate::config::TpmConfig,
    datastore: &Datastore,
    config: &Config,
) -> Result<TpmNodeVerifier, BoxError> {
    let ek_cas = match &tpm.ek_ca_dir {
        Some(dir) => {
            let store = EkCaStore::load_dir(dir)
                .map_err(|e| format!("tpm.ek_ca_dir {}: {e}", dir.display()))?;
            tracing::info!(dir = %dir.display(), certificates = store.len(), "loaded TPM manufacturer CAs");
            Some(store)
        }
        None => None,
    };
    let verifier = TpmVerifier {
        ek_cas,
        allowed_ek_hashes: tpm.allowed_ek_hashes.clone(),
        pcrs: tpm.pcrs.clone(),
        ek_template: tpm.ek_template,
        policies: tpm.policies.clone(),
    };
    Ok(TpmNodeVerifier {
        verifier,
        datastore: datastore.clone(),
        trust_domain: config.trust_domain.clone(),
    })
}

async fn wait_stop(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

async fn rotate_server_cert(authority: Arc<Authority>, certs: Arc<RotatingCert>) {
    loop {
        tokio::time::sleep(SERVER_CERT_TTL / 2).await;
        match authority.ca.server_identity(
            &authority.config.server_names,
            SERVER_CERT_TTL,
            unix_now(),
        ) {
            Ok((chain, key)) => {
                if let Err(e) = certs.replace(chain, key) {
                    tracing::error!(error = %e, "cannot load the new server certificate");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot issue the server certificate"),
        }
    }
}

/// Writes the summary rows of JWT-SVID audit windows as they end, also for
/// agents that stopped minting.
async fn write_jwt_summaries(authority: Arc<Authority>) {
    let mut tick = tokio::time::interval(authority.jwt_limits.window());
    loop {
        tick.tick().await;
        flush_jwt_summaries(&authority, false).await;
    }
}

async fn flush_jwt_summaries(authority: &Authority, all: bool) {
    let rows: Vec<_> = authority
        .jwt_limits
        .ended(std::time::Instant::now(), unix_now(), all)
        .into_iter()
        .map(crate::node_api::coalesced_audit)
        .collect();
    if let Err(e) = authority.datastore.record_audit(&rows).await {
        tracing::error!(error = %e, rows = rows.len(), "cannot write JWT-SVID audit summaries");
    }
}

/// The admin socket, 0600 (root and our own user); see `uds::bind`.
fn admin_listener(path: &std::path::Path) -> Result<UnixListenerStream, BoxError> {
    let err = |e: std::io::Error| format!("admin_socket_path {}: {e}", path.display());
    let listener = tessera_common::uds::bind(path, 0o600).map_err(err)?;
    Ok(UnixListenerStream::new(
        UnixListener::from_std(listener).map_err(err)?,
    ))
}
