//! Workload API plumbing: channels on the agent socket (also from a socket a child
//! process connected, so the agent attests that child), and request metadata.

use crate::process::{child_command, ChildGuard};
use crate::Deployment;
use crate::{secs, NOBODY, SECURITY_HEADER};
use anyhow::{anyhow, bail, Context, Result};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tessera_proto::workload as pb;
use tessera_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint, Uri};

pub type Raw = SpiffeWorkloadApiClient<Channel>;

/// Awaits `fut` for at most `limit`; the error names `what`.
pub async fn deadline<F: Future>(limit: Duration, what: &str, fut: F) -> Result<F::Output> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| anyhow!("timed out after {limit:?}: {what}"))
}

/// A channel to the Unix socket at `path` (reconnects on demand).
pub async fn uds_channel(path: &Path) -> Result<Channel> {
    let p = path.to_path_buf();
    let ep = Endpoint::from_static("http://localhost");
    let fut = ep.connect_with_connector(tower::service_fn(move |_: Uri| {
        let p = p.clone();
        async move { Ok::<_, io::Error>(TokioIo::new(tokio::net::UnixStream::connect(p).await?)) }
    }));
    deadline(secs(10), "connect to the agent socket", fut)
        .await?
        .with_context(|| format!("connect {}", path.display()))
}

/// A channel over one already-connected socket (no reconnects).
pub async fn channel_from_fd(fd: OwnedFd) -> Result<Channel> {
    let std = std::os::unix::net::UnixStream::from(fd);
    std.set_nonblocking(true)?;
    let stream = tokio::net::UnixStream::from_std(std)?;
    let slot = Arc::new(Mutex::new(Some(stream)));
    let ep = Endpoint::from_static("http://localhost");
    let fut = ep.connect_with_connector(tower::service_fn(move |_: Uri| {
        let s = slot.lock().ok().and_then(|mut s| s.take());
        async move {
            s.map(TokioIo::new).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotConnected,
                    "the pre-connected socket was closed; it cannot be redialled",
                )
            })
        }
    }));
    deadline(secs(10), "HTTP/2 handshake on a pre-connected socket", fut)
        .await?
        .context("HTTP/2 handshake on the pre-connected socket")
}

/// Connects a Unix socket to `path` *from a child process* that runs `program args` as
/// `uid`/`gid`: the connect(2) happens in the child (after setuid, before exec), so the
/// agent's SO_PEERCRED names the child, while this process keeps the connected socket
/// (the fd is shared across fork). Returns the socket and the running child.
pub fn connect_from_child(
    path: &Path,
    uid: u32,
    gid: u32,
    program: &str,
    args: &[&str],
) -> io::Result<(OwnedFd, ChildGuard)> {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let addr = UnixAddr::new(path)?;
    let raw = fd.as_raw_fd();
    let mut cmd = child_command(program);
    cmd.args(args)
        .uid(uid)
        .gid(gid)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: connect(2) is async-signal-safe; `addr` was built before the fork.
    unsafe {
        cmd.pre_exec(move || connect(raw, &addr).map_err(io::Error::from));
    }
    let child = cmd.spawn()?;
    Ok((fd, ChildGuard(child)))
}

/// A caller no entry matches: `/bin/sleep 30` as nobody, connected to the agent
/// socket from the child and exec'd (so it is attested as `sleep`). Returns the
/// socket, the child and its pid.
pub async fn connect_as_nobody(d: &Deployment) -> Result<(OwnedFd, ChildGuard, u32)> {
    let (fd, child) = connect_from_child(&d.socket_path(), NOBODY, NOBODY, "/bin/sleep", &["30"])
        .context("connect as nobody from /bin/sleep")?;
    let pid = child.0.id();
    let until = Instant::now() + secs(10);
    loop {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        if exe.is_some_and(|e| e.to_string_lossy().ends_with("sleep")) {
            return Ok((fd, child, pid));
        }
        if Instant::now() > until {
            bail!("the child {pid} did not exec /bin/sleep within 10s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Request options for the security header.
#[derive(Clone, Copy, Debug)]
pub enum Header {
    /// `workload.spiffe.io: true`.
    Ok,
    Missing,
    Value(&'static str),
    /// The header twice, both `true`.
    Twice,
}

/// A request with the security header as `h` says. A `Header::Value` that is not
/// valid metadata is sent as no header.
pub fn request<T>(msg: T, h: Header) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    let md = r.metadata_mut();
    let yes = MetadataValue::from_static("true");
    match h {
        Header::Ok => {
            md.insert(SECURITY_HEADER, yes);
        }
        Header::Missing => {}
        Header::Value(v) => {
            if let Ok(v) = v.parse() {
                md.insert(SECURITY_HEADER, v);
            }
        }
        Header::Twice => {
            md.append(SECURITY_HEADER, yes.clone());
            md.append(SECURITY_HEADER, yes);
        }
    }
    r
}

/// A request with the correct security header.
pub fn req<T>(msg: T) -> tonic::Request<T> {
    request(msg, Header::Ok)
}

/// The SPIFFE IDs in an X.509-SVID response.
pub fn ids(resp: &pb::X509svidResponse) -> Vec<String> {
    resp.svids.iter().map(|s| s.spiffe_id.clone()).collect()
}
