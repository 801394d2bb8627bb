//! TPM node attestation end to end on a private swtpm per test: PCRs driven
//! by replaying a real firmware log, the real agent and authority binaries,
//! and a workload SVID under a node alias. Plus each rejection the authority
//! must make, driven through the real TPM code in-process.

use crate::harness::*;
use std::fs;
use std::path::{Path, PathBuf};
use tessera_attestors::node::tpm::device::swtpm::Swtpm;
use tessera_attestors::node::tpm::device::{PcrBank, PcrSelection, Tpm, TpmOps};
use tessera_attestors::node::tpm::ekcert::EkCaStore;
use tessera_attestors::node::tpm::eventlog::{self, event_type::EV_NO_ACTION, HashAlg};
use tessera_attestors::node::tpm::evidence::TpmEvidence;
use tessera_attestors::node::tpm::policy::{BootPolicy, BootPolicyConfig};
use tessera_attestors::node::tpm::verifier::{TpmVerifier, TpmVerifyError};
use tessera_attestors::node::NodeEvidence;

pub(crate) fn rhel8_log() -> PathBuf {
    tessera_tests::rhel8_log()
}

fn testdata(p: &str) -> PathBuf {
    tessera_tests::testdata(p)
}

pub(crate) fn swtpm_booted(log: &Path) -> Swtpm {
    tessera_tests::swtpm_booted(log).expect("a booted swtpm")
}

pub(crate) fn measure_boot(tpm: &Swtpm, log: &Path) {
    tessera_tests::measure_boot(tpm, log).expect("measure the boot into the swtpm")
}

pub(crate) use tessera_tests::hex;

pub(crate) fn ek_ca_dir(tpm: &Swtpm) -> PathBuf {
    tessera_tests::ek_ca_dir(tpm).expect("the swtpm's EK CA dir")
}

/// Authority with `[tpm]` (+ `policies`), agent configured for the TPM.
pub(crate) async fn tpm_deployment(
    tpm: &Swtpm,
    log: &Path,
    policies: &str,
    agent_ttl: &'static str,
) -> Deployment {
    let opts = Opts {
        agent_ttl,
        ..Opts::default()
    };
    Deployment::with_tpm(tpm, log, policies, opts)
        .await
        .expect("start a TPM deployment")
}

pub(crate) async fn tpm_agent_id(d: &Deployment) -> String {
    poll(secs(30), "the TPM agent to attest", || async {
        d.agent_ids()
            .await
            .expect("list agents")
            .into_iter()
            .find(|id| id.starts_with("spiffe://example.org/tessera/agent/tpm/"))
    })
    .await
}

const ALIAS_PARENT: &str = "spiffe://example.org/tessera/authority";

/// Node alias `alias` for hosts with `node_selector`, and an entry for this
/// test process under it.
pub(crate) async fn alias_entry(d: &Deployment, alias: &str, node_selector: &str, workload: &str) {
    d.admin_ok(&[
        "entry",
        "create",
        "--parent-id",
        ALIAS_PARENT,
        "--spiffe-id",
        alias,
        "--selector",
        node_selector,
    ])
    .await
    .expect("admin command");
    d.admin_ok(&[
        "entry",
        "create",
        "--parent-id",
        alias,
        "--spiffe-id",
        workload,
        "--selector",
        "unix:uid:0",
    ])
    .await
    .expect("admin command");
}

#[tokio::test]
async fn tpm_secure_boot_host_gets_workload_identity_through_node_alias() {
    let log = rhel8_log();
    let tpm = swtpm_booted(&log);
    let mut d = tpm_deployment(
        &tpm,
        &log,
        "[[tpm.policy]]\nname = \"secure-boot\"\nrequire_secure_boot = true\n",
        "1h",
    )
    .await;
    let workload = "spiffe://example.org/tpm/web";
    alias_entry(
        &d,
        "spiffe://example.org/nodes/secure-boot",
        "tpm:secure_boot:enabled",
        workload,
    )
    .await;
    d.start_agent().await.expect("start the agent");
    let agent = tpm_agent_id(&d).await;
    let list = d.admin_ok(&["agent", "list"]).await.expect("admin command");
    for want in [
        "tpm:secure_boot:enabled",
        "tpm:ek_cert_verified:true",
        "tpm:policy:secure-boot",
        "tpm:ek_manufacturer:id:00001014",
    ] {
        assert!(
            list.contains(&format!("Selector      : {want}")),
            "agent list lacks {want}:\n{list}"
        );
    }
    // PCR 7 as read from the real GCE machine, reproduced by the replay into swtpm.
    let fixture =
        fs::read_to_string(testdata("fixtures/swtpm-replayed-rhel8/pcrs_sha256.txt")).unwrap();
    let pcr7 = fixture
        .lines()
        .find_map(|l| l.strip_prefix("Slot7 "))
        .expect("fixture has Slot7")
        .trim()
        .to_lowercase();
    assert!(
        list.contains(&format!("tpm:pcr:sha256:7:{pcr7}")),
        "PCR 7 selector {pcr7} missing:\n{list}"
    );
    let client = d.client().await.expect("connect the spiffe client");
    let svid = within(secs(30), "fetch the workload SVID", async {
        loop {
            match client.fetch_x509_svid().await {
                Ok(s) => return s,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
            }
        }
    })
    .await;
    assert_eq!(svid.spiffe_id().to_string(), workload);
    let audit = d
        .admin_ok(&["audit", "--agent", &agent])
        .await
        .expect("admin command");
    assert!(
        audit.contains("node_attestation") && audit.contains("policies=secure-boot"),
        "audit:\n{audit}"
    );
}

