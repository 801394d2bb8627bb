//! The audit trail: append-only issuance and attestation events.

use sqlx::any::AnyRow;
use sqlx::{Any, Transaction};
use tessera_common::{SpiffeId, UnixTime};

use super::rows::{self, RowReader};
use super::{AuditEvent, AuditFilter, Datastore, DatastoreError};

impl Datastore {
    /// Stores a batch of events in one transaction (`id` is ignored).
    pub async fn record_audit(&self, events: &[AuditEvent]) -> Result<(), DatastoreError> {
        let _t = self.timer("record_audit");
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for e in events {
            insert(&mut tx, e).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Matching events, newest first, at most `f.limit` (default 1000, max 10000).
    pub async fn list_audit(&self, f: &AuditFilter) -> Result<Vec<AuditEvent>, DatastoreError> {
        let _t = self.timer("list_audit");
        let mut sql = String::from(
            "SELECT id, event_time, kind, agent_id, node_selectors, entry_id, spiffe_id, \
             serial, expires_at, audience, detail FROM audit",
        );
        let mut conds = Vec::new();
        let mut binds: Vec<&str> = Vec::new();
        for (col, value) in [("spiffe_id", &f.spiffe_id), ("agent_id", &f.agent_id)] {
            if let Some(v) = value {
                binds.push(v);
                conds.push(format!("{col} = ${}", binds.len()));
            }
        }
        let mut times = Vec::new();
        for (op, value) in [(">=", f.since), ("<", f.until)] {
            if let Some(t) = value {
                times.push(t.secs());
                conds.push(format!("event_time {op} ${}", binds.len() + times.len()));
            }
        }
        if !conds.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conds.join(" AND "));
        }
        sql.push_str(&format!(
            " ORDER BY event_time DESC, id DESC LIMIT ${}",
            binds.len() + times.len() + 1
        ));
        let limit = f.effective_limit();
        let mut query = sqlx::query(&sql);
        for b in binds {
            query = query.bind(b);
        }
        for t in times {
            query = query.bind(t);
        }
        let rows = query.bind(i64::from(limit)).fetch_all(&self.pool).await?;
        rows.iter().map(event_from_row).collect()
    }
}

pub(super) async fn insert(
    tx: &mut Transaction<'_, Any>,
    e: &AuditEvent,
) -> Result<(), DatastoreError> {
    sqlx::query(
        "INSERT INTO audit (event_time, kind, agent_id, node_selectors, entry_id, spiffe_id, \
         serial, expires_at, audience, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(e.time.secs())
    .bind(e.kind.as_str())
    .bind(e.agent_id.as_str())
    .bind(rows::selectors_json(&e.node_selectors)?)
    .bind(&e.entry_id)
    .bind(e.spiffe_id.as_ref().map_or("", SpiffeId::as_str))
    .bind(&e.serial)
    .bind(e.expires_at.map_or(0, UnixTime::secs))
    .bind(rows::strings_json(&e.audience)?)
    .bind(&e.detail)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn event_from_row(row: &AnyRow) -> Result<AuditEvent, DatastoreError> {
    let id = RowReader {
        row,
        what: "audit row".into(),
    }
    .i64("id")?;
    let r = RowReader {
        row,
        what: format!("audit row {id}"),
    };
    Ok(AuditEvent {
        id: Some(id),
        time: r.time("event_time")?,
        kind: r.audit_kind("kind")?,
        agent_id: r.spiffe_id("agent_id")?,
        node_selectors: r.selectors("node_selectors")?,
        entry_id: r.string("entry_id")?,
        spiffe_id: r.opt_spiffe_id("spiffe_id")?,
        serial: r.string("serial")?,
        expires_at: r.time_or_zero("expires_at")?,
        audience: r.strings("audience")?,
        detail: r.string("detail")?,
    })
}
