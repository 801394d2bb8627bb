//! Each check takes a fresh, empty datastore so it runs on SQLite here and on
//! PostgreSQL too (a private cluster, or TESSERA_TEST_POSTGRES_URL's server).

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use tessera_common::{Selector, UnixTime};

use super::*;

mod agent_entries;
mod agents;
mod entries;
mod typed_reads;
use agent_entries::{check_entries_asked_for, check_per_agent_queries};
use agents::{check_eviction, check_serial_overlap};
use entries::{
    check_audit_time_window, check_batch_create, check_entry_filters, check_update_entry,
};
use typed_reads::check_typed_reads;

const NOW: UnixTime = UnixTime::from_secs(1_700_000_000);

/// `offset` seconds after [`NOW`].
fn at(offset: i64) -> UnixTime {
    UnixTime::from_secs(NOW.secs() + offset)
}

async fn fresh() -> (tempfile::TempDir, Datastore) {
    let dir = tempfile::tempdir().unwrap();
    let ds = Datastore::open_sqlite(&dir.path().join("authority.db"))
        .await
        .unwrap();
    (dir, ds)
}

fn sel(s: &str) -> Selector {
    Selector::parse(s).unwrap()
}

fn new_entry(spiffe_id: &str, selectors: &[&str]) -> NewEntry {
    NewEntry {
        selectors: selectors.iter().map(|s| sel(s)).collect(),
        x509_ttl: Some(Duration::from_secs(3600)),
        jwt_ttl: None,
        dns_names: vec!["web.example".into(), "web".into()],
        hint: "web".into(),
        admin: true,
        expires_at: Some(at(86_400)),
        ..test_records::new_entry(spiffe_id, "spiffe://td/tessera/agent/tpm/ab")
    }
}

fn agent(id: &str, serial: &str) -> AgentRecord {
    AgentRecord {
        method: "join_token".into(),
        selectors: vec![sel("tpm:secure_boot:true")],
        serial: serial.into(),
        prev_serial: None,
        expires_at: at(3600),
        attested_at: NOW,
        ..test_records::agent(id)
    }
}

fn event(time: UnixTime, kind: AuditKind, agent_id: &str, spiffe_id: &str) -> AuditEvent {
    AuditEvent {
        node_selectors: vec![sel("tpm:pcr7:abcd")],
        entry_id: "e1".into(),
        spiffe_id: Some(test_records::id(spiffe_id)),
        serial: "01".into(),
        expires_at: Some(UnixTime::from_secs(time.secs() + 60)),
        audience: vec!["aud1".into()],
        detail: "ok".into(),
        ..AuditEvent::new(kind, time, test_records::id(agent_id))
    }
}

/// An agent's attestation or renewal: about the agent's own ID.
fn attest_event(time: UnixTime, agent_id: &str) -> AuditEvent {
    event(time, AuditKind::NodeAttestation, agent_id, agent_id)
}

fn renew_event(time: UnixTime, agent_id: &str) -> AuditEvent {
    event(time, AuditKind::AgentRenewal, agent_id, agent_id)
}

async fn audit_count(ds: &Datastore) -> usize {
    ds.list_audit(&AuditFilter::default()).await.unwrap().len()
}

