//! The helper binary against a private swtpm, driven by the agent's client:
//! every call round-trips, a TPM failure leaves the helper serving, and a
//! helper killed in the middle of a call fails that call and is replaced by
//! the next one.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::PathBuf;
use std::time::Duration;
use tessera_attestors::node::tpm::device::swtpm::{make_credential, Swtpm};
use tessera_attestors::node::tpm::helper::{HelperCommand, HelperError, TpmHelper, CALL_TIMEOUT};
use tessera_attestors::node::tpm::ops::{PcrBank, PcrSelection, TpmOps, AK_BLOB_FILE};
use tessera_attestors::node::tpm::public::EkTemplate;

fn command(tcti: String) -> HelperCommand {
    HelperCommand {
        program: PathBuf::from(env!("CARGO_BIN_EXE_tessera-agent-tpm")),
        tcti,
        ek_template: EkTemplate::L1Rsa2048,
        log_level: "debug".into(),
        log_json: false,
    }
}

fn signal(pid: u32, sig: Signal) {
    kill(Pid::from_raw(pid as i32), sig).expect("kill");
}

#[tokio::test]
async fn every_call_round_trips_through_the_helper() {
    let swtpm = Swtpm::start().expect("swtpm");
    let dir = tempfile::tempdir().unwrap();
    let tpm = TpmHelper::start(command(swtpm.tcti()), CALL_TIMEOUT)
        .await
        .expect("helper");
    let pid = tpm.pid().await.expect("running");

    let ek = tpm.endorsement().await.expect("endorsement");
    assert!(
        ek.ek_cert.is_some_and(|c| c.len() > 100),
        "swtpm_setup made a certificate"
    );
    let ak = tpm.attestation_key(dir.path()).await.expect("ak");
    assert!(dir.path().join(AK_BLOB_FILE).is_file());
    assert_eq!(&ak.name[..2], [0x00, 0x0B]);
    assert_eq!(tpm.attestation_key(dir.path()).await.expect("ak again"), ak);

    let secret = b"0123456789abcdef0123456789abcdef";
    let (id, enc) = make_credential(&ek.ek_public, &ak.name, secret).expect("makecredential");
    let got = tpm.activate_credential(dir.path(), &id, &enc).await;
    assert_eq!(got.expect("activate"), secret);

    let nonce = [7u8; 32];
    let sel = PcrSelection {
        bank: PcrBank::Sha256,
        pcrs: vec![0, 7, 14],
    };
    let q = tpm.quote(dir.path(), &nonce, &sel).await.expect("quote");
    assert!(
        q.attest.windows(nonce.len()).any(|w| w == nonce),
        "extraData"
    );
    let indices: Vec<u32> = q.pcr_values.iter().map(|(i, _)| *i).collect();
    assert_eq!(indices, sel.pcrs);
    assert!(q.pcr_values.iter().all(|(_, d)| d.len() == 32));
    assert!(!q.signature.is_empty());

    // A TPM failure is an answer: the same helper goes on serving.
    let mut other = ak.name.clone();
    other[5] ^= 0xFF;
    let (id, enc) = make_credential(&ek.ek_public, &other, secret).expect("makecredential");
    let err = tpm
        .activate_credential(dir.path(), &id, &enc)
        .await
        .unwrap_err();
    assert!(matches!(err, HelperError::Tpm(_)), "{err}");
    let err = tpm
        .quote(&dir.path().join("none"), &nonce, &sel)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no attestation key"), "{err}");
    assert_eq!(tpm.pid().await, Some(pid));
    assert_eq!(
        tpm.endorsement().await.expect("endorsement").ek_public,
        ek.ek_public
    );
}

#[tokio::test]
async fn a_bad_tcti_fails_the_start_with_the_tpm_error() {
    let e = TpmHelper::start(command("device:/nonexistent/tpm".into()), CALL_TIMEOUT)
        .await
        .err()
        .expect("no TPM there");
    assert!(
        e.to_string().contains("no TPM device at /nonexistent/tpm"),
        "{e}"
    );
}

#[tokio::test]
async fn a_helper_killed_mid_call_fails_the_call_and_the_next_call_starts_another() {
    let swtpm = Swtpm::start().expect("swtpm");
    let dir = tempfile::tempdir().unwrap();
    let tpm = std::sync::Arc::new(
        TpmHelper::start(command(swtpm.tcti()), CALL_TIMEOUT)
            .await
            .expect("helper"),
    );
    let first = tpm.pid().await.expect("running");
    // A TPM that does not answer holds the call inside the helper.
    signal(swtpm.pid(), Signal::SIGSTOP);
    let call = tokio::spawn({
        let tpm = tpm.clone();
        let dir = dir.path().to_path_buf();
        async move { tpm.attestation_key(&dir).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!call.is_finished(), "the call waits for the TPM");
    signal(first, Signal::SIGKILL);
    let err = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the call ends when the helper dies")
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, HelperError::Pipe(_)), "{err}");
    signal(swtpm.pid(), Signal::SIGCONT);

    let ak = tpm
        .attestation_key(dir.path())
        .await
        .expect("a new helper answers");
    let second = tpm.pid().await.expect("running");
    assert_ne!(second, first);
    assert_eq!(tpm.attestation_key(dir.path()).await.expect("ak"), ak);
}

/// An exec from the helper (a `cmd:` TCTI, a library's child) can gain no
/// privilege (setuid or file capabilities), and it holds no ambient ones.
#[tokio::test]
async fn the_helper_can_gain_no_privilege() {
    let swtpm = Swtpm::start().expect("swtpm");
    let tpm = TpmHelper::start(command(swtpm.tcti()), CALL_TIMEOUT)
        .await
        .expect("helper");
    let pid = tpm.pid().await.expect("running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(field("NoNewPrivs:"), "1", "{status}");
    assert_eq!(field("CapAmb:"), "0000000000000000", "{status}");
}
