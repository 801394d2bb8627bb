//! What the admin commands print: `--output text` for people, `--output json`
//! for scripts. The JSON is a stable interface (README "Scripting the admin
//! CLI"): snake_case names, times in RFC 3339, lists wrapped in an object so
//! fields can be added.

use super::times::rfc3339;
use serde::{Deserialize, Serialize};
use tessera_proto::authority as pb;

/// `--output`: how records are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Human-readable text.
    Text,
    /// One JSON document (README: Scripting the admin CLI).
    Json,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SelectorRecord {
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
}

/// An entry as printed, and as read by `entry create --data` (which ignores
/// `id`, `revision` and `created_at`, so a listing can be loaded elsewhere).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EntryRecord {
    #[serde(default)]
    pub id: String,
    pub spiffe_id: String,
    pub parent_id: String,
    pub selectors: Vec<SelectorRecord>,
    /// Seconds; null: the authority's default.
    #[serde(default)]
    pub x509_svid_ttl: Option<i64>,
    #[serde(default)]
    pub jwt_svid_ttl: Option<i64>,
    #[serde(default)]
    pub dns_names: Vec<String>,
    #[serde(default)]
    pub hint: String,
    #[serde(default)]
    pub admin: bool,
    /// RFC 3339; null: never.
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub revision: i64,
    #[serde(default)]
    pub created_at: Option<String>,
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Entries<T> {
    pub entries: Vec<T>,
}

#[derive(Serialize)]
pub struct AgentRecord {
    pub id: String,
    pub attestation_method: String,
    pub selectors: Vec<SelectorRecord>,
    pub serial: String,
    pub expires_at: String,
    pub attested_at: String,
    pub evicted: bool,
}

#[derive(Serialize)]
pub struct AuditRecord {
    pub id: i64,
    pub time: String,
    pub kind: String,
    pub agent_id: String,
    pub node_selectors: Vec<SelectorRecord>,
    pub entry_id: String,
    pub spiffe_id: String,
    pub serial: String,
    pub expires_at: Option<String>,
    pub audience: Vec<String>,
    pub detail: String,
}

fn selectors(v: &[pb::Selector]) -> Vec<SelectorRecord> {
    v.iter()
        .map(|s| SelectorRecord {
            kind: s.r#type.clone(),
            value: s.value.clone(),
        })
        .collect()
}

/// Zero means "not set" in the admin API.
fn set(v: i64) -> Option<i64> {
    (v != 0).then_some(v)
}

pub fn entry(e: &pb::Entry) -> EntryRecord {
    EntryRecord {
        id: e.id.clone(),
        spiffe_id: e.spiffe_id.clone(),
        parent_id: e.parent_id.clone(),
        selectors: selectors(&e.selectors),
        x509_svid_ttl: set(e.x509_ttl),
        jwt_svid_ttl: set(e.jwt_ttl),
        dns_names: e.dns_names.clone(),
        hint: e.hint.clone(),
        admin: e.admin,
        expires_at: set(e.expires_at).map(rfc3339),
        revision: e.revision,
        created_at: Some(rfc3339(e.created_at)),
    }
}

pub fn agent(a: &pb::Agent) -> AgentRecord {
    AgentRecord {
        id: a.id.clone(),
        attestation_method: a.attestation_method.clone(),
        selectors: selectors(&a.selectors),
        serial: a.serial.clone(),
        expires_at: rfc3339(a.expires_at),
        attested_at: rfc3339(a.attested_at),
        evicted: a.evicted,
    }
}

pub fn audit(e: &pb::AuditEvent) -> AuditRecord {
    AuditRecord {
        id: e.id,
        time: rfc3339(e.time),
        kind: e.kind.clone(),
        agent_id: e.agent_id.clone(),
        node_selectors: selectors(&e.node_selectors),
        entry_id: e.entry_id.clone(),
        spiffe_id: e.spiffe_id.clone(),
        serial: e.serial.clone(),
        expires_at: set(e.expires_at).map(rfc3339),
        audience: e.audience.clone(),
        detail: e.detail.clone(),
    }
}

pub fn print_json<T: Serialize>(v: &T) -> Result<(), crate::server::BoxError> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub fn print_entry(e: &pb::Entry) {
    println!("Entry ID      : {}", e.id);
    println!("SPIFFE ID     : {}", e.spiffe_id);
    println!("Parent ID     : {}", e.parent_id);
    println!("Revision      : {}", e.revision);
    println!("X509-SVID TTL : {}", ttl(e.x509_ttl));
    println!("JWT-SVID TTL  : {}", ttl(e.jwt_ttl));
    for s in &e.selectors {
        println!("Selector      : {}:{}", s.r#type, s.value);
    }
    for d in &e.dns_names {
        println!("DNS name      : {d}");
    }
    if !e.hint.is_empty() {
        println!("Hint          : {}", e.hint);
    }
    if e.admin {
        println!("Admin         : true");
    }
    if e.expires_at != 0 {
        println!("Expires at    : {}", rfc3339(e.expires_at));
    }
    println!();
}

fn ttl(secs: i64) -> String {
    if secs == 0 {
        "default".into()
    } else {
        format!("{secs}s")
    }
}

pub fn print_agent(a: &pb::Agent) {
    println!("Agent ID      : {}", a.id);
    println!("Attestation   : {}", a.attestation_method);
    println!("SVID serial   : {}", a.serial);
    println!("SVID expires  : {}", a.expires_at);
    println!("Evicted       : {}", a.evicted);
    for s in &a.selectors {
        println!("Selector      : {}:{}", s.r#type, s.value);
    }
    println!();
}

pub fn print_audit(e: &pb::AuditEvent) {
    let sel: Vec<String> = e
        .node_selectors
        .iter()
        .map(|s| format!("{}:{}", s.r#type, s.value))
        .collect();
    println!(
        "{}\t{}\tagent={}\tspiffe_id={}\tentry={}\tserial={}\texpires_at={}\taudience={}\tnode_selectors={}{}",
        e.time,
        e.kind,
        e.agent_id,
        e.spiffe_id,
        e.entry_id,
        e.serial,
        e.expires_at,
        e.audience.join(","),
        sel.join(","),
        if e.detail.is_empty() { String::new() } else { format!("\tdetail={}", e.detail) }
    );
}
