//! TPM2_ActivateCredential: recover the authority's secret, which only works
//! if the AK named in the credential is loaded next to this EK.

use std::path::Path;

use tss_esapi::constants::SessionType;
use tss_esapi::handles::{AuthHandle, SessionHandle};
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{EncryptedSecret, IdObject, Public, SymmetricDefinition};
use tss_esapi::Context;

use super::context::{flush, tss, State};
use super::{ak, ek, TpmError};

/// Activate a credential given as TPM2B_ID_OBJECT and TPM2B_ENCRYPTED_SECRET
/// (each with its 2-byte size prefix, as tpm2-tools and keylime carry them).
pub(crate) fn activate(
    state: &mut State,
    dir: &Path,
    credential_blob: &[u8],
    encrypted_secret: &[u8],
) -> Result<Vec<u8>, TpmError> {
    let id_object = IdObject::try_from(tpm2b_body(credential_blob, "credential blob")?.to_vec())
        .map_err(|e| TpmError::InvalidInput(format!("credential blob: {e}")))?;
    let secret = EncryptedSecret::try_from(tpm2b_body(encrypted_secret, "secret")?.to_vec())
        .map_err(|e| TpmError::InvalidInput(format!("encrypted secret: {e}")))?;
    ak::with_ak(state, dir, |state, ak, _| {
        let (ek_handle, ek_public) = ek::ensure(state).map(|ek| (ek.handle, ek.public.clone()))?;
        let ctx = &mut state.ctx;
        let ek_auth = ek_session(ctx, &ek_public)?;
        // AK: empty password (ADMIN role via authValue, adminWithPolicy is clear).
        let out = ctx
            .execute_with_sessions((Some(AuthSession::Password), Some(ek_auth), None), |c| {
                c.activate_credential(ak, ek_handle, id_object, secret)
            });
        if ek_auth != AuthSession::Password {
            flush(ctx, SessionHandle::from(ek_auth));
        }
        out.map(|d| d.value().to_vec())
            .map_err(|e| TpmError::Activate(tss(&e)))
    })
}

/// Authorization for the EK's USER role: low-range templates (userWithAuth
/// clear) demand PolicySecret(TPM_RH_ENDORSEMENT); the others accept the
/// empty authValue.
fn ek_session(ctx: &mut Context, ek: &Public) -> Result<AuthSession, TpmError> {
    if ek.object_attributes().user_with_auth() {
        return Ok(AuthSession::Password);
    }
    let err = |e: tss_esapi::Error| TpmError::Activate(format!("EK policy session: {}", tss(&e)));
    // The policy digest is computed in the session's hash: it must be the EK's nameAlg.
    let session = ctx
        .start_auth_session(
            None,
            None,
            None,
            SessionType::Policy,
            SymmetricDefinition::AES_128_CFB,
            ek.name_hashing_algorithm(),
        )
        .map_err(err)?
        .ok_or_else(|| TpmError::Activate("TPM returned no session".into()))?;
    let policy = PolicySession::try_from(session).and_then(|p| {
        ctx.execute_with_nullauth_session(|c| {
            c.policy_secret(
                p,
                AuthHandle::Endorsement,
                Default::default(),
                Default::default(),
                Default::default(),
                None,
            )
        })
    });
    if let Err(e) = policy {
        flush(ctx, SessionHandle::from(session));
        return Err(err(e));
    }
    Ok(session)
}

/// The payload of a TPM2B: a BE u16 size that must match the rest exactly.
fn tpm2b_body<'a>(bytes: &'a [u8], what: &str) -> Result<&'a [u8], TpmError> {
    match bytes {
        [hi, lo, body @ ..] if usize::from(u16::from_be_bytes([*hi, *lo])) == body.len() => {
            Ok(body)
        }
        _ => Err(TpmError::InvalidInput(format!(
            "{what} is not a TPM2B (2-byte size + payload)"
        ))),
    }
}
