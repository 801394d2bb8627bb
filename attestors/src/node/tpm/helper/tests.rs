//! The protocol against a fake TPM (serve) and fake helpers (client):
//! whatever either end sends, the other gets an error, never a panic or a
//! hang. The round trip against swtpm is in agent-tpm/tests.

use super::*;
use crate::node::tpm::ops::{AkPublic, Endorsement, PcrBank, PcrSelection, Quote, TpmOps};
use crate::node::tpm::public::EkTemplate;
use prost::Message;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;
use tessera_proto::tpm::helper as pb;
use tokio::io::AsyncWriteExt;

/// Answers from fixed values; `quote` fails, as a TPM call can.
struct FakeTpm;

#[async_trait::async_trait]
impl TpmOps for FakeTpm {
    type Error = String;

    async fn endorsement(&self) -> Result<Endorsement, String> {
        Ok(Endorsement {
            ek_cert: None,
            ek_public: vec![1, 2],
        })
    }

    async fn attestation_key(&self, blob_dir: &Path) -> Result<AkPublic, String> {
        Ok(AkPublic {
            public: blob_dir.to_string_lossy().into_owned().into_bytes(),
            name: vec![0, 0x0b],
        })
    }

    async fn activate_credential(
        &self,
        _: &Path,
        blob: &[u8],
        _: &[u8],
    ) -> Result<Vec<u8>, String> {
        Ok(blob.to_vec())
    }

    async fn quote(&self, _: &Path, _: &[u8], _: &PcrSelection) -> Result<Quote, String> {
        Err("no quote today".into())
    }
}

/// Runs `serve` on one side of a duplex pipe; returns the other side.
fn served() -> (
    tokio::io::DuplexStream,
    tokio::task::JoinHandle<Result<(), FrameError>>,
) {
    let (agent, helper) = tokio::io::duplex(MAX_FRAME * 2);
    let task = tokio::spawn(async move {
        let (mut r, mut w) = tokio::io::split(helper);
        serve(&FakeTpm, &mut r, &mut w).await
    });
    (agent, task)
}

async fn ask(
    pipe: &mut tokio::io::DuplexStream,
    call: Option<pb::request::Call>,
) -> pb::reply::Result {
    write_frame(pipe, &pb::Request { call }).await.unwrap();
    let frame = read_frame(pipe).await.unwrap().unwrap();
    pb::Reply::decode(&frame[..]).unwrap().result.unwrap()
}

