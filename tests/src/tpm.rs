//! A software TPM booted like a real host (swtpm whose PCRs hold what a real
//! firmware's event log measured), its local EK CA as an operator would
//! configure it, and a deployment whose agent attests with that TPM.

use crate::{Deployment, Opts, TD};
use anyhow::{Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use tessera_attestors::node::tpm::device::swtpm::Swtpm;
use tessera_attestors::node::tpm::ekcert::EkCaStore;
use tessera_attestors::node::tpm::eventlog::{self, event_type::EV_NO_ACTION, HashAlg};
use tessera_attestors::node::tpm::policy::BootPolicy;
use tessera_attestors::node::tpm::public::EkTemplate;
use tessera_attestors::node::tpm::verifier::TpmVerifier;

/// `p` under the repository's test data, tests/data (see its MANIFEST.md).
pub fn testdata(p: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data")).join(p)
}

/// GCE RHEL 8 with secure boot on: its sha256 PCRs 0-9,14 are known.
pub fn rhel8_log() -> PathBuf {
    testdata("eventlogs/go-tpm-tools/rhel8-uefi.bin")
}

/// A provisioned swtpm whose PCRs hold what the firmware of `log` measured.
pub fn swtpm_booted(log: &Path) -> Result<Swtpm> {
    let tpm = Swtpm::start().context("start swtpm (swtpm and swtpm-tools installed?)")?;
    measure_boot(&tpm, log)?;
    Ok(tpm)
}

/// Extends what the firmware of `log` measured into the PCRs.
pub fn measure_boot(tpm: &Swtpm, log: &Path) -> Result<()> {
    let bytes = fs::read(log).with_context(|| format!("read {}", log.display()))?;
    let parsed = eventlog::parse(&bytes).with_context(|| format!("parse {}", log.display()))?;
    for e in parsed
        .events
        .iter()
        .filter(|e| e.event_type != EV_NO_ACTION && e.pcr < 24)
    {
        let digests: Vec<String> = [HashAlg::Sha1, HashAlg::Sha256]
            .iter()
            .filter_map(|a| e.digest(*a).map(|d| format!("{}={}", a.name(), hex(d))))
            .collect();
        tpm.tool(&[
            "tpm2_pcrextend",
            &format!("{}:{}", e.pcr, digests.join(",")),
        ])
        .context("tpm2_pcrextend")?;
    }
    Ok(())
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The swtpm's local CA, as an operator would configure it as `ek_ca_dir`.
pub fn ek_ca_dir(tpm: &Swtpm) -> Result<PathBuf> {
    let dir = tpm.dir().join("ek-ca");
    fs::create_dir_all(&dir)?;
    let (issuer, root) = tpm.ca_certs();
    fs::copy(issuer, dir.join("issuer.pem")).context("copy the swtpm CA's issuer")?;
    fs::copy(root, dir.join("root.pem")).context("copy the swtpm CA's root")?;
    Ok(dir)
}

/// The authority's verifier for an RSA-2048 EK (the swtpm's), quoting the PCRs a
/// boot policy reads: 0-9 and 14.
pub fn tpm_verifier(ek_cas: Option<EkCaStore>, policies: Vec<BootPolicy>) -> TpmVerifier {
    TpmVerifier {
        ek_cas,
        allowed_ek_hashes: vec![],
        pcrs: vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14],
        ek_template: EkTemplate::L1Rsa2048,
        policies,
    }
}

impl Deployment {
    /// An authority with `[tpm]` (+ `policies`), and an agent configured to attest
    /// with `tpm` and the event log `log` (plus `opts.agent_extra`). Not started.
    pub async fn with_tpm(tpm: &Swtpm, log: &Path, policies: &str, opts: Opts) -> Result<Self> {
        let authority_extra = format!(
            "{}\n[tpm]\nek_ca_dir = \"{}\"\n{policies}",
            opts.authority_extra,
            ek_ca_dir(tpm)?.display()
        );
        let d = Deployment::new(Opts {
            authority_extra,
            ..opts
        })
        .await?;
        let cfg = format!(
            "trust_domain = \"{TD}\"\nauthority_address = \"127.0.0.1:{port}\"\ntrust_bundle_path = \"{bundle}\"\n\
             socket_path = \"{socket}\"\ndata_dir = \"{data}\"\nsync_interval = \"500ms\"\n{extra}\n\
             [node_attestation]\nmethod = \"tpm\"\n[tpm]\ntcti = \"{tcti}\"\nevent_log_path = \"{log}\"\n",
            port = d.port,
            bundle = d.dir.join("bundle.pem").display(),
            socket = d.socket_path().display(),
            data = d.dir.join("agent-data").display(),
            extra = d.agent_extra,
            tcti = tpm.tcti(),
            log = log.display(),
        );
        fs::write(d.agent_config(), cfg)?;
        Ok(d)
    }
}
