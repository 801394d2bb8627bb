//! What the agent asks of its TPM, whoever holds the ESAPI context: the
//! `device::Tpm` thread in the `tessera-agent-tpm` helper, or the agent's
//! client of that helper (`helper::TpmHelper`). The agent itself does not
//! link libtss2.

use super::evidence::{ALG_SHA1, ALG_SHA256, ALG_SHA384};
use std::path::Path;

/// File name of the AK blob inside the caller's directory.
pub const AK_BLOB_FILE: &str = "tpm-ak.blob";

/// What identifies the TPM: its EK certificate (if the TPM has one in NV,
/// DER without NV padding) and the EK public area as marshalled TPMT_PUBLIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endorsement {
    pub ek_cert: Option<Vec<u8>>,
    pub ek_public: Vec<u8>,
}

/// The AK as the authority sees it: marshalled TPMT_PUBLIC and its Name
/// (`0x000B || SHA-256(public)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AkPublic {
    pub public: Vec<u8>,
    pub name: Vec<u8>,
}

/// A quote: marshalled TPMS_ATTEST and TPMT_SIGNATURE, and the quoted PCR
/// values in ascending PCR order (their SHA-256 is the attest's pcrDigest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    pub attest: Vec<u8>,
    pub signature: Vec<u8>,
    pub pcr_values: Vec<(u32, Vec<u8>)>,
}

/// PCR bank to quote.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PcrBank {
    Sha1,
    Sha256,
    Sha384,
}

impl PcrBank {
    /// TPM_ALG_ID of the bank's hash.
    pub fn alg_id(self) -> u32 {
        match self {
            PcrBank::Sha1 => ALG_SHA1,
            PcrBank::Sha256 => ALG_SHA256,
            PcrBank::Sha384 => ALG_SHA384,
        }
    }
}

/// One bank and a set of PCR indices (0–23).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrSelection {
    pub bank: PcrBank,
    pub pcrs: Vec<u32>,
}

impl Default for PcrSelection {
    /// SHA-256, PCRs 0–9 and 14: what the firmware event log covers.
    fn default() -> Self {
        PcrSelection {
            bank: PcrBank::Sha256,
            pcrs: vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14],
        }
    }
}

/// The TPM calls node attestation makes (see `device::Tpm` for each).
#[async_trait::async_trait]
pub trait TpmOps: Send + Sync {
    type Error: std::fmt::Display + Send;

    /// EK certificate and EK public area.
    async fn endorsement(&self) -> Result<Endorsement, Self::Error>;

    /// The AK persisted in `blob_dir`, created if missing or unusable.
    async fn attestation_key(&self, blob_dir: &Path) -> Result<AkPublic, Self::Error>;

    /// The secret of a MakeCredential(EK, AK name) challenge.
    async fn activate_credential(
        &self,
        blob_dir: &Path,
        credential_blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>, Self::Error>;

    /// A quote of `pcrs` by the persisted AK over `nonce`.
    async fn quote(
        &self,
        blob_dir: &Path,
        nonce: &[u8],
        pcrs: &PcrSelection,
    ) -> Result<Quote, Self::Error>;
}
