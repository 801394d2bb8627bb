//! `tessera-authority entry ...`: the command line of the entry commands (part
//! of the binary; the clients themselves are in `admin_cli::entries`).

use crate::{dur, AdminSocket, Format};
use clap::Subcommand;
use std::path::PathBuf;
use std::time::Duration;
use tessera_authority::admin_cli::entries::{self, ListArgs, NewEntryArgs, UpdateArgs};
use tessera_authority::admin_cli::times;
use tessera_authority::server::BoxError;

/// An SVID lifetime: whole seconds on the wire, where 0 means "the
/// authority's default", so `0s` or `500ms` must not slip through as that.
fn ttl(s: &str) -> Result<Duration, String> {
    let d = dur(s)?;
    if d.as_secs() == 0 {
        return Err(format!(
            "{s:?} is less than 1s; give a lifetime of at least 1s (or leave it to the authority's default)"
        ));
    }
    Ok(d)
}

/// A TTL in seconds; `default` (0) hands it back to the authority's default.
fn ttl_or_default(s: &str) -> Result<i64, String> {
    if s == "default" {
        return Ok(0);
    }
    ttl(s).map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Unix seconds; `never` (0) removes the expiry.
fn expiry_or_never(s: &str) -> Result<i64, String> {
    if s == "never" {
        return Ok(0);
    }
    times::parse_rfc3339(s)
}

#[derive(Subcommand)]
pub(crate) enum EntryCmd {
    /// Create an entry (prints its ID), or every entry of a JSON file, all or none (prints their IDs).
    Create {
        /// The agent (or alias) entitled to the entry.
        #[arg(long, required_unless_present = "data", conflicts_with = "data")]
        parent_id: Option<String>,
        /// The workload's SPIFFE ID.
        #[arg(long, required_unless_present = "data", conflicts_with = "data")]
        spiffe_id: Option<String>,
        /// TYPE:VALUE, repeatable; all must match.
        #[arg(
            long = "selector",
            required_unless_present = "data",
            conflicts_with = "data"
        )]
        selectors: Vec<String>,
        /// X.509-SVID lifetime (e.g. 1h; default: the authority's).
        #[arg(long, value_name = "DUR", value_parser = ttl, conflicts_with = "data")]
        x509_ttl: Option<Duration>,
        /// JWT-SVID lifetime (e.g. 5m; default: the authority's).
        #[arg(long, value_name = "DUR", value_parser = ttl, conflicts_with = "data")]
        jwt_ttl: Option<Duration>,
        /// A DNS name for the X.509-SVID, repeatable.
        #[arg(long = "dns", value_name = "NAME", conflicts_with = "data")]
        dns: Vec<String>,
        /// A hint the Workload API passes on, to tell several SVIDs apart.
        #[arg(long, conflicts_with = "data")]
        hint: Option<String>,
        /// Mark the entry admin (recorded and shown, as SPIRE's flag; grants nothing here yet).
        #[arg(long, conflicts_with = "data")]
        admin: bool,
        /// The entry stops being served at T (RFC 3339 in UTC).
        #[arg(long, value_name = "T", value_parser = times::parse_rfc3339, conflicts_with = "data")]
        expires_at: Option<i64>,
        /// A JSON file of entries ({"entries": [...]}, see the README; - for stdin).
        #[arg(long, value_name = "FILE")]
        data: Option<PathBuf>,
        #[command(flatten)]
        format: Format,
        #[command(flatten)]
        socket: AdminSocket,
    },
    /// Change an entry; bumps its revision if anything changed, so agents re-sign its SVID.
    Update {
        /// The entry's ID.
        id: String,
        /// Only if the entry is still at revision N (as `entry show` printed it);
        /// without it the change is merged into the entry as it is now.
        #[arg(long, value_name = "N")]
        revision: Option<i64>,
        #[command(flatten)]
        change: EntryChange,
        #[command(flatten)]
        format: Format,
        #[command(flatten)]
        socket: AdminSocket,
    },
    /// List entries, oldest first; the filters given must all hold.
    List {
        /// Only entries with this SPIFFE ID.
        #[arg(long)]
        spiffe_id: Option<String>,
        /// Only entries with this parent ID.
        #[arg(long)]
        parent_id: Option<String>,
        /// Only entries that have this selector, repeatable: all of them.
        #[arg(long = "selector", value_name = "TYPE:VALUE")]
        selectors: Vec<String>,
        #[command(flatten)]
        format: Format,
        #[command(flatten)]
        socket: AdminSocket,
    },
    /// Show one entry.
    Show {
        /// The entry's ID.
        id: String,
        #[command(flatten)]
        format: Format,
        #[command(flatten)]
        socket: AdminSocket,
    },
    /// Delete an entry.
    Delete {
        /// The entry's ID.
        id: String,
        #[command(flatten)]
        socket: AdminSocket,
    },
}

