//! Running the agent as a service: the telemetry endpoint (metrics, liveness,
//! readiness) and SIGHUP (log level, an immediate entry sync, and a warning
//! for every change that only a restart applies).

use crate::cache::{Snapshot, State};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::run::BoxError;
use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Arc;
use tessera_attestors::workload::unix::UnixAttestor;
use tessera_common::telemetry::{self, BoxFuture, Probes};
use tokio::sync::watch;

/// What `/metrics` and `/ready` read.
pub struct AgentProbes {
    pub registry: prometheus::Registry,
    pub metrics: Arc<Metrics>,
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    pub attestor: Arc<UnixAttestor>,
    pub socket_path: PathBuf,
    /// True once the agent is stopping.
    pub shutdown: watch::Receiver<bool>,
}

impl Probes for AgentProbes {
    fn metrics(&self) -> Result<String, String> {
        let snap = self.snapshots.borrow().clone();
        self.metrics
            .refresh(&snap, &self.attestor, tessera_common::unix_now());
        telemetry::encode(&self.registry)
    }

    /// Ready = can serve identities: attested and synced (the cache is Ready),
    /// not stopping, and the Workload API socket accepts connections.
    fn ready(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            if *self.shutdown.borrow() {
                return Err("shutting down".into());
            }
            match self.snapshots.borrow().state {
                State::Ready => {}
                State::Syncing => return Err("not attested and synced yet".into()),
                State::Refused => return Err("the authority refused this agent".into()),
            }
            tokio::net::UnixStream::connect(&self.socket_path)
                .await
                .map(|_| ())
                .map_err(|e| format!("Workload API socket {}: {e}", self.socket_path.display()))
        })
    }
}

/// Starts telemetry if `[telemetry] listen` is set.
pub async fn start_telemetry(cfg: &Config, probes: AgentProbes) -> Result<(), BoxError> {
    if let Some(listen) = &cfg.telemetry.listen {
        telemetry::start(listen, Arc::new(probes)).await?;
    }
    Ok(())
}

/// Installs the SIGHUP handler (so SIGHUP never kills the agent) and serves
/// reloads: each one re-reads the config file, applies `[log] level`, warns
/// about what needs a restart, and wakes the SVID manager for a sync.
pub fn handle_sighup(cfg: Config, wake: watch::Sender<u64>) -> Result<(), BoxError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).map_err(|e| format!("cannot handle SIGHUP: {e}"))?;
    tokio::spawn(async move {
        let mut running = cfg;
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the configuration and syncing entries now");
            reload(&mut running);
            wake.send_modify(|n| *n = n.wrapping_add(1));
        }
    });
    Ok(())
}

fn reload(running: &mut Config) {
    let Some(path) = running.source.clone() else {
        tracing::warn!("SIGHUP: the agent was not started from a config file; nothing to reload");
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

/// Config fields that differ between `old` and `new` and are only read at
/// startup. Values are not logged: a join token is a secret.
pub fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    fn differs<T: Debug>(a: &T, b: &T) -> bool {
        format!("{a:?}") != format!("{b:?}")
    }
    let mut out = Vec::new();
    let fields: [(&'static str, bool); 11] = [
        (
            "trust_domain",
            differs(&old.trust_domain, &new.trust_domain),
        ),
        (
            "authority_address/authority_addresses",
            differs(&old.authority_addresses, &new.authority_addresses),
        ),
        (
            "trust_bundle_path/insecure_bootstrap",
            differs(&old.trust, &new.trust),
        ),
        ("socket_path", differs(&old.socket_path, &new.socket_path)),
        ("data_dir", differs(&old.data_dir, &new.data_dir)),
        (
            "sync_interval",
            differs(&old.sync_interval, &new.sync_interval),
        ),
        (
            "node_attestation",
            // Not by Debug: that hides the join token.
            old.node_attestation != new.node_attestation,
        ),
        (
            "tpm",
            differs(&old.tpm.tcti, &new.tpm.tcti)
                || differs(&old.tpm.event_log_path, &new.tpm.event_log_path)
                || differs(&old.tpm.helper_path, &new.tpm.helper_path),
        ),
        (
            "telemetry.listen",
            differs(&old.telemetry.listen, &new.telemetry.listen),
        ),
        ("log.json", old.log.json != new.log.json),
        ("sds", old.sds != new.sds),
    ];
    for (name, changed) in fields {
        if changed {
            out.push(name);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "trust_domain = \"example.org\"\nauthority_address = \"127.0.0.1:8081\"\ntrust_bundle_path = \"/etc/b.pem\"\n\
         [node_attestation]\nmethod = \"join_token\"\njoin_token = \"0123456789abcdef0123456789abcdef\"\n";

    #[test]
    fn only_runtime_fields_reload() {
        let old = Config::parse(BASE).unwrap();
        let level = Config::parse(&format!("{BASE}[log]\nlevel = \"debug\"\n")).unwrap();
        assert!(restart_needed(&old, &level).is_empty());
        let moved = Config::parse(&format!(
            "socket_path = \"/run/x.sock\"\nsync_interval = \"1m\"\n{BASE}[telemetry]\nlisten = \"127.0.0.1:9\"\n[log]\njson = true\n"
        ))
        .unwrap();
        assert_eq!(
            restart_needed(&old, &moved),
            vec![
                "socket_path",
                "sync_interval",
                "telemetry.listen",
                "log.json"
            ]
        );
        let token = Config::parse(&BASE.replace(
            "0123456789abcdef0123456789abcdef",
            "fedcba9876543210fedcba9876543210",
        ))
        .unwrap();
        assert_eq!(restart_needed(&old, &token), vec!["node_attestation"]);
    }
}
