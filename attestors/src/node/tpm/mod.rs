pub mod attest;
pub mod credential;
#[cfg(feature = "tpm-device")]
pub mod device;
pub mod ekcert;
pub mod eventlog;
pub mod evidence;
pub mod facts;
#[cfg(feature = "tpm-helper")]
pub mod helper;
pub mod ops;
pub mod policy;
pub mod public;
pub mod quote;
pub mod signature;
pub mod verifier;
pub mod wire;

/// Serializes swtpm start-ups in one test process: two tests that probe the
/// same free port pair at once would otherwise share one swtpm.
#[cfg(any(test, feature = "swtpm-testing"))]
#[doc(hidden)]
pub static SWTPM_START: std::sync::Mutex<()> = std::sync::Mutex::new(());
