//! Templated SPIFFE IDs: one entry, `spiffe://<td>/ci/{systemd:scope}`, gives each transient
//! scope its own identity. Real processes in cgroups this test creates, each talking to the
//! agent through the `spiffe` crate's client over a socket it connected itself.
//!
//! Needs root and a writable cgroup hierarchy; skips with the reason printed otherwise.

use crate::harness::*;
use crate::kernel_selectors::{rand_hex, writable_hierarchy, Cgroups};
use futures::StreamExt as _;
use std::fs;

const TEMPLATE: &str = "spiffe://example.org/ci/{systemd:scope}";

/// A `sleep` run as nobody (no other entry matches it) that connected to the agent socket,
/// moved into cgroup `rel` before its first request; the `spiffe` crate's client on that
/// connection, and the sleeper.
async fn client_in(
    d: &Deployment,
    cg: &mut Cgroups,
    rel: &str,
) -> (spiffe::WorkloadApiClient, ChildGuard, u32) {
    let dir = cg.make(rel);
    let (fd, child) =
        connect_from_child(&d.socket_path(), NOBODY, NOBODY, "/bin/sleep", &["120"]).unwrap();
    let pid = child.0.id();
    fs::write(dir.join("cgroup.procs"), pid.to_string())
        .unwrap_or_else(|e| panic!("move {pid} into {}: {e}", dir.display()));
    let endpoint: spiffe::transport::Endpoint = d.socket_uri().parse().unwrap();
    let client = spiffe::WorkloadApiClient::new_with_channel(
        endpoint,
        channel_from_fd(fd)
            .await
            .expect("HTTP/2 on a pre-connected socket"),
    );
    (client, child, pid)
}

/// The SPIFFE ID the `spiffe` crate's client receives, once the entry has reached the agent.
async fn x509_id(client: &spiffe::WorkloadApiClient, what: &str) -> String {
    poll(PROPAGATION, what, || async {
        client
            .fetch_x509_svid()
            .await
            .ok()
            .map(|s| s.spiffe_id().to_string())
            .filter(|id| id.starts_with("spiffe://example.org/ci/"))
    })
    .await
}

