//! The agent's side: [`TpmHelper`] starts `tessera-agent-tpm` and drives it
//! over its stdin and stdout, one call at a time, each bounded by a timeout.
//! A helper that dies, stalls or answers nonsense is killed and the call
//! fails; the next call starts a new one (attestation retries with backoff).

use super::frame::{read_frame, write_frame, FrameError};
use super::messages::path_bytes;
use crate::node::tpm::ops::{AkPublic, Endorsement, PcrSelection, Quote, TpmOps};
use crate::node::tpm::public::EkTemplate;
use prost::Message;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tessera_proto::tpm::helper::{self as pb, reply::Result as Answer, request::Call};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::Mutex;

/// Longest a call (or the helper's start) may take: creating an RSA EK on a
/// discrete TPM takes seconds, rarely tens of them.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// The environment the helper keeps; everything else is cleared.
const KEPT_ENV: [&str; 3] = ["TESSERA_LOG", "JOURNAL_STREAM", "NO_COLOR"];

#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error("cannot start the TPM helper {}: {source}", path.display())]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("TPM helper: {0}")]
    Pipe(#[from] FrameError),
    #[error("TPM helper: no answer within {0:?}")]
    Timeout(Duration),
    #[error("TPM helper: a reply that does not answer the call")]
    Unexpected,
    /// The TPM call failed in the helper (which keeps running).
    #[error("{0}")]
    Tpm(String),
}

/// How to start the helper.
#[derive(Debug, Clone)]
pub struct HelperCommand {
    pub program: PathBuf,
    pub tcti: String,
    pub ek_template: EkTemplate,
    /// The helper's log filter (TESSERA_LOG, kept, overrides it as for the agent).
    pub log_level: String,
    pub log_json: bool,
}

/// Client of one helper process at a time. Cheap to share behind an `Arc`.
pub struct TpmHelper {
    command: HelperCommand,
    timeout: Duration,
    conn: Mutex<Option<Conn>>,
}

impl TpmHelper {
    /// Starts the helper and waits until it has opened the TPM, so a bad TCTI
    /// fails here, as opening the TPM in process did.
    pub async fn start(
        command: HelperCommand,
        timeout: Duration,
    ) -> Result<TpmHelper, HelperError> {
        let conn = Conn::spawn(&command, timeout).await?;
        Ok(TpmHelper {
            command,
            timeout,
            conn: Mutex::new(Some(conn)),
        })
    }

    /// The running helper's pid, if one is running.
    pub async fn pid(&self) -> Option<u32> {
        self.conn.lock().await.as_ref().and_then(|c| c.child.id())
    }

    async fn call<T>(&self, call: Call, want: fn(Answer) -> Option<T>) -> Result<T, HelperError> {
        let mut slot = self.conn.lock().await;
        // A caller that gave up mid-exchange left a reply in the pipe.
        if slot.as_ref().is_some_and(|c| c.busy) {
            *slot = None;
        }
        let conn = match slot.as_mut() {
            Some(c) => c,
            None => slot.insert(Conn::spawn(&self.command, self.timeout).await?),
        };
        let failed = match tokio::time::timeout(self.timeout, conn.exchange(call)).await {
            Err(_) => HelperError::Timeout(self.timeout),
            Ok(Err(e)) => e,
            Ok(Ok(Answer::Error(e))) => return Err(HelperError::Tpm(e)),
            Ok(Ok(answer)) => match want(answer) {
                Some(v) => return Ok(v),
                None => HelperError::Unexpected,
            },
        };
        conn.busy = true;
        *slot = None;
        tracing::warn!(error = %failed, "TPM helper stopped; the next TPM call starts a new one");
        Err(failed)
    }
}

/// One helper process. Dropped mid-exchange it is killed; otherwise its
/// stdin closes and it releases what it holds in the TPM and exits (tokio
/// reaps it).
struct Conn {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    /// A request was written and its reply not read.
    busy: bool,
}

