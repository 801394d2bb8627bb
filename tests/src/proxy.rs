//! A TCP proxy between the agent and the authority that fault tests steer:
//! every chunk can be held for a while (a slow authority), and the next large
//! request can be trapped so that the test kills the authority while that
//! request is in flight, at a moment a random kill rarely hits.

use anyhow::{Context, Result};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

pub struct TcpProxy {
    /// The loopback port to give the agent as `authority_address`.
    pub port: u16,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Shared {
    delay_ms: AtomicU64,
    trap: Mutex<Option<Trap>>,
}

struct Trap {
    min_bytes: usize,
    sprung: oneshot::Sender<()>,
}

/// One proxied connection: what the client sent since upstream last answered,
/// and whether upstream's answers are swallowed from now on.
#[derive(Default)]
struct Conn {
    unanswered: AtomicUsize,
    cut: AtomicBool,
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards each connection to `upstream`.
    pub async fn start(upstream: String) -> Result<TcpProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("bind the proxy")?;
        let port = listener.local_addr().context("the proxy's address")?.port();
        let shared = Arc::new(Shared::default());
        let accepting = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (shared, upstream) = (accepting.clone(), upstream.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let conn = Arc::new(Conn::default());
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(up(cr, sw, &shared, &conn), down(sr, cw, &shared, &conn));
                });
            }
        });
        Ok(TcpProxy { port, shared, task })
    }

    /// Holds every chunk, in each direction, for `delay` before forwarding it.
    pub fn delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.shared.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Arms a trap for the next request of at least `min_bytes` that a client
    /// sends before upstream answers anything on its connection: the request
    /// reaches upstream, but nothing upstream sends on that connection reaches
    /// the client any more (it sees the connection end once upstream's does).
    /// The receiver fires when the trap springs; an older trap is disarmed.
    pub fn trap_request(&self, min_bytes: usize) -> oneshot::Receiver<()> {
        let (sprung, rx) = oneshot::channel();
        if let Ok(mut trap) = self.shared.trap.lock() {
            *trap = Some(Trap { min_bytes, sprung });
        }
        rx
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn up(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, shared: &Shared, conn: &Conn) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf).await {
        hold(shared).await;
        let unanswered = conn.unanswered.fetch_add(n, Ordering::SeqCst) + n;
        let sprung = shared
            .trap
            .lock()
            .ok()
            .and_then(|mut t| t.take_if(|t| unanswered >= t.min_bytes));
        if let Some(trap) = sprung {
            conn.cut.store(true, Ordering::SeqCst);
            // The test may be gone; the connection is cut either way.
            let _ = trap.sprung.send(());
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

async fn down(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, shared: &Shared, conn: &Conn) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf).await {
        hold(shared).await;
        if conn.cut.load(Ordering::SeqCst) {
            continue;
        }
        conn.unanswered.store(0, Ordering::SeqCst);
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

async fn hold(shared: &Shared) {
    let ms = shared.delay_ms.load(Ordering::SeqCst);
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}