async fn check_entry_crud(ds: &Datastore) {
    let a = ds
        .create_entry(new_entry("spiffe://td/web", &["unix:uid:0"]))
        .await
        .unwrap();
    assert_eq!(a.id.len(), 32);
    assert!(a.id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(a.revision, 1);
    assert!(a.created_at >= NOW);
    let b = ds
        .create_entry(new_entry("spiffe://td/db", &["unix:uid:1", "unix:gid:1"]))
        .await
        .unwrap();
    assert_ne!(a.id, b.id);
    assert_eq!(ds.get_entry(&a.id).await.unwrap(), Some(a.clone()));
    let mut want = vec![a.clone(), b.clone()];
    want.sort_by(|x, y| (x.created_at, &x.id).cmp(&(y.created_at, &y.id)));
    assert_eq!(ds.list_entries().await.unwrap(), want);
    assert!(ds.delete_entry(&a.id).await.unwrap());
    assert!(!ds.delete_entry(&a.id).await.unwrap());
    assert_eq!(ds.get_entry(&a.id).await.unwrap(), None);
    assert_eq!(ds.list_entries().await.unwrap(), vec![b]);
}

async fn check_duplicate_entry(ds: &Datastore) {
    let first = ds
        .create_entry(new_entry("spiffe://td/web", &["unix:uid:0", "unix:gid:0"]))
        .await
        .unwrap();
    let dup = ds
        .create_entry(new_entry("spiffe://td/web", &["unix:gid:0", "unix:uid:0"]))
        .await;
    match dup {
        Err(DatastoreError::AlreadyExists(msg)) => assert!(msg.contains(&first.id), "{msg}"),
        other => panic!("want AlreadyExists, got {other:?}"),
    }
    // A different set, SPIFFE ID or parent is a different entry.
    ds.create_entry(new_entry("spiffe://td/web", &["unix:uid:0"]))
        .await
        .unwrap();
    ds.create_entry(new_entry("spiffe://td/web2", &["unix:uid:0", "unix:gid:0"]))
        .await
        .unwrap();
    let mut other_parent = new_entry("spiffe://td/web", &["unix:uid:0", "unix:gid:0"]);
    other_parent.parent_id = test_records::id("spiffe://td/tessera/authority");
    ds.create_entry(other_parent).await.unwrap();
    assert_eq!(ds.list_entries().await.unwrap().len(), 4);
}

async fn check_entries_revision(ds: &Datastore) {
    let r0 = ds.entries_revision().await.unwrap();
    let e = ds
        .create_entry(new_entry("spiffe://td/web", &["unix:uid:0"]))
        .await
        .unwrap();
    let r1 = ds.entries_revision().await.unwrap();
    assert!(r1 > r0);
    assert!(ds
        .create_entry(new_entry("spiffe://td/web", &["unix:uid:0"]))
        .await
        .is_err());
    assert_eq!(
        ds.entries_revision().await.unwrap(),
        r1,
        "failed create bumped"
    );
    assert!(ds.delete_entry(&e.id).await.unwrap());
    let r2 = ds.entries_revision().await.unwrap();
    assert!(r2 > r1);
    assert!(!ds.delete_entry(&e.id).await.unwrap());
    assert_eq!(
        ds.entries_revision().await.unwrap(),
        r2,
        "no-op delete bumped"
    );
}

async fn check_token_single_use(ds: &Datastore) {
    ds.create_join_token("tok", at(600)).await.unwrap();
    assert!(matches!(
        ds.create_join_token("tok", at(600)).await,
        Err(DatastoreError::AlreadyExists(_))
    ));
    assert!(ds.join_token_valid("tok", NOW).await.unwrap());
    assert!(
        ds.join_token_valid("tok", NOW).await.unwrap(),
        "valid() consumed it"
    );
    let a = agent("spiffe://td/tessera/agent/join_token/tok", "01");
    ds.record_attestation(&a, &attest_event(NOW, a.id.as_str()), Some("tok"))
        .await
        .unwrap();
    assert_eq!(ds.get_agent(a.id.as_str()).await.unwrap(), Some(a.clone()));
    assert!(!ds.join_token_valid("tok", NOW).await.unwrap());

    let b = agent("spiffe://td/tessera/agent/join_token/other", "02");
    let again = ds
        .record_attestation(&b, &attest_event(at(1), b.id.as_str()), Some("tok"))
        .await;
    assert!(matches!(again, Err(DatastoreError::TokenUsed)), "{again:?}");
    let a2 = agent(a.id.as_str(), "03");
    let same = ds
        .record_attestation(&a2, &attest_event(at(1), a.id.as_str()), Some("tok"))
        .await;
    assert!(matches!(same, Err(DatastoreError::TokenUsed)), "{same:?}");
    assert_eq!(ds.get_agent(b.id.as_str()).await.unwrap(), None);
    assert_eq!(ds.get_agent(a.id.as_str()).await.unwrap(), Some(a));
    assert_eq!(audit_count(ds).await, 1);
    assert!(matches!(
        ds.record_attestation(&b, &attest_event(NOW, b.id.as_str()), Some("never"))
            .await,
        Err(DatastoreError::TokenUsed)
    ));
}

async fn check_expired_token(ds: &Datastore) {
    ds.create_join_token("old", NOW).await.unwrap();
    ds.create_join_token("new", at(10)).await.unwrap();
    assert!(!ds.join_token_valid("old", NOW).await.unwrap());
    assert!(ds.join_token_valid("new", NOW).await.unwrap());
    let a = agent("spiffe://td/tessera/agent/join_token/old", "01");
    let res = ds
        .record_attestation(&a, &attest_event(NOW, a.id.as_str()), Some("old"))
        .await;
    assert!(matches!(res, Err(DatastoreError::TokenExpired)), "{res:?}");
    assert_eq!(ds.get_agent(a.id.as_str()).await.unwrap(), None);
    assert_eq!(audit_count(ds).await, 0);
    assert_eq!(ds.purge_expired_tokens(NOW).await.unwrap(), 1);
    assert_eq!(ds.purge_expired_tokens(NOW).await.unwrap(), 0);
    assert!(ds.join_token_valid("new", NOW).await.unwrap());
}

async fn check_audit_queries(ds: &Datastore) {
    let events = vec![
        event(
            at(1),
            AuditKind::X509Svid,
            "spiffe://td/tessera/agent/1",
            "spiffe://td/a",
        ),
        event(
            at(3),
            AuditKind::X509Svid,
            "spiffe://td/tessera/agent/2",
            "spiffe://td/a",
        ),
        event(
            at(2),
            AuditKind::JwtSvid,
            "spiffe://td/tessera/agent/1",
            "spiffe://td/b",
        ),
        event(
            at(3),
            AuditKind::JwtSvid,
            "spiffe://td/tessera/agent/1",
            "spiffe://td/a",
        ),
    ];
    ds.record_audit(&events).await.unwrap();
    ds.record_audit(&[]).await.unwrap();
    let all = ds.list_audit(&AuditFilter::default()).await.unwrap();
    let got: Vec<(UnixTime, AuditKind)> = all.iter().map(|e| (e.time, e.kind)).collect();
    // Newest first; equal times by insertion order, newest first.
    assert_eq!(
        got,
        vec![
            (at(3), AuditKind::JwtSvid),
            (at(3), AuditKind::X509Svid),
            (at(2), AuditKind::JwtSvid),
            (at(1), AuditKind::X509Svid)
        ]
    );
    assert!(all.iter().all(|e| e.id.is_some()));
    assert_eq!(
        AuditEvent {
            id: None,
            ..all[3].clone()
        },
        events[0]
    );

    let by_id = |s: Option<&str>, a: Option<&str>, limit| AuditFilter {
        spiffe_id: s.map(String::from),
        agent_id: a.map(String::from),
        limit,
        ..Default::default()
    };
    let a = ds
        .list_audit(&by_id(Some("spiffe://td/a"), None, None))
        .await
        .unwrap();
    assert_eq!(a.len(), 3);
    assert!(a
        .iter()
        .all(|e| e.spiffe_id == Some(test_records::id("spiffe://td/a"))));
    let ag = ds
        .list_audit(&by_id(None, Some("spiffe://td/tessera/agent/1"), None))
        .await
        .unwrap();
    assert_eq!(ag.len(), 3);
    assert!(ag
        .iter()
        .all(|e| e.agent_id.as_str() == "spiffe://td/tessera/agent/1"));
    let both = ds
        .list_audit(&by_id(
            Some("spiffe://td/a"),
            Some("spiffe://td/tessera/agent/1"),
            None,
        ))
        .await
        .unwrap();
    assert_eq!(both.len(), 2);
    let limited = ds.list_audit(&by_id(None, None, Some(2))).await.unwrap();
    assert_eq!(limited, all[..2].to_vec());
    let none = ds
        .list_audit(&by_id(Some("spiffe://td/zzz"), None, None))
        .await
        .unwrap();
    assert!(none.is_empty());
}

async fn check_default_and_max_audit_limit(ds: &Datastore) {
    let batch: Vec<AuditEvent> = (0..(AUDIT_MAX_LIMIT as i64 + 5))
        .map(|i| {
            event(
                at(i),
                AuditKind::X509Svid,
                "spiffe://td/tessera/agent/a",
                "spiffe://td/a",
            )
        })
        .collect();
    ds.record_audit(&batch).await.unwrap();
    let def = ds.list_audit(&AuditFilter::default()).await.unwrap();
    assert_eq!(def.len(), AUDIT_DEFAULT_LIMIT as usize);
    let max = AuditFilter {
        limit: Some(u32::MAX),
        ..Default::default()
    };
    assert_eq!(
        ds.list_audit(&max).await.unwrap().len(),
        AUDIT_MAX_LIMIT as usize
    );
}

async fn check_corrupt_rows(ds: &Datastore) {
    let e = ds
        .create_entry(new_entry("spiffe://td/web", &["unix:uid:0"]))
        .await
        .unwrap();
    sqlx::query("UPDATE entries SET selectors = $1 WHERE id = $2")
        .bind("[{\"type\": \"unix\"")
        .bind(&e.id)
        .execute(&ds.pool)
        .await
        .unwrap();
    assert!(matches!(
        ds.get_entry(&e.id).await,
        Err(DatastoreError::CorruptColumn { .. })
    ));
    assert!(matches!(
        ds.list_entries().await,
        Err(DatastoreError::CorruptColumn { .. })
    ));

    let a = agent("spiffe://td/tessera/agent/tpm/aa", "01");
    ds.record_attestation(&a, &attest_event(NOW, a.id.as_str()), None)
        .await
        .unwrap();
    sqlx::query("UPDATE agents SET selectors = 'not json'")
        .execute(&ds.pool)
        .await
        .unwrap();
    assert!(matches!(
        ds.get_agent(a.id.as_str()).await,
        Err(DatastoreError::CorruptColumn { .. })
    ));
    sqlx::query("UPDATE audit SET node_selectors = '{}'")
        .execute(&ds.pool)
        .await
        .unwrap();
    let res = ds.list_audit(&AuditFilter::default()).await;
    assert!(
        matches!(res, Err(DatastoreError::CorruptColumn { .. })),
        "{res:?}"
    );
}

#[tokio::test]
async fn entry_create_get_list_delete() {
    let (_dir, ds) = fresh().await;
    check_entry_crud(&ds).await;
}

#[tokio::test]
async fn duplicate_entry_in_other_selector_order_already_exists() {
    let (_dir, ds) = fresh().await;
    check_duplicate_entry(&ds).await;
}

#[tokio::test]
async fn entries_revision_bumps_on_create_and_delete() {
    let (_dir, ds) = fresh().await;
    check_entries_revision(&ds).await;
}

#[tokio::test]
async fn join_token_is_single_use_and_failure_writes_nothing() {
    let (_dir, ds) = fresh().await;
    check_token_single_use(&ds).await;
}

#[tokio::test]
async fn expired_join_token_is_refused() {
    let (_dir, ds) = fresh().await;
    check_expired_token(&ds).await;
}

#[tokio::test]
async fn audit_filters_order_and_limit() {
    let (_dir, ds) = fresh().await;
    check_audit_queries(&ds).await;
}

#[tokio::test]
async fn audit_limit_defaults_and_caps() {
    let (_dir, ds) = fresh().await;
    check_default_and_max_audit_limit(&ds).await;
}

#[tokio::test]
async fn corrupt_json_is_reported_not_panicked() {
    let (_dir, ds) = fresh().await;
    check_corrupt_rows(&ds).await;
}

#[tokio::test]
async fn entries_persist_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("authority.db");
    let ds = Datastore::open_sqlite(&path).await.unwrap();
    let e = ds
        .create_entry(new_entry("spiffe://td/web", &["unix:uid:0"]))
        .await
        .unwrap();
    let rev = ds.entries_revision().await.unwrap();
    ds.close().await;
    let ds = Datastore::open_sqlite(&path).await.unwrap();
    assert_eq!(ds.list_entries().await.unwrap(), vec![e]);
    assert_eq!(ds.entries_revision().await.unwrap(), rev);
}

