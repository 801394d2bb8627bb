//! How a caller's stream decides it is still the process it was attested as.

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use tessera_attestors::workload::unix::UnixAttestor;

/// An attestor with no mark (as without a pidfd) whose selectors the test sets.
#[derive(Default)]
struct Unmarked {
    selectors: Mutex<Vec<Selector>>,
    attested: AtomicUsize,
}

impl Attest for Unmarked {
    fn check(&self, _: &PinnedProcess) -> Result<(), String> {
        Ok(())
    }
    fn attest(&self, _: &PinnedProcess) -> Result<Vec<Selector>, String> {
        self.attested.fetch_add(1, Ordering::SeqCst);
        Ok(self.selectors.lock().unwrap().clone())
    }
}

/// The real attestor, counting its look-ups of the pid.
#[derive(Default)]
struct Counted {
    unix: UnixAttestor,
    checks: AtomicUsize,
}

impl Attest for Counted {
    fn check(&self, p: &PinnedProcess) -> Result<(), String> {
        self.checks.fetch_add(1, Ordering::SeqCst);
        Attest::check(&self.unix, p)
    }
    fn attest(&self, p: &PinnedProcess) -> Result<Vec<Selector>, String> {
        Attest::attest(&self.unix, p)
    }
    fn mark(&self, p: &PinnedProcess) -> Option<ProcessMark> {
        Attest::mark(&self.unix, p)
    }
}

/// An unchanged mark is answer enough while the process lives (no read of its `stat`);
/// once it has exited the stream ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marked_stream_goes_on_without_a_look_up_and_ends_at_exit() {
    let attestor = Arc::new(Counted::default());
    let recheck = Recheck {
        attestor: attestor.clone(),
        attestations: Arc::default(),
    };
    let mut child = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let process = Arc::new(attestor.unix.pin(child.id() as i32).unwrap());
    let Some(mark) = Attest::mark(attestor.as_ref(), &process) else {
        eprintln!("no pidfd on this kernel: nothing to test");
        child.kill().unwrap();
        child.wait().unwrap();
        return;
    };
    let mut caller = Caller {
        pid: process.pid(),
        uid: None,
        selectors: Attest::attest(attestor.as_ref(), &process).unwrap().into(),
        process,
        exit: Arc::default(),
        told: Arc::default(),
        mark: Some(mark),
        leases: Leases::default(),
    };
    caller.still_attested(&recheck).await.unwrap();
    assert_eq!(attestor.checks.load(Ordering::SeqCst), 0);

    child.kill().unwrap();
    child.wait().unwrap();
    let e = caller.still_attested(&recheck).await.unwrap_err();
    assert!(e.to_string().contains("exited"), "{e}");
}

fn runs(path: &str) -> Vec<Selector> {
    vec![Selector::new("unix", format!("path:{path}"))]
}

/// Without a mark nothing cheap shows an exec, so a stream's every answer attests in
/// full: the same selectors go on, others end it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_without_a_mark_is_attested_before_each_answer() {
    let attestor = Arc::new(Unmarked::default());
    *attestor.selectors.lock().unwrap() = runs("/usr/bin/envoy");
    let recheck = Recheck {
        attestor: attestor.clone(),
        attestations: Arc::default(),
    };
    let me = UnixAttestor::new().pin(std::process::id() as i32).unwrap();
    let mut caller = Caller {
        pid: me.pid(),
        uid: None,
        selectors: runs("/usr/bin/envoy").into(),
        process: Arc::new(me),
        exit: Arc::default(),
        told: Arc::default(),
        mark: None,
        leases: Leases::default(),
    };
    caller.still_attested(&recheck).await.unwrap();
    caller.still_attested(&recheck).await.unwrap();
    assert_eq!(attestor.attested.load(Ordering::SeqCst), 2);

    *attestor.selectors.lock().unwrap() = runs("/bin/sh");
    let e = caller.still_attested(&recheck).await.unwrap_err();
    assert!(e.to_string().contains("another executable"), "{e}");
}
