//! The authority's datastore: registration entries, join tokens, attested agents and the
//! audit trail. One code path for SQLite (default) and PostgreSQL via `sqlx::AnyPool`, so
//! only types the Any driver carries are used: i64 (also for booleans and Unix-second
//! timestamps) and String (JSON for lists).

mod agents;
mod audit;
mod audit_kind;
mod connect;
mod entries;
mod entry_lookup;
mod entry_spiffe_id;
mod entry_update;
mod migrations;
mod rows;
#[cfg(test)]
pub(crate) mod test_records;
#[cfg(test)]
mod tests;
mod tokens;
mod tpm_clock;

use sqlx::AnyPool;
use std::time::Duration;
use tessera_common::{Selector, SpiffeId, UnixTime};

pub use audit_kind::AuditKind;
pub use entry_spiffe_id::{EntrySpiffeId, EntrySpiffeIdError};
pub use migrations::SCHEMA_VERSION;
pub use tpm_clock::{ClockCheck, TpmClock};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DatastoreError {
    #[error("cannot open the database: {0}")]
    Open(String),
    #[error("database schema migration failed: {0}")]
    Migrate(String),
    #[error(
        "the database schema is version {found}, newer than this tessera-authority knows \
         ({supported}); run a newer tessera-authority"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("database query failed: {0}")]
    Query(#[from] sqlx::Error),
    #[error("already exists: {0}")]
    AlreadyExists(String),
    #[error("{0}")]
    Changed(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("corrupt data in the database: {0}")]
    Corrupt(String),
    /// A stored value that does not read as its column's type.
    #[error("corrupt data in the database: {row} column {column}: {problem}")]
    CorruptColumn {
        /// The table and row, e.g. "audit row 7".
        row: String,
        column: String,
        problem: String,
    },
    #[error("join token is unknown or has already been used")]
    TokenUsed,
    #[error("join token has expired")]
    TokenExpired,
    #[error("agent {0} has been evicted")]
    Evicted(String),
    #[error("agent {0}: agent SVID superseded (a newer one has been issued)")]
    Superseded(String),
}

/// Which engine is behind the pool; only migrations differ between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// Handle to the database; cheap to clone (the pool is shared).
#[derive(Debug, Clone)]
pub struct Datastore {
    pool: AnyPool,
    /// Latency per operation, when the daemon exports metrics.
    latency: Option<prometheus::HistogramVec>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    pub spiffe_id: EntrySpiffeId,
    pub parent_id: SpiffeId,
    pub selectors: Vec<Selector>,
    /// None: the authority's default (stored as whole seconds).
    pub x509_ttl: Option<Duration>,
    pub jwt_ttl: Option<Duration>,
    pub dns_names: Vec<String>,
    pub hint: String,
    pub admin: bool,
    pub expires_at: Option<UnixTime>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    pub spiffe_id: EntrySpiffeId,
    pub parent_id: SpiffeId,
    pub selectors: Vec<Selector>,
    pub x509_ttl: Option<Duration>,
    pub jwt_ttl: Option<Duration>,
    pub dns_names: Vec<String>,
    pub hint: String,
    pub admin: bool,
    pub expires_at: Option<UnixTime>,
    pub revision: i64,
    pub created_at: UnixTime,
}

/// Which entries to list: all of the given conditions hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EntryFilter {
    pub spiffe_id: Option<String>,
    pub parent_id: Option<String>,
    /// The entry has every one of these selectors (and maybe more).
    pub selectors: Vec<Selector>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRecord {
    pub id: SpiffeId,
    pub method: String,
    pub selectors: Vec<Selector>,
    pub serial: String,
    /// The agent SVID issued before `serial`, accepted until the agent presents
    /// `serial`. When recording an attestation: the SVID the caller presented,
    /// which must still be accepted at the time of the write (None: a fresh
    /// attestation, which supersedes every earlier SVID).
    pub prev_serial: Option<String>,
    pub expires_at: UnixTime,
    pub attested_at: UnixTime,
    pub evicted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// Assigned by the database; `None` on events not yet stored (ignored when writing).
    pub id: Option<i64>,
    pub time: UnixTime,
    pub kind: AuditKind,
    pub agent_id: SpiffeId,
    pub node_selectors: Vec<Selector>,
    /// Empty when the event is about no one entry.
    pub entry_id: String,
    /// The ID issued; None when the event issued none (stored as "").
    pub spiffe_id: Option<SpiffeId>,
    pub serial: String,
    /// When what was issued expires; None: nothing was (stored as 0).
    pub expires_at: Option<UnixTime>,
    pub audience: Vec<String>,
    pub detail: String,
}

impl AuditEvent {
    /// An event of `kind` about `agent_id` at `time`, every other field empty.
    pub fn new(kind: AuditKind, time: UnixTime, agent_id: SpiffeId) -> Self {
        AuditEvent {
            id: None,
            time,
            kind,
            agent_id,
            node_selectors: Vec::new(),
            entry_id: String::new(),
            spiffe_id: None,
            serial: String::new(),
            expires_at: None,
            audience: Vec::new(),
            detail: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditFilter {
    pub spiffe_id: Option<String>,
    pub agent_id: Option<String>,
    /// Events at or after `since`, before `until`.
    pub since: Option<UnixTime>,
    pub until: Option<UnixTime>,
    /// Default [`AUDIT_DEFAULT_LIMIT`], capped at [`AUDIT_MAX_LIMIT`].
    pub limit: Option<u32>,
}

impl AuditFilter {
    /// The most events `list_audit` returns for this filter.
    pub fn effective_limit(&self) -> u32 {
        self.limit
            .unwrap_or(AUDIT_DEFAULT_LIMIT)
            .min(AUDIT_MAX_LIMIT)
    }
}

pub const AUDIT_DEFAULT_LIMIT: u32 = 1000;
pub const AUDIT_MAX_LIMIT: u32 = 10_000;

impl Datastore {
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Observes every operation's latency in `h` (label: the operation).
    pub fn with_latency(mut self, h: prometheus::HistogramVec) -> Self {
        self.latency = Some(h);
        self
    }

    /// Observes on drop, so every return path of an operation is timed.
    fn timer(&self, op: &str) -> Option<prometheus::HistogramTimer> {
        self.latency
            .as_ref()
            .map(|h| h.with_label_values(&[op]).start_timer())
    }

    /// A trivial query: the database answers.
    pub async fn ping(&self) -> Result<(), DatastoreError> {
        let _t = self.timer("ping");
        sqlx::query("SELECT 1").fetch_one(&self.pool).await?;
        Ok(())
    }
}
