//! The daemons' telemetry endpoint (`[telemetry] listen`): `/metrics` (Prometheus
//! text), `/live` and `/ready` over plain HTTP/1.1. GET only, tiny responses, a few
//! connections at a time, each with a deadline: scraping must never be a way to
//! load the process. Also the gRPC layer both daemons count their calls with.

use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The content type of the Prometheus text format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Connections served at once; more are closed unanswered.
const MAX_CONNECTIONS: usize = 16;
/// Longest a connection may stay open, request and answer included.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a readiness check may take before it counts as not ready.
const READY_TIMEOUT: Duration = Duration::from_secs(3);

/// What a daemon exposes on its telemetry endpoint.
pub trait Probes: Send + Sync + 'static {
    /// The Prometheus text exposition of the daemon's registry.
    fn metrics(&self) -> Result<String, String>;
    /// Ok while the process works (the endpoint answering is most of that).
    fn live(&self) -> Result<(), String> {
        Ok(())
    }
    /// Ok when the daemon can do its job; the error says why not.
    fn ready(&self) -> BoxFuture<'_, Result<(), String>>;
}

/// Encodes every metric family of `registry` in the text format.
pub fn encode(registry: &prometheus::Registry) -> Result<String, String> {
    prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .map_err(|e| e.to_string())
}

/// A daemon's telemetry: binds `[telemetry] listen`, says where (a log line and
/// `STATUS=telemetry on <addr>`, since for port 0 the kernel picks the port) and serves
/// until the process exits, so `/ready` says "shutting down" while connections drain.
pub async fn start(listen: &str, probes: Arc<dyn Probes>) -> Result<(), String> {
    let (listener, bound) = bind(listen).await?;
    tracing::info!(listen = %bound, "telemetry listening (/metrics, /live, /ready)");
    crate::systemd::status(&format!("telemetry on {bound}"));
    tokio::spawn(serve(listener, probes, std::future::pending()));
    Ok(())
}

/// Parses and binds `[telemetry] listen`; errors name the field. No notification: tests
/// bind too, and the notification socket is process-wide.
async fn bind(listen: &str) -> Result<(TcpListener, SocketAddr), String> {
    let addr = parse_listen(listen)?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("telemetry.listen {addr}: {e}"))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("telemetry.listen {addr}: {e}"))?;
    Ok((listener, bound))
}

/// `host:port` with an IP address, as config validation wants it.
pub fn parse_listen(listen: &str) -> Result<SocketAddr, String> {
    listen
        .parse()
        .map_err(|_| format!("telemetry.listen: {listen:?} is not host:port with an IP address"))
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    probes: Arc<dyn Probes>,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "telemetry: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "telemetry: too many connections; closing one");
            continue;
        };
        let probes = probes.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req| {
                let probes = probes.clone();
                async move { Ok::<_, Infallible>(handle(&req, probes.as_ref()).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .max_buf_size(8192)
                .max_headers(32)
                .serve_connection(TokioIo::new(tcp), service);
            match tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "telemetry: connection failed"),
                Err(_) => tracing::debug!(%peer, "telemetry: connection timed out"),
            }
        });
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// One request. The body is never read: every endpoint is a GET.
pub async fn handle<B>(req: &Request<B>, probes: &dyn Probes) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if !matches!(path, "/metrics" | "/live" | "/ready") {
        return text(StatusCode::NOT_FOUND, "not found\n".into());
    }
    if req.method() != Method::GET {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: GET only\n".into(),
        );
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET"));
        return r;
    }
    match path {
        "/metrics" => match probes.metrics() {
            Ok(body) => {
                let mut r = text(StatusCode::OK, body);
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static(METRICS_CONTENT_TYPE),
                );
                r
            }
            Err(e) => {
                tracing::warn!(error = %e, "telemetry: cannot encode metrics");
                text(StatusCode::INTERNAL_SERVER_ERROR, format!("error: {e}\n"))
            }
        },
        "/live" => match probes.live() {
            Ok(()) => text(StatusCode::OK, "live\n".into()),
            Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, format!("not live: {e}\n")),
        },
        _ => match tokio::time::timeout(READY_TIMEOUT, probes.ready()).await {
            Ok(Ok(())) => text(StatusCode::OK, "ready\n".into()),
            Ok(Err(e)) => text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")),
            Err(_) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: the readiness check timed out\n".into(),
            ),
        },
    }
}

