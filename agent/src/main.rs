//! tessera-agent: run the agent, or talk to a running one.

use clap::{CommandFactory, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use tessera_agent::cli::{self, api, inspect};
use tessera_agent::config::Config;
use tessera_agent::run::BoxError;

/// `tessera-agent --help`: what a man page would say.
const LONG_ABOUT: &str = "\
tessera node agent: serves SPIFFE identities to local workloads.

`tessera-agent run --config FILE` attests this host to a tessera authority (with
its TPM 2.0 or a single-use join token), keeps an X.509-SVID for every
registration entry the host's workloads are entitled to, rotates them before
they expire, mints JWT-SVIDs on demand and serves the SPIFFE Workload API on a
Unix socket. Workloads are identified by the kernel's account of them (uid,
gid, binary path and hash, cgroup). The other commands talk to a running agent
or inspect this host.

Files:
  /etc/tessera/agent.toml   the configuration (TOML)
  /run/tessera/agent.sock   the Workload API socket (default)
  /var/lib/tessera/agent    state: agent SVID, TPM attestation key blob, entries

Environment:
  SPIFFE_ENDPOINT_SOCKET    the Workload API the api commands use (unix:///path or unix:/path)
  TESSERA_LOG               log filter, overrides [log] level (e.g. debug)
  NOTIFY_SOCKET, WATCHDOG_USEC
                            set by systemd (Type=notify): readiness, status and
                            watchdog pings at half WATCHDOG_USEC

Signals: SIGTERM or SIGINT ends open streams and exits; SIGHUP reloads the
configuration.

Exit status: 0 on success, 1 on an error (one line on stderr), 2 on a bad
command line.";

#[derive(Parser)]
#[command(
    name = "tessera-agent",
    version,
    about = "tessera node agent: serves SPIFFE identities to local workloads",
    long_about = LONG_ABOUT
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args)]
struct Target {
    /// Workload API endpoint, unix:///path or unix:/path (default: SPIFFE_ENDPOINT_SOCKET, else /run/tessera/agent.sock).
    #[arg(long)]
    socket: Option<String>,
    /// The agent's config file, to find its socket.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the agent.
    Run {
        /// The config file (TOML), e.g. /etc/tessera/agent.toml.
        #[arg(long)]
        config: PathBuf,
    },
    /// Talk to the Workload API.
    #[command(subcommand)]
    Api(ApiCmd),
    /// Show a process's selectors and the entries they match.
    Inspect {
        /// The process ID.
        #[arg(long)]
        pid: i32,
        /// The agent's config file (its workload attestation settings and data_dir).
        #[arg(long)]
        config: PathBuf,
        /// `text` (one selector a line, then the matching entries) or `json`.
        #[arg(long, value_enum, default_value_t = inspect::Output::Text)]
        output: inspect::Output,
    },
    /// Print a TCG measured-boot event log and its replayed PCRs.
    Eventlog {
        /// Default: the system's log in securityfs.
        file: Option<PathBuf>,
        /// Print JSON: {"pcrs": {bank: {index: hex}}, ...}.
        #[arg(long)]
        json: bool,
    },
    /// Exit 0 if the agent can serve identities (attested, synced, socket up), 1 otherwise.
    Healthcheck {
        #[command(flatten)]
        target: Target,
    },
    /// Write the man pages (one per command) into DIR.
    #[command(hide = true)]
    Man {
        /// The directory to write NAME.1 files into (created if missing).
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum ApiCmd {
    /// Fetch SVIDs.
    #[command(subcommand)]
    Fetch(FetchCmd),
    /// Validate SVIDs.
    #[command(subcommand)]
    Validate(ValidateCmd),
    /// Print every X.509-SVID update as it arrives.
    Watch {
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand)]
enum FetchCmd {
    /// Fetch X.509-SVIDs; --write stores svid.N.pem, svid.N.key (0600), bundle.N.pem.
    X509 {
        /// Also write the files into DIR (created 0700 if missing).
        #[arg(long, value_name = "DIR")]
        write: Option<PathBuf>,
        #[command(flatten)]
        target: Target,
    },
    /// Fetch JWT-SVIDs.
    Jwt {
        /// An audience the JWT-SVID is for, repeatable.
        #[arg(long, required = true)]
        audience: Vec<String>,
        /// Only this SPIFFE ID's JWT-SVID (default: every one the workload has).
        #[arg(long)]
        spiffe_id: Option<String>,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand)]
enum ValidateCmd {
    /// Validate a JWT-SVID.
    Jwt {
        /// The audience the token must name.
        #[arg(long)]
        audience: String,
        /// The JWT-SVID (compact serialization).
        #[arg(long)]
        svid: String,
        #[command(flatten)]
        target: Target,
    },
}

async fn dispatch(cmd: Cmd) -> Result<(), BoxError> {
    let sock = |t: &Target| cli::socket_path(t.socket.as_deref(), t.config.as_deref());
    match cmd {
        Cmd::Run { config } => {
            let config = Config::load(&config)?;
            tessera_common::logging::init(
                config.log.level.as_deref().unwrap_or("info"),
                config.log.json,
            );
            tessera_agent::run::run(config).await
        }
        Cmd::Api(ApiCmd::Fetch(FetchCmd::X509 { write, target })) => {
            api::fetch_x509(&sock(&target)?, write.as_deref()).await
        }
        Cmd::Api(ApiCmd::Fetch(FetchCmd::Jwt {
            audience,
            spiffe_id,
            target,
        })) => api::fetch_jwt(&sock(&target)?, audience, spiffe_id).await,
        Cmd::Api(ApiCmd::Validate(ValidateCmd::Jwt {
            audience,
            svid,
            target,
        })) => api::validate_jwt(&sock(&target)?, audience, svid).await,
        Cmd::Api(ApiCmd::Watch { target }) => api::watch(&sock(&target)?).await,
        Cmd::Inspect {
            pid,
            config,
            output,
        } => {
            let config = Config::load(&config)?;
            let attestor = tessera_agent::run::workload_attestor(&config);
            tokio::task::spawn_blocking(move || inspect::inspect(&attestor, pid, &config, output))
                .await?
        }
        Cmd::Eventlog { file, json } => cli::eventlog::eventlog(file.as_deref(), json),
        Cmd::Healthcheck { target } => api::healthcheck(&sock(&target)?).await,
        Cmd::Man { dir } => tessera_common::cli::write_man_pages(Cli::command(), &dir),
    }
}

fn main() -> ExitCode {
    let cli: Cli = tessera_common::cli::parse_args();
    match cli.cmd {
        // Before the runtime's threads; not for the short commands, whose start-up it
        // would slow (it reads the cgroup's CPU quota).
        Cmd::Run { .. } => tessera_agent::heap::limit_arenas(),
        _ => tessera_common::cli::die_on_closed_stdout(),
    }
    tessera_common::cli::run(dispatch(cli.cmd))
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_argument_has_help() {
        let cmd = <super::Cli as clap::CommandFactory>::command();
        let missing = tessera_common::cli::args_without_help(&cmd);
        assert!(missing.is_empty(), "arguments without help: {missing:?}");
    }
}
