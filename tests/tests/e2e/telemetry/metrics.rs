//! The telemetry endpoint of both daemons, scraped live and linted by promtool.

use super::*;

#[tokio::test]
async fn live_scrape_of_both_daemons_passes_promtool_and_counts_calls() {
    let mut d = deployment("").await;
    let auth = d.authority_telemetry().expect("the authority's telemetry");
    let (id, _) = d
        .register_self("tm/scrape", &[])
        .await
        .expect("register an entry");
    d.start_agent().await.expect("start the agent");
    let agent = d.agent_telemetry().expect("the agent's telemetry");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_x509(&mut raw, &[&id]).await;
    let jwt = within(
        secs(20),
        "FetchJWTSVID",
        raw.fetch_jwtsvid(req(pb::JwtsvidRequest {
            audience: vec!["tm".into()],
            spiffe_id: String::new(),
        })),
    )
    .await;
    assert!(jwt.is_ok(), "FetchJWTSVID: {jwt:?}");
    // A call refused before attestation, counted with its code.
    assert_code(
        first(raw.fetch_x509svid(request(pb::X509svidRequest {}, Header::Missing))).await,
        Code::InvalidArgument,
        "FetchX509SVID without the security header",
    );
    // An admin call that fails at the authority.
    let out = d
        .admin(&["entry", "show", "no-such-entry"])
        .await
        .expect("run the admin CLI");
    assert!(!out.success(), "entry show of a missing entry succeeded");

    let text = scrape(&agent, "agent").await;
    let requests = "tessera_agent_workload_api_requests_total";
    at_least(
        &text,
        requests,
        &[("method", "FetchX509SVID"), ("code", "OK")],
        1.0,
    );
    at_least(
        &text,
        requests,
        &[("method", "FetchJWTSVID"), ("code", "OK")],
        1.0,
    );
    at_least(
        &text,
        requests,
        &[("method", "FetchX509SVID"), ("code", "InvalidArgument")],
        1.0,
    );
    at_least(
        &text,
        "tessera_agent_workload_api_request_duration_seconds_count",
        &[("method", "FetchX509SVID")],
        1.0,
    );
    at_least(
        &text,
        "tessera_agent_workload_attestation_duration_seconds_count",
        &[],
        1.0,
    );
    at_least(
        &text,
        "tessera_agent_binary_hash_cache_misses_total",
        &[],
        1.0,
    );
    assert!(
        sample(&text, "tessera_agent_binary_hash_cache_hits_total", &[]).is_some(),
        "{text}"
    );
    at_least(&text, "tessera_agent_x509_svids_cached", &[], 1.0);
    at_least(
        &text,
        "tessera_agent_node_attestations_total",
        &[("result", "ok")],
        1.0,
    );
    at_least(
        &text,
        "tessera_agent_entry_syncs_total",
        &[("result", "ok")],
        1.0,
    );
    let left = sample(&text, "tessera_agent_agent_svid_remaining_seconds", &[]);
    assert!(
        left.is_some_and(|s| s > 3000.0 && s <= 3600.0),
        "agent SVID (1h) remaining: {left:?}"
    );
    at_least(&text, "tessera_agent_build_info", &[], 1.0);

    let text = scrape(&auth, "authority").await;
    assert_eq!(
        sample(
            &text,
            "tessera_authority_node_attestations_total",
            &[("method", "join_token"), ("result", "ok")]
        ),
        Some(1.0),
        "{text}"
    );
    let signed = "tessera_authority_svids_signed_total";
    at_least(&text, signed, &[("type", "x509"), ("kind", "agent")], 1.0);
    at_least(
        &text,
        signed,
        &[("type", "x509"), ("kind", "workload")],
        1.0,
    );
    at_least(&text, signed, &[("type", "jwt"), ("kind", "workload")], 1.0);
    assert_eq!(
        sample(
            &text,
            "tessera_authority_rpc_errors_total",
            &[
                ("service", "admin"),
                ("method", "GetEntry"),
                ("code", "NotFound")
            ]
        ),
        Some(1.0),
        "{text}"
    );
    at_least(
        &text,
        "tessera_authority_rpc_duration_seconds_count",
        &[("service", "node"), ("method", "SyncEntries")],
        1.0,
    );
    for op in [
        "record_attestation",
        "list_entries",
        "get_agent",
        "record_audit",
    ] {
        at_least(
            &text,
            "tessera_authority_datastore_operation_duration_seconds_count",
            &[("operation", op)],
            1.0,
        );
    }

    // With the authority gone the agent's syncs fail, and say so.
    d.stop_authority().await.expect("stop the authority");
    poll(PROPAGATION, "agent to count a failed SyncEntries", || {
        let agent = agent.clone();
        async move {
            let (_, body) = get(&agent, "/metrics").await;
            sample(
                &body,
                "tessera_agent_authority_rpc_errors_total",
                &[("method", "SyncEntries")],
            )
            .filter(|v| *v >= 1.0)
        }
    })
    .await;
}
