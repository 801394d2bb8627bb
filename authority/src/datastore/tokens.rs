//! Join tokens: single use, with an expiry. Stored by hash only.

use sqlx::{Any, Transaction};
use tessera_common::UnixTime;

use super::rows;
use super::{Datastore, DatastoreError};

impl Datastore {
    pub async fn create_join_token(
        &self,
        token: &str,
        expires_at: UnixTime,
    ) -> Result<(), DatastoreError> {
        let _t = self.timer("create_join_token");
        let res = sqlx::query("INSERT INTO join_tokens (token_hash, expires_at) VALUES ($1, $2)")
            .bind(rows::token_hash(token))
            .bind(expires_at.secs())
            .execute(&self.pool)
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if rows::is_unique_violation(&e) => {
                Err(DatastoreError::AlreadyExists("join token".into()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// True if the token exists and `now` is before its expiry. Does not consume it.
    pub async fn join_token_valid(
        &self,
        token: &str,
        now: UnixTime,
    ) -> Result<bool, DatastoreError> {
        let _t = self.timer("join_token_valid");
        let row = sqlx::query(
            "SELECT expires_at FROM join_tokens WHERE token_hash = $1 AND expires_at > $2",
        )
        .bind(rows::token_hash(token))
        .bind(now.secs())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// Deletes tokens expired at `now`; returns how many.
    pub async fn purge_expired_tokens(&self, now: UnixTime) -> Result<u64, DatastoreError> {
        let _t = self.timer("purge_expired_tokens");
        let res = sqlx::query("DELETE FROM join_tokens WHERE expires_at <= $1")
            .bind(now.secs())
            .execute(&self.pool)
            .await?;
        Ok(res.rows_affected())
    }
}

/// Consumes the token inside `tx`. The DELETE is the check, so two attestations racing
/// with the same token cannot both succeed.
pub(super) async fn consume(
    tx: &mut Transaction<'_, Any>,
    token: &str,
    now: UnixTime,
) -> Result<(), DatastoreError> {
    let hash = rows::token_hash(token);
    let deleted = sqlx::query("DELETE FROM join_tokens WHERE token_hash = $1 AND expires_at > $2")
        .bind(&hash)
        .bind(now.secs())
        .execute(&mut **tx)
        .await?
        .rows_affected();
    match deleted {
        1 => Ok(()),
        0 => {
            let expired = sqlx::query("SELECT expires_at FROM join_tokens WHERE token_hash = $1")
                .bind(&hash)
                .fetch_optional(&mut **tx)
                .await?;
            match expired {
                Some(_) => Err(DatastoreError::TokenExpired),
                None => Err(DatastoreError::TokenUsed),
            }
        }
        n => Err(DatastoreError::Corrupt(format!(
            "join token matched {n} rows"
        ))),
    }
}
