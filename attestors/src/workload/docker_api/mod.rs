//! Enrichment from a container runtime's Docker Engine API (dockerd, or `podman system
//! service`): `container:image_id:sha256:<hex>` and `container:label:<k>:<v>` for the
//! container the kernel's cgroup path named.
//!
//! The container id always comes from the kernel; the daemon only describes that id, and an
//! answer about another id is rejected. Only system (root-named) docker and podman containers
//! are looked up: a rootless id is what its user named a cgroup and could name someone else's
//! container. Every lookup is bounded by a timeout, single-flight per container and cached;
//! a missing, failing or hung daemon only leaves these selectors out.

mod cache;
mod client;
mod inspect;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tessera_common::Selector;

use super::unix::Enrich;
use cache::{Cache, Fetched};

/// Largest inspect answer read; a real one is a few KiB to tens of KiB.
pub const MAX_RESPONSE: usize = 1 << 20;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(30);
/// A failed lookup is retried after this, so a daemon that comes back is used again soon.
const FAILURE_TTL: Duration = Duration::from_secs(5);
const CACHE_CAPACITY: usize = 4096;
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Settings of the Docker Engine API enrichment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerApiConfig {
    pub socket_path: PathBuf,
    pub timeout: Duration,
    pub cache_ttl: Duration,
}

/// Looks containers up on the daemon at one socket. The lookups run on `runtime`; callers
/// wait for them synchronously (attestation runs on blocking threads).
#[derive(Clone)]
pub struct DockerApi {
    inner: Arc<Inner>,
    runtime: tokio::runtime::Handle,
}

struct Inner {
    config: DockerApiConfig,
    cache: Cache,
    last_warn: Mutex<Option<Instant>>,
}

impl DockerApi {
    pub fn new(config: DockerApiConfig, runtime: tokio::runtime::Handle) -> Self {
        DockerApi {
            inner: Arc::new(Inner {
                cache: Cache::new(CACHE_CAPACITY, config.cache_ttl, FAILURE_TTL),
                config,
                last_warn: Mutex::new(None),
            }),
            runtime,
        }
    }

    /// The daemon's selectors for container `id`, waiting at most the timeout.
    async fn lookup(&self, id: &str) -> Vec<Selector> {
        let inner = self.inner.clone();
        let cell = inner.cache.slot(id, Instant::now());
        let fetch = cell.get_or_init(|| inner.fetch(id));
        match tokio::time::timeout(inner.config.timeout, fetch).await {
            Ok(fetched) => fetched.selectors.clone().unwrap_or_default(),
            Err(_) => {
                inner.warn(id, &format!("no answer within {:?}", inner.config.timeout));
                Vec::new()
            }
        }
    }
}

impl Inner {
    async fn fetch(&self, id: &str) -> Fetched {
        let path = format!("/containers/{id}/json");
        let result = match client::get(&self.config.socket_path, &path, MAX_RESPONSE).await {
            Ok(body) => inspect::selectors(id, &body).map_err(|e| e.to_string()),
            Err(client::ClientError::Status(404)) => {
                // Not this daemon's container (another runtime's, or already gone).
                tracing::debug!(id, "container unknown to the daemon");
                Ok(Vec::new())
            }
            Err(e) => Err(e.to_string()),
        };
        let selectors = result.map_err(|e| self.warn(id, &e)).ok();
        Fetched {
            at: Instant::now(),
            selectors,
        }
    }

    /// At most one WARN a minute: a dead daemon must not flood the log at attestation rate.
    fn warn(&self, id: &str, error: &str) {
        let socket = self.config.socket_path.display().to_string();
        let now = Instant::now();
        let mut last = self.last_warn.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| now.duration_since(t) < WARN_EVERY) {
            tracing::debug!(id, socket, error, "container runtime API lookup failed");
            return;
        }
        *last = Some(now);
        tracing::warn!(
            id,
            socket,
            error,
            "container runtime API lookup failed; no image or label selectors"
        );
    }
}

impl Enrich for DockerApi {
    fn enrich(&self, kernel: &[Selector]) -> Vec<Selector> {
        let Some(id) = system_container(kernel) else {
            return Vec::new();
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let this = self.clone();
        let id = id.to_string();
        self.runtime.spawn(async move {
            let _ = tx.send(this.lookup(&id).await);
        });
        // The lookup is itself bounded; this also holds if the runtime cannot run it.
        rx.recv_timeout(self.inner.config.timeout + Duration::from_millis(50))
            .unwrap_or_default()
    }
}

/// The id of a docker or podman container in the system part of the cgroup tree, from the
/// kernel-derived selectors (a rootless one is qualified `user@<uid>.service/` and skipped).
fn system_container(kernel: &[Selector]) -> Option<&str> {
    let is = |value: &str| {
        kernel
            .iter()
            .any(|s| s.kind == "container" && s.value == value)
    };
    if !is("runtime:docker") && !is("runtime:podman") {
        return None;
    }
    kernel.iter().find_map(|s| {
        let id = s
            .value
            .strip_prefix("id:")
            .filter(|_| s.kind == "container")?;
        (id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then_some(id)
    })
}
