//! sd_notify(3) receiver: each daemon gets its own `NOTIFY_SOCKET`, a datagram
//! socket bound in a private (0700) temp dir, and the harness waits for its
//! `READY=1` instead of polling its ports. `STATUS=` lines are kept: the
//! authority reports the address it bound there (`listening on <addr>`).

use anyhow::{bail, Context, Result};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How often the reader thread looks whether it should stop.
const READ_TICK: Duration = Duration::from_millis(250);

/// A bound notification socket; a thread drains it for the daemon's whole life
/// (a full queue would stall the daemon's sends) and forwards every datagram.
pub struct Readiness {
    _dir: tempfile::TempDir,
    path: PathBuf,
    rx: mpsc::UnboundedReceiver<String>,
    stop: Arc<AtomicBool>,
    ready: bool,
    statuses: Vec<String>,
}

impl Readiness {
    pub fn new() -> Result<Readiness> {
        let dir = tempfile::Builder::new()
            .prefix("tessera-notify-")
            .tempdir_in("/tmp")
            .context("create the notify socket's dir")?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .context("make the notify socket's dir private")?;
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path)
            .with_context(|| format!("bind the notify socket {}", path.display()))?;
        sock.set_read_timeout(Some(READ_TICK))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("sd-notify".into())
            .spawn(move || drain(sock, tx, flag))
            .context("start the notify reader thread")?;
        Ok(Readiness {
            _dir: dir,
            path,
            rx,
            stop,
            ready: false,
            statuses: Vec::new(),
        })
    }

    /// The value for the daemon's `NOTIFY_SOCKET`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits up to `limit` for `READY=1`; `Ok(false)` on timeout (the caller names
    /// the daemon and checks whether it exited). Returns at once if already ready.
    pub async fn wait(&mut self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.ready {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(msg)) => self.take(&msg),
                Ok(None) | Err(_) => return false,
            }
        }
        true
    }

    /// Takes whatever arrived without waiting.
    pub fn poll(&mut self) {
        while let Ok(msg) = self.rx.try_recv() {
            self.take(&msg);
        }
    }

    /// Every `STATUS=` value received so far, oldest first.
    pub fn statuses(&mut self) -> &[String] {
        self.poll();
        &self.statuses
    }

    fn take(&mut self, msg: &str) {
        for line in msg.lines() {
            if line == "READY=1" {
                self.ready = true;
            } else if let Some(s) = line.strip_prefix("STATUS=") {
                self.statuses.push(s.to_string());
            }
        }
    }
}

impl Drop for Readiness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn drain(sock: UnixDatagram, tx: mpsc::UnboundedSender<String>, stop: Arc<AtomicBool>) {
    let mut buf = vec![0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        match sock.recv(&mut buf) {
            Ok(n) => {
                let _ = tx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// The address in the authority's `STATUS=listening on <addr>`.
pub(crate) fn listening_on(statuses: &[String]) -> Result<std::net::SocketAddr> {
    reported(statuses, "listening on")
}

/// The address in the last `STATUS=<what> <addr>`.
pub(crate) fn reported(statuses: &[String], what: &str) -> Result<std::net::SocketAddr> {
    let Some(addr) = statuses
        .iter()
        .rev()
        .find_map(|s| s.strip_prefix(what)?.strip_prefix(' '))
    else {
        bail!("no `STATUS={what} <addr>` among {statuses:?}");
    };
    addr.parse()
        .with_context(|| format!("STATUS={what} {addr:?}: not an address"))
}
