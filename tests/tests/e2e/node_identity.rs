//! Node identity under attack: a copied agent credential, an expired one on an
//! open connection, a TPM host returning under its other EK or after a reboot
//! without showing what booted, reserved SPIFFE IDs, and a server posing as the
//! authority with a certificate from the same CA.

use crate::harness::*;
use crate::pki;
use crate::tpm::{measure_boot, rhel8_log, swtpm_booted, tpm_agent_id, tpm_deployment};
use std::fs;
use std::path::Path;
use tessera_attestors::node::tpm::device::swtpm::Swtpm;
use tessera_proto::authority as apb;
use tessera_proto::authority::node_client::NodeClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;

const SERVER_NAME: &str = "server_names = [\"127.0.0.1\"]\n";

/// The agent's SVID and key as a thief copies them out of its data_dir.
pub(crate) fn steal(d: &Deployment) -> (String, String) {
    let data = d.dir.join("agent-data");
    (
        fs::read_to_string(data.join("agent_svid.pem")).unwrap(),
        fs::read_to_string(data.join("agent_key.pem")).unwrap(),
    )
}

/// A Node API client on one mTLS connection presenting `(svid, key)`.
pub(crate) async fn node_client(
    d: &Deployment,
    (svid, key): &(String, String),
) -> NodeClient<Channel> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(
            d.bundle_pem().expect("read bundle.pem"),
        ))
        .identity(Identity::from_pem(svid, key))
        .domain_name("127.0.0.1");
    let channel = Endpoint::from_shared(format!("https://127.0.0.1:{}", d.port))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("mTLS connection to the authority");
    NodeClient::new(channel)
}

async fn sync(node: &mut NodeClient<Channel>) -> Result<usize, tonic::Status> {
    Ok(node
        .sync_entries(apb::SyncEntriesRequest {})
        .await?
        .into_inner()
        .entries
        .len())
}

pub(crate) fn csr() -> Vec<u8> {
    let key = rcgen::KeyPair::generate().unwrap();
    rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .der()
        .to_vec()
}

/// The authority restarted with an IP SAN, so a plain tonic client can reach it.
pub(crate) async fn add_server_name(d: &mut Deployment) {
    d.stop_authority().await.expect("stop the authority");
    let cfg = fs::read_to_string(d.authority_config()).unwrap();
    fs::write(d.authority_config(), format!("{SERVER_NAME}{cfg}")).unwrap();
    d.start_authority().await.expect("start the authority");
}

