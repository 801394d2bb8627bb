//! Agents' TLS connections: capped overall and per peer address (a peer over
//! its cap is dropped at accept, before any TLS work), handshakes bounded in
//! time off the accept loop, idle connections closed, and a connection opened
//! with a client certificate closed when that certificate expires, so no
//! request rides on a credential that is no longer valid.

use super::{peer_key, Limits};
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tessera_common::limits::{Slot, Slots};
use tessera_common::{unix_now, x509};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};

type TlsStream = tokio_rustls::server::TlsStream<TcpStream>;

/// Accepts TCP connections within the caps and completes TLS handshakes off
/// the accept loop, so a slow client cannot hold up others.
pub fn tls_incoming(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    limits: &Limits,
) -> ReceiverStream<Result<LimitedConn, io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let slots = Slots::new(limits.max_connections, limits.max_connections_per_address);
    let (handshake_timeout, idle) = (limits.handshake_timeout, limits.idle_timeout);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors (EMFILE) included: back off, never spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.try_take(peer_key(peer.ip())) else {
                tracing::debug!(%peer, "connection refused: connection limit reached");
                continue;
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => match LimitedConn::new(tls, slot, idle) {
                        Some(conn) => {
                            let _ = tx.send(Ok(conn)).await;
                        }
                        None => tracing::debug!(%peer, "client certificate already expired"),
                    },
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// A TLS connection holding its slot, closed (reads and writes fail, so the
/// HTTP/2 connection and every request on it end) once it has received
/// nothing for `idle`, or at its client certificate's notAfter.
pub struct LimitedConn {
    inner: TlsStream,
    _slot: Slot<IpAddr>,
    idle: Duration,
    idle_timer: Pin<Box<Sleep>>,
    expiry: Option<Pin<Box<Sleep>>>,
}

impl LimitedConn {
    /// None when the client certificate has already expired.
    fn new(inner: TlsStream, slot: Slot<IpAddr>, idle: Duration) -> Option<Self> {
        let expiry = match client_cert_expiry(&inner) {
            Some(at) if at <= Instant::now() => return None,
            Some(at) => Some(Box::pin(tokio::time::sleep_until(at))),
            None => None,
        };
        Some(LimitedConn {
            inner,
            _slot: slot,
            idle,
            idle_timer: Box::pin(tokio::time::sleep(idle)),
            expiry,
        })
    }

    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if let Some(expiry) = &mut self.expiry {
            if expiry.as_mut().poll(cx).is_ready() {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "the client certificate of this connection expired",
                ));
            }
        }
        if self.idle_timer.as_mut().poll(cx).is_ready() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection idle for longer than limits.idle_timeout",
            ));
        }
        Ok(())
    }
}

/// When the verified client certificate (if any) stops being valid: the end
/// of its notAfter second. An unreadable one counts as expired (rustls
/// accepted it, so this does not happen, but a connection must not outlive a
/// credential we cannot date).
fn client_cert_expiry(tls: &TlsStream) -> Option<Instant> {
    let leaf = tls.get_ref().1.peer_certificates()?.first()?;
    let now = Instant::now();
    let end = x509::not_after(leaf)
        .map(|t| t + 1 - unix_now())
        .unwrap_or(0);
    Some(match u64::try_from(end) {
        Ok(left) if left > 0 => now + Duration::from_secs(left),
        _ => now,
    })
}

/// No TLS session resumption: a resumed session skips client certificate
/// verification and carries the certificate of the session it resumes, so
/// an expired (or superseded) agent SVID could open new connections.
pub fn without_resumption(config: &mut rustls::ServerConfig) {
    config.session_storage = std::sync::Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
}

impl AsyncRead for LimitedConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check(cx)?;
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let next = Instant::now() + this.idle;
            this.idle_timer.as_mut().reset(next);
        }
        read
    }
}

impl AsyncWrite for LimitedConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check(cx)?;
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The same connection info as a plain TLS stream: `Request::peer_certs` and
/// `remote_addr` keep working.
impl Connected for LimitedConn {
    type ConnectInfo = TlsConnectInfo<TcpConnectInfo>;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}
