//! tessera-agent: node attestation, the SVID cache and the SPIFFE Workload API.

pub mod authority_client;
pub mod backoff;
pub mod cache;
pub mod cli;
pub mod config;
pub mod data_dir;
pub mod heap;
pub mod identity;
pub mod metrics;
pub mod node;
pub mod ops;
pub mod run;
pub mod sds;
pub mod tpm_helper;
pub mod workload_api;