/// `GET path` on `addr`, for healthcheck commands: the status code and the body
/// (at most 64 KiB). A hand-rolled HTTP/1.0 request keeps the client dependency-free.
pub async fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, String), String> {
    let exchange = async {
        let mut tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        tcp.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        let mut buf = Vec::new();
        tcp.take(64 * 1024)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        Ok::<_, String>(buf)
    };
    let buf = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("{addr}: no answer within {timeout:?}"))??;
    let resp = String::from_utf8_lossy(&buf);
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("{addr}: not an HTTP response"))?;
    Ok((status, body.to_string()))
}

/// The conventional name of a gRPC code as metrics label (grpc-go's spelling).
pub fn grpc_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// Called once per gRPC call: the method, the code the response started with
/// (OK when it started with a message rather than an error) and the time to that.
pub type GrpcObserver = Arc<dyn Fn(&'static str, tonic::Code, Duration) + Send + Sync>;

/// A tower layer for a tonic server that reports every call to an observer.
/// Method labels come from a fixed list (anything else is "other"), so callers
/// cannot grow the label set.
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    /// `/package.Service/`, with both slashes; one per service counted.
    prefixes: Vec<&'static str>,
    methods: &'static [&'static str],
    observe: GrpcObserver,
}

impl GrpcMetricsLayer {
    pub fn new(
        prefix: &'static str,
        methods: &'static [&'static str],
        observe: GrpcObserver,
    ) -> Self {
        GrpcMetricsLayer {
            prefixes: vec![prefix],
            methods,
            observe,
        }
    }

    /// Counts another service's calls too (its methods must be in the list).
    pub fn and_prefix(mut self, prefix: &'static str) -> Self {
        self.prefixes.push(prefix);
        self
    }

    fn method_of(&self, path: &str) -> &'static str {
        self.prefixes
            .iter()
            .find_map(|p| path.strip_prefix(p))
            .and_then(|m| self.methods.iter().find(|k| **k == m))
            .copied()
            .unwrap_or("other")
    }
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;
    fn layer(&self, inner: S) -> GrpcMetrics<S> {
        GrpcMetrics {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    layer: GrpcMetricsLayer,
}

impl<S, B, RB> tower::Service<Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    RB: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let method = self.layer.method_of(req.uri().path());
        let observe = self.layer.observe.clone();
        let start = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await;
            // tonic sends a handler's error as a trailers-only response, so the
            // code is in the headers; a response without one started with data.
            let code = match &res {
                Ok(r) => tonic::Status::from_header_map(r.headers())
                    .map_or(tonic::Code::Ok, |s| s.code()),
                Err(_) => tonic::Code::Unknown,
            };
            observe(method, code, start.elapsed());
            res
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    struct Fake {
        ready: AtomicBool,
    }

    impl Probes for Fake {
        fn metrics(&self) -> Result<String, String> {
            Ok("# TYPE x counter\nx 1\n".into())
        }
        fn ready(&self) -> BoxFuture<'_, Result<(), String>> {
            Box::pin(async {
                if self.ready.load(Ordering::SeqCst) {
                    Ok(())
                } else {
                    Err("not synced".into())
                }
            })
        }
    }

    async fn server() -> (SocketAddr, Arc<Fake>, tokio::sync::oneshot::Sender<()>) {
        let (l, addr) = bind("127.0.0.1:0").await.unwrap();
        let fake = Arc::new(Fake {
            ready: AtomicBool::new(false),
        });
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(serve(l, fake.clone(), async {
            let _ = rx.await;
        }));
        (addr, fake, tx)
    }

    /// A raw request, so methods and malformed input can be anything.
    async fn raw(addr: SocketAddr, request: &str) -> String {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(10), tcp.read_to_string(&mut out))
            .await
            .unwrap()
            .unwrap();
        out
    }

    fn status(resp: &str) -> u16 {
        resp.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[tokio::test]
    async fn endpoints_and_readiness() {
        let (addr, fake, _stop) = server().await;
        let t = Duration::from_secs(10);
        let (code, body) = get(addr, "/metrics", t).await.unwrap();
        assert_eq!((code, body.as_str()), (200, "# TYPE x counter\nx 1\n"));
        let head = raw(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4"),
            "{head}"
        );
        assert_eq!(get(addr, "/live", t).await.unwrap().0, 200);
        let (code, body) = get(addr, "/ready", t).await.unwrap();
        assert_eq!(code, 503);
        assert!(body.contains("not synced"), "{body}");
        fake.ready.store(true, Ordering::SeqCst);
        assert_eq!(get(addr, "/ready", t).await.unwrap().0, 200);
        // A query string does not change the endpoint.
        assert_eq!(get(addr, "/ready?verbose=1", t).await.unwrap().0, 200);
    }

    #[tokio::test]
    async fn other_paths_are_404() {
        let (addr, _fake, _stop) = server().await;
        let t = Duration::from_secs(10);
        for p in ["/", "/metrics/", "/readyz", "/../metrics", "/METRICS"] {
            assert_eq!(get(addr, p, t).await.unwrap().0, 404, "{p}");
        }
    }

    #[tokio::test]
    async fn only_get_is_allowed() {
        let (addr, _fake, _stop) = server().await;
        for m in ["POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"] {
            let resp = raw(
                addr,
                &format!("{m} /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"),
            )
            .await;
            assert_eq!(status(&resp), 405, "{m}: {resp}");
            assert!(resp.to_ascii_lowercase().contains("allow: get"), "{resp}");
        }
    }

    #[tokio::test]
    async fn malformed_requests_get_400_and_a_closed_connection() {
        let (addr, _fake, _stop) = server().await;
        let resp = raw(addr, "NOT HTTP AT ALL\r\n\r\n").await;
        assert_eq!(status(&resp), 400, "{resp}");
        // Headers past the buffer limit are refused, not buffered.
        let big = format!(
            "GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(64 * 1024)
        );
        let resp = raw(addr, &big).await;
        assert!(
            resp.is_empty() || status(&resp) == 431 || status(&resp) == 400,
            "{resp}"
        );
    }

    #[tokio::test]
    async fn stops_on_shutdown() {
        let (addr, _fake, stop) = server().await;
        stop.send(()).unwrap();
        let mut refused = false;
        for _ in 0..50 {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(refused, "still accepting after shutdown");
    }

    #[test]
    fn listen_must_be_an_ip_and_port() {
        assert!(parse_listen("127.0.0.1:9090").is_ok());
        assert!(parse_listen("[::1]:9090").is_ok());
        for bad in ["localhost:9090", "127.0.0.1", ":9090", ""] {
            let e = parse_listen(bad).unwrap_err();
            assert!(e.starts_with("telemetry.listen:"), "{e}");
        }
    }

    #[test]
    fn method_labels_are_bounded() {
        let l = GrpcMetricsLayer::new("/S/", &["A", "B"], Arc::new(|_, _, _| {}));
        assert_eq!(l.method_of("/S/A"), "A");
        assert_eq!(l.method_of("/S/C"), "other");
        assert_eq!(l.method_of("/T/A"), "other");
        assert_eq!(l.method_of("/S/A/x"), "other");
        let l = l.and_prefix("/U/");
        assert_eq!(l.method_of("/U/B"), "B");
        assert_eq!(l.method_of("/S/B"), "B");
        assert_eq!(l.method_of("/T/B"), "other");
    }
}
