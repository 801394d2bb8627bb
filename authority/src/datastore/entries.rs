//! Registration entries and the entries change counter.

use sqlx::any::AnyRow;
use sqlx::{Any, Transaction};
use tessera_common::duration::whole_secs;
use tessera_common::UnixTime;

use super::rows::{self, RowReader};
use super::{Datastore, DatastoreError, Entry, EntryFilter, NewEntry};

pub(super) const COLUMNS: &str =
    "id, spiffe_id, parent_id, selectors, x509_ttl, jwt_ttl, dns_names, \
                       hint, admin, expires_at, revision, created_at";

impl Datastore {
    /// Stores a new entry. `AlreadyExists` names the entry with the same parent ID,
    /// SPIFFE ID and selector set (order and repeats ignored).
    pub async fn create_entry(&self, e: NewEntry) -> Result<Entry, DatastoreError> {
        let _t = self.timer("create_entry");
        let mut created = self.insert_entries(vec![e]).await.map_err(|(_, e)| e)?;
        created
            .pop()
            .ok_or_else(|| DatastoreError::Corrupt("no entry stored".into()))
    }

    /// Stores every entry in one transaction, or none: the error carries the index
    /// of the entry that could not be stored.
    pub async fn create_entries(
        &self,
        entries: Vec<NewEntry>,
    ) -> Result<Vec<Entry>, (usize, DatastoreError)> {
        let _t = self.timer("create_entries");
        self.insert_entries(entries).await
    }

    async fn insert_entries(
        &self,
        entries: Vec<NewEntry>,
    ) -> Result<Vec<Entry>, (usize, DatastoreError)> {
        let at = |i: usize| move |e: DatastoreError| (i, e);
        let now = UnixTime::now();
        let mut tx = self.pool.begin().await.map_err(|e| (0, e.into()))?;
        let mut stored: Vec<Entry> = Vec::with_capacity(entries.len());
        let mut keys: Vec<String> = Vec::with_capacity(entries.len());
        for (i, e) in entries.into_iter().enumerate() {
            let entry = e.stored(hex::encode(rand::random::<[u8; 16]>()), now);
            let key = rows::selectors_key(&entry.selectors).map_err(at(i))?;
            // The unique index would catch it too, but could not say which entry.
            if let Some(j) = stored.iter().zip(&keys).position(|(s, k)| {
                *k == key && s.spiffe_id == entry.spiffe_id && s.parent_id == entry.parent_id
            }) {
                return Err((
                    i,
                    DatastoreError::AlreadyExists(format!(
                        "same parent ID, SPIFFE ID and selectors as entries[{j}]"
                    )),
                ));
            }
            match insert(&mut tx, &entry, &key).await {
                Ok(()) => {
                    stored.push(entry);
                    keys.push(key);
                }
                Err(DatastoreError::Query(err)) if rows::is_unique_violation(&err) => {
                    // Rolled back before looking up the other entry.
                    drop(tx);
                    return Err((i, self.duplicate_of(&entry, &key).await));
                }
                Err(err) => return Err((i, err)),
            }
        }
        bump_entries_revision(&mut tx).await.map_err(at(0))?;
        tx.commit().await.map_err(|e| (0, e.into()))?;
        Ok(stored)
    }

    pub(super) async fn duplicate_of(&self, e: &Entry, key: &str) -> DatastoreError {
        let existing = sqlx::query(
            "SELECT id FROM entries WHERE parent_id = $1 AND spiffe_id = $2 AND selectors_key = $3",
        )
        .bind(e.parent_id.as_str())
        .bind(e.spiffe_id.as_str())
        .bind(key)
        .fetch_optional(&self.pool)
        .await;
        let id = match existing {
            Ok(Some(row)) => RowReader {
                row: &row,
                what: "entries".into(),
            }
            .string("id")
            .ok(),
            _ => None,
        };
        DatastoreError::AlreadyExists(format!(
            "entry {} has the same parent ID, SPIFFE ID and selectors",
            id.as_deref().unwrap_or("(unknown)")
        ))
    }

