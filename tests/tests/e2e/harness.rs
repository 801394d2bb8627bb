//! Test assertions on top of the `tessera_tests` harness library (re-exported here,
//! so test files `use crate::harness::*`): these panic, naming what failed, so a
//! failing test prints the deployment's daemon logs.

pub use tessera_tests::*;

use std::fmt::Debug;
use std::future::Future;
use std::time::{Duration, Instant};
use tessera_proto::workload as pb;
use tonic::{Code, Status};

/// Awaits `fut` or panics naming `what`: a broken agent must not hang the suite.
pub async fn within<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    deadline(limit, what, fut)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The first message of a server stream, or the status it failed with (whether the
/// status came as the response or as the stream's first item).
pub async fn first<T>(
    opened: impl Future<Output = Result<tonic::Response<tonic::Streaming<T>>, Status>>,
) -> Result<T, Status> {
    within(secs(20), "first message of a Workload API stream", async {
        let mut s = opened.await?.into_inner();
        match s.message().await? {
            Some(m) => Ok(m),
            None => Err(Status::new(
                Code::Ok,
                "<test harness: the stream ended without any message>",
            )),
        }
    })
    .await
}

/// Opens a stream (panics on failure).
pub async fn open<T>(
    what: &str,
    opened: impl Future<Output = Result<tonic::Response<tonic::Streaming<T>>, Status>>,
) -> tonic::Streaming<T> {
    within(secs(20), what, opened)
        .await
        .unwrap_or_else(|st| panic!("{what}: {st:?}"))
        .into_inner()
}

/// Next item of a stream within `limit` (panics on timeout). `Ok(None)`: the stream ended.
pub async fn next<T>(
    s: &mut tonic::Streaming<T>,
    limit: Duration,
    what: &str,
) -> Result<Option<T>, Status> {
    within(limit, what, s.message()).await
}

/// Asserts `res` is an error with `code` that the server sent (not a client-side
/// transport error that tonic also reports as a status).
pub fn assert_code<T: Debug>(res: Result<T, Status>, code: Code, what: &str) -> Status {
    match res {
        Ok(v) => panic!("{what}: expected {code:?}, got a successful answer: {v:?}"),
        Err(st) => {
            assert_eq!(
                st.code(),
                code,
                "{what}: expected {code:?}, got {:?} ({:?})",
                st.code(),
                st.message()
            );
            assert!(
                std::error::Error::source(&st).is_none(),
                "{what}: the {code:?} came from the client's transport, not from the agent: {st:?}"
            );
            st
        }
    }
}

pub fn svid<'a>(resp: &'a pb::X509svidResponse, id: &str) -> &'a pb::X509svid {
    resp.svids
        .iter()
        .find(|s| s.spiffe_id == id)
        .unwrap_or_else(|| panic!("no SVID for {id} in the response (have {:?})", ids(resp)))
}

/// Polls FetchX509SVID until a response holds every SPIFFE ID in `want` (the agent needs
/// a sync or two after a change). Returns that response.
pub async fn wait_x509(raw: &mut Raw, want: &[&str]) -> pb::X509svidResponse {
    let deadline = Instant::now() + PROPAGATION;
    let mut last = String::from("<no answer yet>");
    loop {
        let attempt = async {
            let mut s = raw
                .fetch_x509svid(req(pb::X509svidRequest {}))
                .await?
                .into_inner();
            // Follow the stream for a while: the change may arrive as a later message.
            loop {
                match s.message().await? {
                    Some(m) => {
                        let have = ids(&m);
                        if want.iter().all(|w| have.iter().any(|h| h == w)) {
                            return Ok::<_, Status>(Some(m));
                        }
                        last = format!("a response with {have:?}");
                    }
                    None => return Ok(None),
                }
            }
        };
        let result = tokio::time::timeout(secs(3), attempt).await;
        match result {
            Ok(Ok(Some(m))) => return m,
            Ok(Ok(None)) => last = "the stream ended".into(),
            Ok(Err(st)) => last = format!("{:?}: {}", st.code(), st.message()),
            Err(_) => {}
        }
        if Instant::now() > deadline {
            panic!("the agent never served X.509-SVIDs for {want:?} within {PROPAGATION:?}; last: {last}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls `probe` until it returns `Some`, panicking after `limit`.
pub async fn poll<T, F, Fut>(limit: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
