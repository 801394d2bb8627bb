//! Where a workload attestation runs. It reads `/proc` and the caller's executable, which can
//! block for as long as a hung NFS or FUSE mount holds it, so it never runs on a runtime
//! worker without the runtime being told.
//!
//! On the multi-threaded runtime it runs on the calling worker thread inside
//! `block_in_place`, which first hands the worker's core (its queue of tasks) to another
//! thread, so every other task keeps running, and the call does not wait for a pool thread
//! to be scheduled and then for its worker to be woken. Measured on a loaded 2-core machine:
//! the hash-hit call's p99 fell from about 4 ms to 1 ms; its p50 did not move (the hand-off
//! still wakes a thread, which often takes the core). That hand-off needs a blocking-pool
//! thread, and a core whose hand-off finds the pool full stops until one frees: so once
//! `INLINE_MAX` attestations are in flight (slow or stalled ones, say), further ones wait on
//! the pool as before, where a full pool delays only attestations. On a current-thread
//! runtime, where `block_in_place` panics, they always go to the pool.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::runtime::{Handle, RuntimeFlavor};

/// Attestations in flight (inline or on the pool) under which another one runs inline. Far
/// below tokio's 512 blocking threads, which the hand-offs of cores share with them; far
/// above what a host's real callers keep in flight (a hash hit takes tens of microseconds).
pub const INLINE_MAX: usize = 32;

/// Counts the attestations in flight, to pick where the next one runs.
#[derive(Default)]
pub struct Attestations {
    running: Arc<AtomicUsize>,
}

/// One attestation in flight, until dropped (where it ran: after it returned).
struct Running(Arc<AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Attestations {
    /// Runs `f` where it may block (see the module's comment); `Err` if it panicked.
    pub async fn run<R, F>(&self, f: F) -> Result<R, String>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let before = self.running.fetch_add(1, Ordering::AcqRel);
        let running = Running(self.running.clone());
        let multi_thread = Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread;
        if multi_thread && before < INLINE_MAX {
            let r = tokio::task::block_in_place(|| catch_unwind(AssertUnwindSafe(f)));
            drop(running);
            return r.map_err(|p| panic_message(p.as_ref()));
        }
        tokio::task::spawn_blocking(move || {
            let _running = running;
            f()
        })
        .await
        .map_err(|e| e.to_string())
    }

    #[cfg(test)]
    fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    let msg = p
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    format!("attestation panicked: {msg}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{mpsc, Condvar, Mutex};
    use std::thread;
    use std::time::Duration;

    /// A gate the stalled attestations wait at, as on a hung mount.
    #[derive(Default)]
    struct Gate(Mutex<bool>, Condvar);

    impl Gate {
        fn wait(&self) {
            let mut open = self.0.lock().unwrap();
            while !*open {
                open = self.1.wait(open).unwrap();
            }
        }
        fn open(&self) {
            *self.0.lock().unwrap() = true;
            self.1.notify_all();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_on_the_calling_worker_thread() {
        let a = Attestations::default();
        let here = thread::current().id();
        assert_eq!(a.run(|| thread::current().id()).await.unwrap(), here);
        assert_eq!(a.running(), 0);
    }

    /// `block_in_place` would panic here.
    #[tokio::test]
    async fn a_current_thread_runtime_uses_the_pool() {
        let a = Attestations::default();
        let here = thread::current().id();
        assert_ne!(a.run(|| thread::current().id()).await.unwrap(), here);
        let e = a.run(|| -> u8 { panic!("bang") }).await.unwrap_err();
        assert!(e.contains("bang"), "{e}");
        assert_eq!(a.running(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panic_inline_is_an_error() {
        let a = Attestations::default();
        let e = a.run(|| -> u8 { panic!("boom") }).await.unwrap_err();
        assert_eq!(e, "attestation panicked: boom");
        assert_eq!(a.running(), 0);
        assert_eq!(a.run(|| 7).await, Ok(7), "the worker still runs");
    }

    /// Many more stalled attestations than the blocking pool has threads: the runtime goes on
    /// running its other tasks (what a core handed off into a full pool would not), and every
    /// attestation completes once the stall ends. Without the `INLINE_MAX` bound, the cores'
    /// hand-offs queue behind the stalled attestations and the runtime stops.
    #[test]
    fn stalled_attestations_never_stop_the_runtime() {
        let pool = INLINE_MAX + 4;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(pool)
            .enable_all()
            .build()
            .unwrap();
        let a = Arc::new(Attestations::default());
        let gate = Arc::new(Gate::default());
        let stalled = 2 * pool;
        let (done_tx, done_rx) = mpsc::channel();
        for i in 0..stalled {
            let (a, gate, done) = (a.clone(), gate.clone(), done_tx.clone());
            rt.spawn(async move {
                let r = a.run(move || {
                    gate.wait();
                    i
                });
                let _ = done.send(r.await);
            });
        }
        // Give the stalled ones time to take their threads.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while a.running() < stalled && std::time::Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        let submitted = a.running();

        // Other work: tasks that each wait on a timer and answer over a channel.
        let (tick_tx, tick_rx) = mpsc::channel();
        for _ in 0..64 {
            let tick = tick_tx.clone();
            rt.spawn(async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let _ = tick.send(());
            });
        }
        let ticked = (0..64)
            .take_while(|_| tick_rx.recv_timeout(Duration::from_secs(10)).is_ok())
            .count();

        gate.open();
        let finished: Vec<_> = (0..stalled)
            .map_while(|_| done_rx.recv_timeout(Duration::from_secs(10)).ok())
            .collect();
        rt.shutdown_timeout(Duration::from_secs(5));

        assert_eq!(submitted, stalled, "every attestation was submitted");
        assert_eq!(ticked, 64, "the runtime stopped while attestations stalled");
        assert_eq!(finished.len(), stalled);
        assert!(finished.iter().all(Result::is_ok));
        assert_eq!(a.running(), 0);
    }
}
