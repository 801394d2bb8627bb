//! Attested agents. Attestation and renewal write the agent row and the audit event in
//! one transaction, so the trail never misses an issuance and never records a failed one.

use sqlx::any::AnyRow;

use super::rows::{self, RowReader};
use super::{audit, tokens, AgentRecord, AuditEvent, Datastore, DatastoreError};

const COLUMNS: &str = "id, method, selectors, serial, expires_at, attested_at, evicted";

impl Datastore {
    /// Consumes `consume_token` (if any; expiry judged at `audit.time`), inserts or
    /// replaces the agent row unless it is evicted, and stores `audit`: all or nothing.
    pub async fn record_attestation(
        &self,
        agent: &AgentRecord,
        audit: &AuditEvent,
        consume_token: Option<&str>,
    ) -> Result<(), DatastoreError> {
        let _t = self.timer("record_attestation");
        let mut tx = self.pool.begin().await?;
        if let Some(token) = consume_token {
            tokens::consume(&mut tx, token, audit.time).await?;
        }
        // The WHERE makes the evicted check part of the write itself: no window in which
        // another replica's eviction could be overwritten.
        let written = sqlx::query(
            "INSERT INTO agents (id, method, selectors, serial, expires_at, attested_at, evicted) \
             VALUES ($1, $2, $3, $4, $5, $6, 0) \
             ON CONFLICT (id) DO UPDATE SET method = excluded.method, \
             selectors = excluded.selectors, serial = excluded.serial, \
             expires_at = excluded.expires_at, attested_at = excluded.attested_at \
             WHERE agents.evicted = 0",
        )
        .bind(&agent.id)
        .bind(&agent.method)
        .bind(rows::selectors_json(&agent.selectors)?)
        .bind(&agent.serial)
        .bind(agent.expires_at)
        .bind(agent.attested_at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if written == 0 {
            return Err(DatastoreError::Evicted(agent.id.clone()));
        }
        audit::insert(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records a renewed agent SVID and its audit event in one transaction.
    pub async fn renew_agent(
        &self,
        id: &str,
        serial: &str,
        expires_at: i64,
        audit: &AuditEvent,
    ) -> Result<(), DatastoreError> {
        let _t = self.timer("renew_agent");
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(
            "UPDATE agents SET serial = $1, expires_at = $2 WHERE id = $3 AND evicted = 0",
        )
        .bind(serial)
        .bind(expires_at)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            let known = sqlx::query("SELECT id FROM agents WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            return Err(match known {
                Some(_) => DatastoreError::Evicted(id.to_string()),
                None => DatastoreError::NotFound(format!("agent {id}")),
            });
        }
        audit::insert(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn get_agent(&self, id: &str) -> Result<Option<AgentRecord>, DatastoreError> {
        let _t = self.timer("get_agent");
        let sql = format!("SELECT {COLUMNS} FROM agents WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(agent_from_row).transpose()
    }

    /// All agents, evicted ones included, by ID.
    pub async fn list_agents(&self) -> Result<Vec<AgentRecord>, DatastoreError> {
        let _t = self.timer("list_agents");
        let sql = format!("SELECT {COLUMNS} FROM agents ORDER BY id");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(agent_from_row).collect()
    }

    /// Marks the agent evicted; the row stays for the record. False if unknown.
    pub async fn evict_agent(&self, id: &str) -> Result<bool, DatastoreError> {
        let _t = self.timer("evict_agent");
        let res = sqlx::query("UPDATE agents SET evicted = 1 WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(res.rows_affected() > 0)
    }
}

fn agent_from_row(row: &AnyRow) -> Result<AgentRecord, DatastoreError> {
    let id = RowReader {
        row,
        what: "agents row".into(),
    }
    .string("id")?;
    let r = RowReader {
        row,
        what: format!("agents row {id}"),
    };
    Ok(AgentRecord {
        method: r.string("method")?,
        selectors: r.selectors("selectors")?,
        serial: r.string("serial")?,
        expires_at: r.i64("expires_at")?,
        attested_at: r.i64("attested_at")?,
        evicted: r.bool("evicted")?,
        id,
    })
}