#[tokio::test]
async fn tpm_tampered_event_log_is_rejected() {
    let tpm = swtpm_booted(&rhel8_log());
    let mut bytes = fs::read(rhel8_log()).unwrap();
    // Change the data of the last event: the log still parses, but its
    // digests no longer replay to what the TPM quoted once one is altered.
    let parsed = eventlog::parse(&bytes).unwrap();
    let victim = parsed
        .events
        .iter()
        .rev()
        .find(|e| e.pcr == 4 && e.event_type != EV_NO_ACTION)
        .unwrap();
    let digest = victim.digest(HashAlg::Sha256).unwrap().to_vec();
    let at = bytes
        .windows(digest.len())
        .position(|w| w == digest.as_slice())
        .unwrap();
    bytes[at] ^= 0x01;
    let tampered = tpm.dir().join("tampered.bin");
    fs::write(&tampered, bytes).unwrap();
    let mut d = tpm_deployment(&tpm, &tampered, "", "1h").await;
    d.spawn_agent().expect("start the agent");
    let deadline = std::time::Instant::now() + secs(30);
    let status = loop {
        if let Some(st) = d.agent_exited() {
            break st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the agent kept running after a refused attestation\n{}",
            d.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(
        !status.success(),
        "the agent must exit non-zero when attestation is refused"
    );
    assert!(
        d.logs()
            .contains("event log does not match the quoted PCRs"),
        "{}",
        d.logs()
    );
    assert!(d.agent_ids().await.expect("list agents").is_empty());
}

#[tokio::test]
async fn tpm_evicted_ek_loses_identity_at_renewal_and_cannot_reattest() {
    let log = rhel8_log();
    let tpm = swtpm_booted(&log);
    let mut d = tpm_deployment(&tpm, &log, "", "8s").await;
    let workload = "spiffe://example.org/tpm/evicted";
    alias_entry(
        &d,
        "spiffe://example.org/nodes/any-tpm",
        "tpm:ek_cert_verified:true",
        workload,
    )
    .await;
    d.start_agent().await.expect("start the agent");
    let agent = tpm_agent_id(&d).await;
    let mut raw = d.raw().await.expect("connect to the agent");
    wait_x509(&mut raw, &[workload]).await;
    // Renewal re-attests: wait for one, proving continuous verification runs.
    poll(secs(30), "a re-attestation at renewal", || async {
        d.admin_ok(&["audit", "--agent", &agent])
            .await
            .expect("admin command")
            .contains("node_reattestation")
            .then_some(())
    })
    .await;
    d.admin_ok(&["agent", "evict", &agent])
        .await
        .expect("admin command");
    let deadline = std::time::Instant::now() + secs(30);
    loop {
        let r = first(raw.fetch_x509svid(req(tessera_proto::workload::X509svidRequest {}))).await;
        if matches!(r, Err(ref s) if s.code() == tonic::Code::PermissionDenied) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the evicted host kept its identity\n{}",
            d.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    poll(secs(30), "the refused renewal", || async {
        d.agent_log().contains("renewal failed").then_some(())
    })
    .await;
    // A fresh start from nothing: the EK itself is refused.
    d.stop_agent().await.expect("stop the agent");
    fs::remove_dir_all(d.dir.join("agent-data")).unwrap();
    d.spawn_agent().expect("start the agent");
    let deadline = std::time::Instant::now() + secs(30);
    let status = loop {
        if let Some(st) = d.agent_exited() {
            break st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "an evicted EK attested again\n{}",
            d.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(!status.success());
    assert!(d.agent_log().contains("evicted"), "{}", d.agent_log());
}

// ---- the authority's checks, each on real TPM evidence ----------------------------

pub(crate) struct Rig {
    pub(crate) _swtpm: Swtpm,
    pub(crate) ev: TpmEvidence<Tpm>,
    pub(crate) key_dir: tempfile::TempDir,
}

pub(crate) fn rig(log: &Path) -> Rig {
    let swtpm = swtpm_booted(log);
    let key_dir = tempfile::tempdir().unwrap();
    let ev = TpmEvidence {
        tpm: Tpm::open(&swtpm.tcti()).unwrap(),
        key_dir: key_dir.path().to_path_buf(),
        event_log_path: log.to_path_buf(),
    };
    Rig {
        _swtpm: swtpm,
        ev,
        key_dir,
    }
}

pub(crate) fn verifier(ca: Option<EkCaStore>, policies: Vec<BootPolicy>) -> TpmVerifier {
    tpm_verifier(ca, policies)
}

pub(crate) fn local_ca(r: &Rig) -> EkCaStore {
    EkCaStore::load_dir(&ek_ca_dir(&r._swtpm)).unwrap()
}

fn rejected(e: TpmVerifyError, needle: &str) {
    match e {
        TpmVerifyError::Rejected(m) => {
            assert!(m.contains(needle), "rejected for the wrong reason: {m}")
        }
        other => panic!("expected a rejection mentioning {needle:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn tpm_verifier_accepts_the_real_evidence() {
    let r = rig(&rhel8_log());
    let v = verifier(
        Some(local_ca(&r)),
        vec![BootPolicy::new(&BootPolicyConfig {
            name: "sb".into(),
            require_secure_boot: true,
            ..Default::default()
        })
        .unwrap()],
    );
    let (pending, challenge) = v.challenge(&r.ev.evidence().await.unwrap()).unwrap();
    let out = v
        .verify(pending, &r.ev.respond(&challenge).await.unwrap())
        .unwrap();
    assert!(out.boot.secure_boot);
    assert_eq!(out.policies_passed, vec!["sb"]);
    assert!(
        r.key_dir.path().read_dir().unwrap().count() > 0,
        "the AK blob is persisted"
    );
}

#[tokio::test]
async fn tpm_replayed_nonce_or_old_quote_is_rejected() {
    let r = rig(&rhel8_log());
    let v = verifier(Some(local_ca(&r)), vec![]);
    let evidence = r.ev.evidence().await.unwrap();
    let (p1, c1) = v.challenge(&evidence).unwrap();
    let old = r.ev.respond(&c1).await.unwrap();
    v.verify(p1, &old).unwrap();
    // The same answer again, for a new challenge: secret and nonce are single use.
    let (p2, _c2) = v.challenge(&evidence).unwrap();
    rejected(v.verify(p2, &old).unwrap_err(), "credential activation");
    // A fresh activation with the old quote: the nonce check catches it.
    let (p3, c3) = v.challenge(&evidence).unwrap();
    let fresh = r.ev.respond(&c3).await.unwrap();
    let (mut fresh_msg, old_msg): (
        tessera_proto::tpm::ChallengeResponse,
        tessera_proto::tpm::ChallengeResponse,
    ) = (
        prost::Message::decode(fresh.as_slice()).unwrap(),
        prost::Message::decode(old.as_slice()).unwrap(),
    );
    fresh_msg.quote = old_msg.quote;
    fresh_msg.signature = old_msg.signature;
    rejected(
        v.verify(p3, &prost::Message::encode_to_vec(&fresh_msg))
            .unwrap_err(),
        "quote",
    );
}

#[tokio::test]
async fn tpm_ak_from_a_second_tpm_is_rejected() {
    let r1 = rig(&rhel8_log());
    let r2 = rig(&rhel8_log());
    let v = verifier(Some(local_ca(&r1)), vec![]);
    let mut ev: tessera_proto::tpm::Evidence =
        prost::Message::decode(r1.ev.evidence().await.unwrap().as_slice()).unwrap();
    let other: tessera_proto::tpm::Evidence =
        prost::Message::decode(r2.ev.evidence().await.unwrap().as_slice()).unwrap();
    ev.ak_public = other.ak_public; // EK of TPM 1, AK of TPM 2
    let (pending, challenge) = v.challenge(&prost::Message::encode_to_vec(&ev)).unwrap();
    assert!(
        r1.ev.respond(&challenge).await.is_err(),
        "TPM 1 cannot activate for an AK it does not hold"
    );
    assert!(
        r2.ev.respond(&challenge).await.is_err(),
        "TPM 2 cannot activate without the EK"
    );
    let forged = tessera_proto::tpm::ChallengeResponse {
        secret: vec![0; 32],
        ..Default::default()
    };
    rejected(
        v.verify(pending, &prost::Message::encode_to_vec(&forged))
            .unwrap_err(),
        "credential activation",
    );
}

#[tokio::test]
async fn tpm_non_restricted_ak_is_rejected() {
    let r = rig(&rhel8_log());
    let v = verifier(Some(local_ca(&r)), vec![]);
    let mut ev: tessera_proto::tpm::Evidence =
        prost::Message::decode(r.ev.evidence().await.unwrap().as_slice()).unwrap();
    // TPMT_PUBLIC: type, nameAlg, then objectAttributes; restricted is bit 16.
    ev.ak_public[5] &= !0x01;
    match v.challenge(&prost::Message::encode_to_vec(&ev)) {
        Err(e) => rejected(e, "ak_public"),
        Ok(_) => panic!("a non-restricted AK was accepted"),
    }
}

#[tokio::test]
async fn tpm_ek_certificate_from_unknown_ca_is_rejected() {
    let r = rig(&rhel8_log());
    let vendors = EkCaStore::load_dir(&testdata("ek-roots/keylime-tpm_cert_store")).unwrap();
    let v = verifier(Some(vendors), vec![]);
    match v.challenge(&r.ev.evidence().await.unwrap()) {
        Err(e) => rejected(e, "ek_cert"),
        Ok(_) => panic!("an EK certificate from an unknown CA was accepted"),
    }
}

#[tokio::test]
async fn tpm_quote_over_the_wrong_pcrs_is_rejected() {
    let r = rig(&rhel8_log());
    let v = verifier(Some(local_ca(&r)), vec![]);
    let (pending, challenge) = v.challenge(&r.ev.evidence().await.unwrap()).unwrap();
    let c: tessera_proto::tpm::Challenge = prost::Message::decode(challenge.as_slice()).unwrap();
    let secret =
        r.ev.tpm
            .activate_credential(r.key_dir.path(), &c.credential_blob, &c.encrypted_secret)
            .await
            .unwrap();
    let q =
        r.ev.tpm
            .quote(
                r.key_dir.path(),
                &c.nonce,
                &PcrSelection {
                    bank: PcrBank::Sha256,
                    pcrs: vec![0, 1, 2],
                },
            )
            .await
            .unwrap();
    let answer = tessera_proto::tpm::ChallengeResponse {
        secret,
        quote: q.attest,
        signature: q.signature,
        pcr_values: q
            .pcr_values
            .into_iter()
            .map(|(index, digest)| tessera_proto::tpm::PcrValue { index, digest })
            .collect(),
    };
    rejected(
        v.verify(pending, &prost::Message::encode_to_vec(&answer))
            .unwrap_err(),
        "quote",
    );
}

#[tokio::test]
async fn tpm_host_failing_a_boot_policy_does_not_get_its_selector() {
    let r = rig(&rhel8_log());
    let golden = BootPolicyConfig {
        name: "golden".into(),
        pcrs: [("0".to_string(), "00".repeat(32))].into(),
        ..Default::default()
    };
    let allow_nothing = BootPolicyConfig {
        name: "no-apps".into(),
        boot_digests: vec!["00".repeat(32)],
        ..Default::default()
    };
    let sb = BootPolicyConfig {
        name: "sb".into(),
        require_secure_boot: true,
        ..Default::default()
    };
    let v = verifier(
        Some(local_ca(&r)),
        [golden, allow_nothing, sb]
            .iter()
            .map(|c| BootPolicy::new(c).unwrap())
            .collect(),
    );
    let (pending, challenge) = v.challenge(&r.ev.evidence().await.unwrap()).unwrap();
    let out = v
        .verify(pending, &r.ev.respond(&challenge).await.unwrap())
        .unwrap();
    assert_eq!(
        out.policies_passed,
        vec!["sb"],
        "only the policy the host meets"
    );
    let sel: Vec<String> = out.selectors.iter().map(|s| s.to_string()).collect();
    assert!(
        sel.contains(&"tpm:policy:sb".to_string())
            && !sel
                .iter()
                .any(|s| s.contains("golden") || s.contains("no-apps")),
        "{sel:?}"
    );
}
