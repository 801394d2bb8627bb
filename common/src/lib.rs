//! Types and helpers shared by the tessera agent, authority and attestors.

pub mod child;
pub mod cli;
pub mod config;
pub mod duration;
pub mod fsutil;
pub mod jwt;
pub mod limits;
pub mod logging;
pub mod secret;
pub mod selector;
pub mod shutdown;
pub mod spiffe_id;
pub mod spiffe_template;
pub mod systemd;
pub mod telemetry;
pub mod tls;
pub mod uds;
pub mod unix_time;
pub mod x509;

pub use selector::Selector;
pub use spiffe_id::{SpiffeId, TrustDomain};
pub use unix_time::UnixTime;

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// One line for an error: a gRPC status shows its message, not its debug form.
pub fn error_line(e: &(dyn std::error::Error + 'static)) -> String {
    match e.downcast_ref::<tonic::Status>() {
        Some(s) => format!("{:?}: {}", s.code(), s.message()),
        None => e.to_string().replace('\n', " "),
    }
}
