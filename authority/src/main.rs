//! tessera-authority: run the authority, or administer a running one.

mod entry_cmd;

use clap::{CommandFactory, Parser, Subcommand};
use entry_cmd::EntryCmd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use tessera_authority::admin_cli::records::Output;
use tessera_authority::admin_cli::{self, times, AuditArgs};
use tessera_authority::config::{Config, DEFAULT_ADMIN_SOCKET};
use tessera_common::duration;

/// `tessera-authority --help`: what a man page would say.
const LONG_ABOUT: &str = "\
tessera upstream authority: CA, registration entries, attestation, audit.

`tessera-authority run --config FILE` runs the CA of a SPIFFE trust domain: it
verifies the node attestation of tessera agents over TLS (TPM 2.0 with EK
certificates, quotes and boot policies, or single-use join tokens), keeps the
registration entries, signs X.509- and JWT-SVIDs for the agents entitled to
them and records every attestation and issuance in an audit trail. The other
commands administer a running authority over its admin socket (root and the
authority's own user only).

Files:
  /etc/tessera/authority.toml        the configuration (TOML)
  /run/tessera/authority-admin.sock  the admin socket (default)
  /var/lib/tessera/authority         state: CA and JWT keys, SQLite datastore

Environment:
  TESSERA_LOG               log filter, overrides [log] level (e.g. debug)
  NOTIFY_SOCKET, WATCHDOG_USEC
                            set by systemd (Type=notify): readiness and
                            watchdog pings at half WATCHDOG_USEC

Signals: SIGTERM or SIGINT stops serving and exits; SIGHUP reloads the
configuration.

Exit status: 0 on success, 1 on an error (one line on stderr), 2 on a bad
command line.";

#[derive(Parser)]
#[command(
    name = "tessera-authority",
    version,
    about = "tessera upstream authority: CA, registration entries, attestation, audit",
    long_about = LONG_ABOUT
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone)]
struct AdminSocket {
    /// The authority's admin socket.
    #[arg(long, default_value = DEFAULT_ADMIN_SOCKET, global = true)]
    pub admin_socket: PathBuf,
}

#[derive(clap::Args, Clone, Copy)]
struct Format {
    /// How to print: text, or json (stable; see the README).
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

fn dur(s: &str) -> Result<Duration, String> {
    duration::parse(s)
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the authority.
    Run {
        /// The config file (TOML), e.g. /etc/tessera/authority.toml.
        #[arg(long)]
        config: PathBuf,
    },
    /// Registration entries.
    #[command(subcommand)]
    Entry(EntryCmd),
    /// Join tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Attested agents.
    #[command(subcommand)]
    Agent(AgentCmd),
    /// The trust bundle.
    #[command(subcommand)]
    Bundle(BundleCmd),
    /// The audit trail of attestations and issued SVIDs, newest first.
    Audit {
        /// Only events about this SPIFFE ID.
        #[arg(long)]
        spiffe_id: Option<String>,
        /// Only events of this agent (its SPIFFE ID).
        #[arg(long)]
        agent: Option<String>,
        /// Only events at or after T: RFC 3339 in UTC (2026-12-01T10:00:00Z) or a duration ago (1h).
        #[arg(long, value_name = "T", value_parser = times::parse_point)]
        since: Option<i64>,
        /// Only events before T: RFC 3339 in UTC or a duration ago.
        #[arg(long, value_name = "T", value_parser = times::parse_point)]
        until: Option<i64>,
        /// At most this many events (default 1000, at most 10000).
        #[arg(long)]
        limit: Option<u32>,
        #[command(flatten)]
        format: Format,
        #[command(flatten)]
        socket: AdminSocket,
    },
    /// Exit 0 if the authority is ready (listeners up, datastore answering), 1 otherwise.
    Healthcheck {
        /// Its config: asks [telemetry] listen's /ready, else the admin socket.
        #[arg(long, default_value = tessera_authority::ops::DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Write the man pages (one per command) into DIR.
    #[command(hide = true)]
    Man {
        /// The directory to write NAME.1 files into (created if missing).
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Generate a single-use join token; prints the token alone.
    Generate {
        /// How long the token may be used (default: the authority's join_token_ttl).
        #[arg(long, value_parser = dur)]
        ttl: Option<Duration>,
        #[command(flatten)]
        format: Format,
        #[command(flatten)]
        socket: AdminSocket,
    },
}

#[derive(Subcommand)]
enum AgentCmd {
    /// List attested agents, evicted ones included.
    List {
        #[command(flatten)]
        format: Format,
        #[command(flatten)]
        socket: AdminSocket,
    },
    /// Show one agent.
    Show {
        /// The agent's SPIFFE ID.
        id: String,
        #[command(flatten)]
        format: Format,
        #[command(flatten)]
        socket: AdminSocket,
    },
    /// Evict an agent: it loses its identity at its next sync and cannot renew.
    Evict {
        /// The agent's SPIFFE ID.
        id: String,
        #[command(flatten)]
        socket: AdminSocket,
    },
}

#[derive(Subcommand)]
enum BundleCmd {
    /// Print the trust bundle.
    Show {
        /// pem (X.509 authorities) or spiffe (the SPIFFE bundle format, JSON).
        #[arg(long, default_value = "pem", value_parser = ["pem", "spiffe"])]
        format: String,
        #[command(flatten)]
        socket: AdminSocket,
    },
}

fn main() -> ExitCode {
    let cli: Cli = tessera_common::cli::parse_args();
    if !matches!(cli.cmd, Cmd::Run { .. }) {
        tessera_common::cli::die_on_closed_stdout();
    }
    tessera_common::cli::run(async move {
        match cli.cmd {
            Cmd::Run { config } => {
                let config = Config::load(&config)?;
                tessera_common::logging::init(
                    config.log.level.as_deref().unwrap_or("info"),
                    config.log.json,
                );
                tessera_authority::server::run(config).await
            }
            Cmd::Entry(cmd) => entry_cmd::run(cmd).await,
            Cmd::Token(TokenCmd::Generate {
                ttl,
                format,
                socket,
            }) => admin_cli::token_generate(&socket.admin_socket, ttl, format.output).await,
            Cmd::Agent(AgentCmd::List { format, socket }) => {
                admin_cli::agent_list(&socket.admin_socket, format.output).await
            }
            Cmd::Agent(AgentCmd::Show { id, format, socket }) => {
                admin_cli::agent_show(&socket.admin_socket, id, format.output).await
            }
            Cmd::Agent(AgentCmd::Evict { id, socket }) => {
                admin_cli::agent_evict(&socket.admin_socket, id).await
            }
            Cmd::Bundle(BundleCmd::Show { format, socket }) => {
                admin_cli::bundle_show(&socket.admin_socket, &format).await
            }
            Cmd::Audit {
                spiffe_id,
                agent,
                since,
                until,
                limit,
                format,
                socket,
            } => {
                let args = AuditArgs {
                    spiffe_id,
                    agent,
                    since,
                    until,
                    limit,
                };
                admin_cli::audit(&socket.admin_socket, args, format.output).await
            }
            Cmd::Man { dir } => tessera_common::cli::write_man_pages(Cli::command(), &dir),
            Cmd::Healthcheck { config } => tessera_authority::ops::healthcheck(&config).await,
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_argument_has_help() {
        let missing = tessera_common::cli::args_without_help(
            &<super::Cli as clap::CommandFactory>::command(),
        );
        assert!(missing.is_empty(), "arguments without help: {missing:?}");
    }
}
