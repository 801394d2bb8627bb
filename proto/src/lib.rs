//! Generated gRPC code for the SPIFFE Workload API and the tessera authority API.

/// The SPIFFE Workload API (the proto has no package).
pub mod workload {
    tonic::include_proto!("_");
}

/// `tessera.authority.v1`: the agent <-> authority and admin APIs.
pub mod authority {
    tonic::include_proto!("tessera.authority.v1");
}

/// Encoded file descriptor set, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));
