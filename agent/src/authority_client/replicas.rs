//! The authority's replicas (`authority_address` or `authority_addresses`):
//! connections go to the one that answered last, and to the next in the list
//! when it cannot be reached, so an agent outlives the loss of a replica.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;

/// `host:port` of each replica, in the operator's order of preference.
#[derive(Debug)]
pub struct Replicas {
    addresses: Vec<String>,
    /// Where the last connection succeeded: the first one tried next time.
    current: AtomicUsize,
}

impl Replicas {
    /// `addresses` is non-empty (the configuration checks it).
    pub fn new(addresses: Vec<String>) -> Self {
        Self {
            addresses,
            current: AtomicUsize::new(0),
        }
    }

    /// A TCP connection to the current replica, else to each other in turn;
    /// `timeout` bounds each attempt. The error names every address tried.
    pub async fn connect(&self, timeout: Duration) -> io::Result<TcpStream> {
        let n = self.addresses.len();
        let first = self.current.load(Ordering::Relaxed) % n.max(1);
        let mut failures = Vec::with_capacity(n);
        for i in (0..n).map(|k| (first + k) % n) {
            let address = &self.addresses[i];
            let attempt = tokio::time::timeout(timeout, TcpStream::connect(address)).await;
            match attempt {
                Ok(Ok(tcp)) => {
                    if i != first {
                        tracing::warn!(
                            unreachable = %self.addresses[first],
                            now = %address,
                            "authority replica unreachable; using the next one"
                        );
                        self.current.store(i, Ordering::Relaxed);
                    }
                    return Ok(tcp);
                }
                Ok(Err(e)) => failures.push(format!("{address}: {e}")),
                Err(_) => failures.push(format!("{address}: connect timed out")),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::NotConnected,
            failures.join("; "),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A loopback address nothing listens on (bound, then closed).
    async fn dead() -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().to_string()
    }

    async fn live() -> (TcpListener, String) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap().to_string();
        (l, a)
    }

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn a_dead_first_replica_is_skipped_and_the_live_one_kept() {
        let (l, good) = live().await;
        let r = Replicas::new(vec![dead().await, good.clone()]);
        let tcp = r.connect(T).await.expect("connects to the second replica");
        assert_eq!(tcp.peer_addr().unwrap().to_string(), good);
        // The next connection starts at the replica that answered.
        assert_eq!(r.current.load(Ordering::Relaxed), 1);
        drop(l);
    }

    #[tokio::test]
    async fn the_order_is_kept_while_the_first_replica_answers() {
        let (_a, first) = live().await;
        let (_b, second) = live().await;
        let r = Replicas::new(vec![first.clone(), second]);
        for _ in 0..3 {
            let tcp = r.connect(T).await.unwrap();
            assert_eq!(tcp.peer_addr().unwrap().to_string(), first);
        }
    }

    #[tokio::test]
    async fn wraps_around_to_an_earlier_replica_that_came_back() {
        let (a, first) = live().await;
        let (b, second) = live().await;
        let r = Replicas::new(vec![first.clone(), second.clone()]);
        r.current.store(1, Ordering::Relaxed);
        drop(b);
        let tcp = r.connect(T).await.expect("falls back to the first replica");
        assert_eq!(tcp.peer_addr().unwrap().to_string(), first);
        drop(a);
    }

    #[tokio::test]
    async fn none_reachable_names_every_address() {
        let (x, y) = (dead().await, dead().await);
        let r = Replicas::new(vec![x.clone(), y.clone()]);
        let e = r.connect(T).await.unwrap_err().to_string();
        assert!(e.contains(&x) && e.contains(&y), "{e}");
    }
}
