//! The authority's datastore: registration entries, join tokens, attested agents and the
//! audit trail. One code path for SQLite (default) and PostgreSQL via `sqlx::AnyPool`, so
//! only types the Any driver carries are used: i64 (also for booleans and Unix-second
//! timestamps) and String (JSON for lists).

mod agents;
mod audit;
mod connect;
mod entries;
mod entry_lookup;
mod entry_update;
mod migrations;
mod rows;
#[cfg(test)]
mod tests;
mod tokens;
mod tpm_clock;

use sqlx::AnyPool;
use tessera_common::Selector;

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

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewEntry {
    pub spiffe_id: String,
    pub parent_id: String,
    pub selectors: Vec<Selector>,
    pub x509_ttl: Option<i64>,
    pub jwt_ttl: Option<i64>,
    pub dns_names: Vec<String>,
    pub hint: String,
    pub admin: bool,
    pub expires_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entry {
    pub id: String,
    pub spiffe_id: String,
    pub parent_id: String,
    pub selectors: Vec<Selector>,
    pub x509_ttl: Option<i64>,
    pub jwt_ttl: Option<i64>,
    pub dns_names: Vec<String>,
    pub hint: String,
    pub admin: bool,
    pub expires_at: Option<i64>,
    pub revision: i64,
    pub created_at: i64,
}

/// Which entries to list: all of the given conditions hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EntryFilter {
    pub spiffe_id: Option<String>,
    pub parent_id: Option<String>,
    /// The entry has every one of these selectors (and maybe more).
    pub selectors: Vec<Selector>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AgentRecord {
    pub id: String,
    pub method: String,
    pub selectors: Vec<Selector>,
    pub serial: String,
    /// The agent SVID issued before `serial`, accepted until the agent presents
    /// `serial`. When recording an attestation: the SVID the caller presented,
    /// which must still be accepted at the time of the write (None: a fresh
    /// attestation, which supersedes every earlier SVID).
    pub prev_serial: Option<String>,
    pub expires_at: i64,
    pub attested_at: i64,
    pub evicted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditEvent {
    /// Assigned by the database; `None` on events not yet stored (ignored when writing).
    pub id: Option<i64>,
    pub time: i64,
    pub kind: String,
    pub agent_id: String,
    pub node_selectors: Vec<Selector>,
    pub entry_id: String,
    pub spiffe_id: String,
    pub serial: String,
    pub expires_at: i64,
    pub audience: Vec<String>,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditFilter {
    pub spiffe_id: Option<String>,
    pub agent_id: Option<String>,
    /// Unix seconds: events at or after `since`, before `until`.
    pub since: Option<i64>,
    pub until: Option<i64>,
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
