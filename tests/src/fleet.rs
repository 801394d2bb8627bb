//! Simulated agents for fleet-scale tests and the fleet benchmark: each one
//! attests with a join token through the real Attest exchange and then calls
//! the node API over mTLS with the agent SVID the authority issued it, from
//! its own loopback address (127.0.0.0/8), as a fleet of hosts would.

use crate::{secs, Deployment};
use anyhow::{anyhow, bail, ensure, Context, Result};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tessera_common::x509;
use tessera_proto::authority as pb;
use tessera_proto::authority::admin_client::AdminClient;
use tessera_proto::authority::node_client::NodeClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// The authority config line the simulated agents need: its certificate
/// names the address they dial.
pub const SERVER_NAME: &str = "server_names = [\"127.0.0.1\"]\n";

/// The `n`th distinct loopback source address (127.0.1.1, 127.0.1.2, ...).
pub fn loopback(n: usize) -> IpAddr {
    let n = n as u32 + 1;
    IpAddr::V4(Ipv4Addr::new(
        127,
        (1 + n / 65_536) as u8,
        (n / 256 % 256) as u8,
        (n % 256) as u8,
    ))
}

/// A fresh P-256 key and a CSR for it (the authority sets the subject).
pub fn csr() -> Result<(Vec<u8>, rcgen::KeyPair)> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let csr = rcgen::CertificateParams::default().serialize_request(&key)?;
    Ok((csr.der().to_vec(), key))
}

/// Where simulated agents find the authority, and what they trust.
#[derive(Clone, Debug)]
pub struct NodeTarget {
    pub port: u16,
    pub bundle_pem: String,
}

/// A lazily connecting node API channel from `source`, with `identity` as
/// its client certificate when given.
pub fn node_channel(
    t: &NodeTarget,
    source: IpAddr,
    identity: Option<Identity>,
) -> Result<NodeClient<Channel>> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&t.bundle_pem))
        .domain_name("127.0.0.1");
    if let Some(id) = identity {
        tls = tls.identity(id);
    }
    let port = t.port;
    let connector = tower::service_fn(move |_| async move {
        let sock = tokio::net::TcpSocket::new_v4()?;
        sock.bind(SocketAddr::new(source, 0))?;
        let tcp = sock
            .connect(SocketAddr::from(([127, 0, 0, 1], port)))
            .await?;
        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tcp))
    });
    let ch = Endpoint::from_shared(format!("https://127.0.0.1:{port}"))?
        .tls_config(tls)?
        .connect_with_connector_lazy(connector);
    Ok(NodeClient::new(ch).max_decoding_message_size(64 << 20))
}

/// One simulated agent with its agent SVID.
pub struct SimAgent {
    /// `spiffe://example.org/tessera/agent/join_token/<token>`.
    pub id: String,
    pub node: NodeClient<Channel>,
}

impl SimAgent {
    /// Attests with `token` from `source`, retrying while the authority sheds
    /// load (its Attest gate), and returns the agent with an mTLS client.
    pub async fn attest(t: &NodeTarget, token: &str, source: IpAddr) -> Result<SimAgent> {
        let mut anonymous = node_channel(t, source, None)?;
        let (csr, key) = csr()?;
        let begin = pb::AttestRequest {
            step: Some(pb::attest_request::Step::Begin(pb::AttestBegin {
                method: "join_token".into(),
                payload: token.as_bytes().to_vec(),
                csr,
            })),
        };
        let mut tries = 0;
        let result = loop {
            match attest_once(&mut anonymous, begin.clone()).await {
                Ok(r) => break r,
                Err(st) if tries < 50 && retry_hint(&st).is_some() => {
                    tries += 1;
                    tokio::time::sleep(retry_hint(&st).unwrap_or(secs(1))).await;
                }
                Err(st) => bail!("attest from {source}: {st:?}"),
            }
        };
        let chain = x509::split_der_chain(&result.svid_chain)
            .map_err(|e| anyhow!("the agent SVID chain: {e}"))?;
        ensure!(!chain.is_empty(), "Attest returned an empty SVID chain");
        let identity = Identity::from_pem(x509::certs_to_pem(&chain), key.serialize_pem());
        Ok(SimAgent {
            id: result.agent_id,
            node: node_channel(t, source, Some(identity))?,
        })
    }
}

async fn attest_once(
    node: &mut NodeClient<Channel>,
    begin: pb::AttestRequest,
) -> Result<pb::AttestResult, tonic::Status> {
    let exchange = async {
        let mut stream = node
            .attest(tokio_stream::iter(vec![begin]))
            .await?
            .into_inner();
        while let Some(msg) = stream.message().await? {
            if let Some(pb::attest_response::Step::Result(r)) = msg.step {
                return Ok(r);
            }
        }
        Err(tonic::Status::unknown("Attest ended without a result"))
    };
    tokio::time::timeout(secs(60), exchange)
        .await
        .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("Attest took over 60s")))
}

/// The retry hint of a shed call (`grpc-retry-pushback-ms`), if it has one.
pub fn retry_hint(st: &tonic::Status) -> Option<Duration> {
    st.metadata()
        .get("grpc-retry-pushback-ms")?
        .to_str()
        .ok()?
        .parse()
        .ok()
        .map(Duration::from_millis)
}

impl Deployment {
    pub fn node_target(&self) -> Result<NodeTarget> {
        Ok(NodeTarget {
            port: self.port,
            bundle_pem: self.bundle_pem()?,
        })
    }

    /// `n` join tokens, from the admin API on the admin socket.
    pub async fn generate_tokens(&self, n: usize) -> Result<Vec<String>> {
        let mut admin = AdminClient::new(crate::uds_channel(&self.admin_socket()).await?);
        let mut tokens = Vec::with_capacity(n);
        for _ in 0..n {
            let t = admin
                .generate_token(pb::GenerateTokenRequest { ttl: 0 })
                .await
                .context("GenerateToken")?;
            tokens.push(t.into_inner().token);
        }
        Ok(tokens)
    }

    /// Creates entries with `entry create --data FILE` (10,000 a call, the
    /// admin API's batch limit), each `(parent ID, SPIFFE ID)` with selector
    /// `unix:uid:1000`.
    pub async fn create_entries(&self, entries: &[(String, String)]) -> Result<()> {
        let file = self.dir.join("fleet-entries.json");
        let path = file.to_str().context("temp dir path is not UTF-8")?;
        for chunk in entries.chunks(10_000) {
            let rows: Vec<serde_json::Value> = chunk
                .iter()
                .map(|(parent, id)| {
                    serde_json::json!({
                        "parent_id": parent,
                        "spiffe_id": id,
                        "selectors": [{"type": "unix", "value": "uid:1000"}],
                    })
                })
                .collect();
            std::fs::write(&file, serde_json::json!({ "entries": rows }).to_string())?;
            self.admin_ok(&["entry", "create", "--data", path]).await?;
        }
        Ok(())
    }
}

/// A process's resident set and its peak, in KiB, from /proc.
pub fn rss_kib(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| anyhow!("/proc/{pid}/status has no {name}"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}
