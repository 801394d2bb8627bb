//! More faults: the authority killed again and again while the agent syncs and
//! signs, the TPM (swtpm) gone and back, and the agent's wall clock stepped
//! (libfaketime in the agent process only). Each test plays the fault against
//! the real binaries and checks what workloads get.

mod authority_restart;
mod clock;
mod tpm;

use crate::faults::now_ms;
use crate::harness::*;
use crate::pki;
use std::sync::{Arc, Mutex};
use tessera_proto::workload as pb;

/// What a watcher saw on one FetchX509SVID stream.
#[derive(Default)]
struct Seen {
    messages: usize,
    /// Leaf serials, in the order they first appeared, per SPIFFE ID.
    serials: std::collections::HashMap<String, Vec<String>>,
    /// The first broken promise: the stream ended, or a message lacked an ID
    /// or carried a certificate past its notAfter.
    broken: Option<String>,
}

/// Follows `stream` until it ends; every message must hold every ID in
/// `want` (all of them, when `all`) with a certificate still valid now.
async fn watch(
    mut stream: tonic::Streaming<pb::X509svidResponse>,
    want: Vec<String>,
    seen: Arc<Mutex<Seen>>,
) {
    loop {
        let msg = stream.message().await;
        let now = now_ms();
        let mut s = seen.lock().expect("seen");
        let m = match msg {
            Ok(Some(m)) => m,
            Ok(None) => {
                s.broken.get_or_insert_with(|| "the stream ended".into());
                return;
            }
            Err(st) => {
                s.broken
                    .get_or_insert_with(|| format!("the stream failed: {st:?}"));
                return;
            }
        };
        s.messages += 1;
        for id in &want {
            let Some(svid) = m.svids.iter().find(|x| &x.spiffe_id == id) else {
                let n = s.messages;
                s.broken
                    .get_or_insert_with(|| format!("message {n} lacks {id}"));
                continue;
            };
            let na = pki::not_after(&svid.x509_svid) * 1000;
            if na <= now {
                s.broken
                    .get_or_insert_with(|| format!("{id}: served at {now} past its notAfter {na}"));
            }
            let serial = pki::serial(&pki::split_der(&svid.x509_svid)[0]);
            let list = s.serials.entry(id.clone()).or_default();
            if list.last() != Some(&serial) {
                list.push(serial);
            }
        }
    }
}

fn spawn_watch(
    stream: tonic::Streaming<pb::X509svidResponse>,
    want: Vec<String>,
) -> (Arc<Mutex<Seen>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let task = tokio::spawn(watch(stream, want, seen.clone()));
    (seen, task)
}

fn broken(seen: &Mutex<Seen>) -> Option<String> {
    seen.lock().expect("seen").broken.clone()
}

/// Each SVID in `resp` is valid now, chains to its bundle and matches its key.
fn assert_valid(resp: &pb::X509svidResponse) {
    for s in &resp.svids {
        let chain = pki::split_der(&s.x509_svid);
        let roots = pki::split_der(&s.bundle);
        pki::verify_chain(&chain, &roots);
        pki::assert_key_matches(&s.x509_svid_key, &chain[0]);
        let na = pki::not_after(&chain[0]) * 1000;
        assert!(na > now_ms(), "{}: an expired SVID", s.spiffe_id);
    }
}

/// The first message of a fresh FetchX509SVID stream.
async fn first_msg(raw: &mut Raw) -> Result<pb::X509svidResponse, tonic::Status> {
    first(raw.fetch_x509svid(req(pb::X509svidRequest {}))).await
}
