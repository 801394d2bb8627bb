//! Column encoding shared by the tables: JSON lists, 0/1 booleans, SPIFFE IDs and
//! audit kinds as text, times as Unix seconds, and reads that turn bad stored data
//! into `CorruptColumn` (naming row and column) instead of a panic.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::Row;
use std::time::Duration;
use tessera_common::{Selector, SpiffeId, UnixTime};

use super::{AuditKind, DatastoreError, EntrySpiffeId};

/// Stored as `{"type": .., "value": ..}` so any selector round-trips without re-parsing.
#[derive(Serialize, Deserialize)]
struct StoredSelector {
    #[serde(rename = "type")]
    kind: String,
    value: String,
}

pub(super) fn selectors_json(selectors: &[Selector]) -> Result<String, DatastoreError> {
    let stored: Vec<StoredSelector> = selectors
        .iter()
        .map(|s| StoredSelector {
            kind: s.kind.clone(),
            value: s.value.clone(),
        })
        .collect();
    serde_json::to_string(&stored).map_err(|e| DatastoreError::Corrupt(e.to_string()))
}

/// One selector as it appears inside [`selectors_json`]'s array.
pub(super) fn selector_json(s: &Selector) -> Result<String, DatastoreError> {
    let one = selectors_json(std::slice::from_ref(s))?;
    Ok(one
        .strip_prefix('[')
        .and_then(|o| o.strip_suffix(']'))
        .unwrap_or(&one)
        .to_string())
}

/// `s` matched literally by `LIKE ... ESCAPE '\'`.
pub(super) fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

pub(super) fn strings_json(items: &[String]) -> Result<String, DatastoreError> {
    serde_json::to_string(items).map_err(|e| DatastoreError::Corrupt(e.to_string()))
}

/// SHA-256 of the sorted, deduplicated selectors: equal for equal selector sets.
pub(super) fn selectors_key(selectors: &[Selector]) -> Result<String, DatastoreError> {
    let mut set = selectors.to_vec();
    set.sort();
    set.dedup();
    Ok(hex::encode(Sha256::digest(selectors_json(&set)?)))
}

pub(super) fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Reads one row of one table; `what` names it in errors ("entries row <id>").
pub(super) struct RowReader<'a> {
    pub row: &'a AnyRow,
    pub what: String,
}

impl RowReader<'_> {
    fn corrupt(&self, col: &str, e: impl std::fmt::Display) -> DatastoreError {
        DatastoreError::CorruptColumn {
            row: self.what.clone(),
            column: col.to_string(),
            problem: e.to_string(),
        }
    }

    /// `col`'s text parsed by `parse`; a failure names the row and column.
    fn parsed<T, E: std::fmt::Display>(
        &self,
        col: &str,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Result<T, DatastoreError> {
        parse(&self.string(col)?).map_err(|e| self.corrupt(col, e))
    }

    pub fn i64(&self, col: &str) -> Result<i64, DatastoreError> {
        self.row.try_get(col).map_err(|e| self.corrupt(col, e))
    }

    pub fn opt_i64(&self, col: &str) -> Result<Option<i64>, DatastoreError> {
        self.row.try_get(col).map_err(|e| self.corrupt(col, e))
    }

    pub fn string(&self, col: &str) -> Result<String, DatastoreError> {
        self.row.try_get(col).map_err(|e| self.corrupt(col, e))
    }

    pub fn opt_string(&self, col: &str) -> Result<Option<String>, DatastoreError> {
        self.row.try_get(col).map_err(|e| self.corrupt(col, e))
    }

    pub fn spiffe_id(&self, col: &str) -> Result<SpiffeId, DatastoreError> {
        self.parsed(col, str::parse)
    }

    /// "" stands for no ID.
    pub fn opt_spiffe_id(&self, col: &str) -> Result<Option<SpiffeId>, DatastoreError> {
        self.parsed(col, |s| (!s.is_empty()).then(|| s.parse()).transpose())
    }

    pub fn entry_spiffe_id(&self, col: &str) -> Result<EntrySpiffeId, DatastoreError> {
        self.parsed(col, EntrySpiffeId::parse)
    }

    pub fn audit_kind(&self, col: &str) -> Result<AuditKind, DatastoreError> {
        self.parsed(col, str::parse)
    }

    pub fn time(&self, col: &str) -> Result<UnixTime, DatastoreError> {
        self.i64(col).map(UnixTime::from_secs)
    }

    /// Whole seconds, never negative; NULL stands for none.
    pub fn opt_secs(&self, col: &str) -> Result<Option<Duration>, DatastoreError> {
        self.opt_i64(col)?
            .map(|s| u64::try_from(s).map(Duration::from_secs))
            .transpose()
            .map_err(|_| self.corrupt(col, "a negative duration"))
    }

    /// NULL stands for none.
    pub fn opt_time(&self, col: &str) -> Result<Option<UnixTime>, DatastoreError> {
        Ok(self.opt_i64(col)?.map(UnixTime::from_secs))
    }

    /// 0 stands for none, in NOT NULL columns.
    pub fn time_or_zero(&self, col: &str) -> Result<Option<UnixTime>, DatastoreError> {
        Ok(Some(self.time(col)?).filter(|t| t.secs() != 0))
    }

    pub fn bool(&self, col: &str) -> Result<bool, DatastoreError> {
        match self.i64(col)? {
            0 => Ok(false),
            1 => Ok(true),
            n => Err(self.corrupt(col, format!("{n} is not 0 or 1"))),
        }
    }

    pub fn selectors(&self, col: &str) -> Result<Vec<Selector>, DatastoreError> {
        let stored: Vec<StoredSelector> =
            serde_json::from_str(&self.string(col)?).map_err(|e| self.corrupt(col, e))?;
        Ok(stored
            .into_iter()
            .map(|s| Selector::new(s.kind, s.value))
            .collect())
    }

    pub fn strings(&self, col: &str) -> Result<Vec<String>, DatastoreError> {
        serde_json::from_str(&self.string(col)?).map_err(|e| self.corrupt(col, e))
    }
}

pub(super) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}
