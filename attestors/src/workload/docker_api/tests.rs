//! The client against a fake Docker API daemon on a Unix socket: a fake is the point here,
//! it plays the hostile or broken peer (hung, huge, lying) a real daemon rarely is.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tessera_common::Selector;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{DockerApi, DockerApiConfig, MAX_RESPONSE};
use crate::workload::unix::tests::{fake_exe, FakeProc};

const ID: &str = "3f1b5c0a9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a";
const IMG: &str = "97f9925bd6dae39e11b46fd9310d7de37751983badb6182666b7fedc32ec9b8f";

#[derive(Clone)]
enum Reply {
    Json(serde_json::Value),
    Delayed(Duration, serde_json::Value),
    Raw(u16, &'static str),
    /// Reads the request, never answers.
    Hang,
    /// An endless chunked body.
    Endless,
}

struct FakeDaemon {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    requests: Arc<AtomicUsize>,
    /// Set when a client closed a connection the daemon never answered.
    hung_closed: Arc<AtomicBool>,
    /// Bytes of an endless body written before the client stopped reading.
    written: Arc<AtomicUsize>,
}

impl FakeDaemon {
    fn start(reply: Reply) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let d = FakeDaemon {
            _dir: dir,
            socket,
            requests: Arc::default(),
            hung_closed: Arc::default(),
            written: Arc::default(),
        };
        let (requests, hung_closed, written) =
            (d.requests.clone(), d.hung_closed.clone(), d.written.clone());
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let (reply, requests, hung_closed, written) = (
                    reply.clone(),
                    requests.clone(),
                    hung_closed.clone(),
                    written.clone(),
                );
                tokio::spawn(async move {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&req).to_string();
                    assert!(
                        head.starts_with(&format!("GET /containers/{ID}/json HTTP/1.1")),
                        "{head}"
                    );
                    requests.fetch_add(1, Ordering::SeqCst);
                    let send = |status: u16, body: String| {
                        format!("HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())
                    };
                    let out = match reply {
                        Reply::Json(v) => send(200, v.to_string()),
                        Reply::Delayed(d, v) => {
                            tokio::time::sleep(d).await;
                            send(200, v.to_string())
                        }
                        Reply::Raw(status, body) => send(status, body.to_string()),
                        Reply::Hang => {
                            while !matches!(conn.read(&mut buf).await, Ok(0) | Err(_)) {}
                            hung_closed.store(true, Ordering::SeqCst);
                            return;
                        }
                        Reply::Endless => {
                            let start = format!("{{\"Id\":\"{ID}\",\"x\":\"");
                            let head = format!(
                                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{start}\r\n",
                                start.len()
                            );
                            if conn.write_all(head.as_bytes()).await.is_err() {
                                return;
                            }
                            let chunk = format!("10000\r\n{}\r\n", "a".repeat(0x10000));
                            while conn.write_all(chunk.as_bytes()).await.is_ok() {
                                written.fetch_add(0x10000, Ordering::SeqCst);
                            }
                            return;
                        }
                    };
                    let _ = conn.write_all(out.as_bytes()).await;
                });
            }
        });
        d
    }

    fn api(&self, timeout: Duration) -> DockerApi {
        DockerApi::new(
            DockerApiConfig {
                socket_path: self.socket.clone(),
                timeout,
                cache_ttl: Duration::from_secs(30),
            },
            tokio::runtime::Handle::current(),
        )
    }
}

fn good() -> serde_json::Value {
    json!({"Id": ID, "Image": format!("sha256:{IMG}"), "Config": {"Labels": {"app": "web"}}})
}

/// Attests a fake process in `cgroup` with `api` enriching, on a blocking thread as the agent
/// does. Returns the selectors and how long it took.
async fn attest_in(cgroup: &str, api: &DockerApi) -> (Vec<String>, Duration) {
    let bin = tempfile::tempdir().unwrap();
    let fp = FakeProc::new(&fake_exe(bin.path(), "prog"));
    fp.write("cgroup", &format!("0::{cgroup}\n"));
    let attestor = fp.attestor().with_enricher(Arc::new(api.clone()));
    let start = Instant::now();
    let sels = tokio::task::spawn_blocking(move || attestor.attest(fp.pid).unwrap())
        .await
        .unwrap();
    (
        sels.iter().map(Selector::to_string).collect(),
        start.elapsed(),
    )
}

async fn attest(api: &DockerApi) -> (Vec<String>, Duration) {
    attest_in(&format!("/system.slice/docker-{ID}.scope"), api).await
}

fn enriched(sels: &[String]) -> Vec<&String> {
    sels.iter()
        .filter(|s| s.starts_with("container:image_id:") || s.starts_with("container:label:"))
        .collect()
}

