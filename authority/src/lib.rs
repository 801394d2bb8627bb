//! tessera-authority: CA, registration entries, node attestation verification,
//! SVID signing and the audit trail.

pub mod admin_api;
pub mod admin_cli;
pub mod attestation;
pub mod authority;
pub mod authorized;
pub mod ca;
pub mod caller;
pub mod config;
pub mod datastore;
pub mod entry_update;
pub mod error;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod node_api;
pub mod ops;
pub mod reserved;
pub mod server;
pub mod template_sign;
