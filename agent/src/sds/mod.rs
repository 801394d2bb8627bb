//! Envoy SDS v3 (`envoy.service.secret.v3.SecretDiscoveryService`) on the
//! Workload API socket, as SPIRE's agent serves it: `StreamSecrets` (state of
//! the world) and `FetchSecrets`, the caller attested like any Workload API
//! caller. Delta SDS is not served.

mod names;
mod secrets;
mod service;
mod stream;
mod xds;

pub use names::{SdsNames, SdsRaw};
pub use service::{check, Sds, MAX_REQUEST_BYTES};
pub use xds::{Received, Xds};
