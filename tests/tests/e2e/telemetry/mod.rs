//! Running as a service: the telemetry endpoint of both daemons (a live scrape
//! linted by `promtool check metrics`), readiness and liveness, the healthcheck
//! commands, SIGHUP reloads, SIGTERM draining and the issuance/denial logs.

mod health;
mod logs;
mod metrics;
mod reload;

use crate::harness::*;
use std::ffi::OsStr;
use std::fs;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;
use tessera_proto::workload as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

/// A deployment whose authority and agent both serve telemetry, each on a port it picks
/// (`authority_telemetry()`, and `agent_telemetry()` once the agent runs).
pub(crate) async fn deployment(authority_top: &str) -> Deployment {
    Deployment::new(Opts {
        authority_extra: format!("{authority_top}{TELEMETRY}"),
        agent_extra: TELEMETRY.into(),
        ..Opts::default()
    })
    .await
    .expect("start a deployment")
}

/// One raw HTTP/1.1 exchange: (status, head, body). Err if nothing listens.
async fn http(addr: &str, request: &str) -> std::io::Result<(u16, String, String)> {
    let exchange = async {
        let mut tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.write_all(request.as_bytes()).await?;
        let mut out = String::new();
        tcp.read_to_string(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    let out = within(secs(15), &format!("HTTP exchange with {addr}"), exchange).await?;
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response from {addr}: {out:?}"));
    Ok((status, head.to_string(), body.to_string()))
}

async fn get(addr: &str, path: &str) -> (u16, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let (status, _, body) = http(addr, &req)
        .await
        .unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"));
    (status, body)
}

/// Waits until the endpoint answers at all (it binds shortly after the socket).
async fn get_when_up(addr: &str, path: &str) -> (u16, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    poll(secs(20), &format!("telemetry on {addr} to answer"), || {
        let req = req.clone();
        async move { http(addr, &req).await.ok().map(|(s, _, b)| (s, b)) }
    })
    .await
}

/// Scrapes `/metrics`, checks the content type and lints the text with promtool.
pub async fn scrape(addr: &str, what: &str) -> String {
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let (status, head, body) = http(addr, &req)
        .await
        .unwrap_or_else(|e| panic!("scrape {what} at {addr}: {e}"));
    assert_eq!(status, 200, "{what} /metrics: {head}\n{body}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{what} /metrics content type: {head}"
    );
    promtool_check(&body, what);
    body
}

/// `promtool check metrics` (Debian package `prometheus`) must accept the text.
fn promtool_check(text: &str, what: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}): install it (`apt-get install --no-install-recommends \
                 prometheus`, or scripts/install-deps.sh)"
            )
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics rejects the {what}'s exposition:\n{}{}\n--- exposition ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of the sample `name` whose labels include all of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (n, set) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}')?),
            None => (series, ""),
        };
        if n != name {
            return None;
        }
        let have: Vec<(&str, &str)> = set
            .split("\",")
            .filter(|p| !p.is_empty())
            .filter_map(|p| {
                let (k, v) = p.split_once("=\"")?;
                Some((k, v.trim_end_matches('"')))
            })
            .collect();
        labels
            .iter()
            .all(|want| have.contains(want))
            .then(|| value.parse().ok())?
    })
}

pub fn at_least(text: &str, name: &str, labels: &[(&str, &str)], min: f64) {
    match sample(text, name, labels) {
        Some(v) if v >= min => {}
        other => panic!("{name}{labels:?}: want >= {min}, got {other:?}\n{text}"),
    }
}

pub(crate) fn sighup(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("send SIGHUP");
}
