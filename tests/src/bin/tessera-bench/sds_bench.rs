//! Envoy SDS on the agent socket, as Envoy asks: StreamSecrets for the `default` SVID,
//! timed to the first DiscoveryResponse, against FetchX509SVID's first message measured
//! right next to it (same agent, same single client).

use crate::load::{alternating, closed_loop};
use crate::report::{Row, Target};
use crate::workload::{server_cpu, x509_load, Setup};
use crate::Sizes;
use anyhow::{anyhow, ensure, Result};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use tonic::transport::Channel;

const SCENARIO: &str = "SDS StreamSecrets first response, 1 client";
const SECRET_TYPE: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

type Sds = SecretDiscoveryServiceClient<Channel>;

/// Opens a stream, sends Envoy's first request (the request side stays open, as Envoy's
/// does) and waits for the response.
async fn first_response(mut c: Sds) -> Result<()> {
    let first = DiscoveryRequest {
        node: Some(Node {
            id: "tessera-bench".into(),
            cluster: "bench".into(),
            ..Default::default()
        }),
        resource_names: vec!["default".into()],
        type_url: SECRET_TYPE.into(),
        ..Default::default()
    };
    // The request side stays open until the first response, as Envoy's does, then
    // closes: a stream whose request side never ends would hold one of the
    // connection's concurrent streams for good, and the calls after the 32nd
    // would wait for a free one forever.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(first).await?;
    let requests = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut responses = c.stream_secrets(requests).await?.into_inner();
    let r = responses
        .message()
        .await?
        .ok_or_else(|| anyhow!("StreamSecrets ended before its first response"))?;
    drop(tx);
    ensure!(r.resources.len() == 1, "StreamSecrets answered {r:?}");
    Ok(())
}

pub async fn run(sizes: Sizes, s: &Setup) -> Result<Vec<Row>> {
    let connect = || async { anyhow::Ok(Sds::new(tessera_tests::uds_channel(&s.agent).await?)) };
    let (x509, sds) = alternating(
        sizes.window,
        (s.agent_pid, |w| x509_load(&s.agent, 1, w)),
        (s.agent_pid, |w| closed_loop(1, w, connect, first_response)),
    )
    .await?;
    Ok(vec![
        Row::new(SCENARIO, "p50 (baseline: FetchX509SVID p50)", "µs", sds.p50)
            .against(x509.p50, Target::RatioAtMost(1.3)),
        Row::new(SCENARIO, "p99 (baseline: FetchX509SVID p99)", "µs", sds.p99)
            .against(x509.p99, Target::RatioAtMost(1.3)),
        server_cpu(SCENARIO, "agent (baseline: FetchX509SVID)", sds, x509)?,
    ])
}
