//! The one owner of the ESAPI context: a dedicated OS thread.
//!
//! TPM commands block for milliseconds (swtpm) to minutes (RSA key creation on
//! discrete chips), an ESAPI context is not thread-safe, and without a resource
//! manager two interleaved command sequences corrupt each other's sessions. So
//! every operation is a job run to completion, one at a time, on this thread;
//! async callers only await the reply. A caller that gives up (timeout, drop)
//! does not interrupt a job, so flushes always happen.

use std::collections::BTreeSet;
use std::os::fd::RawFd;
use std::str::FromStr;
use std::sync::mpsc;

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use tss_esapi::constants::{CapabilityType, PropertyTag};
use tss_esapi::handles::ObjectHandle;
use tss_esapi::structures::CapabilityData;
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::Context;

use super::super::public::EkTemplate;
use super::ek::Ek;
use super::TpmError;

/// What the owner thread keeps between jobs.
pub(crate) struct State {
    pub(crate) ctx: Context,
    /// Resolved once: a created EK stays loaded for the life of the thread
    /// because CreatePrimary RSA costs seconds on discrete TPMs.
    pub(crate) ek: Option<Ek>,
    /// The EK to use; None: the first EK with a certificate, RSA-2048 first.
    pub(crate) ek_template: Option<EkTemplate>,
}

/// Returns whether the job succeeded.
type Job = Box<dyn FnOnce(&mut State) -> bool + Send>;

/// Handle to the owner thread. Cloning shares the thread; it ends when the
/// last handle is dropped.
#[derive(Clone)]
pub(crate) struct Owner {
    jobs: mpsc::Sender<Job>,
}

impl Owner {
    /// Start the thread and open the context on it (the context never moves).
    pub(crate) fn open(tcti: &str, ek_template: Option<EkTemplate>) -> Result<Owner, TpmError> {
        if let Some(path) = tcti.strip_prefix("device:") {
            let path = path.split(',').next().unwrap_or(path);
            if !std::path::Path::new(path).exists() {
                return Err(TpmError::Open(format!("no TPM device at {path}")));
            }
        }
        let conf = TctiNameConf::from_str(tcti)
            .map_err(|e| TpmError::Open(format!("bad TCTI {tcti:?}: {e}")))?;
        let (jobs, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let tcti_owned = tcti.to_string();
        std::thread::Builder::new()
            .name("tpm".into())
            .spawn(move || {
                let mut state = match connect(conf, &tcti_owned) {
                    Ok(ctx) => {
                        let _ = ready_tx.send(Ok(()));
                        State {
                            ctx,
                            ek: None,
                            ek_template,
                        }
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let mut stale = false;
                while let Ok(job) = rx.recv() {
                    if stale {
                        stale = !reopen(&mut state, &tcti_owned);
                    }
                    stale |= !job(&mut state);
                }
                if let Some(ek) = state.ek.take() {
                    ek.release(&mut state.ctx);
                }
            })
            .map_err(|e| TpmError::Open(format!("cannot start TPM thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Owner { jobs }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(TpmError::Open("TPM thread died while opening".into())),
        }
    }

    /// Run `f` on the owner thread and await its result.
    pub(crate) async fn run<T, F>(&self, f: F) -> Result<T, TpmError>
    where
        T: Send + 'static,
        F: FnOnce(&mut State) -> Result<T, TpmError> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |state| {
            let out = f(state);
            let ok = out.is_ok();
            let _ = tx.send(out);
            ok
        });
        self.jobs.send(job).map_err(|_| TpmError::Closed)?;
        rx.await.map_err(|_| TpmError::Closed)?
    }
}

fn connect(conf: TctiNameConf, tcti: &str) -> Result<Context, TpmError> {
    // libtss2 opens /dev/tpmrm0 without O_CLOEXEC: every child process of the
    // agent would inherit our TPM connection.
    let ctx = cloexec_new_fds(|| Context::new(conf));
    let mut ctx = ctx.map_err(|e| TpmError::Open(format!("cannot open TPM {tcti}: {e}")))?;
    // A TCTI can "open" without a TPM behind it (e.g. a socket to nothing yet
    // accepted): ask for something cheap so absence shows up here.
    let manufacturer = ctx
        .get_tpm_property(PropertyTag::Manufacturer)
        .map_err(|e| TpmError::Open(format!("TPM at {tcti} does not answer: {e}")))?
        .unwrap_or(0);
    tracing::debug!(
        tcti,
        manufacturer = %String::from_utf8_lossy(&manufacturer.to_be_bytes()),
        "TPM opened"
    );
    Ok(ctx)
}

/// A new context in place of one a failed command may have left unusable: a
/// TCTI error mid-command leaves ESAPI "called in bad sequence" for good, and
/// a TPM that restarted (swtpm, a resource manager) lost what was loaded.
/// The EK is resolved again on next use. False while no TPM answers.
fn reopen(state: &mut State, tcti: &str) -> bool {
    let Ok(conf) = TctiNameConf::from_str(tcti) else {
        return false;
    };
    match connect(conf, tcti) {
        Ok(ctx) => {
            let old = std::mem::replace(&mut state.ctx, ctx);
            if let Some(ek) = state.ek.take() {
                let mut old = old;
                ek.release(&mut old);
            }
            tracing::info!(tcti, "TPM context opened again after a failed command");
            true
        }
        Err(e) => {
            tracing::debug!(tcti, error = %e, "TPM still unavailable");
            false
        }
    }
}

/// Run `f` and mark the descriptors it left open without FD_CLOEXEC. (The
/// swtpm TCTI connects per command, out of reach: see swtpm.rs.)
pub(crate) fn cloexec_new_fds<T>(f: impl FnOnce() -> T) -> T {
    let before = inheritable_fds();
    let out = f();
    for fd in inheritable_fds().difference(&before) {
        let _ = fcntl(*fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    }
    out
}

/// Open descriptors without FD_CLOEXEC (empty where /proc is missing).
fn inheritable_fds() -> BTreeSet<RawFd> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return BTreeSet::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| {
            fcntl(fd, FcntlArg::F_GETFD)
                .is_ok_and(|f| !FdFlag::from_bits_truncate(f).contains(FdFlag::FD_CLOEXEC))
        })
        .collect()
}

/// A tss-esapi error with its raw code (Display alone drops the number).
pub(crate) fn tss(e: &tss_esapi::Error) -> String {
    format!("{e} [{e:?}]")
}

/// Flush a transient object or session; failure only leaks a slot, so log it.
pub(crate) fn flush(ctx: &mut Context, handle: impl Into<ObjectHandle>) {
    if let Err(e) = ctx.flush_context(handle.into()) {
        tracing::warn!("TPM flush failed: {}", tss(&e));
    }
}

/// Handles of one type present in the TPM, in ascending order.
pub(crate) fn handles(ctx: &mut Context, first: u32, last: u32) -> Result<Vec<u32>, String> {
    let mut out = Vec::new();
    let mut next = first;
    loop {
        let (data, more) = ctx
            .execute_without_session(|c| c.get_capability(CapabilityType::Handles, next, 64))
            .map_err(|e| format!("GetCapability(handles): {e}"))?;
        let CapabilityData::Handles(list) = data else {
            return Err("GetCapability(handles): unexpected answer".into());
        };
        let got: Vec<u32> = list.into_inner().into_iter().map(u32::from).collect();
        let Some(&max) = got.last() else { break };
        out.extend(got.into_iter().filter(|h| (first..=last).contains(h)));
        if !more || max >= last {
            break;
        }
        next = max + 1;
    }
    Ok(out)
}
