//! Workload attestors: selectors for a local process, gathered by the agent.

pub mod unix;

pub use unix::{UnixAttestor, UnixError};
