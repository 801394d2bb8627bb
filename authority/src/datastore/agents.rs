//! Attested agents. Attestation and renewal write the agent row and the audit event in
//! one transaction, so the trail never misses an issuance and never records a failed one.

use sqlx::any::AnyRow;
use sqlx::Row;
use tessera_common::{SpiffeId, UnixTime};

use super::rows::{self, RowReader};
use super::{audit, tokens, AgentRecord, AuditEvent, Datastore, DatastoreError};

const COLUMNS: &str =
    "id, method, selectors, serial, prev_serial, expires_at, attested_at, evicted";

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
        // The WHERE makes the evicted and superseded checks part of the write itself:
        // no window in which another replica's eviction or renewal could be overwritten.
        let written = sqlx::query(
            "INSERT INTO agents \
             (id, method, selectors, serial, prev_serial, expires_at, attested_at, evicted) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0) \
             ON CONFLICT (id) DO UPDATE SET method = excluded.method, \
             selectors = excluded.selectors, serial = excluded.serial, \
             prev_serial = excluded.prev_serial, \
             expires_at = excluded.expires_at, attested_at = excluded.attested_at \
             WHERE agents.evicted = 0 AND (excluded.prev_serial IS NULL \
             OR agents.serial = excluded.prev_serial OR agents.prev_serial = excluded.prev_serial)",
        )
        .bind(agent.id.as_str())
        .bind(&agent.method)
        .bind(rows::selectors_json(&agent.selectors)?)
        .bind(&agent.serial)
        .bind(&agent.prev_serial)
        .bind(agent.expires_at.secs())
        .bind(agent.attested_at.secs())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if written == 0 {
            return Err(refusal(&mut tx, &agent.id).await?);
        }
        audit::insert(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records a renewed agent SVID and its audit event in one transaction, if the
    /// SVID `presented` for the renewal is still accepted (the latest or the one
    /// before it); it becomes the one before the new SVID.
    pub async fn renew_agent(
        &self,
        id: &SpiffeId,
        presented: &str,
        serial: &str,
        expires_at: UnixTime,
        audit: &AuditEvent,
    ) -> Result<(), DatastoreError> {
        let _t = self.timer("renew_agent");
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(
            "UPDATE agents SET serial = $1, prev_serial = $2, expires_at = $3 \
             WHERE id = $4 AND evicted = 0 AND (serial = $2 OR prev_serial = $2)",
        )
        .bind(serial)
        .bind(presented)
        .bind(expires_at.secs())
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            return Err(refusal(&mut tx, id).await?);
        }
        audit::insert(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Ends the renewal overlap once the agent presents its latest SVID `serial`.
    pub async fn retire_prev_serial(
        &self,
        id: &SpiffeId,
        serial: &str,
    ) -> Result<(), DatastoreError> {
        let _t = self.timer("retire_prev_serial");
        sqlx::query("UPDATE agents SET prev_serial = NULL WHERE id = $1 AND serial = $2")
            .bind(id.as_str())
            .bind(serial)
            .execute(&self.pool)
            .await?;
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

/// Why an agent write matched no row: unknown, evicted, or a superseded SVID.
async fn refusal(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: &SpiffeId,
) -> Result<DatastoreError, DatastoreError> {
    let row = sqlx::query("SELECT evicted FROM agents WHERE id = $1")
        .bind(id.as_str())
        .fetch_optional(&mut **tx)
        .await?;
    Ok(match row {
        None => DatastoreError::NotFound(format!("agent {id}")),
        Some(r) if r.try_get::<i64, _>(0)? != 0 => DatastoreError::Evicted(id.to_string()),
        Some(_) => DatastoreError::Superseded(id.to_string()),
    })
}

fn agent_from_row(row: &AnyRow) -> Result<AgentRecord, DatastoreError> {
    let id = RowReader {
        row,
        what: "agents row".into(),
    }
    .string("id")?;
    let r = RowReader {
        row,
        what: format!("agents row {id:?}"),
    };
    Ok(AgentRecord {
        id: r.spiffe_id("id")?,
        method: r.string("method")?,
        selectors: r.selectors("selectors")?,
        serial: r.string("serial")?,
        prev_serial: r.opt_string("prev_serial")?,
        expires_at: r.time("expires_at")?,
        attested_at: r.time("attested_at")?,
        evicted: r.bool("evicted")?,
    })
}
