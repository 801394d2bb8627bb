//! The baseline for the Workload API scenarios: a bare tonic server on a Unix socket that
//! answers FetchX509SVID and FetchJWTSVID with responses recorded from the agent in the
//! same run (so the same bytes), with no attestation and nothing else. It runs as a child
//! process of its own (this binary, re-executed), as the agent does, so both are measured
//! from the same client code across the same process boundary.

use anyhow::{anyhow, bail, ensure, Context, Result};
use prost::Message;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use tessera_proto::workload as wl;
use tessera_proto::workload::spiffe_workload_api_server::{
    SpiffeWorkloadApi, SpiffeWorkloadApiServer,
};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

/// Set in the child's environment: the directory holding its socket and responses.
const ENV: &str = "TESSERA_BENCH_BASELINE_DIR";
const X509: &str = "x509.bin";
const JWT: &str = "jwt.bin";

/// The running baseline server; killed when dropped.
pub struct Baseline {
    child: Child,
    pub socket: PathBuf,
}

impl Baseline {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Baseline {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the baseline server in `dir`, answering with `x509` and `jwt`; returns once
/// the child says it is listening.
pub fn start(
    dir: &Path,
    x509: &wl::X509svidResponse,
    jwt: &wl::JwtsvidResponse,
) -> Result<Baseline> {
    std::fs::write(dir.join(X509), x509.encode_to_vec())?;
    std::fs::write(dir.join(JWT), jwt.encode_to_vec())?;
    let exe = std::env::current_exe().context("locate tessera-bench")?;
    let mut child = Command::new(exe)
        .env(ENV, dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("start the baseline server")?;
    let mut line = String::new();
    let out = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("no stdout pipe"))?;
    BufReader::new(out).read_line(&mut line)?;
    let baseline = Baseline {
        child,
        socket: dir.join("baseline.sock"),
    };
    ensure!(
        line.trim() == "listening",
        "the baseline server did not start (said {line:?})"
    );
    Ok(baseline)
}

/// In the child (`ENV` set): serves until killed and never returns. `None` otherwise.
pub fn child_main() -> Option<std::process::ExitCode> {
    let dir = PathBuf::from(std::env::var_os(ENV)?);
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(serve(&dir)));
    match result {
        Ok(()) => Some(std::process::ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("baseline server: {e:#}");
            Some(std::process::ExitCode::FAILURE)
        }
    }
}

async fn serve(dir: &Path) -> Result<()> {
    let read = |name: &str| std::fs::read(dir.join(name)).with_context(|| format!("read {name}"));
    let svc = Bare {
        x509: wl::X509svidResponse::decode(read(X509)?.as_slice())?,
        jwt: wl::JwtsvidResponse::decode(read(JWT)?.as_slice())?,
    };
    let listener = tokio::net::UnixListener::bind(dir.join("baseline.sock"))?;
    println!("listening");
    tonic::transport::Server::builder()
        .add_service(SpiffeWorkloadApiServer::new(svc))
        .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
        .await?;
    bail!("the baseline server stopped")
}

struct Bare {
    x509: wl::X509svidResponse,
    jwt: wl::JwtsvidResponse,
}

type Stream_<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The first message, then an open stream (as the agent's) until the client goes.
fn once_then_open<T: Send + 'static>(msg: T) -> Stream_<T> {
    Box::pin(tokio_stream::once(Ok(msg)).chain(tokio_stream::pending()))
}

fn not_in_baseline<T>() -> Result<T, Status> {
    Err(Status::unimplemented("not part of the baseline"))
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for Bare {
    type FetchX509SVIDStream = Stream_<wl::X509svidResponse>;
    type FetchX509BundlesStream = Stream_<wl::X509BundlesResponse>;
    type FetchJWTBundlesStream = Stream_<wl::JwtBundlesResponse>;
    type FetchWITSVIDStream = Stream_<wl::WitsvidResponse>;
    type FetchWITBundlesStream = Stream_<wl::WitBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        _: Request<wl::X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        Ok(Response::new(once_then_open(self.x509.clone())))
    }

    async fn fetch_jwtsvid(
        &self,
        _: Request<wl::JwtsvidRequest>,
    ) -> Result<Response<wl::JwtsvidResponse>, Status> {
        Ok(Response::new(self.jwt.clone()))
    }

    async fn fetch_x509_bundles(
        &self,
        _: Request<wl::X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        not_in_baseline()
    }

    async fn fetch_jwt_bundles(
        &self,
        _: Request<wl::JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        not_in_baseline()
    }

    async fn validate_jwtsvid(
        &self,
        _: Request<wl::ValidateJwtsvidRequest>,
    ) -> Result<Response<wl::ValidateJwtsvidResponse>, Status> {
        not_in_baseline()
    }

    async fn fetch_witsvid(
        &self,
        _: Request<wl::WitsvidRequest>,
    ) -> Result<Response<Self::FetchWITSVIDStream>, Status> {
        not_in_baseline()
    }

    async fn fetch_wit_bundles(
        &self,
        _: Request<wl::WitBundlesRequest>,
    ) -> Result<Response<Self::FetchWITBundlesStream>, Status> {
        not_in_baseline()
    }
}