impl Conn {
    async fn spawn(command: &HelperCommand, timeout: Duration) -> Result<Conn, HelperError> {
        let spawn_err = |source| HelperError::Spawn {
            path: command.program.clone(),
            source,
        };
        let mut cmd = Command::new(&command.program);
        cmd.arg("--tcti")
            .arg(&command.tcti)
            .arg("--ek-template")
            .arg(command.ek_template.name())
            .arg("--log-level")
            .arg(&command.log_level);
        if command.log_json {
            cmd.arg("--log-json");
        }
        cmd.env_clear()
            .envs(
                KEPT_ENV
                    .iter()
                    .filter_map(|k| Some((k, std::env::var_os(k)?))),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        tessera_common::child::stdio_only(cmd.as_std_mut());
        // SAFETY: two async-signal-safe syscalls between fork and exec.
        unsafe {
            // The helper needs none of the agent's capabilities (it reaches
            // /dev/tpmrm0 through the tss group) and may gain none by exec;
            // if either cannot be dropped it does not start.
            cmd.pre_exec(|| {
                use nix::libc::{c_ulong, prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL};
                if prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL as c_ulong, 0, 0, 0) != 0
                    || prctl(nix::libc::PR_SET_NO_NEW_PRIVS, 1 as c_ulong, 0, 0, 0) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(spawn_err)?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.start_kill();
            return Err(spawn_err(std::io::Error::other("no pipe to the child")));
        };
        let mut conn = Conn {
            child,
            stdin,
            stdout,
            busy: true,
        };
        let opened = match tokio::time::timeout(timeout, conn.read_answer()).await {
            Err(_) => Err(HelperError::Timeout(timeout)),
            Ok(Ok(Answer::Opened(_))) => Ok(()),
            Ok(Ok(Answer::Error(e))) => Err(HelperError::Tpm(e)),
            Ok(Ok(_)) => Err(HelperError::Unexpected),
            Ok(Err(e)) => Err(e),
        };
        opened?;
        conn.busy = false;
        tracing::debug!(pid = ?conn.child.id(), "TPM helper started");
        Ok(conn)
    }

    async fn exchange(&mut self, call: Call) -> Result<Answer, HelperError> {
        self.busy = true;
        write_frame(&mut self.stdin, &pb::Request { call: Some(call) }).await?;
        let answer = self.read_answer().await?;
        self.busy = false;
        Ok(answer)
    }

    async fn read_answer(&mut self) -> Result<Answer, HelperError> {
        let frame = read_frame(&mut self.stdout)
            .await?
            .ok_or(FrameError::Closed)?;
        let reply = pb::Reply::decode(&frame[..]).map_err(FrameError::from)?;
        reply.result.ok_or(HelperError::Unexpected)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if self.busy {
            let _ = self.child.start_kill();
        }
    }
}

#[async_trait::async_trait]
impl TpmOps for TpmHelper {
    type Error = HelperError;

    async fn endorsement(&self) -> Result<Endorsement, HelperError> {
        let call = Call::Endorsement(pb::Endorsement::default());
        self.call(call, |a| match a {
            Answer::Endorsement(e) => Some(e.into()),
            _ => None,
        })
        .await
    }

    async fn attestation_key(&self, blob_dir: &Path) -> Result<AkPublic, HelperError> {
        let call = Call::AttestationKey(pb::KeyDir {
            path: path_bytes(blob_dir),
        });
        self.call(call, |a| match a {
            Answer::AttestationKey(k) => Some(k.into()),
            _ => None,
        })
        .await
    }

    async fn activate_credential(
        &self,
        blob_dir: &Path,
        credential_blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>, HelperError> {
        let call = Call::ActivateCredential(pb::Activate {
            key_dir: path_bytes(blob_dir),
            credential_blob: credential_blob.to_vec(),
            encrypted_secret: encrypted_secret.to_vec(),
        });
        self.call(call, |a| match a {
            Answer::Secret(s) => Some(s.secret),
            _ => None,
        })
        .await
    }

    async fn quote(
        &self,
        blob_dir: &Path,
        nonce: &[u8],
        pcrs: &PcrSelection,
    ) -> Result<Quote, HelperError> {
        let call = Call::Quote(pb::QuoteCall {
            key_dir: path_bytes(blob_dir),
            nonce: nonce.to_vec(),
            pcr_bank: pcrs.bank.alg_id(),
            pcrs: pcrs.pcrs.clone(),
        });
        self.call(call, |a| match a {
            Answer::Quote(q) => Some(q.into()),
            _ => None,
        })
        .await
    }
}
