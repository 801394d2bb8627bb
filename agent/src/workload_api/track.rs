//! One accepted Workload API connection: the process pinned at accept (handed to every
//! request as tonic connect info), its place in the connection counts, and its deadlines:
//! a first request within `first_request_timeout`, and no more than `idle_timeout` without
//! an open request or stream.

use super::exit::ExitWatch;
use super::limits::ConnSlot;
use super::memo::Memo;
use super::told::Told;
use futures::task::AtomicWaker;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tessera_attestors::workload::unix::PinnedProcess;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tokio::time::{Instant, Sleep};
use tonic::transport::server::Connected;

/// Who is on the other end, fixed at accept.
#[derive(Clone)]
pub struct Peer {
    /// From SO_PEERCRED at connect.
    pub uid: u32,
    pub process: Arc<PinnedProcess>,
    /// The connection's last full attestation.
    pub memo: Arc<Memo>,
    /// The credentials logged as issued to it under that attestation.
    pub told: Arc<Told>,
    /// When the pinned process exits, for the connection's streams.
    pub exit: Arc<ExitWatch>,
    activity: Arc<Activity>,
}

/// Requests in flight on a connection and when it last had none.
struct Activity {
    open: AtomicUsize,
    requested: AtomicBool,
    idle_since: Mutex<Instant>,
    first_request_timeout: Duration,
    idle_timeout: Duration,
    /// The connection's task, when its timer has fired while a request was open: the end of
    /// the last open request must then wake it to start the idle count.
    waiting: AtomicWaker,
}

impl Activity {
    /// When the connection is to be closed; `None` while a request or stream is open.
    fn deadline(&self) -> Option<Instant> {
        if self.open.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let since = *self.idle_since.lock().unwrap_or_else(|e| e.into_inner());
        Some(if self.requested.load(Ordering::SeqCst) {
            since + self.idle_timeout
        } else {
            since + self.first_request_timeout
        })
    }
}

/// Marks one request open until dropped (with its response body).
struct OpenRequest(Arc<Activity>);

impl Drop for OpenRequest {
    fn drop(&mut self) {
        // Set idle_since before the count can read zero.
        *self.0.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        if self.0.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.waiting.wake();
        }
    }
}

impl Peer {
    fn request_started(&self) -> OpenRequest {
        self.activity.requested.store(true, Ordering::SeqCst);
        self.activity.open.fetch_add(1, Ordering::SeqCst);
        OpenRequest(self.activity.clone())
    }
}

/// An accepted connection. Reads fail once a deadline passes, which makes the HTTP/2
/// server close it.
pub struct Conn {
    io: UnixStream,
    peer: Peer,
    timer: Pin<Box<Sleep>>,
    _slot: ConnSlot,
}

impl Conn {
    pub fn new(
        io: UnixStream,
        process: PinnedProcess,
        slot: ConnSlot,
        first_request_timeout: Duration,
        idle_timeout: Duration,
    ) -> Self {
        let now = Instant::now();
        let activity = Arc::new(Activity {
            open: AtomicUsize::new(0),
            requested: AtomicBool::new(false),
            idle_since: Mutex::new(now),
            first_request_timeout,
            idle_timeout,
            waiting: AtomicWaker::new(),
        });
        Conn {
            io,
            peer: Peer {
                uid: *slot.key(),
                process: Arc::new(process),
                memo: Arc::default(),
                told: Arc::default(),
                exit: Arc::default(),
                activity,
            },
            timer: Box::pin(tokio::time::sleep_until(now + first_request_timeout)),
            _slot: slot,
        }
    }

    /// True once the current deadline has passed; otherwise the timer wakes this task then.
    /// Each call moves the deadline later; the timer is moved only when it fires before the
    /// deadline (or the deadline comes earlier), not after every call.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(deadline) = self.peer.activity.deadline() else {
            // A request is open. The timer stays armed (a Sleep never polled never fires);
            // once it has fired it wakes no one again, so the end of the last open request
            // must, and one that ended before the registration is seen by the re-check.
            if self.timer.as_mut().poll(cx).is_ready() {
                self.peer.activity.waiting.register(cx.waker());
                if self.peer.activity.deadline().is_some() {
                    cx.waker().wake_by_ref();
                }
            }
            return false;
        };
        if deadline < self.timer.deadline() {
            self.timer.as_mut().reset(deadline);
        }
        while self.timer.as_mut().poll(cx).is_ready() {
            if self.timer.deadline() >= deadline {
                return true;
            }
            self.timer.as_mut().reset(deadline);
        }
        false
    }
}

impl Connected for Conn {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if r.is_pending() && self.expired(cx) {
            let first = !self.peer.activity.requested.load(Ordering::SeqCst);
            tracing::debug!(
                pid = self.peer.process.pid(),
                uid = self.peer.uid,
                "Workload API connection closed: {}",
                if first { "no request in time" } else { "idle" }
            );
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "Workload API connection timed out",
            )));
        }
        r
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Counts each request (until its response body is done) as activity on its connection.
#[derive(Clone, Copy, Default)]
pub struct TrackLayer;

impl<S> tower::Layer<S> for TrackLayer {
    type Service = Track<S>;

    fn layer(&self, inner: S) -> Track<S> {
        Track { inner }
    }
}

#[derive(Clone)]
pub struct Track<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B, ReqB> tower::Service<http::Request<ReqB>> for Track<S>
where
    S: tower::Service<http::Request<ReqB>, Response = http::Response<B>>,
    S::Future: Send + 'static,
    B: Body<Data = tonic::codegen::Bytes> + Send + Unpin + 'static,
    B::Error: Into<tonic::codegen::StdError>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqB>) -> Self::Future {
        let open = req.extensions().get::<Peer>().map(Peer::request_started);
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            Ok(resp.map(|body| tonic::body::Body::new(Tracked { body, _open: open })))
        })
    }
}

/// A response body that keeps its request counted as open until it is dropped.
struct Tracked<B> {
    body: B,
    _open: Option<OpenRequest>,
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
