//! `tessera-agent api ...`: a Workload API client for operators and scripts.

use crate::run::BoxError;
use std::path::Path;
use std::time::{Duration, Instant};
use tessera_common::x509;
use tessera_proto::workload as wl;
use tessera_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

const TIMEOUT: Duration = Duration::from_secs(10);

async fn client(socket: &Path) -> Result<SpiffeWorkloadApiClient<Channel>, BoxError> {
    let ch = tessera_common::uds::connect(socket).await.map_err(|e| {
        format!(
            "socket {}: cannot connect ({e}); is the agent running?",
            socket.display()
        )
    })?;
    Ok(SpiffeWorkloadApiClient::new(ch))
}

fn with_header<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        "workload.spiffe.io",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    r.set_timeout(TIMEOUT);
    r
}

fn time(unix: i64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64),
    )
    .to_string()
}

async fn first_x509(socket: &Path) -> Result<wl::X509svidResponse, BoxError> {
    let mut stream = client(socket)
        .await?
        .fetch_x509svid(with_header(wl::X509svidRequest {}))
        .await?
        .into_inner();
    match tokio::time::timeout(TIMEOUT, stream.next()).await {
        Ok(Some(r)) => Ok(r?),
        Ok(None) => Err("the agent closed the stream without an answer".into()),
        Err(_) => Err("no answer from the agent in time".into()),
    }
}

pub async fn fetch_x509(socket: &Path, write: Option<&Path>) -> Result<(), BoxError> {
    if let Some(dir) = write {
        // It will hold keys and trust bundles: no other user may replace them.
        tessera_common::fsutil::ensure_private_dir(dir, 0o700)
            .map_err(|e| format!("--write {}: {e}", dir.display()))?;
    }
    let start = Instant::now();
    let resp = first_x509(socket).await?;
    println!(
        "Received {} svid after {:?}\n",
        resp.svids.len(),
        start.elapsed()
    );
    for (i, s) in resp.svids.iter().enumerate() {
        let chain = x509::split_der_chain(&s.x509_svid)?;
        let bundle = x509::split_der_chain(&s.bundle)?;
        println!("SPIFFE ID:\t\t{}", s.spiffe_id);
        if !s.hint.is_empty() {
            println!("Hint:\t\t\t{}", s.hint);
        }
        println!("SVID Valid After:\t{}", time(x509::not_before(&chain[0])?));
        println!("SVID Valid Until:\t{}", time(x509::not_after(&chain[0])?));
        for (n, c) in bundle.iter().enumerate() {
            println!("CA #{} Valid Until:\t{}", n + 1, time(x509::not_after(c)?));
        }
        print!("{}", x509::certs_to_pem(&chain));
        println!();
        if let Some(dir) = write {
            let w = |name: String, data: String, mode| {
                let p = dir.join(name);
                tessera_common::fsutil::write_atomic(&p, data.as_bytes(), mode)
                    .map_err(|e| format!("{}: {e}", p.display()))
            };
            w(format!("svid.{i}.pem"), x509::certs_to_pem(&chain), 0o644)?;
            w(
                format!("svid.{i}.key"),
                x509::pem_block("PRIVATE KEY", &s.x509_svid_key),
                0o600,
            )?;
            w(
                format!("bundle.{i}.pem"),
                x509::certs_to_pem(&bundle),
                0o644,
            )?;
            println!(
                "Wrote svid.{i}.pem, svid.{i}.key and bundle.{i}.pem to {}",
                dir.display()
            );
        }
    }
    Ok(())
}

pub async fn fetch_jwt(
    socket: &Path,
    audience: Vec<String>,
    spiffe_id: Option<String>,
) -> Result<(), BoxError> {
    let req = wl::JwtsvidRequest {
        audience,
        spiffe_id: spiffe_id.unwrap_or_default(),
    };
    let resp = client(socket)
        .await?
        .fetch_jwtsvid(with_header(req))
        .await?
        .into_inner();
    for s in resp.svids {
        println!("token({}):\n\t{}", s.spiffe_id, s.svid);
    }
    Ok(())
}

pub async fn validate_jwt(socket: &Path, audience: String, svid: String) -> Result<(), BoxError> {
    let resp = client(socket)
        .await?
        .validate_jwtsvid(with_header(wl::ValidateJwtsvidRequest { audience, svid }))
        .await?
        .into_inner();
    println!("SVID is valid.");
    println!("SPIFFE ID : {}", resp.spiffe_id);
    if let Some(c) = resp.claims {
        let mut keys: Vec<_> = c.fields.keys().cloned().collect();
        keys.sort();
        println!("Claims    : {}", keys.join(", "));
    }
    Ok(())
}

/// Prints a line per update until interrupted.
pub async fn watch(socket: &Path) -> Result<(), BoxError> {
    let mut stream = client(socket)
        .await?
        .fetch_x509svid(with_header(wl::X509svidRequest {}))
        .await?
        .into_inner();
    while let Some(r) = stream.next().await {
        let r = r?;
        for s in &r.svids {
            let chain = x509::split_der_chain(&s.x509_svid)?;
            println!(
                "{}\t{}\tserial={}\tnot_after={}",
                time(tessera_common::unix_now()),
                s.spiffe_id,
                x509::serial_hex(&chain[0])?,
                time(x509::not_after(&chain[0])?)
            );
        }
    }
    Ok(())
}

/// Exit 0 when the Workload API answers gRPC health checks as SERVING.
pub async fn healthcheck(socket: &Path) -> Result<(), BoxError> {
    use tonic_health::pb::{
        health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
    };
    let ch = tessera_common::uds::connect(socket)
        .await
        .map_err(|e| format!("socket {}: {e}", socket.display()))?;
    let mut req = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    req.set_timeout(TIMEOUT);
    let resp = HealthClient::new(ch).check(req).await?.into_inner();
    if resp.status() != ServingStatus::Serving {
        return Err(format!("agent is {:?}", resp.status()).into());
    }
    println!("Agent is healthy.");
    Ok(())
}
