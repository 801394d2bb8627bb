//! Boot policies fail closed (issue 7, items 3 and 4), with the real agent
//! and authority on a private swtpm: no event log grants no policy that
//! reads one, a policy over a PCR the authority does not quote stops it at
//! start, and an unverified EK certificate names no manufacturer.

use crate::harness::*;
use crate::tpm::{
    alias_entry, hex, local_ca, rhel8_log, rig, tpm_agent_id, tpm_deployment, verifier, Rig,
};
use std::fs;
use tessera_attestors::node::tpm::device::swtpm::Swtpm;
use tessera_attestors::node::tpm::eventlog::{
    self, event_type::EV_EFI_BOOT_SERVICES_APPLICATION, HashAlg,
};
use tessera_attestors::node::tpm::policy::{BootPolicy, BootPolicyConfig};
use tessera_attestors::node::tpm::verifier::TpmVerifier;
use tessera_attestors::node::NodeEvidence;

#[tokio::test]
async fn boot_policy_agent_without_event_log_is_not_granted() {
    // A fresh swtpm: every PCR zero, and an agent that sends an empty log.
    let tpm = Swtpm::start().expect("start swtpm (swtpm and swtpm-tools installed?)");
    let empty = tpm.dir().join("empty-event-log.bin");
    fs::write(&empty, b"").unwrap();
    let zero = "00".repeat(32);
    let policies = format!(
        "[[tpm.policy]]\nname = \"apps\"\nboot_digests = [\"{zero}\"]\n\
         [[tpm.policy]]\nname = \"golden\"\npcrs = {{ \"0\" = \"{zero}\" }}\n"
    );
    let mut d = tpm_deployment(&tpm, &empty, &policies, "1h").await;
    let (apps, golden) = (
        "spiffe://example.org/boot/apps",
        "spiffe://example.org/boot/golden",
    );
    alias_entry(
        &d,
        "spiffe://example.org/nodes/apps",
        "tpm:policy:apps",
        apps,
    )
    .await;
    alias_entry(
        &d,
        "spiffe://example.org/nodes/golden",
        "tpm:policy:golden",
        golden,
    )
    .await;
    d.start_agent().await.expect("start the agent");
    tpm_agent_id(&d).await;
    // The golden-PCR policy needs no log (it is the quoted value itself), so
    // the host attests and the entries sync; the log-reading one is refused.
    let mut raw = d.raw().await.expect("connect to the agent");
    let resp = wait_x509(&mut raw, &[golden]).await;
    assert!(
        !ids(&resp).iter().any(|id| id == apps),
        "an entry under tpm:policy:apps was delivered: {:?}",
        ids(&resp)
    );
    let list = d.admin_ok(&["agent", "list"]).await.expect("admin command");
    assert!(
        list.contains("Selector      : tpm:policy:golden") && !list.contains("tpm:policy:apps"),
        "{list}"
    );
    assert!(
        d.logs().contains("boot_digests: no event log"),
        "the authority does not say why:\n{}",
        d.logs()
    );
}

#[tokio::test]
async fn boot_policy_over_an_unquoted_pcr_stops_the_authority() {
    let dir = tempfile::tempdir().unwrap();
    let base = format!(
        "trust_domain = \"example.org\"\nlisten_address = \"127.0.0.1:1\"\n\
         admin_socket_path = \"{}\"\ndata_dir = \"{}\"\n[tpm]\nek_ca_dir = \"{}\"\n",
        dir.path().join("admin.sock").display(),
        dir.path().join("data").display(),
        dir.path().display(),
    );
    for (tpm, line) in [
        (
            "pcrs = [0, 1, 2, 3, 5, 6, 7]\n[[tpm.policy]]\nname = \"apps\"\nboot_digests = [\"00\"]\n",
            "tpm.policy \"apps\": boot_digests reads PCR 4, which tpm.pcrs does not quote",
        ),
        (
            "pcrs = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14]\n[[tpm.policy]]\nname = \"cmd\"\nkernel_cmdline = [\"quiet\"]\n",
            "tpm.policy \"cmd\": kernel_cmdline reads PCR 12, which tpm.pcrs does not quote",
        ),
        (
            "[[tpm.policy]]\nname = \"golden\"\npcrs = { \"15\" = \"00\" }\n",
            "tpm.policy \"golden\": pcrs reads PCR 15, which tpm.pcrs does not quote",
        ),
    ] {
        let cfg = dir.path().join("authority.toml");
        fs::write(&cfg, format!("{base}{tpm}")).unwrap();
        let out = run_cmd(
            &bin("tessera-authority").expect("binary built"),
            &["run", "--config", cfg.to_str().unwrap()],
            None,
            &[],
        )
        .await.expect("run a command");
        let got = out.assert_one_line_error("authority with a policy over an unquoted PCR");
        assert!(got.contains(line), "{got}");
    }
    assert!(
        !dir.path().join("data").exists(),
        "the authority got as far as creating its data_dir"
    );
}

