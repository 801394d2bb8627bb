//! One StreamSecrets stream: Envoy's requests and the cache's snapshots in,
//! responses out, with the xDS bookkeeping deciding when to answer. It ends
//! like a Workload API stream: caller exited, agent stopping, or no longer
//! anything to serve. As there, the session is polled by the HTTP/2 stream's
//! own task and dropped with it: no task and channel of its own, whose
//! cross-thread wake-up delayed the first response.

use super::names::SdsNames;
use super::secrets;
use super::service::{check, response, shown, truncate, WHAT};
use super::xds::{Kind, Received, Xds};
use crate::cache::templates::Demands;
use crate::cache::{CachedSvid, Snapshot};
use crate::workload_api::{stopped, Caller, RateLimit, Recheck, WorkloadApi, WorkloadError};
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::watch;
use tokio_stream::Stream;
use tonic::{Status, Streaming};

/// What a step of the session gives: a response to send, nothing, or the error that
/// ends the stream.
type Step = Result<Option<DiscoveryResponse>, Status>;

pub(super) struct Session {
    caller: Caller,
    names: Arc<SdsNames>,
    inbound: Streaming<DiscoveryRequest>,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    shutdown: watch::Receiver<bool>,
    exited: Pin<Box<dyn Future<Output = ()> + Send>>,
    recheck: Recheck,
    limiter: Arc<dyn RateLimit>,
    demands: Demands,
    xds: Xds,
    /// The SVIDs of the last response, so only new ones are logged as issued.
    last_svids: Vec<Arc<CachedSvid>>,
}

impl Session {
    pub fn new(
        caller: Caller,
        api: &WorkloadApi,
        names: Arc<SdsNames>,
        inbound: Streaming<DiscoveryRequest>,
    ) -> Self {
        Session {
            exited: Box::pin(caller.exited()),
            caller,
            names,
            inbound,
            snapshots: api.snapshots.clone(),
            shutdown: api.shutdown.clone(),
            recheck: api.recheck(),
            limiter: api.limiter.clone(),
            demands: api.demands.clone(),
            xds: Xds::default(),
            last_svids: Vec::new(),
        }
    }

    /// The responses; after an error the stream ends.
    pub fn responses(self) -> impl Stream<Item = Result<DiscoveryResponse, Status>> + Send {
        futures::stream::unfold(Some(self), |session| async move {
            let mut session = session?;
            let item = session.next().await?;
            let more = item.is_ok().then_some(session);
            Some((item, more))
        })
    }

    /// The next response, or the error that ends the stream; `None` when Envoy
    /// closes its side or the agent's snapshots end.
    async fn next(&mut self) -> Option<Result<DiscoveryResponse, Status>> {
        loop {
            let step = tokio::select! {
                // The caller's exit and the agent's stop first: no request queued behind
                // them is answered.
                biased;
                _ = &mut self.exited => Err(self.gone()),
                _ = stopped(&mut self.shutdown) => Err(Status::unavailable("agent is shutting down")),
                msg = self.inbound.message() => match msg {
                    Ok(Some(req)) => self.on_request(req).await,
                    // Envoy closed its side.
                    Ok(None) => return None,
                    // A request over the size limit, or not a request: Envoy is told why.
                    Err(st) => Err(st),
                },
                changed = self.snapshots.changed() => match changed {
                    Ok(()) => self.on_change().await,
                    Err(_) => return None,
                },
            };
            match step {
                Ok(None) => {}
                Ok(Some(r)) => return Some(Ok(r)),
                Err(st) => return Some(Err(st)),
            }
        }
    }

    fn gone(&self) -> Status {
        let e = WorkloadError::Attestation("the connecting process has exited".into());
        self.caller.denied(WHAT, "-", &e);
        e.into()
    }

    async fn on_request(&mut self, req: DiscoveryRequest) -> Step {
        check(&req).inspect_err(|e| self.caller.denied(WHAT, "-", e))?;
        let step = self.xds.on_request(Received {
            names: &req.resource_names,
            version_info: &req.version_info,
            response_nonce: &req.response_nonce,
            error: req.error_detail.as_ref().map(|e| e.message.as_str()),
        });
        let c = &self.caller;
        match &step.kind {
            Kind::Initial | Kind::Ack => {}
            Kind::Stale => tracing::debug!(
                pid = c.pid,
                nonce = ?truncate(&req.response_nonce),
                "SDS request for an older response ignored"
            ),
            Kind::Repeat => tracing::debug!(pid = c.pid, "SDS response answered again"),
            // Envoy keeps what it had; it is told again only when the content changes.
            Kind::Nack(why) => tracing::warn!(
                pid = c.pid,
                uid = %c.uid(),
                path = %c.path(),
                version = ?truncate(&req.version_info),
                error = ?truncate(why),
                "SDS secrets rejected by the client"
            ),
        }
        if !step.respond {
            return Ok(None);
        }
        // The first request was charged at attestation; later name changes are charged here.
        if step.kind != Kind::Initial && c.uid.is_some_and(|uid| !self.limiter.admit(uid)) {
            let e = WorkloadError::RateLimited;
            c.denied(WHAT, "-", &e);
            return Err(e.into());
        }
        self.respond(true).await
    }

    async fn on_change(&mut self) -> Step {
        // A templated entry synced since the stream opened: sign the caller's expansion.
        let snap = self.snapshots.borrow().clone();
        let c = &mut self.caller;
        self.demands
            .refresh(&mut c.leases, &snap, &c.selectors)
            .await;
        self.respond(false).await
    }

    /// Answers with the subscribed names; unless `always`, only when that
    /// content differs from what was last sent.
    async fn respond(&mut self, always: bool) -> Step {
        let Some(names) = self.xds.names() else {
            return Ok(None);
        };
        // Every answer, to a request or an update, goes to the process as attested and still
        // running (without a pidfd nothing else checks it; a program exec'd on the
        // connection can send requests on the open stream).
        if let Err(e) = self.caller.still_attested(&self.recheck).await {
            self.caller.denied(WHAT, "-", &e);
            return Err(e.into());
        }
        let snap = self.snapshots.borrow_and_update().clone();
        let s = secrets::build(&snap, &self.caller.selectors, &self.names, names)
            .inspect_err(|e| self.caller.denied(WHAT, &shown(names), e))?;
        if !always && !self.xds.wants_push(&s.version) {
            return Ok(None);
        }
        self.caller.issued_new(WHAT, &self.last_svids, &s.svids);
        self.last_svids = s.svids.clone();
        let nonce = format!("{:016x}", rand::random::<u64>());
        self.xds.sent(s.version.clone(), nonce.clone());
        tracing::debug!(pid = self.caller.pid, version = %s.version, %nonce, "SDS response sent");
        Ok(Some(response(s, nonce)))
    }
}