/// What `entry update` changes: at least one.
#[derive(clap::Args)]
#[group(required = true, multiple = true)]
pub(crate) struct EntryChange {
    /// The new selector set (repeatable; replaces all).
    #[arg(long = "selector", value_name = "TYPE:VALUE")]
    selectors: Vec<String>,
    /// X.509-SVID lifetime, or `default` for the authority's.
    #[arg(long, value_name = "DUR", value_parser = ttl_or_default)]
    x509_ttl: Option<i64>,
    /// JWT-SVID lifetime, or `default` for the authority's.
    #[arg(long, value_name = "DUR", value_parser = ttl_or_default)]
    jwt_ttl: Option<i64>,
    /// The new DNS names (repeatable; replaces all).
    #[arg(long = "dns", value_name = "NAME", conflicts_with = "clear_dns")]
    dns: Vec<String>,
    /// Remove every DNS name.
    #[arg(long)]
    clear_dns: bool,
    /// The new hint ("" removes it).
    #[arg(long)]
    hint: Option<String>,
    /// Mark the entry admin or not (true or false).
    #[arg(long, value_name = "BOOL")]
    admin: Option<bool>,
    /// Expiry: RFC 3339 in UTC, or `never`.
    #[arg(long, value_name = "T", value_parser = expiry_or_never)]
    expires_at: Option<i64>,
}

pub(crate) async fn run(cmd: EntryCmd) -> Result<(), BoxError> {
    match cmd {
        EntryCmd::Create {
            data: Some(data),
            format,
            socket,
            ..
        } => entries::create_from_file(&socket.admin_socket, &data, format.output).await,
        EntryCmd::Create {
            parent_id,
            spiffe_id,
            selectors,
            x509_ttl,
            jwt_ttl,
            dns,
            hint,
            admin,
            expires_at,
            data: None,
            format,
            socket,
        } => {
            let args = NewEntryArgs {
                parent_id: parent_id.unwrap_or_default(),
                spiffe_id: spiffe_id.unwrap_or_default(),
                selectors,
                x509_ttl,
                jwt_ttl,
                dns,
                hint,
                admin,
                expires_at,
            };
            entries::create(&socket.admin_socket, args, format.output).await
        }
        EntryCmd::Update {
            id,
            revision,
            change: c,
            format,
            socket,
        } => {
            let args = UpdateArgs {
                selectors: c.selectors,
                x509_ttl: c.x509_ttl,
                jwt_ttl: c.jwt_ttl,
                dns: c.dns,
                clear_dns: c.clear_dns,
                hint: c.hint,
                admin: c.admin,
                expires_at: c.expires_at,
                revision,
            };
            entries::update(&socket.admin_socket, id, args, format.output).await
        }
        EntryCmd::List {
            spiffe_id,
            parent_id,
            selectors,
            format,
            socket,
        } => {
            let filter = ListArgs {
                spiffe_id,
                parent_id,
                selectors,
            };
            entries::list(&socket.admin_socket, filter, format.output).await
        }
        EntryCmd::Show { id, format, socket } => {
            entries::show(&socket.admin_socket, id, format.output).await
        }
        EntryCmd::Delete { id, socket } => entries::delete(&socket.admin_socket, id).await,
    }
}

#[cfg(test)]
mod tests {
    use super::{ttl, ttl_or_default};

    #[test]
    fn sub_second_ttls_are_refused_not_defaulted() {
        for bad in ["0s", "500ms", "999ms"] {
            let e = ttl_or_default(bad).unwrap_err();
            assert!(
                e.contains(&format!("{bad:?}")) && !e.contains('\n'),
                "{bad}: {e}"
            );
            assert!(ttl(bad).is_err(), "{bad}");
        }
        assert!(ttl("500ms").unwrap_err().contains("at least 1s"));
        assert_eq!(ttl_or_default("default"), Ok(0));
        assert_eq!(ttl_or_default("1s"), Ok(1));
        assert_eq!(ttl("1h").map(|d| d.as_secs()), Ok(3600));
    }
}
