//! tessera-authority: run the authority, or administer a running one.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tessera_authority::admin_cli::{self, NewEntryArgs};
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
    admin_socket: PathBuf,
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
        #[arg(long)]
        spiffe_id: Option<String>,
        #[arg(long)]
        agent: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
        #[command(flatten)]
        socket: AdminSocket,
    },
    /// Exit 0 if the authority is ready (listeners up, datastore answering), 1 otherwise.
    Healthcheck {
        /// Its config: asks [telemetry] listen's /ready, else the admin socket.
        #[arg(long, default_value = tessera_authority::ops::DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum EntryCmd {
    /// Create an entry; prints its ID.
    Create {
        #[arg(long)]
        parent_id: String,
        #[arg(long)]
        spiffe_id: String,
        /// TYPE:VALUE, repeatable; all must match.
        #[arg(long = "selector", required = true)]
        selectors: Vec<String>,
        #[arg(long, value_parser = dur)]
        x509_ttl: Option<Duration>,
        #[arg(long, value_parser = dur)]
        jwt_ttl: Option<Duration>,
        #[arg(long = "dns")]
        dns: Vec<String>,
        #[arg(long)]
        hint: Option<String>,
        #[arg(long)]
        admin: bool,
        #[command(flatten)]
        socket: AdminSocket,
    },
    List {
        #[command(flatten)]
        socket: AdminSocket,
    },
    Show {
        id: String,
        #[command(flatten)]
        socket: AdminSocket,
    },
    Delete {
        id: String,
        #[command(flatten)]
        socket: AdminSocket,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Generate a single-use join token; prints the token alone.
    Generate {
        #[arg(long, value_parser = dur)]
        ttl: Option<Duration>,
        #[command(flatten)]
        socket: AdminSocket,
    },
}

#[derive(Subcommand)]
enum AgentCmd {
    List {
        #[command(flatten)]
        socket: AdminSocket,
    },
    /// Evict an agent: it loses its identity at its next sync and cannot renew.
    Evict {
        id: String,
        #[command(flatten)]
        socket: AdminSocket,
    },
}

#[derive(Subcommand)]
enum BundleCmd {
    Show {
        #[arg(long, default_value = "pem", value_parser = ["pem", "spiffe"])]
        format: String,
        #[command(flatten)]
        socket: AdminSocket,
    },
}

fn main() -> ExitCode {
    let cli: Cli = tessera_common::cli::parse_args();
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
            Cmd::Entry(EntryCmd::Create {
                parent_id,
                spiffe_id,
                selectors,
                x509_ttl,
                jwt_ttl,
                dns,
                hint,
                admin,
                socket,
            }) => {
                let args = NewEntryArgs {
                    parent_id,
                    spiffe_id,
                    selectors,
                    x509_ttl,
                    jwt_ttl,
                    dns,
                    hint,
                    admin,
                };
                admin_cli::entry_create(&socket.admin_socket, args).await
            }
            Cmd::Entry(EntryCmd::List { socket }) => {
                admin_cli::entry_list(&socket.admin_socket).await
            }
            Cmd::Entry(EntryCmd::Show { id, socket }) => {
                admin_cli::entry_show(&socket.admin_socket, id).await
            }
            Cmd::Entry(EntryCmd::Delete { id, socket }) => {
                admin_cli::entry_delete(&socket.admin_socket, id).await
            }
            Cmd::Token(TokenCmd::Generate { ttl, socket }) => {
                admin_cli::token_generate(&socket.admin_socket, ttl).await
            }
            Cmd::Agent(AgentCmd::List { socket }) => {
                admin_cli::agent_list(&socket.admin_socket).await
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
                limit,
                socket,
            } => admin_cli::audit(&socket.admin_socket, spiffe_id, agent, limit).await,
            Cmd::Healthcheck { config } => tessera_authority::ops::healthcheck(&config).await,
        }
    })
}
