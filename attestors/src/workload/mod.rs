//! Workload attestors: selectors for a local process, gathered by the agent.

mod cgroup_layout;
mod container;
mod derived;
#[cfg(feature = "docker-api")]
pub mod docker_api;
mod k8s;
mod systemd;
pub mod unix;

pub use unix::{UnixAttestor, UnixError};
