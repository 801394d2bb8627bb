//! Rows changed behind the authority's back (direct SQL, a bad restore): a value
//! that does not read as its column's type is a `CorruptColumn` error naming the
//! row and column — never a panic, never accepted as something else.

use super::*;

/// Sets text column `column` of the row of `table` matching `row_sql` (literal
/// values: test data only) to `value`; returns the value it had.
async fn set(ds: &Datastore, table: &str, row_sql: &str, column: &str, value: &str) -> String {
    let select = format!("SELECT {column} FROM {table} WHERE {row_sql}");
    let row = sqlx::query(&select).fetch_one(&ds.pool).await.unwrap();
    let was: String = sqlx::Row::try_get(&row, 0).unwrap();
    let update = format!("UPDATE {table} SET {column} = $1 WHERE {row_sql}");
    let n = sqlx::query(&update)
        .bind(value)
        .execute(&ds.pool)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(n, 1, "{update}");
    was
}

/// `res` is the typed error for `column` of the row named `row`.
fn names_column<T: std::fmt::Debug>(
    res: Result<T, DatastoreError>,
    row: &str,
    column: &str,
    problem: &str,
) {
    match res {
        Err(DatastoreError::CorruptColumn {
            row: r,
            column: c,
            problem: p,
        }) if r == row && c == column && p.contains(problem) => {}
        other => panic!("want {row} column {column} ({problem}), got {other:?}"),
    }
}

pub(super) async fn check_typed_reads(ds: &Datastore) {
    check_audit_rows(ds).await;
    check_entry_rows(ds).await;
    check_agent_rows(ds).await;
}

async fn check_audit_rows(ds: &Datastore) {
    let agent = "spiffe://td/tessera/agent/tpm/aa";
    ds.record_audit(&[
        event(NOW, AuditKind::X509Svid, agent, "spiffe://td/web"),
        AuditEvent::new(AuditKind::JwtSvidCoalesced, at(1), test_records::id(agent)),
    ])
    .await
    .unwrap();
    let all = ds.list_audit(&AuditFilter::default()).await.unwrap();
    // No issued ID and no expiry read back as none (stored as "" and 0).
    assert_eq!(all[0].kind, AuditKind::JwtSvidCoalesced);
    assert_eq!((&all[0].spiffe_id, all[0].expires_at), (&None, None));
    let id = all[1].id.unwrap();
    let (row, row_sql) = (format!("audit row {id}"), format!("id = {id}"));
    for (column, value, problem) in [
        (
            "kind",
            "x509_svid_v2",
            "unknown audit event kind \"x509_svid_v2\"",
        ),
        ("kind", "", "unknown audit event kind"),
        ("agent_id", "agent1", "scheme"),
        ("agent_id", "", "empty"),
        ("spiffe_id", "spiffe://td/web/../admin", "segment"),
    ] {
        let was = set(ds, "audit", &row_sql, column, value).await;
        let res = ds.list_audit(&AuditFilter::default()).await;
        names_column(res, &row, column, problem);
        set(ds, "audit", &row_sql, column, &was).await;
    }
    assert_eq!(ds.list_audit(&AuditFilter::default()).await.unwrap(), all);
}

async fn check_entry_rows(ds: &Datastore) {
    let mut templated = new_entry("spiffe://td/web/{unix:uid}", &["unix:uid:1"]);
    templated.parent_id = test_records::id("spiffe://td/tessera/agent/tpm/ab");
    let t = ds.create_entry(templated).await.unwrap();
    assert!(matches!(t.spiffe_id, EntrySpiffeId::Template(_)));
    let e = ds
        .create_entry(new_entry("spiffe://td/web", &["unix:uid:0"]))
        .await
        .unwrap();
    assert_eq!(ds.get_entry(&t.id).await.unwrap().as_ref(), Some(&t));
    let (row, row_sql) = (format!("entries row {}", e.id), format!("id = '{}'", e.id));
    for (column, value, problem) in [
        ("spiffe_id", "spiffe://TD/web", "trust domain"),
        ("spiffe_id", "spiffe://td", "needs a path"),
        ("spiffe_id", "spiffe://td/web/{unix:", "template"),
        ("parent_id", "https://td/agent", "scheme"),
    ] {
        let was = set(ds, "entries", &row_sql, column, value).await;
        names_column(ds.get_entry(&e.id).await, &row, column, problem);
        names_column(ds.list_entries().await, &row, column, problem);
        if column != "parent_id" {
            let parent = [e.parent_id.clone()];
            names_column(
                ds.entries_with_parents(&parent).await,
                &row,
                column,
                problem,
            );
        }
        names_column(
            ds.entries_with_ids(std::slice::from_ref(&e.id)).await,
            &row,
            column,
            problem,
        );
        set(ds, "entries", &row_sql, column, &was).await;
    }
    // A TTL is a duration: a negative one stored is no "default" in disguise.
    sqlx::query(&format!("UPDATE entries SET jwt_ttl = -60 WHERE {row_sql}"))
        .execute(&ds.pool)
        .await
        .unwrap();
    names_column(ds.get_entry(&e.id).await, &row, "jwt_ttl", "negative");
    sqlx::query(&format!(
        "UPDATE entries SET jwt_ttl = NULL WHERE {row_sql}"
    ))
    .execute(&ds.pool)
    .await
    .unwrap();
    assert_eq!(ds.get_entry(&e.id).await.unwrap(), Some(e));
}

async fn check_agent_rows(ds: &Datastore) {
    let a = agent("spiffe://td/tessera/agent/tpm/cc", "01");
    let event = attest_event(NOW, a.id.as_str());
    ds.record_attestation(&a, &event, None).await.unwrap();
    let bad = "spiffe://td/tessera/agent/tpm/c c";
    set(ds, "agents", &format!("id = '{}'", a.id), "id", bad).await;
    let row = format!("agents row {bad:?}");
    names_column(ds.get_agent(bad).await, &row, "id", "path segments");
    names_column(ds.list_agents().await, &row, "id", "path segments");
}

#[tokio::test]
async fn corrupt_ids_and_kinds_are_typed_errors_naming_the_column() {
    let (_dir, ds) = fresh().await;
    check_typed_reads(&ds).await;
}