    pub async fn get_entry(&self, id: &str) -> Result<Option<Entry>, DatastoreError> {
        let _t = self.timer("get_entry");
        let sql = format!("SELECT {COLUMNS} FROM entries WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(entry_from_row).transpose()
    }

    /// All entries, oldest first.
    pub async fn list_entries(&self) -> Result<Vec<Entry>, DatastoreError> {
        self.find_entries(&EntryFilter::default()).await
    }

    /// The entries matching every part of `f`, oldest first.
    pub async fn find_entries(&self, f: &EntryFilter) -> Result<Vec<Entry>, DatastoreError> {
        let _t = self.timer("list_entries");
        let mut conds = Vec::new();
        let mut binds = Vec::new();
        for (col, value) in [("spiffe_id", &f.spiffe_id), ("parent_id", &f.parent_id)] {
            if let Some(v) = value {
                binds.push(v.clone());
                conds.push(format!("{col} = ${}", binds.len()));
            }
        }
        // Each selector's stored JSON object as a substring narrows the rows in the
        // database (SQLite's LIKE ignores ASCII case); the exact check follows.
        for s in &f.selectors {
            binds.push(format!("%{}%", rows::like_escape(&rows::selector_json(s)?)));
            conds.push(format!("selectors LIKE ${} ESCAPE '\\'", binds.len()));
        }
        let mut sql = format!("SELECT {COLUMNS} FROM entries");
        if !conds.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conds.join(" AND "));
        }
        sql.push_str(" ORDER BY created_at, id");
        let mut query = sqlx::query(&sql);
        for b in binds {
            query = query.bind(b);
        }
        let rows = query.fetch_all(&self.pool).await?;
        let mut entries = Vec::with_capacity(rows.len());
        for row in &rows {
            let e = entry_from_row(row)?;
            if f.selectors.iter().all(|s| e.selectors.contains(s)) {
                entries.push(e);
            }
        }
        Ok(entries)
    }

    /// True if the entry existed.
    pub async fn delete_entry(&self, id: &str) -> Result<bool, DatastoreError> {
        let _t = self.timer("delete_entry");
        let mut tx = self.pool.begin().await?;
        let deleted = sqlx::query("DELETE FROM entries WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Ok(false);
        }
        bump_entries_revision(&mut tx).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Changes whenever any entry is created or deleted.
    pub async fn entries_revision(&self) -> Result<i64, DatastoreError> {
        let _t = self.timer("entries_revision");
        let row = sqlx::query("SELECT value FROM counters WHERE name = 'entries'")
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| DatastoreError::Corrupt("counters row 'entries' is missing".into()))?;
        RowReader {
            row: &row,
            what: "counters row entries".into(),
        }
        .i64("value")
    }
}

impl NewEntry {
    /// The entry as first stored: ID `id`, revision 1, created at `now`.
    pub(super) fn stored(self, id: String, now: UnixTime) -> Entry {
        Entry {
            id,
            spiffe_id: self.spiffe_id,
            parent_id: self.parent_id,
            selectors: self.selectors,
            x509_ttl: self.x509_ttl,
            jwt_ttl: self.jwt_ttl,
            dns_names: self.dns_names,
            hint: self.hint,
            admin: self.admin,
            expires_at: self.expires_at,
            revision: 1,
            created_at: now,
        }
    }
}

async fn insert(
    tx: &mut Transaction<'_, Any>,
    entry: &Entry,
    selectors_key: &str,
) -> Result<(), DatastoreError> {
    sqlx::query(
        "INSERT INTO entries (id, spiffe_id, parent_id, selectors, selectors_key, x509_ttl, \
         jwt_ttl, dns_names, hint, admin, expires_at, revision, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(&entry.id)
    .bind(entry.spiffe_id.as_str())
    .bind(entry.parent_id.as_str())
    .bind(rows::selectors_json(&entry.selectors)?)
    .bind(selectors_key)
    .bind(entry.x509_ttl.map(whole_secs))
    .bind(entry.jwt_ttl.map(whole_secs))
    .bind(rows::strings_json(&entry.dns_names)?)
    .bind(&entry.hint)
    .bind(i64::from(entry.admin))
    .bind(entry.expires_at.map(UnixTime::secs))
    .bind(entry.revision)
    .bind(entry.created_at.secs())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(super) async fn bump_entries_revision(
    tx: &mut Transaction<'_, Any>,
) -> Result<(), DatastoreError> {
    let n = sqlx::query("UPDATE counters SET value = value + 1 WHERE name = 'entries'")
        .execute(&mut **tx)
        .await?
        .rows_affected();
    if n != 1 {
        return Err(DatastoreError::Corrupt(
            "counters row 'entries' is missing".into(),
        ));
    }
    Ok(())
}

pub(super) fn entry_from_row(row: &AnyRow) -> Result<Entry, DatastoreError> {
    let id: String = RowReader {
        row,
        what: "entries row".into(),
    }
    .string("id")?;
    let r = RowReader {
        row,
        what: format!("entries row {id}"),
    };
    Ok(Entry {
        spiffe_id: r.entry_spiffe_id("spiffe_id")?,
        parent_id: r.spiffe_id("parent_id")?,
        selectors: r.selectors("selectors")?,
        x509_ttl: r.opt_secs("x509_ttl")?,
        jwt_ttl: r.opt_secs("jwt_ttl")?,
        dns_names: r.strings("dns_names")?,
        hint: r.string("hint")?,
        admin: r.bool("admin")?,
        expires_at: r.opt_time("expires_at")?,
        revision: r.i64("revision")?,
        created_at: r.time("created_at")?,
        id,
    })
}
