//! The harness that starts real tessera daemons (authority, agent, swtpm) for the
//! end-to-end tests and the `tessera-bench` tool: nothing mocked, one private temp
//! dir per deployment, readiness from the daemons' own sd_notify signals, and ports
//! the daemons bind themselves (port 0) and report back, so nothing can take them
//! between choosing and binding.
//!
//! Builders return [`anyhow::Result`]; tests `.expect("what")` them, the bench reports.

mod agent;
mod authority;
mod cli;
mod deployment;
mod faults;
pub mod fleet;
mod grpc;
mod postgres;
mod process;
mod proxy;
mod readiness;
mod tpm;

pub use cli::{run_cmd, CmdOut};
pub use deployment::{Deployment, Opts, ONE_UID_AS_MANY};
pub use grpc::{
    channel_from_fd, connect_as_nobody, connect_from_child, deadline, ids, req, request,
    uds_channel, Header, Raw,
};
pub use postgres::{Cluster, Replica};
pub use process::{bin, child_command, cpu_time, tail, ChildGuard, Daemon};
pub use proxy::TcpProxy;
pub use readiness::Readiness;
pub use tpm::{ek_ca_dir, hex, measure_boot, rhel8_log, swtpm_booted, testdata, tpm_verifier};

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A `[telemetry]` section on a port the kernel picks: read it back from the running
/// daemon (`Deployment::agent_telemetry`, `authority_telemetry`, `Daemon::telemetry`).
pub const TELEMETRY: &str = "\n[telemetry]\nlisten = \"127.0.0.1:0\"\n";
pub const TD: &str = "example.org";
/// How bundles are keyed on the Workload API.
pub const TD_KEY: &str = "spiffe://example.org";
pub const SECURITY_HEADER: &str = "workload.spiffe.io";
/// The uid/gid of `nobody`, for a caller that no entry matches.
pub const NOBODY: u32 = 65534;

/// How long a daemon may take to report READY=1.
pub const STARTUP: Duration = Duration::from_secs(20);
/// How long the agent may take to reflect a change made at the authority
/// (sync_interval is 500ms; this is generous for a loaded 2-core machine).
pub const PROPAGATION: Duration = Duration::from_secs(25);

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Unix time in seconds (0 if the clock is before 1970).
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
