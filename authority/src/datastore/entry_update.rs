//! Changing an entry in place: a compare-and-swap on its revision, so a change
//! computed from one revision is never written over a later one (the admin API
//! re-reads and merges again, or refuses when the operator named a revision).

use super::entries::bump_entries_revision;
use super::rows;
use super::{Datastore, DatastoreError, Entry};
use tessera_common::duration::whole_secs;

impl Datastore {
    /// Stores `e`'s selectors, TTLs, DNS names, hint, admin flag and expiry if the
    /// stored entry is still at `e.revision`; returns it at the next revision.
    /// `Changed` if someone else changed it since it was read, `NotFound` if gone,
    /// `AlreadyExists` if the new selectors make it a duplicate.
    pub async fn update_entry(&self, e: &Entry) -> Result<Entry, DatastoreError> {
        let _t = self.timer("update_entry");
        let key = rows::selectors_key(&e.selectors)?;
        let mut next = e.clone();
        next.revision = e.revision + 1;
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(
            "UPDATE entries SET selectors = $1, selectors_key = $2, x509_ttl = $3, \
             jwt_ttl = $4, dns_names = $5, hint = $6, admin = $7, expires_at = $8, \
             revision = $9 WHERE id = $10 AND revision = $11",
        )
        .bind(rows::selectors_json(&next.selectors)?)
        .bind(&key)
        .bind(next.x509_ttl.map(whole_secs))
        .bind(next.jwt_ttl.map(whole_secs))
        .bind(rows::strings_json(&next.dns_names)?)
        .bind(&next.hint)
        .bind(i64::from(next.admin))
        .bind(next.expires_at.map(tessera_common::UnixTime::secs))
        .bind(next.revision)
        .bind(&e.id)
        .bind(e.revision)
        .execute(&mut *tx)
        .await;
        match updated {
            Ok(r) if r.rows_affected() == 1 => {}
            Ok(_) => {
                drop(tx);
                return Err(match self.get_entry(&e.id).await? {
                    None => DatastoreError::NotFound(format!("entry {}", e.id)),
                    Some(now) => DatastoreError::Changed(format!(
                        "entry {} changed while it was being updated (revision {} is now {}); \
                         retry",
                        e.id, e.revision, now.revision
                    )),
                });
            }
            Err(err) if rows::is_unique_violation(&err) => {
                drop(tx);
                return Err(self.duplicate_of(&next, &key).await);
            }
            Err(err) => return Err(err.into()),
        }
        bump_entries_revision(&mut tx).await?;
        tx.commit().await?;
        Ok(next)
    }
}