#[tokio::test]
async fn migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("authority.db");
    let ds = Datastore::open_sqlite(&path).await.unwrap();
    ds.create_join_token("tok", at(10)).await.unwrap();
    ds.close().await;
    let ds = Datastore::open_sqlite(&path).await.unwrap();
    let versions = sqlx::query("SELECT version FROM schema_version")
        .fetch_all(&ds.pool)
        .await
        .unwrap();
    assert_eq!(versions.len() as i64, SCHEMA_VERSION);
    assert_eq!(migrations::latest_known(), SCHEMA_VERSION);
    assert!(ds.join_token_valid("tok", NOW).await.unwrap());
}

#[tokio::test]
async fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("authority.db");
    let ds = Datastore::open_sqlite(&path).await.unwrap();
    sqlx::query("INSERT INTO schema_version (version, applied_at) VALUES ($1, 0)")
        .bind(SCHEMA_VERSION + 1)
        .execute(&ds.pool)
        .await
        .unwrap();
    ds.close().await;
    match Datastore::open_sqlite(&path).await {
        Err(e @ DatastoreError::SchemaTooNew { .. }) => {
            let DatastoreError::SchemaTooNew { found, supported } = e else {
                unreachable!()
            };
            assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
            assert!(e.to_string().contains("newer"), "{e}");
        }
        other => panic!("want SchemaTooNew, got {other:?}"),
    }
}

