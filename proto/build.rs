// Compiles the protos with protox (pure Rust), so no `protoc` is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/workload.proto",
        "proto/authority.proto",
        "proto/tpm.proto",
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
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
