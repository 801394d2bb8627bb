//! A Workload API stream: the first message at once, then a new one whenever the snapshot
//! changes what the caller gets. The stream is polled by the HTTP/2 stream's own task
//! and dropped with it when the client goes: no task or channel of its own per call,
//! which cost a spawn and two cross-thread wake-ups on every FetchX509SVID. It keeps what
//! it sent last as the snapshot's shared parts (`Content`), not as a copy of the message.

use super::responses::Content;
use super::service::{stopped, Caller, Recheck, WorkloadApi};
use super::WorkloadError;
use crate::cache::templates::{Demands, Leases};
use crate::cache::Snapshot;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tessera_common::Selector;
use tokio::sync::watch;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

pub type Stream_<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Everything a stream needs between its messages.
struct Follow<C, F> {
    caller: Caller,
    what: &'static str,
    build: F,
    last: C,
    rx: watch::Receiver<Arc<Snapshot>>,
    shutdown: watch::Receiver<bool>,
    recheck: Recheck,
    demands: Demands,
    held: Leases,
    exited: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl WorkloadApi {
    /// A stream that sends `build(snapshot)` now and again whenever it changes;
    /// it ends with the error when the caller's last identity goes away.
    pub(crate) fn follow<C, F>(
        &self,
        mut caller: Caller,
        what: &'static str,
        build: F,
    ) -> Result<Stream_<C::Message>, Status>
    where
        C: Content,
        F: Fn(&Snapshot, &[Selector]) -> Result<C, WorkloadError> + Send + 'static,
    {
        let mut rx = self.snapshots.clone();
        let snap = rx.borrow_and_update().clone();
        let first = build(&snap, &caller.selectors)
            .inspect_err(|e| caller.denied(what, "-", e))
            .map_err(Status::from)?;
        first.log_issued(&caller, None);
        let message = first.message();
        let state = Follow {
            exited: Box::pin(caller.exited()),
            held: std::mem::take(&mut caller.leases),
            caller,
            what,
            build,
            last: first,
            rx,
            shutdown: self.shutdown.clone(),
            recheck: self.recheck(),
            demands: self.demands.clone(),
        };
        // After an error the stream ends (state `None`).
        let updates = futures::stream::unfold(Some(state), |state| async move {
            let mut state = state?;
            let item = state.next().await?;
            let more = item.is_ok().then_some(state);
            Some((item, more))
        });
        Ok(Box::pin(tokio_stream::once(Ok(message)).chain(updates)))
    }
}

impl<C, F> Follow<C, F>
where
    C: Content,
    F: Fn(&Snapshot, &[Selector]) -> Result<C, WorkloadError>,
{
    /// The next message, or the error that ends the stream; `None` when the agent's
    /// snapshots end.
    async fn next(&mut self) -> Option<Result<C::Message, Status>> {
        loop {
            tokio::select! {
                // The caller's exit and the agent's stop before any update.
                biased;
                _ = &mut self.exited => return Some(self.gone()),
                _ = stopped(&mut self.shutdown) => {
                    return Some(Err(Status::unavailable("agent is shutting down")));
                }
                changed = self.rx.changed() => if changed.is_err() { return None },
            }
            let mut snap = self.rx.borrow_and_update().clone();
            // A templated entry synced since the stream opened: sign the caller's expansion.
            if self
                .demands
                .refresh(&mut self.held, &snap, &self.caller.selectors)
                .await
            {
                snap = self.rx.borrow_and_update().clone();
            }
            // Every update checks that the caller still runs (without a pidfd nothing else
            // does) as it was attested; after the refresh, which may wait on the authority.
            if let Err(e) = self.caller.still_attested(&self.recheck).await {
                self.caller.denied(self.what, "-", &e);
                return Some(Err(e.into()));
            }
            match (self.build)(&snap, &self.caller.selectors) {
                Ok(content) if content == self.last => {}
                Ok(content) => {
                    content.log_issued(&self.caller, Some(&self.last));
                    let message = content.message();
                    self.last = content;
                    return Some(Ok(message));
                }
                Err(e) => {
                    self.caller.denied(self.what, "-", &e);
                    return Some(Err(e.into()));
                }
            }
        }
    }

    fn gone(&self) -> Result<C::Message, Status> {
        let e = WorkloadError::Attestation("the connecting process has exited".into());
        self.caller.denied(self.what, "-", &e);
        Err(e.into())
    }
}