#[tokio::test]
async fn database_file_is_owner_only_and_wal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("authority.db");
    let ds = Datastore::open_sqlite(&path).await.unwrap();
    ds.create_entry(new_entry("spiffe://td/web", &["unix:uid:0"]))
        .await
        .unwrap();
    for p in [path.clone(), dir.path().join("authority.db-wal")] {
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", p.display());
    }
    let mut conn = ds.pool.acquire().await.unwrap();
    let row = sqlx::query("PRAGMA journal_mode")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(sqlx::Row::try_get::<String, _>(&row, 0).unwrap(), "wal");
    let row = sqlx::query("PRAGMA foreign_keys")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(sqlx::Row::try_get::<i64, _>(&row, 0).unwrap(), 1);
}

#[tokio::test]
async fn open_by_url_creates_owner_only_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("by url.db");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let ds = Datastore::open(&url).await.unwrap();
    ds.create_join_token("tok", at(10)).await.unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(matches!(
        Datastore::open("mysql://localhost/x").await,
        Err(DatastoreError::Open(_))
    ));
}

/// Where the PostgreSQL checks run: the server TESSERA_TEST_POSTGRES_URL names (e.g.
/// `postgres://user@127.0.0.1:5432`, no database path), else a private cluster
/// started here. Missing PostgreSQL binaries fail the test: never a silent skip.
enum Postgres {
    External(String),
    Private(tessera_test_postgres::Cluster),
}

