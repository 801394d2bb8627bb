//! Opening the database: URL handling, the SQLite file's mode, per-connection settings.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::str::FromStr;

use sqlx::any::AnyPoolOptions;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::Executor;

use super::{migrations, Backend, Datastore, DatastoreError};

/// SQLite serialises writers anyway; a few connections let reads run beside a write (WAL).
const SQLITE_MAX_CONNECTIONS: u32 = 4;
const POSTGRES_MAX_CONNECTIONS: u32 = 16;

/// busy_timeout first so the journal_mode switch waits for other processes' locks.
const SQLITE_PRAGMAS: &str =
    "PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; PRAGMA journal_mode = WAL;";

impl Datastore {
    /// Opens `sqlite:...` or `postgres://...` and brings the schema up to date.
    pub async fn open(url: &str) -> Result<Self, DatastoreError> {
        let backend = backend_of(url)?;
        if backend == Backend::Sqlite {
            if let Some(path) = sqlite_file_of(url)? {
                create_private_file(&path)?;
            }
        }
        Self::connect(url, backend).await
    }

    /// Opens (creating with mode 0600 if missing) the SQLite database at `path`.
    pub async fn open_sqlite(path: &Path) -> Result<Self, DatastoreError> {
        create_private_file(path)?;
        // Absolute and symlink-free, so the URL cannot be read as a host name.
        let path = std::fs::canonicalize(path)
            .map_err(|e| DatastoreError::Open(format!("{}: {e}", path.display())))?;
        let url = format!("sqlite://{}?mode=rwc", encode_path(&path)?);
        Self::connect(&url, Backend::Sqlite).await
    }

    async fn connect(url: &str, backend: Backend) -> Result<Self, DatastoreError> {
        sqlx::any::install_default_drivers();
        let options = match backend {
            Backend::Sqlite => AnyPoolOptions::new()
                .max_connections(SQLITE_MAX_CONNECTIONS)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        conn.execute(sqlx::raw_sql(SQLITE_PRAGMAS)).await?;
                        Ok(())
                    })
                }),
            Backend::Postgres => AnyPoolOptions::new().max_connections(POSTGRES_MAX_CONNECTIONS),
        };
        // The URL may hold a password: never echo it.
        let pool = options
            .connect(url)
            .await
            .map_err(|e| DatastoreError::Open(e.to_string()))?;
        let store = Datastore {
            pool,
            latency: None,
        };
        if let Err(e) = migrations::run(&store.pool, backend).await {
            store.pool.close().await;
            return Err(e);
        }
        Ok(store)
    }
}

fn backend_of(url: &str) -> Result<Backend, DatastoreError> {
    let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or("");
    match scheme {
        "sqlite" => Ok(Backend::Sqlite),
        "postgres" | "postgresql" => Ok(Backend::Postgres),
        _ => Err(DatastoreError::Open(format!(
            "unsupported database URL scheme {scheme:?} (want sqlite: or postgres:)"
        ))),
    }
}

/// The file a `sqlite:` URL names, or None for an in-memory database.
fn sqlite_file_of(url: &str) -> Result<Option<std::path::PathBuf>, DatastoreError> {
    let opts =
        SqliteConnectOptions::from_str(url).map_err(|e| DatastoreError::Open(e.to_string()))?;
    let file = opts.get_filename();
    let memory = url.contains(":memory:") || url.contains("mode=memory");
    if memory || file.as_os_str().is_empty() {
        return Ok(None);
    }
    Ok(Some(file.to_path_buf()))
}

/// Creates the database file owner-only before SQLite does (SQLite would use 0644 less
/// umask); SQLite gives its -wal and -shm files the same mode as the database.
fn create_private_file(path: &Path) -> Result<(), DatastoreError> {
    let err = |e: std::io::Error| DatastoreError::Open(format!("{}: {e}", path.display()));
    match tessera_common::fsutil::open_new(path, 0o600) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let mode = std::fs::metadata(path).map_err(err)?.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{:o}", mode & 0o777),
                    "database file is readable by others than its owner"
                );
            }
            Ok(())
        }
        Err(e) => Err(err(e)),
    }
}

/// Percent-encodes everything but unreserved path bytes; sqlx percent-decodes the path.
fn encode_path(path: &Path) -> Result<String, DatastoreError> {
    let s = path.to_str().ok_or_else(|| {
        DatastoreError::Open(format!("{}: path is not valid UTF-8", path.display()))
    })?;
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"/._-~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(out)
}
