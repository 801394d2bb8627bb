//! Agent side of TPM node attestation, over tss-esapi (libtss2).
//!
//! [`Tpm`] owns one ESAPI context on a dedicated thread (see `context.rs`);
//! every method is a serialized job there, so the async executor never blocks
//! on the TPM. Flow (see shared/TPM.md §1.1): [`Tpm::endorsement`] and
//! [`Tpm::attestation_key`] for registration, [`Tpm::activate_credential`] for
//! the authority's challenge, [`Tpm::quote`] for each attestation.
//!
//! Object slots: the EK is resolved once (persistent handle, or created and
//! kept loaded until [`Tpm::close`] or the last clone is dropped); the AK and every
//! session are loaded only for the command that needs them and flushed after,
//! because swtpm and PTP-minimum TPMs hold three loaded objects.

mod activate;
mod ak;
mod context;
mod ek;
mod quote;
#[cfg(any(test, feature = "swtpm-testing"))]
pub mod swtpm;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use super::public::EkTemplate;

pub use super::ops::{AkPublic, Endorsement, PcrBank, PcrSelection, Quote, TpmOps, AK_BLOB_FILE};
pub use quote::MAX_NONCE;

/// Production TCTI: the kernel's resource manager.
pub const DEFAULT_TCTI: &str = "device:/dev/tpmrm0";

/// A TPM failure on the agent side.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum TpmError {
    #[error("cannot open the TPM: {0}")]
    Open(String),
    #[error("the TPM thread has stopped")]
    Closed,
    #[error("no endorsement key available")]
    NoEk,
    #[error("endorsement key: {0}")]
    Ek(String),
    #[error("reading an EK certificate from NV: {0}")]
    Nv(String),
    #[error("no attestation key persisted at {0} (call attestation_key first)")]
    NoAk(PathBuf),
    #[error("attestation key: {0}")]
    Ak(String),
    #[error("credential activation failed: {0}")]
    Activate(String),
    #[error("quote failed: {0}")]
    Quote(String),
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Handle to the TPM. Cheap to clone; all clones share one context.
#[derive(Clone)]
pub struct Tpm {
    owner: context::Owner,
}

impl Tpm {
    /// Open the TPM behind a TCTI string (e.g. [`DEFAULT_TCTI`],
    /// `swtpm:host=127.0.0.1,port=2321`). Fails if no TPM answers.
    pub fn open(tcti: &str) -> Result<Tpm, TpmError> {
        Ok(Tpm {
            owner: context::Owner::open(tcti, None)?,
        })
    }

    /// [`Tpm::open`], attesting with the EK of `template` only (the one the
    /// authority identifies TPMs by) instead of the first EK with a certificate.
    pub fn open_with_ek(tcti: &str, template: EkTemplate) -> Result<Tpm, TpmError> {
        Ok(Tpm {
            owner: context::Owner::open(tcti, Some(template))?,
        })
    }

    /// Flush what the TPM holds for us (a created EK) and wait for it, e.g.
    /// at shutdown. Other clones keep working; the EK is re-resolved on use.
    pub async fn close(self) -> Result<(), TpmError> {
        self.owner
            .run(|state| {
                if let Some(ek) = state.ek.take() {
                    ek.release(&mut state.ctx);
                }
                Ok(())
            })
            .await
    }
}

#[async_trait::async_trait]
impl TpmOps for Tpm {
    type Error = TpmError;

    /// EK certificate and EK public area.
    async fn endorsement(&self) -> Result<Endorsement, TpmError> {
        self.owner
            .run(|state| ek::ensure(state)?.endorsement())
            .await
    }

    /// The AK persisted in `blob_dir`, created (and persisted, mode 0600) if
    /// missing or no longer loadable on this TPM.
    async fn attestation_key(&self, blob_dir: &Path) -> Result<AkPublic, TpmError> {
        let dir = blob_dir.to_path_buf();
        self.owner
            .run(move |state| ak::attestation_key(state, &dir))
            .await
    }

    /// Recover the secret of a MakeCredential(EK, AK name) challenge. Both
    /// inputs are TPM2Bs (with their 2-byte size).
    async fn activate_credential(
        &self,
        blob_dir: &Path,
        credential_blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>, TpmError> {
        let (dir, blob, secret) = (
            blob_dir.to_path_buf(),
            credential_blob.to_vec(),
            encrypted_secret.to_vec(),
        );
        self.owner
            .run(move |state| activate::activate(state, &dir, &blob, &secret))
            .await
    }

    /// Quote `pcrs` with the persisted AK; `nonce` (at most [`MAX_NONCE`]
    /// bytes) becomes the attest's extraData.
    async fn quote(
        &self,
        blob_dir: &Path,
        nonce: &[u8],
        pcrs: &PcrSelection,
    ) -> Result<Quote, TpmError> {
        let (dir, nonce, pcrs) = (blob_dir.to_path_buf(), nonce.to_vec(), pcrs.clone());
        self.owner
            .run(move |state| quote::quote(state, &dir, &nonce, &pcrs))
            .await
    }
}
