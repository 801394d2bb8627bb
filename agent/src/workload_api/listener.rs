//! The accept loop: each connection is counted against the limits (over a cap it is closed at
//! once), its peer process pinned, and it gets its deadlines. Out of descriptors, the loop
//! waits instead of retrying at once, so a descriptor flood cannot spin the agent.

use super::limits::Limits;
use super::track::Conn;
use futures::Stream;
use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;
use tessera_attestors::workload::unix::{UnixAttestor, UnixError};
use tessera_common::limits::Full;
use tokio::net::UnixListener;

/// Pause after an accept failed for want of descriptors or memory.
const BACKOFF: Duration = Duration::from_millis(100);

struct Accept {
    listener: UnixListener,
    limits: Arc<Limits>,
    attestor: Arc<UnixAttestor>,
    /// Whether the current run of resource errors has been logged.
    starved: bool,
}

/// The admitted connections on `listener`.
pub fn incoming(
    listener: UnixListener,
    limits: Arc<Limits>,
    attestor: Arc<UnixAttestor>,
) -> impl Stream<Item = io::Result<Conn>> {
    let state = Accept {
        listener,
        limits,
        attestor,
        starved: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(conn) = st.next().await {
                return Some((Ok(conn), st));
            }
        }
    })
}

impl Accept {
    /// One accept; `None` when nothing usable came of it.
    async fn next(&mut self) -> Option<Conn> {
        let stream = match self.listener.accept().await {
            Ok((s, _)) => s,
            Err(e) if out_of_resources(&e) => {
                self.starve(&e).await;
                return None;
            }
            Err(e) => {
                tracing::debug!(error = %e, "Workload API accept failed");
                return None;
            }
        };
        let uid = match stream.peer_cred() {
            Ok(c) => c.uid(),
            Err(e) => {
                tracing::debug!(error = %e, "Workload API connection without peer credentials; closed");
                return None;
            }
        };
        let slot = match self.limits.admit(uid) {
            Ok(s) => s,
            Err(why) => {
                tracing::debug!(
                    uid,
                    "Workload API connection refused: too many connections{}",
                    if why == Full::PerKey {
                        " for this uid"
                    } else {
                        ""
                    }
                );
                return None;
            }
        };
        let process = match self.attestor.pin_peer(stream.as_fd()) {
            Ok(p) => p,
            // Pinning needs descriptors too (the pidfd, /proc).
            Err(UnixError::Io { source, .. }) if out_of_resources(&source) => {
                self.starve(&source).await;
                return None;
            }
            Err(e) => {
                tracing::debug!(uid, error = %e, "Workload API caller cannot be pinned; connection closed");
                return None;
            }
        };
        if self.starved {
            tracing::info!("Workload API accepting connections again");
            self.starved = false;
        }
        let cfg = self.limits.config();
        Some(Conn::new(
            stream,
            process,
            slot,
            cfg.first_request_timeout,
            cfg.idle_timeout,
        ))
    }
}

impl Accept {
    /// Out of descriptors or memory: log once per episode, then wait before the next accept.
    async fn starve(&mut self, e: &io::Error) {
        if !self.starved {
            tracing::warn!(error = %e, "Workload API cannot accept connections (out of descriptors or memory); retrying every {BACKOFF:?}");
            self.starved = true;
        }
        tokio::time::sleep(BACKOFF).await;
    }
}

fn out_of_resources(e: &io::Error) -> bool {
    use nix::libc::{EMFILE, ENFILE, ENOBUFS, ENOMEM};
    matches!(e.raw_os_error(), Some(EMFILE | ENFILE | ENOBUFS | ENOMEM))
}
