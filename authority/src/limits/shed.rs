//! Load shedding: after a partition a whole fleet re-syncs at once. The node
//! API's agent calls (RenewAgent, SyncEntries, BatchSignX509, SignJwt) in
//! progress are capped overall; past the cap a call is refused before its
//! body is read, with `ResourceExhausted` and a retry hint, so memory stays
//! bounded and the fleet spreads its retries instead of the authority falling
//! over. Attest exchanges have their own gate (`gate.rs`).

use super::Limits;
use futures::future::BoxFuture;
use http::{Request, Response};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::Semaphore;
use tonic::body::Body;
use tonic::metadata::MetadataValue;
use tonic::Status;

const NODE: &str = "/tessera.authority.v1.Node/";
/// The calls the cap applies to: each holds a decoded request, datastore
/// reads and signatures for as long as it runs.
const GATED: [&str; 4] = ["RenewAgent", "SyncEntries", "BatchSignX509", "SignJwt"];

/// gRPC's retry pushback (gRFC A6), honoured by gRPC clients that retry.
pub const PUSHBACK_HEADER: &str = "grpc-retry-pushback-ms";
/// Whole seconds, as HTTP's header of the same name.
pub const RETRY_AFTER_HEADER: &str = "retry-after";

/// `ResourceExhausted` with a retry hint of `retry` spread over [1x, 2x):
/// clients refused together are told different times, so they do not come
/// back together.
pub fn overloaded(message: &str, retry: Duration) -> Status {
    let wait = retry.mul_f64(1.0 + rand::random::<f64>());
    let mut st = Status::resource_exhausted(format!("{message}; retry in {} ms", wait.as_millis()));
    let md = st.metadata_mut();
    if let Ok(v) = MetadataValue::try_from(wait.as_millis().to_string()) {
        md.insert(PUSHBACK_HEADER, v);
    }
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    if let Ok(v) = MetadataValue::try_from(secs.to_string()) {
        md.insert(RETRY_AFTER_HEADER, v);
    }
    st
}

/// The tower layer that caps agent calls in progress across all connections.
#[derive(Clone)]
pub struct ShedLayer {
    permits: Arc<Semaphore>,
    retry: Duration,
}

impl ShedLayer {
    pub fn new(limits: &Limits) -> Self {
        ShedLayer {
            permits: Arc::new(Semaphore::new(limits.max_in_flight)),
            retry: limits.retry_after,
        }
    }
}

impl<S> tower::Layer<S> for ShedLayer {
    type Service = Shed<S>;
    fn layer(&self, inner: S) -> Shed<S> {
        Shed {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Shed<S> {
    inner: S,
    layer: ShedLayer,
}

impl<S> tower::Service<Request<Body>> for Shed<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let method = req.uri().path().strip_prefix(NODE).unwrap_or("");
        if !GATED.contains(&method) {
            return Box::pin(self.inner.call(req));
        }
        // Unary calls: the response future covers decoding, the work and the
        // encoded reply, so the permit is held exactly as long as they are.
        let Ok(permit) = self.layer.permits.clone().try_acquire_owned() else {
            tracing::debug!(method, "call shed: limits.max_in_flight reached");
            let st = overloaded(
                "the authority is busy (limits.max_in_flight calls in progress)",
                self.layer.retry,
            );
            return Box::pin(std::future::ready(Ok(st.into_http())));
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            let out = fut.await;
            drop(permit);
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hint_is_spread_between_one_and_two_times_the_base() {
        for _ in 0..50 {
            let st = overloaded("busy", Duration::from_millis(1500));
            assert_eq!(st.code(), tonic::Code::ResourceExhausted);
            let ms: u64 = st
                .metadata()
                .get(PUSHBACK_HEADER)
                .unwrap()
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1500..3000).contains(&ms), "{ms}");
            let s: u64 = st
                .metadata()
                .get(RETRY_AFTER_HEADER)
                .unwrap()
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((2..=3).contains(&s), "{s}");
        }
    }
}