/// One attestation of `r` by `v`: the EK hash and the node selectors.
async fn selectors(r: &Rig, evidence: &[u8], v: &TpmVerifier) -> (String, Vec<String>) {
    let (pending, challenge) = v.challenge(evidence).unwrap();
    let out = v
        .verify(pending, &r.ev.respond(&challenge).await.unwrap())
        .unwrap();
    let sel = out.selectors.iter().map(|s| s.to_string()).collect();
    (out.ek_hash, sel)
}

#[tokio::test]
async fn allow_listed_ek_with_an_unverified_certificate_names_no_manufacturer() {
    let r = rig(&rhel8_log());
    let evidence = r.ev.evidence().await.unwrap();
    // Chain verified: the manufacturer the certificate names is a fact.
    let (ek_hash, sel) = selectors(&r, &evidence, &verifier(Some(local_ca(&r)), vec![])).await;
    assert!(
        sel.contains(&"tpm:ek_manufacturer:id:00001014".to_string()),
        "{sel:?}"
    );
    // The same certificate with no CA to verify it, the EK allow-listed:
    // anyone can write a certificate, so it names nothing.
    let mut allow_listed = verifier(None, vec![]);
    allow_listed.allowed_ek_hashes = vec![ek_hash];
    let (_, sel) = selectors(&r, &evidence, &allow_listed).await;
    assert!(
        sel.contains(&"tpm:ek_cert_verified:false".to_string()),
        "{sel:?}"
    );
    assert!(
        !sel.iter().any(|s| s.starts_with("tpm:ek_manufacturer:")),
        "{sel:?}"
    );
}

#[tokio::test]
async fn real_boot_passes_a_full_policy_only_when_every_pcr_it_reads_is_quoted() {
    let r = rig(&rhel8_log());
    let log = eventlog::parse(&fs::read(rhel8_log()).unwrap()).unwrap();
    let apps: Vec<String> = log
        .events
        .iter()
        .filter(|e| e.pcr == 4 && e.event_type == EV_EFI_BOOT_SERVICES_APPLICATION)
        .map(|e| hex(e.digest(HashAlg::Sha256).unwrap()))
        .collect();
    assert_eq!(apps.len(), 3, "shim, grub, kernel");
    let prod = BootPolicy::new(&BootPolicyConfig {
        name: "prod".into(),
        require_secure_boot: true,
        boot_digests: apps,
        kernel_cmdline: vec![
            "^\\S+/vmlinuz-4\\.18\\S+ root=UUID=\\S+ ro .*console=ttyS0,38400n8$".into(),
        ],
        ..Default::default()
    })
    .unwrap();
    let mut v = verifier(Some(local_ca(&r)), vec![prod]);
    v.pcrs = vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 14];
    let evidence = r.ev.evidence().await.unwrap();
    let (_, sel) = selectors(&r, &evidence, &v).await;
    assert!(sel.contains(&"tpm:policy:prod".to_string()), "{sel:?}");
    // Without PCR 12 the command line systemd-boot would measure is unknown.
    v.pcrs = vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14];
    let (_, sel) = selectors(&r, &evidence, &v).await;
    assert!(!sel.iter().any(|s| s.starts_with("tpm:policy:")), "{sel:?}");
}
