//! One watch per connection on its pinned process's exit, shared by every stream on it:
//! a stream subscribes to it instead of duplicating the pidfd and registering it with the
//! reactor, which took four system calls per call.

use std::future::Future;
use std::sync::OnceLock;
use tessera_attestors::workload::unix::PinnedProcess;
use tokio::sync::watch;

#[derive(Debug, Default)]
pub struct ExitWatch(OnceLock<watch::Receiver<bool>>);

impl ExitWatch {
    /// Resolves when `process` (the connection's) exits; never without a pidfd. The watch is
    /// started by the first stream and ends with the connection.
    pub fn exited(&self, process: &PinnedProcess) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self
            .0
            .get_or_init(|| {
                let (tx, rx) = watch::channel(false);
                let fd = process.pidfd().and_then(|fd| fd.try_clone_to_owned().ok());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = super::process_exit(fd) => { let _ = tx.send(true); }
                        // Every receiver is gone: the connection closed.
                        _ = tx.closed() => {}
                    }
                });
                rx
            })
            .clone();
        // The sender lives while any receiver does (this one included) until it sends.
        async move {
            let _ = rx.wait_for(|exited| *exited).await;
        }
    }
}
