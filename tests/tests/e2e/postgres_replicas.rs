//! Two real authority replicas sharing one PostgreSQL datastore (a private cluster)
//! and the same CA and JWT keys: what one replica records, the other serves, and
//! an agent listing both in `authority_addresses` goes on when its replica dies.

use crate::harness::*;
use tessera_tests::fleet::{loopback, NodeTarget, SimAgent, SERVER_NAME};

/// A PostgreSQL cluster, replica A (the deployment's authority, which generated the
/// agent's join token) and replica B, both on database `tessera`. Bound in this
/// order, so the daemons stop before the cluster does.
async fn replicas() -> (Cluster, Deployment, Replica) {
    let pg = tokio::task::spawn_blocking(Cluster::start)
        .await
        .expect("join the PostgreSQL start")
        .unwrap_or_else(|e| panic!("start PostgreSQL: {e:#}"));
    let url = pg.create_database("tessera").expect("createdb tessera");
    let opts = Opts {
        authority_extra: format!("database_url = \"{url}\"\n{SERVER_NAME}"),
        ..Opts::default()
    };
    let mut d = Deployment::new(opts).await.expect("start replica A");
    let b = d
        .start_replica("authority-b")
        .await
        .expect("start replica B");
    (pg, d, b)
}

/// An entry for this test process (uid 0) under `parent`, created at `replica`: its ID.
async fn entry_at(replica: &Replica, parent: &str, spiffe_id: &str) -> String {
    let args = [
        "entry",
        "create",
        "--parent-id",
        parent,
        "--spiffe-id",
        spiffe_id,
        "--selector",
        "unix:uid:0",
    ];
    let out = replica.admin_ok(&args).await.expect("entry create at B");
    let id = out.trim().to_string();
    assert!(!id.is_empty(), "entry create printed no ID");
    id
}

#[tokio::test]
async fn an_entry_made_at_one_replica_reaches_an_agent_attested_at_the_other() {
    let (_pg, mut d, b) = replicas().await;
    let bundle_b = b
        .admin_ok(&["bundle", "show", "--format", "pem"])
        .await
        .expect("replica B's bundle");
    assert_eq!(bundle_b, d.bundle_pem().expect("A's bundle"), "one CA");
    d.start_agent().await.expect("start the agent (talks to A)");
    // READY comes before the agent has attested: wait for A's record, read at B.
    poll(PROPAGATION, "B to list the agent attested at A", || async {
        let agents = b
            .admin_ok(&["agent", "list"])
            .await
            .expect("agent list at B");
        agents.contains(&d.agent_id).then_some(())
    })
    .await;

    let id = format!("spiffe://{TD}/replicated");
    let entry = entry_at(&b, &d.agent_id, &id).await;
    let client = d.client().await.expect("connect the spiffe client");
    let svid = poll(PROPAGATION, "the SVID of the entry made at B", || async {
        client
            .fetch_x509_svid()
            .await
            .ok()
            .filter(|s| s.spiffe_id().to_string() == id)
    })
    .await;
    assert!(!svid.cert_chain().is_empty());

    // Deleted at B: A stops serving it.
    b.admin_ok(&["entry", "delete", &entry])
        .await
        .expect("entry delete at B");
    poll(PROPAGATION, "the SVID gone after delete at B", || async {
        match client.fetch_x509_svid().await {
            Ok(s) if s.spiffe_id().to_string() == id => None,
            _ => Some(()),
        }
    })
    .await;
}

/// Attests with `token` at the replica on `port`: Ok, or the refusal's text.
async fn attest(d: &Deployment, port: u16, token: &str, n: usize) -> Result<(), String> {
    let target = NodeTarget {
        port,
        bundle_pem: d.bundle_pem().expect("bundle"),
    };
    SimAgent::attest(&target, token, loopback(n))
        .await
        .map(drop)
        .map_err(|e| format!("{e:#}"))
}

fn assert_refused(res: Result<(), String>, what: &str) {
    match res {
        Ok(()) => panic!("{what}: the token was accepted a second time"),
        Err(e) => assert!(e.contains("PermissionDenied"), "{what}: {e}"),
    }
}

/// A join token is single use across replicas: consumed at A, it is refused at B
/// (which generated it), and of two attestations racing with one token at A and B,
/// exactly one wins.
#[tokio::test]
async fn a_join_token_used_at_one_replica_is_refused_at_the_other() {
    let (_pg, d, b) = replicas().await;
    let (d, b) = (&d, &b);
    let token = b
        .admin_ok(&["token", "generate"])
        .await
        .expect("token at B");
    let token = token.trim();
    attest(d, d.port, token, 1)
        .await
        .expect("first use of the token at A");
    assert_refused(attest(d, b.port, token, 2).await, "replayed at B");
    assert_refused(attest(d, d.port, token, 3).await, "replayed at A");

    let mut tokens = Vec::new();
    for _ in 0..8 {
        let token = b
            .admin_ok(&["token", "generate"])
            .await
            .expect("token at B");
        tokens.push(token.trim().to_string());
    }
    let races = tokens.iter().enumerate().map(|(i, token)| async move {
        futures::join!(
            attest(d, d.port, token, 10 + 2 * i),
            attest(d, b.port, token, 11 + 2 * i),
        )
    });
    for (i, (a, b)) in futures::future::join_all(races)
        .await
        .into_iter()
        .enumerate()
    {
        match (a, b) {
            (Ok(()), loser) | (loser, Ok(())) => assert_refused(loser, &format!("race {i}")),
            (Err(a), Err(b)) => panic!("race {i}: both refused: {a} / {b}"),
        }
    }
}

/// An agent with `authority_addresses = [A, B]` attests and syncs at A; once A is
/// killed it reconnects to B, and an entry made at B reaches it.
#[tokio::test]
async fn an_agent_listing_both_replicas_goes_on_at_the_other_when_one_dies() {
    let (_pg, mut d, b) = replicas().await;
    let cfg = d.agent_config();
    let text = std::fs::read_to_string(&cfg).expect("read the agent config");
    let one = format!("authority_address = \"127.0.0.1:{}\"", d.port);
    assert!(text.contains(&one), "{text}");
    let both = format!(
        "authority_addresses = [\"127.0.0.1:{}\", \"127.0.0.1:{}\"]",
        d.port, b.port
    );
    std::fs::write(&cfg, text.replace(&one, &both)).expect("write the agent config");
    let (before, _) = d
        .register_self("failover/before", &[])
        .await
        .expect("entry at A");
    d.start_agent().await.expect("start the agent");
    let client = d.client().await.expect("connect the spiffe client");
    let serves = |id: String| {
        let client = &client;
        async move {
            poll(PROPAGATION, &format!("the agent to serve {id}"), || async {
                let svids = client.fetch_all_x509_svids().await.ok()?;
                svids
                    .iter()
                    .any(|s| s.spiffe_id().to_string() == id)
                    .then_some(())
            })
            .await
        }
    };
    serves(before.clone()).await;

    d.kill_authority().await.expect("SIGKILL replica A");
    let after = format!("spiffe://{TD}/failover/after");
    entry_at(&b, &d.agent_id, &after).await;
    serves(after).await;
    serves(before).await;
    assert!(d.agent_exited().is_none(), "the agent exited");
    let log = d.agent_log();
    assert!(
        log.contains("authority replica unreachable; using the next one"),
        "{log}"
    );
}
