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
    print!("{}", entry_text(e));
}

/// Every string shown is escaped ([`shown`]): entries, agents and audit events
/// carry values others chose (a workload picks its JWT audiences).
fn entry_text(e: &pb::Entry) -> String {
    let mut t = format!("Entry ID      : {}\n", shown(&e.id));
    t += &format!("SPIFFE ID     : {}\n", shown(&e.spiffe_id));
    t += &format!("Parent ID     : {}\n", shown(&e.parent_id));
    t += &format!("Revision      : {}\n", e.revision);
    t += &format!("X509-SVID TTL : {}\n", ttl(e.x509_ttl));
    t += &format!("JWT-SVID TTL  : {}\n", ttl(e.jwt_ttl));
    for s in &e.selectors {
        t += &format!("Selector      : {}\n", selector(s));
    }
    for d in &e.dns_names {
        t += &format!("DNS name      : {}\n", shown(d));
    }
    if !e.hint.is_empty() {
        t += &format!("Hint          : {}\n", shown(&e.hint));
    }
    if e.admin {
        t += "Admin         : true\n";
    }
    if e.expires_at != 0 {
        t += &format!("Expires at    : {}\n", rfc3339(e.expires_at));
    }
    t + "\n"
}

fn ttl(secs: i64) -> String {
    if secs == 0 {
        "default".into()
    } else {
        format!("{secs}s")
    }
}

/// `s` with control characters (newline, tab, ESC, ...) and bidirectional
/// overrides written as `\n`, `\u{1b}`, so a value cannot start a line of its
/// own, move the cursor or recolour the terminal; backslash is doubled so an
/// escape cannot be faked.
pub fn shown(s: &str) -> String {
    let bidi = |c: char| matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    s.chars()
        .map(|c| {
            if c.is_control() || bidi(c) || c == '\\' {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn selector(s: &pb::Selector) -> String {
    format!("{}:{}", shown(&s.r#type), shown(&s.value))
}

fn joined<'a>(v: impl IntoIterator<Item = &'a String>) -> String {
    v.into_iter()
        .map(|s| shown(s))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn print_agent(a: &pb::Agent) {
    print!("{}", agent_text(a));
}

fn agent_text(a: &pb::Agent) -> String {
    let mut t = format!("Agent ID      : {}\n", shown(&a.id));
    t += &format!("Attestation   : {}\n", shown(&a.attestation_method));
    t += &format!("SVID serial   : {}\n", shown(&a.serial));
    t += &format!("SVID expires  : {}\n", a.expires_at);
    t += &format!("Evicted       : {}\n", a.evicted);
    for s in &a.selectors {
        t += &format!("Selector      : {}\n", selector(s));
    }
    t + "\n"
}

pub fn print_audit(e: &pb::AuditEvent) {
    println!("{}", audit_line(e));
}

/// One line per event, whatever its fields hold.
fn audit_line(e: &pb::AuditEvent) -> String {
    let sel: Vec<String> = e.node_selectors.iter().map(selector).collect();
    format!(
        "{}\t{}\tagent={}\tspiffe_id={}\tentry={}\tserial={}\texpires_at={}\taudience={}\tnode_selectors={}{}",
        e.time,
        shown(&e.kind),
        shown(&e.agent_id),
        shown(&e.spiffe_id),
        shown(&e.entry_id),
        shown(&e.serial),
        e.expires_at,
        joined(&e.audience),
        sel.join(","),
        if e.detail.is_empty() { String::new() } else { format!("\tdetail={}", shown(&e.detail)) }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str = "aud\n1700000000\tjwt_svid\tagent=forged\r\u{1b}[2K\u{202e}\\n";

    fn hostile_selector() -> pb::Selector {
        pb::Selector {
            r#type: "unix".into(),
            value: HOSTILE.into(),
        }
    }

    /// No raw control or bidi character, no tab beyond the field separators.
    fn assert_inert(text: &str, lines: usize, tabs: usize) {
        assert_eq!(text.lines().count(), lines, "{text:?}");
        assert_eq!(text.matches('\t').count(), tabs, "{text:?}");
        assert!(
            !text
                .chars()
                .any(|c| (c.is_control() && c != '\n' && c != '\t') || c == '\u{202e}'),
            "{text:?}"
        );
    }

    #[test]
    fn shown_escapes_controls_and_backslash() {
        assert_eq!(shown("plain spiffe://td/a"), "plain spiffe://td/a");
        assert_eq!(
            shown("a\nb\t\u{1b}[1m\\n\u{202e}"),
            "a\\nb\\t\\u{1b}[1m\\\\n\\u{202e}"
        );
    }

    #[test]
    fn hostile_fields_stay_on_their_line() {
        let ev = pb::AuditEvent {
            kind: "jwt_svid".into(),
            audience: vec![HOSTILE.into(), "b".into()],
            agent_id: HOSTILE.into(),
            spiffe_id: HOSTILE.into(),
            detail: HOSTILE.into(),
            node_selectors: vec![hostile_selector()],
            ..Default::default()
        };
        let line = audit_line(&ev);
        assert_inert(&line, 1, 9);
        assert!(
            line.contains("audience=aud\\n1700000000\\tjwt_svid"),
            "{line}"
        );
        let entry = pb::Entry {
            spiffe_id: HOSTILE.into(),
            hint: HOSTILE.into(),
            dns_names: vec![HOSTILE.into()],
            selectors: vec![hostile_selector()],
            ..Default::default()
        };
        assert_inert(&entry_text(&entry), 10, 0);
        let agent = pb::Agent {
            id: HOSTILE.into(),
            attestation_method: HOSTILE.into(),
            serial: HOSTILE.into(),
            selectors: vec![hostile_selector()],
            ..Default::default()
        };
        assert_inert(&agent_text(&agent), 7, 0);
    }
}
