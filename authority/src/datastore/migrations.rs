//! Versioned schema migrations, one transaction each, recorded in `schema_version`.

use sqlx::{AnyPool, Row};

use super::{Backend, DatastoreError};

struct Migration {
    version: i64,
    sqlite: &'static str,
    postgres: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sqlite: include_str!("../../migrations/sqlite/0001_init.sql"),
        postgres: include_str!("../../migrations/postgres/0001_init.sql"),
    },
    Migration {
        version: 2,
        sqlite: include_str!("../../migrations/sqlite/0002_tpm_clock.sql"),
        postgres: include_str!("../../migrations/postgres/0002_tpm_clock.sql"),
    },
    Migration {
        version: 3,
        sqlite: include_str!("../../migrations/sqlite/0003_node_identity.sql"),
        postgres: include_str!("../../migrations/postgres/0003_node_identity.sql"),
    },
];

/// The newest schema this build knows.
pub const SCHEMA_VERSION: i64 = 3;

pub(super) async fn run(pool: &AnyPool, backend: Backend) -> Result<(), DatastoreError> {
    let fail = |what: &str, e: sqlx::Error| DatastoreError::Migrate(format!("{what}: {e}"));
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_version \
         (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .execute(pool)
    .await
    .map_err(|e| fail("creating schema_version", e))?;

    let current = current_version(pool)
        .await
        .map_err(|e| fail("reading schema_version", e))?;
    if current > SCHEMA_VERSION {
        return Err(DatastoreError::SchemaTooNew {
            found: current,
            supported: SCHEMA_VERSION,
        });
    }

    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        let what = format!("migration {}", m.version);
        let mut tx = pool.begin().await.map_err(|e| fail(&what, e))?;
        // Claim the version first: this write takes the lock, so a second authority
        // opening the same database at once waits here and then skips it.
        let claimed = sqlx::query(
            "INSERT INTO schema_version (version, applied_at) VALUES ($1, $2) \
             ON CONFLICT (version) DO NOTHING",
        )
        .bind(m.version)
        .bind(tessera_common::unix_now())
        .execute(&mut *tx)
        .await
        .map_err(|e| fail(&what, e))?
        .rows_affected();
        if claimed == 0 {
            continue; // dropping tx rolls back
        }
        let sql = match backend {
            Backend::Sqlite => m.sqlite,
            Backend::Postgres => m.postgres,
        };
        sqlx::raw_sql(sql)
            .execute(&mut *tx)
            .await
            .map_err(|e| fail(&what, e))?;
        tx.commit().await.map_err(|e| fail(&what, e))?;
        tracing::info!(version = m.version, "applied database schema migration");
    }
    Ok(())
}

async fn current_version(pool: &AnyPool) -> Result<i64, sqlx::Error> {
    let row = sqlx::query("SELECT version FROM schema_version ORDER BY version DESC LIMIT 1")
        .fetch_optional(pool)
        .await?;
    match row {
        Some(r) => r.try_get::<i64, _>("version"),
        None => Ok(0),
    }
}

#[cfg(test)]
pub(super) fn latest_known() -> i64 {
    MIGRATIONS.iter().map(|m| m.version).max().unwrap_or(0)
}
