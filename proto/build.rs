// Compiles the protos with protox (pure Rust), so no `protoc` is needed.

/// Keep in step with src/redact.rs, whose tests print each of these.
const SECRET_BEARING: [&str; 10] = [
    ".X509SVID",
    ".JWTSVID",
    ".WITSVID",
    ".ValidateJWTSVIDRequest",
    ".tessera.authority.v1.AttestRequest",
    ".tessera.authority.v1.AttestBegin",
    ".tessera.authority.v1.SignJwtResponse",
    ".tessera.authority.v1.GenerateTokenResponse",
    ".tessera.tpm.v1.ChallengeResponse",
    ".tessera.tpm.helper.v1.Secret",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/workload.proto",
        "proto/authority.proto",
        "proto/tpm.proto",
        "proto/tpm_helper.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    // Reflection on the agent's socket describes the Workload API only.
    let workload = protox::compile(["proto/workload.proto"], ["proto"])?;
    std::fs::write(
        out.join("workload_descriptor.bin"),
        prost::Message::encode_to_vec(&workload),
    )?;
    // Messages that carry a private key, a bearer token or a TPM secret get a
    // hand-written `Debug` (src/redact.rs) that prints only their length.
    tonic_prost_build::configure()
        .skip_debug(SECRET_BEARING)
        .compile_fds(fds)?;
    Ok(())
}