fn has_kernel_selectors(sels: &[String]) -> bool {
    sels.contains(&format!("container:id:{ID}"))
        && sels.contains(&"container:runtime:docker".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enriches_and_caches() {
    let d = FakeDaemon::start(Reply::Json(good()));
    let api = d.api(Duration::from_secs(2));
    let (sels, _) = attest(&api).await;
    assert!(has_kernel_selectors(&sels), "{sels:?}");
    assert_eq!(
        enriched(&sels),
        [
            &format!("container:image_id:sha256:{IMG}"),
            &"container:label:app:web".to_string()
        ]
    );
    let (again, _) = attest(&api).await;
    assert_eq!(enriched(&again), enriched(&sels));
    assert_eq!(
        d.requests.load(Ordering::SeqCst),
        1,
        "second attestation is a cache hit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_attestations_share_one_request() {
    let d = FakeDaemon::start(Reply::Delayed(Duration::from_millis(300), good()));
    let api = d.api(Duration::from_secs(2));
    let runs: Vec<_> = (0..6)
        .map(|_| {
            let api = api.clone();
            tokio::spawn(async move { attest(&api).await.0 })
        })
        .collect();
    for r in runs {
        assert_eq!(enriched(&r.await.unwrap()).len(), 2);
    }
    assert_eq!(d.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_daemon_costs_at_most_the_timeout() {
    let d = FakeDaemon::start(Reply::Hang);
    let timeout = Duration::from_secs(2);
    let api = d.api(timeout);
    let (sels, took) = attest(&api).await;
    assert!(has_kernel_selectors(&sels), "{sels:?}");
    assert!(enriched(&sels).is_empty());
    // Under twice the timeout (one timeout per step would reach it), with room
    // for a busy machine.
    assert!(took < timeout * 7 / 4, "took {took:?}");
    // The abandoned request's connection is closed, not left hanging on the daemon.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !d.hung_closed.load(Ordering::SeqCst) {
        assert!(
            Instant::now() < deadline,
            "connection to the hung daemon left open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_response_is_cut_off() {
    let d = FakeDaemon::start(Reply::Endless);
    let api = d.api(Duration::from_secs(10));
    let (sels, took) = attest(&api).await;
    assert!(
        has_kernel_selectors(&sels) && enriched(&sels).is_empty(),
        "{sels:?}"
    );
    // Stopped by the size bound, long before the timeout.
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let written = d.written.load(Ordering::SeqCst);
    assert!(written < 2 * MAX_RESPONSE, "read {written} bytes");
}

/// The daemon is asked once and its answer adds nothing; the kernel's selectors remain.
async fn adds_nothing(reply: Reply) {
    let d = FakeDaemon::start(reply);
    let (sels, _) = attest(&d.api(Duration::from_secs(2))).await;
    assert_eq!(d.requests.load(Ordering::SeqCst), 1);
    assert!(
        has_kernel_selectors(&sels) && enriched(&sels).is_empty(),
        "{sels:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_about_another_container_is_rejected() {
    let other = "0".repeat(64);
    adds_nothing(Reply::Json(
        json!({"Id": other, "Image": format!("sha256:{IMG}"), "Config": {"Labels": {"app": "web"}}}),
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_and_garbage_add_nothing() {
    for reply in [
        Reply::Raw(404, "{\"message\":\"no such container\"}"),
        Reply::Raw(500, "{}"),
        Reply::Raw(200, "{\"Id\": "),
        Reply::Raw(200, "[1, 2]"),
    ] {
        adds_nothing(reply).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_count_is_bounded() {
    let labels: serde_json::Map<String, serde_json::Value> = (0..1000)
        .map(|i| (format!("k{i:04}"), json!("v")))
        .collect();
    let d = FakeDaemon::start(Reply::Json(json!({"Id": ID, "Config": {"Labels": labels}})));
    let (sels, _) = attest(&d.api(Duration::from_secs(2))).await;
    assert_eq!(enriched(&sels).len(), super::inspect::MAX_LABELS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_socket_adds_nothing() {
    let d = FakeDaemon::start(Reply::Json(good()));
    let mut api = d.api(Duration::from_secs(5));
    Arc::get_mut(&mut api.inner).unwrap().config.socket_path =
        d.socket.with_file_name("absent.sock");
    let (sels, took) = attest(&api).await;
    assert!(
        has_kernel_selectors(&sels) && enriched(&sels).is_empty(),
        "{sels:?}"
    );
    // Not waiting for the timeout; the rest is room for a busy machine.
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_system_docker_and_podman_containers_are_looked_up() {
    let d = FakeDaemon::start(Reply::Json(good()));
    let api = d.api(Duration::from_secs(2));
    // Rootless: the id is only what that user named a cgroup.
    let (sels, _) = attest_in(
        &format!("/user.slice/user-1000.slice/user@1000.service/user.slice/docker-{ID}.scope"),
        &api,
    )
    .await;
    assert!(
        sels.contains(&format!("container:id:user@1000.service/{ID}")),
        "{sels:?}"
    );
    // Another runtime's container, and no container at all.
    attest_in(&format!("/system.slice/crio-{ID}.scope"), &api).await;
    attest_in("/system.slice/x.service", &api).await;
    assert_eq!(d.requests.load(Ordering::SeqCst), 0);
    let (sels, _) = attest_in(&format!("/libpod_parent/libpod-{ID}"), &api).await;
    assert_eq!(enriched(&sels).len(), 2, "{sels:?}");
}
