//! Wire: methods, paths, side services, the endpoint address.

use super::*;

#[tokio::test]
async fn wit_methods_unimplemented() {
    let (d, id) = Deployment::up("conf/wit")
        .await
        .expect("start a deployment");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_x509(&mut raw, &[&id]).await;
    assert_code(
        first(raw.fetch_witsvid(req(pb::WitsvidRequest {
            spiffe_id: String::new(),
        })))
        .await,
        Code::Unimplemented,
        "FetchWITSVID",
    );
    assert_code(
        first(raw.fetch_wit_bundles(req(pb::WitBundlesRequest {}))).await,
        Code::Unimplemented,
        "FetchWITBundles",
    );
}

#[tokio::test]
async fn method_paths_have_no_proto_package() {
    let (d, id) = Deployment::up("conf/paths")
        .await
        .expect("start a deployment");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_x509(&mut raw, &[&id]).await;
    let ch = d.channel().await.expect("connect to the agent");
    let mut grpc = tonic::client::Grpc::new(ch);
    let call = |path: &'static str| {
        let mut grpc = grpc.clone();
        async move {
            within(secs(10), "channel ready", grpc.ready())
                .await
                .unwrap();
            let codec =
                tonic_prost::ProstCodec::<pb::X509svidRequest, pb::X509svidResponse>::default();
            let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
            first(grpc.server_streaming(req(pb::X509svidRequest {}), path, codec)).await
        }
    };
    let m = call("/SpiffeWorkloadAPI/FetchX509SVID")
        .await
        .unwrap_or_else(|st| panic!("/SpiffeWorkloadAPI/FetchX509SVID: {st:?}"));
    assert!(ids(&m).contains(&id));
    assert_code(
        call("/spiffe.workload.SpiffeWorkloadAPI/FetchX509SVID").await,
        Code::Unimplemented,
        "a packaged method path",
    );
    // Unary methods are unary on the wire.
    within(secs(10), "ready", grpc.ready()).await.unwrap();
    let codec = tonic_prost::ProstCodec::<pb::JwtsvidRequest, pb::JwtsvidResponse>::default();
    let r = within(
        secs(20),
        "unary FetchJWTSVID",
        grpc.unary(
            req(pb::JwtsvidRequest {
                audience: vec!["p".into()],
                spiffe_id: id.clone(),
            }),
            tonic::codegen::http::uri::PathAndQuery::from_static("/SpiffeWorkloadAPI/FetchJWTSVID"),
            codec,
        ),
    )
    .await
    .unwrap_or_else(|st| panic!("unary /SpiffeWorkloadAPI/FetchJWTSVID: {st:?}"));
    assert_eq!(r.into_inner().svids[0].spiffe_id, id);
}