/// Polls until `probe` is refused with `code`; returns the message.
async fn refused_within(
    what: &str,
    code: Code,
    node: &mut NodeClient<Channel>,
    d: &Deployment,
) -> String {
    let deadline = std::time::Instant::now() + secs(30);
    loop {
        match sync(node).await {
            Err(st) if st.code() == code => return st.message().to_string(),
            other => assert!(
                std::time::Instant::now() < deadline,
                "{what}: still {other:?}\n{}",
                d.logs()
            ),
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

async fn audit_count(d: &Deployment, agent: &str, kind: &str) -> usize {
    d.admin_ok(&["audit", "--agent", agent])
        .await
        .expect("admin command")
        .matches(kind)
        .count()
}

#[tokio::test]
async fn copied_join_token_credential_stops_working_once_the_agent_renews() {
    // Renewed 8-12s after issuance: time for the thief's first sync on a busy machine.
    let mut d = Deployment::new(Opts {
        agent_ttl: "20s",
        authority_extra: SERVER_NAME.into(),
        ..Opts::default()
    })
    .await
    .expect("start a deployment");
    let (id, _) = d
        .register_self("copied/jt", &[])
        .await
        .expect("register an entry");
    d.start_agent().await.expect("start the agent");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_x509(&mut raw, &[&id]).await;
    let copy = steal(&d);
    let mut thief = node_client(&d, &copy).await;
    assert_eq!(
        sync(&mut thief)
            .await
            .expect("the copy works until renewal"),
        1
    );
    poll(secs(30), "the agent's renewal", || async {
        (audit_count(&d, &d.agent_id, "agent_renewal").await > 0).then_some(())
    })
    .await;
    let msg = refused_within(
        "the copied SVID after the real agent renewed",
        Code::PermissionDenied,
        &mut thief,
        &d,
    )
    .await;
    assert!(msg.contains("superseded"), "{msg}");
    let renewal = thief
        .renew_agent(apb::RenewAgentRequest { csr: csr() })
        .await;
    assert_code(renewal, Code::PermissionDenied, "RenewAgent with the copy");
    // The real agent was not disturbed.
    wait_x509(&mut raw, &[&id]).await;
    assert_eq!(
        d.agent_ids().await.expect("list agents"),
        vec![d.agent_id.clone()]
    );
}

/// A TPM agent on its own swtpm, and a thief whose copy of its credential works.
struct Robbed {
    _tpm: Swtpm,
    d: Deployment,
    agent: String,
    thief: NodeClient<Channel>,
}

async fn robbed_tpm_agent(agent_ttl: &'static str) -> Robbed {
    let log = rhel8_log();
    let tpm = swtpm_booted(&log);
    let mut d = tpm_deployment(&tpm, &log, "", agent_ttl).await;
    add_server_name(&mut d).await;
    d.start_agent().await.expect("start the agent");
    let agent = tpm_agent_id(&d).await;
    // The authority lists the agent before the agent has stored its SVID.
    d.wait_agent_attested().await.expect("the agent attests");
    let mut thief = node_client(&d, &steal(&d)).await;
    sync(&mut thief)
        .await
        .expect("the copy works until the host proves itself again");
    Robbed {
        _tpm: tpm,
        d,
        agent,
        thief,
    }
}

/// Waits for `count` audit events of `kind`, then for the copy to be refused.
async fn copy_superseded_after(r: &mut Robbed, kind: &str, count: usize) {
    poll(secs(30), kind, || async {
        (audit_count(&r.d, &r.agent, kind).await >= count).then_some(())
    })
    .await;
    let msg = refused_within(
        &format!("the copied SVID after {kind}"),
        Code::PermissionDenied,
        &mut r.thief,
        &r.d,
    )
    .await;
    assert!(msg.contains("superseded"), "{msg}");
}

#[tokio::test]
async fn tpm_agent_renews_only_by_attesting_and_a_copy_dies_with_the_next_attestation() {
    let mut r = robbed_tpm_agent("20s").await;
    let renewal = r
        .thief
        .renew_agent(apb::RenewAgentRequest { csr: csr() })
        .await;
    let st = assert_code(
        renewal,
        Code::FailedPrecondition,
        "RenewAgent by a TPM agent",
    );
    assert!(st.message().contains("attesting again"), "{st:?}");
    copy_superseded_after(&mut r, "node_reattestation", 1).await;
    assert_eq!(audit_count(&r.d, &r.agent, "agent_renewal").await, 0);
}

#[tokio::test]
async fn a_restarted_tpm_agent_attests_again_and_its_old_credential_dies() {
    let mut r = robbed_tpm_agent("1h").await;
    r.d.stop_agent().await.expect("stop the agent");
    r.d.start_agent().await.expect("start the agent");
    // The first node_attestation was the agent's start; the second, its restart.
    copy_superseded_after(&mut r, "node_attestation", 2).await;
}

#[tokio::test]
async fn expired_agent_svid_is_refused_on_a_connection_opened_before_expiry() {
    let mut d = Deployment::new(Opts {
        agent_ttl: "5s",
        authority_extra: SERVER_NAME.into(),
        ..Opts::default()
    })
    .await
    .expect("start a deployment");
    let (id, _) = d
        .register_self("expiring", &[])
        .await
        .expect("register an entry");
    d.start_agent().await.expect("start the agent");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_x509(&mut raw, &[&id]).await;
    // The agent stops renewing (as when its re-attestation keeps failing).
    d.stop_agent().await.expect("stop the agent");
    let copy = steal(&d);
    let not_after = pki::not_after(&pki::pem_certs(copy.0.as_bytes())[0]);
    let mut node = node_client(&d, &copy).await;
    sync(&mut node).await.expect("valid until notAfter");
    let wait = (not_after + 2 - now()).max(0) as u64;
    tokio::time::sleep(secs(wait)).await;
    match sync(&mut node).await {
        Err(st) if st.code() == Code::Unauthenticated => {
            assert!(st.message().contains("expired"), "{st:?}")
        }
        // Closing the connection at notAfter is a defence too (no new handshake
        // succeeds with the expired certificate); the request must not succeed.
        Err(st) => assert!(
            matches!(
                st.code(),
                Code::Unavailable | Code::Unknown | Code::Cancelled
            ),
            "{st:?}"
        ),
        Ok(n) => panic!(
            "an expired agent SVID still synced {n} entries\n{}",
            d.logs()
        ),
    }
}

#[tokio::test]
async fn evicted_tpm_cannot_return_under_its_other_ek() {
    let log = rhel8_log();
    let tpm = swtpm_booted(&log);
    let mut d = tpm_deployment(&tpm, &log, "", "1h").await;
    d.start_agent().await.expect("start the agent");
    let agent = tpm_agent_id(&d).await;
    d.admin_ok(&["agent", "evict", &agent])
        .await
        .expect("admin command");
    d.stop_agent().await.expect("stop the agent");
    // The same TPM's P-384 EK (certificate at 0x01C00016, same manufacturer CA).
    let cfg = fs::read_to_string(d.agent_config()).unwrap();
    assert!(cfg
        .trim_end()
        .ends_with(&format!("event_log_path = \"{}\"", log.display())));
    fs::write(d.agent_config(), format!("{cfg}ek_template = \"H-3\"\n")).unwrap();
    fs::remove_dir_all(d.dir.join("agent-data")).unwrap();
    let mut other = d
        .spawn_agent_daemon("agent-h3", &d.agent_config(), &d.dir.join("h3.log"))
        .expect("start an agent");
    let status = poll(secs(30), "the agent with the other EK to give up", || {
        std::future::ready(other.exited())
    })
    .await;
    let agent_log = fs::read_to_string(d.dir.join("h3.log")).unwrap();
    assert!(!status.success(), "{agent_log}");
    assert!(
        agent_log.contains("template H-3") && agent_log.contains("L-1"),
        "{agent_log}"
    );
    assert_eq!(
        d.agent_ids().await.expect("list agents"),
        vec![agent],
        "no new agent for the other EK"
    );
}

#[tokio::test]
async fn tpm_reboot_is_accepted_only_with_an_event_log() {
    let source = rhel8_log();
    let mut tpm = swtpm_booted(&source);
    let work = tempfile::tempdir().unwrap();
    let log = work.path().join("binary_bios_measurements");
    fs::copy(&source, &log).unwrap();
    let mut d = tpm_deployment(&tpm, &log, "", "1h").await;
    d.start_agent().await.expect("start the agent");
    let agent = tpm_agent_id(&d).await;
    d.stop_agent().await.expect("stop the agent");

    // Reboot: reset count up, firmware measures again. The agent shows no log,
    // and with a new AK (a fresh data_dir), so per-AK history would not know it.
    tpm.reboot().expect("reboot swtpm");
    measure_boot(&tpm, &source);
    fs::write(&log, b"").unwrap();
    fs::remove_dir_all(d.dir.join("agent-data")).unwrap();
    let attempt = |name: &str| {
        let log = d.dir.join(format!("{name}.log"));
        (
            d.spawn_agent_daemon(name, &d.agent_config(), &log)
                .expect("start an agent"),
            log,
        )
    };
    let (mut nolog, nolog_log) = attempt("agent-nolog");
    let status = poll(
        secs(30),
        "the attestation without a log to be refused",
        || std::future::ready(nolog.exited()),
    )
    .await;
    assert!(
        !status.success(),
        "{}",
        fs::read_to_string(&nolog_log).unwrap()
    );
    let authority_log = fs::read_to_string(d.dir.join("authority.log")).unwrap();
    assert!(
        authority_log.contains("reset count changed"),
        "authority log does not say why:\n{authority_log}"
    );
    assert_eq!(audit_count(&d, &agent, "node_attestation").await, 1);

    // The same reboot with its event log is fine.
    fs::copy(&source, &log).unwrap();
    let _ = fs::remove_dir_all(d.dir.join("agent-data"));
    let (with_log, _) = attempt("agent-log");
    d.extra.push(with_log);
    poll(secs(30), "the attestation with the log", || async {
        (audit_count(&d, &agent, "node_attestation").await == 2).then_some(())
    })
    .await;
}

#[tokio::test]
async fn reserved_spiffe_ids_are_refused_and_stored_ones_never_signed() {
    let mut d = Deployment::new(Opts::default())
        .await
        .expect("start a deployment");
    let authority = format!("spiffe://{TD}/tessera/authority");
    let agent_like = format!("spiffe://{TD}/tessera/agent/join_token/forged");
    for (spiffe_id, parent, field) in [
        (authority.as_str(), d.agent_id.as_str(), "spiffe_id"),
        (agent_like.as_str(), d.agent_id.as_str(), "spiffe_id"),
        (agent_like.as_str(), authority.as_str(), "spiffe_id"),
        (
            "spiffe://example.org/web",
            "spiffe://example.org/tessera/other",
            "parent_id",
        ),
    ] {
        let out = d
            .admin(&[
                "entry",
                "create",
                "--parent-id",
                parent,
                "--spiffe-id",
                spiffe_id,
                "--selector",
                "unix:uid:0",
            ])
            .await
            .expect("run the admin CLI");
        let line = out.assert_one_line_error(spiffe_id);
        assert!(
            line.contains(field) && line.contains("reserved"),
            "{spiffe_id} under {parent}: {line}"
        );
    }
    // A row written before the rule (or straight into the database) is ignored.
    let db = d.authority_data().join("datastore.sqlite3");
    insert_entry_row(&db, &agent_like, &d.agent_id);
    let (id, _) = d
        .register_self("ordinary", &[])
        .await
        .expect("register an entry");
    d.start_agent().await.expect("start the agent");
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_x509(&mut raw, &[&id]).await;
    tokio::time::sleep(secs(2)).await;
    let resp = wait_x509(&mut raw, &[&id]).await;
    assert_eq!(ids(&resp), vec![id.clone()], "{}", d.logs());
    let authority_log = fs::read_to_string(d.dir.join("authority.log")).unwrap();
    assert!(authority_log.contains("entry ignored"), "{authority_log}");
}

fn insert_entry_row(db: &Path, spiffe_id: &str, parent: &str) {
    let sql = format!(
        "INSERT INTO entries (id, spiffe_id, parent_id, selectors, selectors_key, x509_ttl, \
         jwt_ttl, dns_names, hint, admin, expires_at, revision, created_at) VALUES \
         ('forged', '{spiffe_id}', '{parent}', '[{{\"type\":\"unix\",\"value\":\"uid:0\"}}]', \
         'forged', NULL, NULL, '[]', '', 0, NULL, 1, 0); \
         UPDATE counters SET value = value + 1 WHERE name = 'entries';"
    );
    let out = child_command("sqlite3")
        .arg(db)
        .arg(sql)
        .output()
        .expect("sqlite3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A TLS server with a certificate the authority's CA signed for the
/// authority's SPIFFE ID: as an SVID (client and server auth) or as the
/// authority's own (server auth only). Serves only gRPC health.
async fn server_with_ca_signed_cert(d: &Deployment, svid_profile: bool) -> u16 {
    use rcgen::{
        CertificateParams, ExtendedKeyUsagePurpose as Eku, Issuer, KeyPair, KeyUsagePurpose,
        SanType,
    };
    let data = d.authority_data();
    let ca_key = KeyPair::from_pem(&fs::read_to_string(data.join("ca_key.pem")).unwrap()).unwrap();
    let ca_cert = fs::read_to_string(data.join("ca_cert.pem")).unwrap();
    let issuer = Issuer::from_ca_cert_pem(&ca_cert, ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.subject_alt_names = vec![
        SanType::URI(
            format!("spiffe://{TD}/tessera/authority")
                .try_into()
                .unwrap(),
        ),
        SanType::IpAddress("127.0.0.1".parse().unwrap()),
    ];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = match svid_profile {
        true => vec![Eku::ServerAuth, Eku::ClientAuth],
        false => vec![Eku::ServerAuth],
    };
    let cert = p.signed_by(&key, &issuer).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let tls = tonic::transport::ServerTlsConfig::new()
        .identity(Identity::from_pem(cert.pem(), key.serialize_pem()));
    let (_, health) = tonic_health::server::health_reporter();
    let server = tonic::transport::Server::builder()
        .tls_config(tls)
        .unwrap()
        .add_service(health)
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server);
    port
}

/// Starts an agent against `port`; returns its log once `needle` shows up.
async fn agent_against(d: &mut Deployment, port: u16, name: &str, needle: &str) -> String {
    let cfg = fs::read_to_string(d.agent_config())
        .unwrap()
        .replace(
            &format!("127.0.0.1:{}", d.port),
            &format!("127.0.0.1:{port}"),
        )
        .replace("agent-data", &format!("{name}-data"))
        .replace("/agent/api.sock", &format!("/{name}/api.sock"));
    fs::create_dir_all(d.dir.join(name)).unwrap();
    let path = d.dir.join(format!("{name}.toml"));
    fs::write(&path, cfg).unwrap();
    let log = d.dir.join(format!("{name}.log"));
    let daemon = d
        .spawn_agent_daemon(name, &path, &log)
        .expect("start an agent");
    d.extra.push(daemon);
    poll(secs(30), needle, || {
        std::future::ready(fs::read_to_string(&log).ok().filter(|l| l.contains(needle)))
    })
    .await
}

#[tokio::test]
async fn agent_accepts_only_the_authoritys_own_certificate() {
    let mut d = Deployment::new(Opts::default())
        .await
        .expect("start a deployment");
    let svid = server_with_ca_signed_cert(&d, true).await;
    let log = agent_against(&mut d, svid, "agent-svid", "node attestation failed").await;
    assert!(
        log.contains("not the authority's server certificate"),
        "{log}"
    );
    // Control: the same server with the authority's certificate profile gets
    // past TLS (and fails only because it has no Node service).
    let own = server_with_ca_signed_cert(&d, false).await;
    // No Node service there: the agent takes that as a refusal and exits.
    let log = agent_against(&mut d, own, "agent-own", "Unimplemented").await;
    assert!(
        !log.contains("not the authority's server certificate"),
        "{log}"
    );
}
