//! Overload: a fleet re-syncing at once after a partition is shed with
//! ResourceExhausted and a retry hint, the authority's memory stays bounded
//! and it serves again once the flood is over; a workload asking for endless
//! fresh JWT audiences is rate limited per agent and cannot grow the audit
//! trail without bound.

use crate::harness::*;
use std::time::Duration;
use tessera_proto::authority as apb;
use tessera_tests::fleet::{loopback, retry_hint, rss_kib, SimAgent, SERVER_NAME};
use tonic::Code;

async fn deployment(limits: &str) -> Deployment {
    Deployment::new(Opts {
        authority_extra: format!("{SERVER_NAME}[limits]\n{limits}"),
        ..Opts::default()
    })
    .await
    .expect("start a deployment")
}

/// `n` attested agents with `per_agent` entries each.
async fn fleet(d: &Deployment, n: usize, per_agent: usize) -> Vec<SimAgent> {
    let tokens = d.generate_tokens(n).await.expect("join tokens");
    let mut entries = Vec::new();
    for t in &tokens {
        let parent = format!("spiffe://{TD}/tessera/agent/join_token/{t}");
        for i in 0..per_agent {
            entries.push((parent.clone(), format!("spiffe://{TD}/overload/{t}/{i}")));
        }
    }
    d.create_entries(&entries).await.expect("create entries");
    let target = d.node_target().expect("node target");
    let mut agents = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        let a = SimAgent::attest(&target, t, loopback(i))
            .await
            .unwrap_or_else(|e| panic!("attest agent {i}: {e:#}"));
        agents.push(a);
    }
    agents
}

#[tokio::test]
async fn a_fleet_resyncing_at_once_is_shed_with_a_retry_hint_and_served_afterwards() {
    let d = deployment("max_in_flight = 2\nretry_after = \"300ms\"\n").await;
    let agents = fleet(&d, 20, 300).await;
    let pid = d.authority_pid().expect("authority pid");
    // Every agent at once, several calls each: far more than 2 in flight.
    let mut calls = Vec::new();
    for a in &agents {
        for _ in 0..8 {
            let mut node = a.node.clone();
            calls.push(tokio::spawn(async move {
                node.sync_entries(apb::SyncEntriesRequest {}).await
            }));
        }
    }
    let (mut ok, mut shed) = (0, 0);
    for c in calls {
        match within(secs(60), "SyncEntries in the flood", c)
            .await
            .unwrap()
        {
            Ok(r) => {
                assert_eq!(r.into_inner().entries.len(), 300);
                ok += 1;
            }
            Err(st) => {
                assert_eq!(st.code(), Code::ResourceExhausted, "{st:?}");
                let hint = retry_hint(&st).expect("a shed call carries grpc-retry-pushback-ms");
                assert!(
                    (Duration::from_millis(300)..Duration::from_millis(600)).contains(&hint),
                    "the hint is 1x to 2x limits.retry_after: {hint:?}"
                );
                assert!(st.metadata().get("retry-after").is_some(), "{st:?}");
                shed += 1;
            }
        }
    }
    assert!(
        shed > 0,
        "160 concurrent calls over max_in_flight = 2: none was shed"
    );
    assert!(ok > 0, "the authority served nobody during the flood");
    let (_, peak) = rss_kib(pid).expect("authority RSS");
    assert!(
        peak < 256 * 1024,
        "authority peak RSS {peak} KiB during the flood"
    );
    // Once the flood is over, every agent is served.
    for a in &agents {
        let mut node = a.node.clone();
        let r = within(
            secs(20),
            "SyncEntries after the flood",
            node.sync_entries(apb::SyncEntriesRequest {}),
        )
        .await
        .expect("SyncEntries after the flood");
        assert_eq!(r.into_inner().entries.len(), 300);
    }
}

async fn jwt(
    a: &SimAgent,
    entry_id: &str,
    audience: &str,
) -> Result<apb::SignJwtResponse, tonic::Status> {
    let mut node = a.node.clone();
    let req = apb::SignJwtRequest {
        entry_id: entry_id.into(),
        audience: vec![audience.into()],
        spiffe_id: String::new(),
    };
    within(secs(20), "SignJwt", node.sign_jwt(req))
        .await
        .map(|r| r.into_inner())
}

