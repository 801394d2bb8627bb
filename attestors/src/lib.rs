//! Attestors. Each lives in one module with both halves: what the agent
//! gathers (evidence) and what the authority checks (verification).

pub mod node;
pub mod workload;

#[cfg(test)]
mod testdata;