#[tokio::test]
async fn health_and_reflection_served_on_socket() {
    let (mut d, id) = Deployment::up("conf/health")
        .await
        .expect("start a deployment");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_x509(&mut raw, &[&id]).await;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let mut health = HealthClient::new(d.channel().await.expect("connect to the agent"));
    let r = within(
        secs(10),
        "grpc.health.v1.Health/Check",
        health.check(HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await
    .unwrap_or_else(|st| panic!("grpc.health.v1.Health/Check on the agent socket: {st:?}"))
    .into_inner();
    assert_eq!(
        r.status,
        ServingStatus::Serving as i32,
        "overall health: {r:?}"
    );

    // Reflection (v1, else v1alpha) lists the Workload API without a package.
    let services = reflection_services(&d).await;
    assert!(
        services.contains("SpiffeWorkloadAPI"),
        "reflection services: {services:?}"
    );
    // The authority's APIs are not served here (their descriptors may be compiled in).
    use tessera_proto::authority as apb;
    let mut admin =
        apb::admin_client::AdminClient::new(d.channel().await.expect("connect to the agent"));
    assert_code(
        within(
            secs(10),
            "Admin/ListEntries",
            admin.list_entries(apb::ListEntriesRequest::default()),
        )
        .await,
        Code::Unimplemented,
        "the authority's Admin API called on the agent's Workload API socket",
    );
    let mut node =
        apb::node_client::NodeClient::new(d.channel().await.expect("connect to the agent"));
    assert_code(
        within(
            secs(10),
            "Node/GetBundle",
            node.get_bundle(apb::GetBundleRequest {}),
        )
        .await,
        Code::Unimplemented,
        "the authority's Node API called on the agent's Workload API socket",
    );
    let served = [
        "SpiffeWorkloadAPI",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ];
    let unserved: Vec<&String> = services
        .iter()
        .filter(|s| !served.contains(&s.as_str()))
        .collect();

    // The agent CLI's healthcheck agrees, both ways of finding the agent.
    let cfg = d.agent_config().display().to_string();
    let out = d
        .agent_cli(&["healthcheck", "--config", &cfg])
        .await
        .expect("run tessera-agent");
    assert!(
        out.success(),
        "healthcheck --config on a healthy agent: {out:?}"
    );
    let out = d
        .agent_cli(&["healthcheck", "--socket", &d.socket_uri()])
        .await
        .expect("run tessera-agent");
    assert!(
        out.success(),
        "healthcheck --socket on a healthy agent: {out:?}"
    );
    d.stop_agent_cleanly()
        .await
        .expect("stop the agent cleanly");
    let out = d
        .agent_cli(&["healthcheck", "--socket", &d.socket_uri()])
        .await
        .expect("run tessera-agent");
    out.assert_one_line_error("healthcheck with the agent stopped");
    assert!(
        unserved.is_empty(),
        "reflection on the agent socket advertises services that the socket does not serve \
         (calling them gives Unimplemented): {unserved:?}"
    );
}

async fn reflection_services(d: &Deployment) -> BTreeSet<String> {
    use tonic_reflection::pb::v1 as r1;
    use tonic_reflection::pb::v1alpha as r0;
    let mut c = r1::server_reflection_client::ServerReflectionClient::new(
        d.channel().await.expect("connect to the agent"),
    );
    let rq = r1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(r1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let v1 = first(c.server_reflection_info(tokio_stream::iter(vec![rq]))).await;
    match v1 {
        Ok(m) => match m.message_response {
            Some(r1::server_reflection_response::MessageResponse::ListServicesResponse(l)) => {
                return l.service.into_iter().map(|s| s.name).collect();
            }
            other => panic!("reflection v1 ListServices answered {other:?}"),
        },
        Err(st) if st.code() == Code::Unimplemented => {}
        Err(st) => panic!("reflection v1: {st:?}"),
    }
    let mut c = r0::server_reflection_client::ServerReflectionClient::new(
        d.channel().await.expect("connect to the agent"),
    );
    let rq = r0::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(r0::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    match first(c.server_reflection_info(tokio_stream::iter(vec![rq]))).await {
        Ok(m) => match m.message_response {
            Some(r0::server_reflection_response::MessageResponse::ListServicesResponse(l)) => {
                l.service.into_iter().map(|s| s.name).collect()
            }
            other => panic!("reflection v1alpha ListServices answered {other:?}"),
        },
        Err(st) => panic!("no gRPC reflection (v1 or v1alpha) on the agent socket: {st:?}"),
    }
}

#[tokio::test]
async fn endpoint_socket_env_accepts_only_unix_and_tcp_uris() {
    let (d, id) = Deployment::up("conf/endpoint-env")
        .await
        .expect("start a deployment");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_x509(&mut raw, &[&id]).await;
    let agent = bin("tessera-agent").expect("binary built");
    let path = d.socket_path().display().to_string();
    let good = format!("unix://{path}");
    let out = run_cmd(
        &agent,
        &["api", "fetch", "x509"],
        None,
        &[("SPIFFE_ENDPOINT_SOCKET", &good)],
    )
    .await
    .expect("run a command");
    assert!(
        out.success(),
        "api fetch x509 with SPIFFE_ENDPOINT_SOCKET={good}: {out:?}"
    );
    assert!(
        out.stdout.contains(&id),
        "the fetched SVID's ID is printed: {}",
        out.stdout
    );
    // Each of these points at the same live socket, so only strict parsing refuses them.
    let mut accepted = Vec::new();
    for bad in [
        path.clone(),
        format!("file://{path}"),
        format!("unix://localhost{path}"),
        format!("unix://{path}?x=1"),
        "tcp://localhost:1".to_string(),
    ] {
        let out = run_cmd(
            &agent,
            &["api", "fetch", "x509"],
            None,
            &[("SPIFFE_ENDPOINT_SOCKET", &bad)],
        )
        .await
        .expect("run a command");
        if let Err(e) = out.check_one_line_error() {
            accepted.push(format!("SPIFFE_ENDPOINT_SOCKET={bad:?}: {e}"));
        }
    }
    assert!(
        accepted.is_empty(),
        "only unix:///absolute/path and tcp://<ip>:<port> may be accepted:\n  {}",
        accepted.join("\n  ")
    );
}

/// "A connect/close loop must not grow memory or file descriptors".
#[tokio::test]
async fn connect_close_loop_does_not_leak_fds() {
    let (d, id) = Deployment::up("conf/fd-leak")
        .await
        .expect("start a deployment");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_x509(&mut raw, &[&id]).await;
    drop(raw);
    let pid = d.agent_pid().expect("agent running");
    let fds = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|r| r.count())
            .unwrap_or(0)
    };
    let rss = || {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix("VmRSS:").map(|v| {
                    v.trim()
                        .trim_end_matches(" kB")
                        .trim()
                        .parse::<u64>()
                        .unwrap_or(0)
                })
            })
            .unwrap_or(0)
    };
    // Warm up (lazily created state, thread pools, caches).
    for _ in 0..20 {
        let mut r = d.raw().await.expect("connect to the agent");
        first(r.fetch_x509svid(req(pb::X509svidRequest {})))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (fd0, rss0) = (fds(), rss());
    for i in 0..150 {
        let mut r = d.raw().await.expect("connect to the agent");
        let mut s = open(
            "FetchX509SVID",
            r.fetch_x509svid(req(pb::X509svidRequest {})),
        )
        .await;
        next(&mut s, secs(10), "first message")
            .await
            .unwrap()
            .unwrap();
        if i % 2 == 0 {
            let _b = first(r.fetch_jwt_bundles(req(pb::JwtBundlesRequest {})))
                .await
                .unwrap();
        }
        drop(s);
        drop(r);
    }
    let settled = poll(
        secs(15),
        "the agent's fd count to return to its baseline",
        || async {
            let n = fds();
            (n <= fd0 + 4).then_some(n)
        },
    )
    .await;
    let rss1 = rss();
    assert!(settled <= fd0 + 4, "fds {fd0} -> {settled}");
    assert!(
        rss1 < rss0 + 32 * 1024,
        "agent RSS grew from {rss0} kB to {rss1} kB over 150 connect/stream/close cycles"
    );
}
