//! The TPM helper protocol: the agent does not link libtss2 (its start-up
//! would pay for loading it and libcrypto on every command); node
//! attestation by TPM runs in `tessera-agent-tpm`, which holds the ESAPI
//! context and answers the [`TpmOps`](super::ops::TpmOps) calls over a pipe.
//! Messages: `tessera.tpm.helper.v1` (proto/tpm_helper.proto).

mod client;
mod frame;
mod messages;
mod serve;
#[cfg(test)]
mod tests;

pub use client::{HelperCommand, HelperError, TpmHelper, CALL_TIMEOUT};
pub use frame::{read_frame, write_frame, FrameError, MAX_FRAME};
pub use serve::{send_opened, serve};