#[tokio::test]
async fn serve_answers_each_call_and_reports_tpm_failures_as_replies() {
    let (mut pipe, task) = served();
    use pb::reply::Result as A;
    use pb::request::Call as C;
    let a = ask(&mut pipe, Some(C::Endorsement(Default::default()))).await;
    assert!(matches!(a, A::Endorsement(e) if e.ek_cert.is_none() && e.ek_public == [1, 2]));
    let dir = pb::KeyDir {
        path: b"/var/lib/x".to_vec(),
    };
    let a = ask(&mut pipe, Some(C::AttestationKey(dir))).await;
    assert!(matches!(a, A::AttestationKey(k) if k.public == b"/var/lib/x"));
    let q = pb::QuoteCall {
        pcr_bank: 0x000B,
        pcrs: vec![0],
        ..Default::default()
    };
    assert_eq!(
        ask(&mut pipe, Some(C::Quote(q))).await,
        A::Error("no quote today".into())
    );
    let q = pb::QuoteCall {
        pcr_bank: 0x0099,
        pcrs: vec![0],
        ..Default::default()
    };
    assert!(matches!(ask(&mut pipe, Some(C::Quote(q))).await, A::Error(e) if e.contains("bank")));
    assert!(matches!(ask(&mut pipe, None).await, A::Error(e) if e.contains("empty")));
    drop(pipe);
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn serve_ends_with_an_error_on_garbage_or_an_oversized_frame() {
    let (mut pipe, task) = served();
    pipe.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    assert!(matches!(task.await.unwrap(), Err(FrameError::Decode(_))));
    let (mut pipe, task) = served();
    pipe.write_all(&(MAX_FRAME as u32 + 1).to_be_bytes())
        .await
        .unwrap();
    assert!(matches!(task.await.unwrap(), Err(FrameError::TooLarge(_))));
}

/// A fake helper: a shell script that prints `stdout` (printf format), then
/// exits or, if `hold`, reads its stdin until it closes, holding stdout open.
fn fake_helper(dir: &Path, stdout: &str, hold: bool) -> HelperCommand {
    let program = dir.join(format!("helper-{}-{hold}", stdout.len()));
    let then = if hold {
        "exec 3>&1\nexec cat >/dev/null\n"
    } else {
        ""
    };
    let script = format!("#!/bin/sh\nprintf '{stdout}'\n{then}");
    std::fs::write(&program, script).unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    HelperCommand {
        program,
        tcti: "device:/dev/null".into(),
        ek_template: EkTemplate::L1Rsa2048,
        log_level: "info".into(),
        log_json: false,
    }
}

/// `TpmHelper::start`, again while another test's fork briefly holds the new
/// script open for writing (ETXTBSY).
async fn start(command: HelperCommand, timeout: Duration) -> Result<TpmHelper, HelperError> {
    for _ in 0..20 {
        match TpmHelper::start(command.clone(), timeout).await {
            Err(HelperError::Spawn { source, .. })
                if source.kind() == std::io::ErrorKind::ExecutableFileBusy =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            other => return other,
        }
    }
    TpmHelper::start(command, timeout).await
}

/// `Reply { opened: {} }` as a frame.
const OPENED: &str = r"\000\000\000\002\012\000";
const SHORT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_helper_that_cannot_open_or_sends_garbage_at_start_fails_the_start() {
    let dir = tempfile::tempdir().unwrap();
    // Reply { error: "no" }
    let refused = fake_helper(dir.path(), r"\000\000\000\004\062\002no", false);
    let e = start(refused, SHORT).await.err().unwrap();
    assert!(matches!(&e, HelperError::Tpm(m) if m == "no"), "{e}");
    for (out, want) in [
        (r"\377\377\377\377", "bytes (at most"),
        (r"\000\000\000\003\377\377\377", "unreadable"),
        (r"\000\000", "closed"),
    ] {
        let e = start(fake_helper(dir.path(), out, false), SHORT)
            .await
            .err()
            .unwrap();
        assert!(e.to_string().contains(want), "{out}: {e}");
    }
    let mut missing = fake_helper(dir.path(), "", false);
    missing.program = dir.path().join("nothing-here");
    let e = start(missing, SHORT).await.err().unwrap();
    assert!(matches!(e, HelperError::Spawn { .. }), "{e}");
}

#[tokio::test]
async fn garbage_or_silence_fails_the_call_and_the_next_call_starts_a_new_helper() {
    let dir = tempfile::tempdir().unwrap();
    // Opened, then a reply that answers a different call, then garbage.
    let helper = fake_helper(
        dir.path(),
        &format!(r"{OPENED}\000\000\000\002\042\000"),
        true,
    );
    let tpm = start(helper, SHORT).await.unwrap();
    let first = tpm.pid().await.unwrap();
    let e = tpm.endorsement().await.unwrap_err();
    assert!(matches!(e, HelperError::Unexpected), "{e}");
    assert_eq!(tpm.pid().await, None, "the helper is gone");
    // The fresh helper sends the same: a new pid and the same error.
    assert!(matches!(
        tpm.endorsement().await,
        Err(HelperError::Unexpected)
    ));

    let silent = fake_helper(dir.path(), OPENED, true);
    let tpm = start(silent, Duration::from_secs(2)).await.unwrap();
    let pid = tpm.pid().await.unwrap();
    assert_ne!(pid, first);
    let e = tpm.endorsement().await.unwrap_err();
    assert!(matches!(e, HelperError::Timeout(_)), "{e}");
    let path = format!("/proc/{pid}");
    for _ in 0..100 {
        if !Path::new(&path).exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !Path::new(&path).exists(),
        "the stalled helper was not killed"
    );
}

#[tokio::test]
async fn a_quote_request_carries_the_selection() {
    let (mut pipe, task) = served();
    let sel = PcrSelection {
        bank: PcrBank::Sha384,
        pcrs: vec![0, 7],
    };
    let q = pb::QuoteCall {
        pcr_bank: sel.bank.alg_id(),
        pcrs: sel.pcrs.clone(),
        ..Default::default()
    };
    assert_eq!(q.pcr_bank, 0x000C);
    let a = ask(&mut pipe, Some(pb::request::Call::Quote(q))).await;
    assert_eq!(a, pb::reply::Result::Error("no quote today".into()));
    drop(pipe);
    task.await.unwrap().unwrap();
}
