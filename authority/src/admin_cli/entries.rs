//! `tessera-authority entry ...`.

use super::records::{self, Entries, Output};
use super::{client, data_file};
use crate::server::BoxError;
use std::path::Path;
use tessera_common::selector::file_only_warning;
use tessera_common::Selector;
use tessera_proto::authority as pb;

pub struct NewEntryArgs {
    pub parent_id: String,
    pub spiffe_id: String,
    pub selectors: Vec<String>,
    pub x509_ttl: Option<std::time::Duration>,
    pub jwt_ttl: Option<std::time::Duration>,
    pub dns: Vec<String>,
    pub hint: Option<String>,
    pub admin: bool,
    /// Unix seconds.
    pub expires_at: Option<i64>,
}

/// `entry update`: `None` (or an empty list) leaves a field as it is.
#[derive(Default)]
pub struct UpdateArgs {
    pub selectors: Vec<String>,
    /// Seconds; 0: back to the authority's default.
    pub x509_ttl: Option<i64>,
    pub jwt_ttl: Option<i64>,
    pub dns: Vec<String>,
    pub clear_dns: bool,
    pub hint: Option<String>,
    pub admin: Option<bool>,
    /// Unix seconds; 0: never.
    pub expires_at: Option<i64>,
    /// Only if the entry is still at this revision.
    pub revision: Option<i64>,
}

/// `entry list` filters.
#[derive(Default)]
pub struct ListArgs {
    pub spiffe_id: Option<String>,
    pub parent_id: Option<String>,
    pub selectors: Vec<String>,
}

fn parse_selectors(v: &[String]) -> Result<Vec<pb::Selector>, BoxError> {
    v.iter()
        .map(|s| {
            Selector::parse(s)
                .map(pb::Selector::from)
                .map_err(|e| format!("--selector: {e}").into())
        })
        .collect()
}

fn secs(d: Option<std::time::Duration>) -> i64 {
    d.map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// One stderr line for an entry whose selectors do not bound who gets its identity.
fn warn_if_file_only(e: &pb::Entry) {
    let selectors: Vec<Selector> = e.selectors.iter().map(Selector::from).collect();
    if let Some(why) = file_only_warning(&selectors) {
        eprintln!(
            "warning: entry {} ({}): {why}",
            records::shown(&e.id),
            records::shown(&e.spiffe_id)
        );
    }
}

fn print_created(created: &[pb::Entry], out: Output) -> Result<(), BoxError> {
    created.iter().for_each(warn_if_file_only);
    match out {
        Output::Text => created
            .iter()
            .for_each(|e| println!("{}", records::shown(&e.id))),
        Output::Json => records::print_json(&Entries {
            entries: created.iter().map(records::entry).collect(),
        })?,
    }
    Ok(())
}

fn print_one(e: &pb::Entry, out: Output) -> Result<(), BoxError> {
    match out {
        Output::Text => records::print_entry(e),
        Output::Json => records::print_json(&records::entry(e))?,
    }
    Ok(())
}

pub async fn create(socket: &Path, a: NewEntryArgs, out: Output) -> Result<(), BoxError> {
    let entry = pb::Entry {
        spiffe_id: a.spiffe_id,
        parent_id: a.parent_id,
        selectors: parse_selectors(&a.selectors)?,
        x509_ttl: secs(a.x509_ttl),
        jwt_ttl: secs(a.jwt_ttl),
        dns_names: a.dns,
        hint: a.hint.unwrap_or_default(),
        admin: a.admin,
        expires_at: a.expires_at.unwrap_or(0),
        ..Default::default()
    };
    let created = client(socket)
        .await?
        .create_entry(entry)
        .await?
        .into_inner();
    print_created(&[created], out)
}

/// All entries of FILE or none: the authority stores them in one transaction.
pub async fn create_from_file(socket: &Path, data: &Path, out: Output) -> Result<(), BoxError> {
    let entries = data_file::read(data)?;
    let created = client(socket)
        .await?
        .batch_create_entries(pb::BatchCreateEntriesRequest { entries })
        .await?
        .into_inner()
        .entries;
    print_created(&created, out)
}

pub async fn update(socket: &Path, id: String, a: UpdateArgs, out: Output) -> Result<(), BoxError> {
    let selectors = parse_selectors(&a.selectors)?;
    let req = pb::UpdateEntryRequest {
        id,
        selectors: (!selectors.is_empty()).then_some(pb::Selectors { selectors }),
        x509_ttl: a.x509_ttl,
        jwt_ttl: a.jwt_ttl,
        dns_names: (a.clear_dns || !a.dns.is_empty()).then_some(pb::DnsNames { names: a.dns }),
        hint: a.hint,
        admin: a.admin,
        expires_at: a.expires_at,
        revision: a.revision,
    };
    let e = client(socket).await?.update_entry(req).await?.into_inner();
    warn_if_file_only(&e);
    print_one(&e, out)
}

pub async fn list(socket: &Path, f: ListArgs, out: Output) -> Result<(), BoxError> {
    let req = pb::ListEntriesRequest {
        spiffe_id: f.spiffe_id.unwrap_or_default(),
        parent_id: f.parent_id.unwrap_or_default(),
        selectors: parse_selectors(&f.selectors)?,
    };
    let entries = client(socket)
        .await?
        .list_entries(req)
        .await?
        .into_inner()
        .entries;
    match out {
        Output::Text => {
            println!("Found {} entries", entries.len());
            entries.iter().for_each(records::print_entry);
        }
        Output::Json => records::print_json(&Entries {
            entries: entries.iter().map(records::entry).collect(),
        })?,
    }
    Ok(())
}

pub async fn show(socket: &Path, id: String, out: Output) -> Result<(), BoxError> {
    let e = client(socket)
        .await?
        .get_entry(pb::EntryId { id })
        .await?
        .into_inner();
    print_one(&e, out)
}

pub async fn delete(socket: &Path, id: String) -> Result<(), BoxError> {
    client(socket)
        .await?
        .delete_entry(pb::EntryId { id: id.clone() })
        .await?;
    println!("deleted {}", records::shown(&id));
    Ok(())
}
