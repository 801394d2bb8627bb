//! Generated gRPC code for the SPIFFE Workload API and the tessera authority API.

/// The SPIFFE Workload API (the proto has no package).
pub mod workload {
    tonic::include_proto!("_");
}

/// `tessera.authority.v1`: the agent <-> authority and admin APIs.
pub mod authority {
    tonic::include_proto!("tessera.authority.v1");
}

/// Encoded file descriptor set of the Workload API, for gRPC reflection.
pub const WORKLOAD_FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/workload_descriptor.bin"));

/// `tessera.tpm.v1`: payloads of the TPM node attestor.
pub mod tpm {
    tonic::include_proto!("tessera.tpm.v1");

    /// `tessera.tpm.helper.v1`: the agent's pipe to `tessera-agent-tpm`.
    pub mod helper {
        tonic::include_proto!("tessera.tpm.helper.v1");
    }
}

mod redact;
