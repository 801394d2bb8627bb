//! End-to-end tests: a real `tessera-authority` and `tessera-agent` per test, talked to
//! with the `spiffe` crate's Workload API client and raw tonic clients.
//!
//! One binary (links once). Build the daemons first: `cargo build --workspace --bins`.

mod attest_memo;
mod authority_limits;
mod boot_policy;
mod caller_pinning;
mod cli;
mod cli_hardening;
mod client_interop;
mod conformance;
mod containers;
mod dashboard;
mod entry_races;
mod faults;
mod faults_more;
mod file_safety;
mod flood;
mod harness;
mod kernel_selectors;
mod lifecycle;
mod log_colour;
mod node_identity;
mod overload;
mod packaging;
mod pki;
mod postgres_replicas;
mod py_spiffe;
mod sds;
mod systemd;
mod telemetry;
mod templates;
mod tpm;
