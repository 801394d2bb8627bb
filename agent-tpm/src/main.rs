//! tessera-agent-tpm: the TPM half of `tessera-agent run` with
//! `[node_attestation] method = "tpm"`. The agent starts it and drives it
//! over its stdin and stdout (tessera_attestors::node::tpm::helper); it is
//! the one process of the agent that links libtss2, so the agent's other
//! commands and its start-up do not load it. Not meant to be run by hand.

use std::ffi::OsString;
use std::process::ExitCode;
use tessera_attestors::node::tpm::device::Tpm;
use tessera_attestors::node::tpm::helper::{send_opened, serve};
use tessera_attestors::node::tpm::public::EkTemplate;

const USAGE: &str =
    "usage: tessera-agent-tpm --tcti TCTI --ek-template NAME [--log-level FILTER] [--log-json]
Started by tessera-agent run; speaks its protocol on stdin and stdout.";

struct Args {
    tcti: String,
    ek_template: EkTemplate,
    log_level: String,
    log_json: bool,
}

fn parse(mut args: impl Iterator<Item = OsString>) -> Result<Args, String> {
    let (mut tcti, mut ek_template, mut log_level, mut log_json) = (None, None, None, false);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .and_then(|v| v.into_string().ok())
                .ok_or_else(|| format!("{arg:?} needs a value"))
        };
        match arg.to_str() {
            Some("--tcti") => tcti = Some(value()?),
            Some("--ek-template") => ek_template = Some(value()?.parse()?),
            Some("--log-level") => log_level = Some(value()?),
            Some("--log-json") => log_json = true,
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    Ok(Args {
        tcti: tcti.ok_or("--tcti is required")?,
        ek_template: ek_template.ok_or("--ek-template is required")?,
        log_level: log_level.unwrap_or_else(|| "info".into()),
        log_json,
    })
}

fn main() -> ExitCode {
    let mut argv = std::env::args_os().skip(1).peekable();
    if argv.peek().is_some_and(|a| a == "--version") {
        println!("tessera-agent-tpm {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let args = match parse(argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tessera-agent-tpm: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    tessera_common::logging::init(&args.log_level, args.log_json);
    // The activation secret passes through this process: no core dump and no
    // ptrace by the same user.
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::error!("TPM helper: cannot make the process non-dumpable: {e}");
        return ExitCode::FAILURE;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let result = match runtime {
        Ok(rt) => rt.block_on(run(args)),
        Err(e) => Err(format!("cannot start the runtime: {e}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("TPM helper: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let (mut input, mut output) = (tokio::io::stdin(), tokio::io::stdout());
    let tpm = match Tpm::open_with_ek(&args.tcti, args.ek_template) {
        Ok(tpm) => tpm,
        Err(e) => {
            let e = e.to_string();
            // The agent reports it; the pipe may be gone already.
            let _ = send_opened(&mut output, Err(e.clone())).await;
            return Err(e);
        }
    };
    send_opened(&mut output, Ok(()))
        .await
        .map_err(|e| e.to_string())?;
    let served = serve(&tpm, &mut input, &mut output).await;
    // Flush a created EK: a TPM without a resource manager keeps it loaded.
    if let Err(e) = tpm.close().await {
        tracing::warn!("TPM helper: releasing the TPM: {e}");
    }
    served.map_err(|e| format!("the agent's pipe: {e}"))
}
