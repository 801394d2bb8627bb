//! The helper's side: answer one request at a time until the agent closes
//! the pipe. A TPM failure is a reply; a frame or message that cannot be
//! read ends the loop with an error (the agent then starts a new helper).

use super::frame::{read_frame, write_frame, FrameError, MAX_FRAME};
use super::messages::path;
use crate::node::tpm::evidence::selection;
use crate::node::tpm::ops::TpmOps;
use prost::Message;
use tessera_proto::tpm::helper::{self as pb, reply::Result as Answer, request::Call};
use tokio::io::{AsyncRead, AsyncWrite};

/// Longest error text sent back (TPM errors are one line).
const MAX_ERROR: usize = 4096;

/// Tells the agent whether the TPM opened: the helper's first frame.
pub async fn send_opened(
    w: &mut (impl AsyncWrite + Unpin),
    opened: Result<(), String>,
) -> Result<(), FrameError> {
    let result = match opened {
        Ok(()) => Answer::Opened(pb::Opened {}),
        Err(e) => Answer::Error(bounded(e)),
    };
    write_frame(
        w,
        &pb::Reply {
            result: Some(result),
        },
    )
    .await
}

/// Serves requests from `r` with `tpm`, replies to `w`; Ok at a clean end
/// of input.
pub async fn serve<T: TpmOps>(
    tpm: &T,
    r: &mut (impl AsyncRead + Unpin),
    w: &mut (impl AsyncWrite + Unpin),
) -> Result<(), FrameError> {
    while let Some(frame) = read_frame(r).await? {
        let request = pb::Request::decode(&frame[..])?;
        let result = match answer(tpm, request.call).await {
            Ok(a) => a,
            Err(e) => Answer::Error(bounded(e)),
        };
        let mut reply = pb::Reply {
            result: Some(result),
        };
        if reply.encoded_len() > MAX_FRAME {
            let e = format!("a reply of {} bytes", reply.encoded_len());
            reply.result = Some(Answer::Error(e));
        }
        write_frame(w, &reply).await?;
    }
    Ok(())
}

async fn answer<T: TpmOps>(tpm: &T, call: Option<Call>) -> Result<Answer, String> {
    let tpm_err = |e: T::Error| e.to_string();
    Ok(match call.ok_or("an empty request")? {
        Call::Endorsement(_) => {
            Answer::Endorsement(tpm.endorsement().await.map_err(tpm_err)?.into())
        }
        Call::AttestationKey(k) => {
            let ak = tpm.attestation_key(&path(k.path)).await;
            Answer::AttestationKey(ak.map_err(tpm_err)?.into())
        }
        Call::ActivateCredential(a) => {
            let secret = tpm
                .activate_credential(&path(a.key_dir), &a.credential_blob, &a.encrypted_secret)
                .await
                .map_err(tpm_err)?;
            Answer::Secret(pb::Secret { secret })
        }
        Call::Quote(q) => {
            let pcrs = selection(q.pcr_bank, &q.pcrs).map_err(|e| e.to_string())?;
            let quote = tpm.quote(&path(q.key_dir), &q.nonce, &pcrs).await;
            Answer::Quote(quote.map_err(tpm_err)?.into())
        }
    })
}

fn bounded(mut e: String) -> String {
    if e.len() > MAX_ERROR {
        let mut end = MAX_ERROR;
        while !e.is_char_boundary(end) {
            end -= 1;
        }
        e.truncate(end);
    }
    e
}
