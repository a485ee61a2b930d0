//! The SQLite schema and connection settings. WAL mode lets readers run beside one writer;
//! every change runs in a `BEGIN IMMEDIATE` transaction, so writers from any number of
//! processes queue on the database lock (for up to `BUSY_TIMEOUT`) instead of failing or
//! interleaving. The schema is created idempotently inside such a transaction and stamped
//! with `PRAGMA user_version`; a database from a newer keel is refused, never rewritten.
//!
//! Soft deletion: models and versions keep their rows with `deleted = 1`, so version
//! numbers (`max(version) + 1` over every row of a name) are never handed out twice. Only
//! one live model per name (partial unique index). Tags and aliases hang off the model row
//! (`model_id`) or the version row, so they vanish together with the entity they belong to.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, TransactionBehavior};

use crate::error::{RegistryError, Result};

/// The schema version this crate writes and reads.
pub const SCHEMA_VERSION: i64 = 1;

/// How long a write waits for another process's transaction before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS registered_models (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    creation_timestamp INTEGER NOT NULL,
    last_updated_timestamp INTEGER NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0 CHECK (deleted IN (0, 1))
);
CREATE UNIQUE INDEX IF NOT EXISTS registered_models_live_name ON registered_models (name) WHERE deleted = 0;

CREATE TABLE IF NOT EXISTS registered_model_tags (
    model_id INTEGER NOT NULL REFERENCES registered_models (id),
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (model_id, key)
);

CREATE TABLE IF NOT EXISTS model_versions (
    name TEXT NOT NULL,
    version INTEGER NOT NULL CHECK (version >= 1),
    model_id INTEGER NOT NULL REFERENCES registered_models (id),
    creation_timestamp INTEGER NOT NULL,
    last_updated_timestamp INTEGER NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL,
    run_id TEXT,
    status TEXT NOT NULL,
    model_file TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    manifest TEXT NOT NULL,
    info TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0 CHECK (deleted IN (0, 1)),
    PRIMARY KEY (name, version)
);
CREATE INDEX IF NOT EXISTS model_versions_model ON model_versions (model_id, deleted);
CREATE INDEX IF NOT EXISTS model_versions_sha256 ON model_versions (name, sha256);

CREATE TABLE IF NOT EXISTS model_version_tags (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (name, version, key),
    FOREIGN KEY (name, version) REFERENCES model_versions (name, version)
);

CREATE TABLE IF NOT EXISTS registered_model_aliases (
    model_id INTEGER NOT NULL REFERENCES registered_models (id),
    alias TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (model_id, alias)
);
";

/// Opens (creating) the database at `path` with the registry's settings and schema.
///
/// SQLite answers some lock conflicts with SQLITE_BUSY at once instead of waiting in the
/// busy handler (switching to WAL, or a deadlock-avoiding refusal while several processes
/// create the database together), so each step is retried with a growing pause until
/// `BUSY_TIMEOUT`.
pub fn open(path: &Path) -> Result<Connection> {
    let mut conn = Connection::open(path).map_err(|e| RegistryError::Db(format!("{}: {e}", path.display())))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let deadline = Instant::now() + BUSY_TIMEOUT;
    // Returns the mode in force; a file system without WAL support keeps a rollback journal,
    // which is slower but just as safe with IMMEDIATE transactions.
    retry_busy(deadline, || {
        let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        }
        Ok(())
    })?;
    conn.pragma_update(None, "foreign_keys", true)?;
    let found = retry_busy(deadline, || migrate(&mut conn))?;
    if found > SCHEMA_VERSION {
        return Err(RegistryError::Db(format!(
            "registry.db has schema version {found}, newer than this keel understands ({SCHEMA_VERSION}); upgrade keel"
        )));
    }
    Ok(conn)
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
}

/// Runs `step` again while it fails with SQLITE_BUSY/LOCKED and `deadline` is ahead.
fn retry_busy<T>(deadline: Instant, mut step: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let mut pause = Duration::from_millis(2);
    loop {
        match step() {
            Err(e) if is_busy(&e) && Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

/// Creates or upgrades the schema in one IMMEDIATE transaction; returns the schema version
/// found (a newer one than ours is left untouched).
fn migrate(conn: &mut Connection) -> rusqlite::Result<i64> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found < SCHEMA_VERSION {
        tx.execute_batch(SCHEMA)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    tx.commit()?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_schema_idempotently_in_wal_mode() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("registry.db");
        let a = open(&path).unwrap();
        let b = open(&path).unwrap();
        for conn in [&a, &b] {
            let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
            assert_eq!(mode, "wal");
            let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
            assert_eq!(v, SCHEMA_VERSION);
            let busy: i64 = conn.query_row("PRAGMA busy_timeout", [], |r| r.get(0)).unwrap();
            assert!(busy >= 10_000, "{busy}");
        }
        let tables: i64 =
            a.query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table'", [], |r| r.get(0)).unwrap();
        assert_eq!(tables, 5);
    }

    #[test]
    fn refuses_a_newer_schema() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("registry.db");
        let conn = open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        drop(conn);
        let err = open(&path).unwrap_err();
        assert!(err.to_string().contains("newer than this keel"), "{err}");
    }

    #[test]
    fn one_live_model_per_name() {
        let d = tempfile::tempdir().unwrap();
        let conn = open(&d.path().join("registry.db")).unwrap();
        let insert = "INSERT INTO registered_models (name, creation_timestamp, last_updated_timestamp, deleted) \
                      VALUES ('m', 0, 0, ?1)";
        conn.execute(insert, [0]).unwrap();
        assert!(conn.execute(insert, [0]).is_err());
        conn.execute(insert, [1]).unwrap();
        conn.execute(insert, [1]).unwrap();
    }
}
