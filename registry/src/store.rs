//! `Registry`: one handle on a registry home directory (`registry.db` + `artifacts/`).
//! Each handle owns one SQLite connection behind a mutex, so it is `Send + Sync`; any
//! number of handles, in any number of processes, may share a home. Every change is one
//! `BEGIN IMMEDIATE` transaction (`write`); reads see one consistent snapshot (`read`).
//! Long work — copying and hashing model files — runs outside the database lock.
//!
//! The operations live beside this file, one concept each: `models.rs`, `versions.rs`,
//! `aliases.rs`, `tags.rs`; this file holds what they share, plus URI resolution and
//! artifact verification.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, Transaction, TransactionBehavior};

use crate::error::{RegistryError, Result};
use crate::rows;
use crate::schema;
use crate::types::ModelVersion;
use crate::uri::ModelUri;
use crate::validate;

/// A handle on a registry home directory.
pub struct Registry {
    home: PathBuf,
    conn: Mutex<Connection>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry").field("home", &self.home).finish_non_exhaustive()
    }
}

impl Registry {
    /// Opens (creating) `home/registry.db` and `home/artifacts/`. Safe to call from many
    /// processes at once.
    pub fn open(home: &Path) -> Result<Registry> {
        let home = std::path::absolute(home).map_err(|e| RegistryError::io(home, e))?;
        let artifacts = rows::artifacts_root(&home);
        std::fs::create_dir_all(&artifacts).map_err(|e| RegistryError::io(&artifacts, e))?;
        let conn = schema::open(&home.join("registry.db"))?;
        Ok(Registry { home, conn: Mutex::new(conn) })
    }

    /// The home directory (absolute).
    pub fn home(&self) -> &Path {
        &self.home
    }

    pub(crate) fn staging_root(&self) -> PathBuf {
        rows::artifacts_root(&self.home).join(".staging")
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while the lock was held dropped its transaction, which rolled back.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` in one read transaction (a consistent snapshot); nothing is written.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
        f(&tx)
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction, committed when `f` succeeds and rolled
    /// back when it fails.
    pub(crate) fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// The version a `models:/` URI names now. A stage URI resolves through the alias
    /// `production` / `staging` and prints a one-line deprecation note on stderr.
    pub fn resolve(&self, uri: &ModelUri) -> Result<ModelVersion> {
        match uri {
            ModelUri::Version { name, version } => self.get_version(name, *version),
            ModelUri::Alias { name, alias } => self.get_version_by_alias(name, alias),
            ModelUri::Latest { name } => {
                validate::model_name(name)?;
                self.read(|tx| {
                    let id = rows::model_id(tx, name)?;
                    let latest = rows::latest_version(tx, id)?
                        .ok_or_else(|| RegistryError::NotFound(format!("registered model {name:?} has no versions")))?;
                    rows::version(tx, &self.home, name, latest)
                })
            }
            ModelUri::Stage { name, stage } => {
                let alias = ModelUri::stage_alias(stage);
                eprintln!(
                    "note: {uri} is a deprecated stage URI; resolving alias @{alias} (use models:/{name}@{alias})"
                );
                self.get_version_by_alias(name, &alias).map_err(|e| match e {
                    RegistryError::NotFound(msg) => {
                        RegistryError::NotFound(format!("{msg} (the stage URI {uri} resolves through it)"))
                    }
                    other => other,
                })
            }
        }
    }

    /// Recomputes the sha256 of every artifact file of `mv` against the manifest recorded at
    /// registration: a changed, missing or extra file is `ChecksumMismatch` naming it. Reads
    /// every byte of the model (outside the database lock).
    pub fn verify(&self, mv: &ModelVersion) -> Result<()> {
        validate::model_name(&mv.name)?;
        let version = validate::version(&mv.name, mv.version)?;
        let manifest = self.read(|tx| rows::manifest(tx, &mv.name, version))?;
        manifest.verify(&rows::version_dir(&self.home, &mv.name, version))
    }

    /// Runs SQLite's `PRAGMA integrity_check` on the store.
    pub fn check_integrity(&self) -> Result<()> {
        let report: Vec<String> = self.read(|tx| {
            let mut stmt = tx.prepare("PRAGMA integrity_check")?;
            let lines = stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>()?;
            Ok(lines)
        })?;
        match report.as_slice() {
            [ok] if ok == "ok" => Ok(()),
            lines => Err(RegistryError::Db(format!("integrity check failed: {}", lines.join("; ")))),
        }
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Removes the artifact directories of deleted versions, then their model directory if it
/// is empty. Best effort: the rows are already gone, and a leftover directory is harmless
/// because version numbers are never reused (a registration clears any leftover at its
/// number). The model directory is removed under the write lock, so it cannot vanish under
/// a registration that is about to rename a version into it.
pub(crate) fn remove_artifacts(registry: &Registry, name: &str, dirs: &[PathBuf]) {
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
    let model_dir = rows::artifacts_root(&registry.home).join(name);
    let _ = registry.write(|_| {
        let _ = std::fs::remove_dir(&model_dir);
        Ok(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Registry>();
    }

    #[test]
    fn open_creates_layout_and_reopens() {
        let d = tempfile::tempdir().unwrap();
        let home = d.path().join("home");
        let r = Registry::open(&home).unwrap();
        assert!(home.join("registry.db").is_file());
        assert!(home.join("artifacts").is_dir());
        assert_eq!(r.home(), home);
        r.check_integrity().unwrap();
        drop(r);
        Registry::open(&home).unwrap().check_integrity().unwrap();
    }

    #[test]
    fn open_fails_cleanly_when_home_is_a_file() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let err = Registry::open(&file).unwrap_err();
        assert!(matches!(err, RegistryError::Io { .. }), "{err}");
    }
}
