//! Running the authority as a service: the telemetry endpoint (metrics,
//! liveness, readiness), SIGHUP (log level, and a warning for every change
//! that only a restart applies) and `tessera-authority healthcheck`.

use crate::config::Config;
use crate::datastore::Datastore;
use crate::server::BoxError;
use std::fmt::Debug;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tessera_common::telemetry::{self, BoxFuture, Probes};
use tessera_proto::authority as pb;
use tokio::sync::watch;

/// Longest the readiness check waits for the database.
const PING_TIMEOUT: Duration = Duration::from_secs(2);
const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The default config file `healthcheck` reads (the packaged location).
pub const DEFAULT_CONFIG: &str = "/etc/tessera/authority.toml";

/// What `/metrics` and `/ready` read.
pub struct AuthorityProbes {
    pub registry: prometheus::Registry,
    pub datastore: Datastore,
    /// True while the agent listener and the admin socket are being served.
    pub listening: Arc<AtomicBool>,
    pub shutdown: watch::Receiver<bool>,
}

impl Probes for AuthorityProbes {
    fn metrics(&self) -> Result<String, String> {
        telemetry::encode(&self.registry)
    }

    /// Ready = the listeners are up, not stopping, and the datastore answers.
    fn ready(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            if *self.shutdown.borrow() {
                return Err("shutting down".into());
            }
            if !self.listening.load(Ordering::SeqCst) {
                return Err("not listening yet".into());
            }
            match tokio::time::timeout(PING_TIMEOUT, self.datastore.ping()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("datastore: {e}")),
                Err(_) => Err(format!("datastore: no answer within {PING_TIMEOUT:?}")),
            }
        })
    }
}

/// Starts telemetry if `[telemetry] listen` is set.
pub async fn start_telemetry(cfg: &Config, probes: AuthorityProbes) -> Result<(), BoxError> {
    if let Some(listen) = &cfg.telemetry.listen {
        telemetry::start(listen, Arc::new(probes)).await?;
    }
    Ok(())
}

/// Installs the SIGHUP handler (so SIGHUP never kills the authority); each
/// SIGHUP re-reads the config file, applies `[log] level` and warns about
/// every other change, which needs a restart.
pub fn handle_sighup(cfg: Config) -> Result<(), BoxError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).map_err(|e| format!("cannot handle SIGHUP: {e}"))?;
    tokio::spawn(async move {
        let mut running = cfg;
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the configuration");
            reload(&mut running);
        }
    });
    Ok(())
}

fn reload(running: &mut Config) {
    let Some(path) = running.source.clone() else {
        tracing::warn!("SIGHUP: not started from a config file; nothing to reload");
        return;
    };
    let new = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "SIGHUP: config not reloaded; the running configuration stays");
            return;
        }
    };
    tessera_common::logging::apply_reload(
        &path,
        &restart_needed(running, &new),
        new.log.level.as_deref(),
    );
    running.log.level = new.log.level;
}

/// Config fields that differ and are only read at startup. Values are not
/// logged: a database URL may hold a password.
pub fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    fn differs<T: Debug>(a: &T, b: &T) -> bool {
        format!("{a:?}") != format!("{b:?}")
    }
    let fields: [(&'static str, bool); 16] = [
        (
            "trust_domain",
            differs(&old.trust_domain, &new.trust_domain),
        ),
        (
            "listen_address",
            differs(&old.listen_address, &new.listen_address),
        ),
        (
            "admin_socket_path",
            differs(&old.admin_socket_path, &new.admin_socket_path),
        ),
        ("data_dir", differs(&old.data_dir, &new.data_dir)),
        (
            "database_url",
            differs(&old.database_url, &new.database_url),
        ),
        (
            "default_x509_ttl",
            differs(&old.default_x509_ttl, &new.default_x509_ttl),
        ),
        (
            "default_jwt_ttl",
            differs(&old.default_jwt_ttl, &new.default_jwt_ttl),
        ),
        ("agent_ttl", differs(&old.agent_ttl, &new.agent_ttl)),
        (
            "join_token_ttl",
            differs(&old.join_token_ttl, &new.join_token_ttl),
        ),
        ("ca_ttl", differs(&old.ca_ttl, &new.ca_ttl)),
        (
            "server_names",
            differs(&old.server_names, &new.server_names),
        ),
        ("ca", differs(&old.ca, &new.ca)),
        ("tpm", differs(&old.tpm, &new.tpm)),
        (
            "telemetry.listen",
            differs(&old.telemetry.listen, &new.telemetry.listen),
        ),
        ("log.json", old.log.json != new.log.json),
        ("limits", old.limits != new.limits),
    ];
    fields
        .into_iter()
        .filter(|(_, changed)| *changed)
        .map(|(name, _)| name)
        .collect()
}

/// `tessera-authority healthcheck`: exit 0 when the authority is ready. With
/// `[telemetry] listen` it asks `/ready` (listeners up, datastore answering);
/// without, or on port 0 (a port the kernel picked, which the config cannot
/// name), it asks the admin socket for one audit event, which also needs the
/// datastore (and root or the authority's user).
pub async fn healthcheck(config: &Path) -> Result<(), BoxError> {
    let cfg = Config::load(config)?;
    let telemetry = match &cfg.telemetry.listen {
        Some(listen) => Some(telemetry::parse_listen(listen)?),
        None => None,
    };
    match telemetry.filter(|a| a.port() != 0) {
        Some(addr) => {
            // An unspecified bind address is reached on loopback.
            let addr = match addr.ip() {
                ip if ip.is_unspecified() && addr.is_ipv4() => {
                    std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()))
                }
                ip if ip.is_unspecified() => {
                    std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
                }
                _ => addr,
            };
            let (status, body) = telemetry::get(addr, "/ready", HEALTHCHECK_TIMEOUT)
                .await
                .map_err(|e| format!("authority telemetry {e}"))?;
            if status != 200 {
                return Err(format!("authority is not ready ({status}): {}", body.trim()).into());
            }
        }
        None => {
            let sock = &cfg.admin_socket_path;
            let ch = tessera_common::uds::connect(sock)
                .await
                .map_err(|e| format!("admin_socket_path {}: {e}", sock.display()))?;
            let mut req = tonic::Request::new(pb::ListAuditRequest {
                limit: 1,
                ..Default::default()
            });
            req.set_timeout(HEALTHCHECK_TIMEOUT);
            pb::admin_client::AdminClient::new(ch)
                .list_audit(req)
                .await?;
        }
    }
    println!("Authority is healthy.");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = "trust_domain = \"example.org\"\nlisten_address = \"127.0.0.1:8081\"\ndata_dir = \"/var/lib/tessera\"\n";

    #[test]
    fn only_the_log_level_reloads() {
        let old = Config::parse(MIN).unwrap();
        let level = Config::parse(&format!("{MIN}[log]\nlevel = \"debug\"\n")).unwrap();
        assert!(restart_needed(&old, &level).is_empty());
        let moved = Config::parse(&format!(
            "agent_ttl = \"30m\"\n{}[telemetry]\nlisten = \"127.0.0.1:9\"\n",
            MIN.replace("8081", "8082")
        ))
        .unwrap();
        assert_eq!(
            restart_needed(&old, &moved),
            vec!["listen_address", "agent_ttl", "telemetry.listen"]
        );
    }
}
