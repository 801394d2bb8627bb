//! Entries looked up by a list of parent IDs or of entry IDs, so what one agent
//! may sign for is read without reading the whole fleet's entries. Both use
//! indexes: `entries_identity` leads with parent_id, and id is the primary key.

use super::entries::{entry_from_row, COLUMNS};
use super::{Datastore, DatastoreError, Entry};
use tessera_common::SpiffeId;

/// Most values bound in one `IN (...)` list; a longer list is split over several
/// queries (SQLite builds before 3.32 refuse more than 999 bound values).
const IN_LIST_MAX: usize = 500;

/// The columns an `IN (...)` lookup may use: never caller input.
#[derive(Clone, Copy)]
enum Column {
    Id,
    ParentId,
}

impl Datastore {
    /// The entries whose parent ID is one of `parents`, oldest first.
    pub async fn entries_with_parents(
        &self,
        parents: &[SpiffeId],
    ) -> Result<Vec<Entry>, DatastoreError> {
        let _t = self.timer("entries_with_parents");
        let parents = parents.iter().map(SpiffeId::as_str).collect();
        self.entries_where_in(Column::ParentId, parents).await
    }

    /// Those of the entries `ids` that exist, oldest first.
    pub async fn entries_with_ids(&self, ids: &[String]) -> Result<Vec<Entry>, DatastoreError> {
        let _t = self.timer("entries_with_ids");
        let ids = ids.iter().map(String::as_str).collect();
        self.entries_where_in(Column::Id, ids).await
    }

    async fn entries_where_in(
        &self,
        column: Column,
        mut values: Vec<&str>,
    ) -> Result<Vec<Entry>, DatastoreError> {
        let column = match column {
            Column::Id => "id",
            Column::ParentId => "parent_id",
        };
        // Distinct values: a row matches in one chunk only.
        values.sort_unstable();
        values.dedup();
        let mut entries = Vec::new();
        for chunk in values.chunks(IN_LIST_MAX) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            // No ORDER BY: the planner keeps to the index on `column`; sorted below.
            let sql = format!(
                "SELECT {COLUMNS} FROM entries WHERE {column} IN ({})",
                marks.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for v in chunk {
                query = query.bind(*v);
            }
            for row in query.fetch_all(&self.pool).await? {
                entries.push(entry_from_row(&row)?);
            }
        }
        entries.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(entries)
    }
}