async fn first_entry(a: &SimAgent) -> String {
    let mut node = a.node.clone();
    let r = within(
        secs(20),
        "SyncEntries",
        node.sync_entries(apb::SyncEntriesRequest {}),
    )
    .await
    .expect("SyncEntries");
    r.into_inner().entries[0].id.clone()
}

/// The audit events of `agent` as (kind, detail).
async fn audit(d: &Deployment, agent: &str) -> Vec<(String, String)> {
    let out = d
        .admin_ok(&[
            "audit", "--agent", agent, "--limit", "10000", "--output", "json",
        ])
        .await
        .expect("audit");
    let v: serde_json::Value = serde_json::from_str(&out).expect("audit JSON");
    v["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or_default().to_string(),
                e["detail"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn endless_fresh_audiences_add_a_bounded_number_of_audit_rows() {
    let mut d = deployment(
        "jwt_per_second_per_agent = 100000\njwt_burst_per_agent = 100000\njwt_audit_per_agent = 10\n",
    )
    .await;
    let agents = fleet(&d, 1, 1).await;
    let entry = first_entry(&agents[0]).await;
    for i in 0..300 {
        jwt(&agents[0], &entry, &format!("fresh-audience-{i}"))
            .await
            .unwrap_or_else(|st| panic!("SignJwt {i}: {st:?}"));
    }
    // The window's count is written when it ends, at the latest at shutdown.
    d.stop_authority().await.expect("stop the authority");
    d.start_authority().await.expect("restart the authority");
    let events = audit(&d, &agents[0].id).await;
    let jwt_rows = events.iter().filter(|(k, _)| k == "jwt_svid").count();
    assert_eq!(
        jwt_rows, 10,
        "300 fresh audiences: JWT-SVID audit rows past the cap of 10"
    );
    let summaries: Vec<&String> = events
        .iter()
        .filter(|(k, _)| k == "jwt_svid_coalesced")
        .map(|(_, detail)| detail)
        .collect();
    assert_eq!(summaries.len(), 1, "{events:?}");
    assert!(
        summaries[0].starts_with("290 more JWT-SVIDs"),
        "{}",
        summaries[0]
    );
}

#[tokio::test]
async fn jwt_minting_is_rate_limited_per_agent_with_a_retry_hint() {
    let d = deployment("jwt_per_second_per_agent = 2\njwt_burst_per_agent = 5\n").await;
    let agents = fleet(&d, 2, 1).await;
    let (a, b) = (&agents[0], &agents[1]);
    let (ea, eb) = (first_entry(a).await, first_entry(b).await);
    // At once, so a slow disk (an audit row per token) cannot refill the bucket between calls.
    let start = std::time::Instant::now();
    let calls = (0..20).map(|i| {
        let (ea, aud) = (&ea, format!("aud-{i}"));
        async move { jwt(a, ea, &aud).await }
    });
    let results = futures::future::join_all(calls).await;
    let minted = results.iter().filter(|r| r.is_ok()).count();
    let refused = results.into_iter().find_map(Result::err);
    // A burst of 5, plus what refilled at 2/s while the calls ran.
    let refilled = (start.elapsed().as_secs_f64() * 2.0).ceil() as usize;
    assert!(
        minted <= 5 + refilled,
        "{minted} JWT-SVIDs in {:?}",
        start.elapsed()
    );
    let st = refused.expect("20 JWT-SVIDs at once with a burst of 5 at 2/s: none refused");
    assert_eq!(st.code(), Code::ResourceExhausted, "{st:?}");
    let hint = retry_hint(&st).expect("a retry hint");
    assert!(
        hint <= Duration::from_secs(1),
        "one token refills in 0.5s (x1-2): {hint:?}"
    );
    // Another agent has its own bucket; the refused one is served after the hint.
    jwt(b, &eb, "other")
        .await
        .expect("another agent's JWT-SVID");
    tokio::time::sleep(hint).await;
    jwt(a, &ea, "after-the-hint")
        .await
        .expect("a JWT-SVID after the hint");
}
