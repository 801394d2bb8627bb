//! Admission to the node API's work: anonymous peers (no client certificate)
//! reach only Attest and GetBundle, before any request body is read; Attest
//! exchanges, each holding up to one large message in memory for as long as
//! the agent takes, are capped overall and per peer address.

use super::{peer_key, Limits};
use crate::error::ApiError;
use futures::future::BoxFuture;
use http::{Request, Response};
use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use tessera_common::limits::{Slot, Slots};
use tonic::body::Body;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

const NODE: &str = "/tessera.authority.v1.Node/";
/// Largest GetBundle request from an anonymous peer (the message is empty).
const MAX_ANONYMOUS_BUNDLE_REQUEST: usize = 1024;

/// Attest exchanges in progress.
#[derive(Clone)]
pub struct AttestGate(Arc<Slots<IpAddr>>, std::time::Duration);

impl AttestGate {
    pub fn new(limits: &Limits) -> Self {
        AttestGate(
            Slots::new(limits.max_attestations, limits.max_attestations_per_address),
            limits.retry_after,
        )
    }

    /// A place for one exchange from `peer`, held until it ends.
    pub fn enter(&self, peer: Option<std::net::SocketAddr>) -> Result<Slot<IpAddr>, ApiError> {
        let ip = peer
            .map(|p| peer_key(p.ip()))
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        self.0.try_take(ip).map_err(|_| {
            ApiError::Overloaded(
                "too many attestations in progress (from this address or overall)".into(),
                self.1,
            )
        })
    }
}

/// The tower layer that turns anonymous peers away from everything but
/// Attest and GetBundle.
#[derive(Clone, Default)]
pub struct AnonymousOnlyLayer;

impl<S> tower::Layer<S> for AnonymousOnlyLayer {
    type Service = AnonymousOnly<S>;
    fn layer(&self, inner: S) -> AnonymousOnly<S> {
        AnonymousOnly { inner }
    }
}

#[derive(Clone)]
pub struct AnonymousOnly<S> {
    inner: S,
}

fn anonymous<B>(req: &Request<B>) -> bool {
    req.extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|i| i.peer_certs())
        .is_none_or(|c| c.is_empty())
}

impl<S> tower::Service<Request<Body>> for AnonymousOnly<S>
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
        if !anonymous(&req) {
            return Box::pin(self.inner.call(req));
        }
        let method = req.uri().path().strip_prefix(NODE).unwrap_or("");
        let req = match method {
            // Bounded by the Attest gate and the message size limit.
            "Attest" => req,
            "GetBundle" => req.map(|b| {
                Body::new(http_body_util::Limited::new(
                    b,
                    MAX_ANONYMOUS_BUNDLE_REQUEST,
                ))
            }),
            _ => {
                let st = tonic::Status::unauthenticated(
                    "an agent SVID (client certificate) is required",
                );
                return Box::pin(std::future::ready(Ok(st.into_http())));
            }
        };
        Box::pin(self.inner.call(req))
    }
}