async fn inspect(d: &Deployment, pid: u32) -> serde_json::Value {
    let cfg = d.agent_config().display().to_string();
    let pid = pid.to_string();
    let out = d
        .agent_cli(&[
            "inspect", "--pid", &pid, "--config", &cfg, "--output", "json",
        ])
        .await
        .expect("run tessera-agent");
    assert!(out.success(), "inspect: {out:?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["spiffe_id"] == TEMPLATE)
        .cloned()
        .unwrap_or_else(|| panic!("templated entry missing from inspect: {v}"))
}

#[tokio::test]
async fn templated_entry_gives_each_scope_its_own_svid() {
    let root = match writable_hierarchy() {
        Ok(r) => r,
        Err(why) => {
            println!("SKIP templated_entry_gives_each_scope_its_own_svid: {why}");
            return;
        }
    };
    let (d, own) = Deployment::up("templates/scopes")
        .await
        .expect("start a deployment");
    wait_x509(&mut d.raw().await.expect("connect to the agent"), &[&own]).await;
    let r = rand_hex();
    let slice = format!("tessera-tmpl-{r}.slice");

    // A bad template is refused with one line naming the field; nothing is written.
    let bad = d
        .admin(&[
            "entry",
            "create",
            "--parent-id",
            &d.agent_id,
            "--spiffe-id",
            "spiffe://example.org/ci/{unix:supplementary_gid}",
            "--selector",
            "unix:uid:0",
        ])
        .await
        .expect("run the admin CLI");
    let line = bad.assert_one_line_error("entry create with a multi-valued placeholder");
    assert!(
        line.contains("spiffe_id") && line.contains("unix:supplementary_gid"),
        "{line}"
    );
    let listed = d.admin_ok(&["entry", "list"]).await.expect("admin command");
    assert!(!listed.contains("supplementary_gid"), "{listed}");

    // A stream opened before the templated entry exists (its process has another identity)
    // is sent the expansion once the entry is synced.
    let mut cg = Cgroups::new(root);
    let early_scope = format!("run-e{r}.scope");
    let plain = format!("spiffe://example.org/plain-{r}");
    d.create_entry(&plain, &[&format!("systemd:scope:{early_scope}")], &[])
        .await
        .expect("create an entry");
    let (early, _e_child, _) = client_in(&d, &mut cg, &format!("{slice}/{early_scope}")).await;
    poll(PROPAGATION, "the plain entry", || async {
        early.fetch_x509_svid().await.ok()
    })
    .await;
    let mut stream = early.stream_x509_contexts().await.unwrap();

    d.create_entry(TEMPLATE, &[&format!("systemd:slice:{slice}")], &[])
        .await
        .expect("create an entry");
    let (a, _a_child, a_pid) = client_in(&d, &mut cg, &format!("{slice}/run-a{r}.scope")).await;
    let (b, _b_child, _) = client_in(&d, &mut cg, &format!("{slice}/run-b{r}.scope")).await;
    let (c, _c_child, c_pid) = client_in(&d, &mut cg, &format!("{slice}/svc-{r}.service")).await;

    // Two scopes, two identities, from one entry.
    let a_id = x509_id(&a, "scope a's templated SVID").await;
    let b_id = x509_id(&b, "scope b's templated SVID").await;
    assert_eq!(a_id, format!("spiffe://example.org/ci/run-a{r}.scope"));
    assert_eq!(b_id, format!("spiffe://example.org/ci/run-b{r}.scope"));
    let all = a.fetch_all_x509_svids().await.unwrap();
    assert!(
        all.iter().all(|s| s.spiffe_id().to_string() != b_id),
        "a got b's identity"
    );

    let want = format!("spiffe://example.org/ci/{early_scope}");
    within(PROPAGATION, "the stream to send the new expansion", async {
        while let Some(ctx) = stream.next().await {
            let ids: Vec<String> = ctx
                .unwrap()
                .svids()
                .iter()
                .map(|s| s.spiffe_id().to_string())
                .collect();
            if ids.contains(&want) {
                assert!(ids.contains(&plain), "{ids:?}");
                return;
            }
        }
        panic!("the stream ended");
    })
    .await;

    // JWT-SVIDs name the expansion too.
    let jwt = a.fetch_jwt_svid(&["aud1"], None).await.unwrap();
    assert_eq!(jwt.spiffe_id().to_string(), a_id);

    // A service in the slice has no systemd:scope: no identity at all (PermissionDenied,
    // which the client reports as "no identity issued").
    let err = c.fetch_x509_svid().await.unwrap_err();
    assert!(
        matches!(
            &err,
            spiffe::WorkloadApiError::NoIdentityIssued
                | spiffe::WorkloadApiError::PermissionDenied(_)
        ),
        "{err:?}"
    );

    // The audit trail names the template and the ID signed from it.
    let audit = d.admin_ok(&["audit"]).await.expect("admin command");
    for id in [&a_id, &b_id] {
        assert!(
            audit.lines().any(|l| l.contains("x509_svid")
                && l.contains(&format!("spiffe_id={id}\t"))
                && l.contains(&format!("detail=template {TEMPLATE}"))),
            "no audit line for {id}:\n{audit}"
        );
    }
    assert!(
        audit
            .lines()
            .any(|l| l.contains("jwt_svid") && l.contains(&a_id)),
        "{audit}"
    );

    // inspect shows the expansion, or why there is none.
    assert_eq!(inspect(&d, a_pid).await["expanded_spiffe_id"], a_id);
    let none = inspect(&d, c_pid).await;
    let why = none["not_expanded"].as_str().unwrap_or_default();
    assert!(why.contains("systemd:scope"), "{none}");
}

/// A compromised agent (its SVID and key copied out) asks the authority itself for IDs
/// its entries do not give: each is refused (in its entry's result), while a true
/// expansion is signed.
#[tokio::test]
async fn authority_refuses_forged_expansions() {
    use crate::node_identity::{add_server_name, csr, node_client, steal};
    use tessera_proto::authority as apb;

    let (mut d, own) = Deployment::up("templates/forged")
        .await
        .expect("start a deployment");
    wait_x509(&mut d.raw().await.expect("connect to the agent"), &[&own]).await;
    let templated = d
        .create_entry(TEMPLATE, &["unix:uid:0"], &[])
        .await
        .expect("create an entry");
    let plain = d
        .create_entry("spiffe://example.org/plain", &["unix:uid:0"], &[])
        .await
        .expect("create an entry");
    add_server_name(&mut d).await;
    let node = node_client(&d, &steal(&d)).await;
    let sign = |entry: &str, spiffe_id: &str| {
        let req = apb::BatchSignX509Request {
            requests: vec![apb::X509SignRequest {
                entry_id: entry.to_string(),
                csr: csr(),
                spiffe_id: spiffe_id.to_string(),
            }],
        };
        let mut node = node.clone();
        // The entry's own outcome (the call itself succeeds for a live agent).
        async move {
            let r = node.batch_sign_x509(req).await?.into_inner();
            let item = r.results.into_iter().next().unwrap_or_default();
            let st = item.status.unwrap_or_default();
            match item.svid {
                Some(svid) if st.code == 0 => Ok(svid),
                _ => Err(tonic::Status::new(st.code.into(), st.message)),
            }
        }
    };
    for (entry, forged) in [
        (&templated, "spiffe://example.org/ci/../admin"),
        (&templated, "spiffe://example.org/admin"),
        (&templated, "spiffe://example.org/cd/run-x.scope"),
        (&templated, "spiffe://example.org/ci/run-x.scope/deeper"),
        (&templated, "spiffe://example.org/tessera/authority"),
        (&templated, TEMPLATE),
        (&plain, "spiffe://example.org/admin"),
    ] {
        let got = sign(entry, forged).await;
        assert_code(got, tonic::Code::PermissionDenied, forged);
    }
    let ok = sign(&templated, "spiffe://example.org/ci/run-x.scope")
        .await
        .expect("a true expansion is signed");
    assert!(!ok.svid_chain.is_empty());
    let audit = d.admin_ok(&["audit"]).await.expect("admin command");
    assert!(!audit.contains("spiffe://example.org/admin"), "{audit}");
}