impl Postgres {
    fn start() -> Postgres {
        match std::env::var("TESSERA_TEST_POSTGRES_URL") {
            Ok(base) => Postgres::External(base),
            Err(_) => Postgres::Private(
                tessera_test_postgres::Cluster::start()
                    .unwrap_or_else(|e| panic!("PostgreSQL for the datastore checks: {e:#}")),
            ),
        }
    }

    fn url(&self, db: &str) -> String {
        match self {
            Postgres::External(base) => format!("{base}/{db}"),
            Postgres::Private(cluster) => cluster.url(db),
        }
    }
}

/// Runs every check against PostgreSQL, each in a database of its own.
#[tokio::test]
async fn postgres_runs_the_same_checks() {
    let server = Postgres::start();
    sqlx::any::install_default_drivers();
    let admin = sqlx::AnyPool::connect(&server.url("postgres"))
        .await
        .unwrap();
    for n in 0..17 {
        let db = format!("tessera_test_{}", hex::encode(rand::random::<[u8; 6]>()));
        sqlx::raw_sql(&format!("CREATE DATABASE {db}"))
            .execute(&admin)
            .await
            .unwrap();
        let url = server.url(&db);
        let ds = Datastore::open(&url).await.unwrap();
        match n {
            0 => check_entry_crud(&ds).await,
            1 => check_duplicate_entry(&ds).await,
            2 => check_entries_revision(&ds).await,
            3 => check_token_single_use(&ds).await,
            4 => check_expired_token(&ds).await,
            5 => check_eviction(&ds).await,
            6 => check_audit_queries(&ds).await,
            7 => check_corrupt_rows(&ds).await,
            8 => check_serial_overlap(&ds).await,
            9 => check_batch_create(&ds).await,
            10 => check_update_entry(&ds).await,
            11 => check_entry_filters(&ds).await,
            12 => check_audit_time_window(&ds).await,
            13 => check_per_agent_queries(&ds).await,
            14 => check_entries_asked_for(&ds).await,
            15 => check_typed_reads(&ds).await,
            _ => check_default_and_max_audit_limit(&ds).await,
        }
        ds.close().await;
        // Reopen: migrations are idempotent here too.
        Datastore::open(&url).await.unwrap().close().await;
        sqlx::raw_sql(&format!("DROP DATABASE {db} WITH (FORCE)"))
            .execute(&admin)
            .await
            .unwrap();
    }
}
