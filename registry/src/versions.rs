//! Model versions: register (copy + checksum + number), get, update, search, delete.
//!
//! Registration order, which makes it all-or-nothing: (1) list and copy the source into a
//! staging directory, hashing as it goes (no lock held); (2) in one `BEGIN IMMEDIATE`
//! transaction: create the model if missing, take `max(version ever created for the name) +
//! 1`, rename staging to `artifacts/<name>/<version>`, write `MLmodel`, insert the rows;
//! (3) commit. Any failure drops the `Staged` guard, which removes the directory wherever it
//! is, and rolls the transaction back. Numbers count soft-deleted rows too, so a number is
//! never handed out twice, even across deleting and re-creating the whole model.

use std::fs;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection};

use crate::aliases::upsert_alias;
use crate::error::{RegistryError, Result};
use crate::filter::{Filter, Target};
use crate::mlmodel;
use crate::models::insert_model;
use crate::rows;
use crate::source::SourceTree;
use crate::staging::Staged;
use crate::store::{now_ms, remove_artifacts, Registry};
use crate::tags::upsert_version_tag;
use crate::types::{ModelVersion, NewVersion, Page};
use crate::validate;

/// Status of every visible version: a version is inserted only once its files are in place.
pub const READY: &str = "READY";

impl Registry {
    /// Registers a new version of `name` (creating the model if missing, like
    /// `mlflow.register_model`), copying `v.source` into the store.
    pub fn create_version(&self, name: &str, v: NewVersion) -> Result<ModelVersion> {
        validate::model_name(name)?;
        for (k, val) in &v.tags {
            validate::tag(k, val)?;
        }
        for alias in &v.aliases {
            validate::alias(alias)?;
        }
        let tree = SourceTree::list(&v.source)?;
        let mut staged = Staged::copy(&tree, &self.staging_root())?;
        let manifest_json = serde_json::to_string(staged.manifest())?;
        let info_json = serde_json::to_string(&v.info)?;
        let mv = self.write(|tx| {
            let now = now_ms();
            let model_id = match rows::live_model_id(tx, name)? {
                Some(id) => id,
                None => insert_model(tx, name, "", now)?,
            };
            let version: i64 = tx.query_row(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM model_versions WHERE name = ?1",
                [name],
                |r| r.get(0),
            )?;
            let artifact_dir = rows::version_dir(self.home(), name, version);
            clear_leftover(tx, self.home(), name, version, &artifact_dir)?;
            staged.move_to(&artifact_dir)?;
            let manifest = staged.manifest();
            let mv = ModelVersion {
                name: name.to_string(),
                version: rows::to_u64(version),
                creation_timestamp: now,
                last_updated_timestamp: now,
                description: v.description.clone().unwrap_or_default(),
                source: tree.display.clone(),
                run_id: v.run_id.clone(),
                status: READY.to_string(),
                tags: v.tags.iter().cloned().collect(),
                aliases: sorted_unique(&v.aliases),
                model_path: artifact_dir.join(&tree.model_file),
                artifact_dir,
                size_bytes: manifest.size_bytes(),
                sha256: manifest.digest(),
                info: v.info.clone(),
            };
            mlmodel::write(&mv)?;
            tx.execute(
                "INSERT INTO model_versions (name, version, model_id, creation_timestamp, last_updated_timestamp, \
                 description, source, run_id, status, model_file, size_bytes, sha256, manifest, info) \
                 VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                params![
                    name,
                    version,
                    model_id,
                    now,
                    mv.description,
                    mv.source,
                    mv.run_id,
                    mv.status,
                    tree.model_file,
                    i64::try_from(mv.size_bytes).unwrap_or(i64::MAX),
                    mv.sha256,
                    manifest_json,
                    info_json,
                ],
            )?;
            for (k, val) in &mv.tags {
                upsert_version_tag(tx, name, version, k, val)?;
            }
            for alias in &mv.aliases {
                upsert_alias(tx, model_id, alias, version)?;
            }
            tx.execute(
                "UPDATE registered_models SET last_updated_timestamp = ?2 WHERE id = ?1",
                params![model_id, now],
            )?;
            Ok(mv)
        })?;
        staged.keep();
        Ok(mv)
    }

    /// Live version `version` of `name`.
    pub fn get_version(&self, name: &str, version: u64) -> Result<ModelVersion> {
        validate::model_name(name)?;
        let version = validate::version(name, version)?;
        self.read(|tx| rows::version(tx, self.home(), name, version))
    }

    /// Replaces a version's description (the only mutable field besides tags and aliases).
    pub fn update_version(&self, name: &str, version: u64, description: &str) -> Result<ModelVersion> {
        validate::model_name(name)?;
        let version = validate::version(name, version)?;
        self.write(|tx| {
            rows::require_version(tx, name, version)?;
            tx.execute(
                "UPDATE model_versions SET description = ?3, last_updated_timestamp = ?4 WHERE name = ?1 AND version = ?2",
                params![name, version, description, now_ms()],
            )?;
            rows::version(tx, self.home(), name, version)
        })
    }

    /// Live versions matching `filter` (see `filter.rs`), ordered by name, then version
    /// descending, one page at a time.
    pub fn search_versions(
        &self,
        filter: &str,
        max_results: usize,
        page_token: Option<&str>,
    ) -> Result<Page<ModelVersion>> {
        let filter = Filter::parse(filter, Target::Versions)?;
        let all = self.read(|tx| {
            let candidates = rows::versions_where(tx, self.home(), "?1 IS NULL OR name = ?1", [filter.exact_name()])?;
            Ok(candidates.into_iter().filter(|v| filter.matches(v)).collect::<Vec<_>>())
        })?;
        Page::cut(all, max_results, crate::types::MAX_VERSION_RESULTS_LIMIT, page_token)
    }

    /// Soft-deletes a version; its aliases go and its artifacts are removed. Its number is
    /// never reused.
    pub fn delete_version(&self, name: &str, version: u64) -> Result<()> {
        validate::model_name(name)?;
        let version = validate::version(name, version)?;
        let dir = self.write(|tx| {
            let id = rows::require_version(tx, name, version)?;
            let now = now_ms();
            tx.execute(
                "UPDATE model_versions SET deleted = 1, last_updated_timestamp = ?3 WHERE name = ?1 AND version = ?2",
                params![name, version, now],
            )?;
            tx.execute(
                "DELETE FROM registered_model_aliases WHERE model_id = ?1 AND version = ?2",
                params![id, version],
            )?;
            tx.execute("UPDATE registered_models SET last_updated_timestamp = ?2 WHERE id = ?1", params![id, now])?;
            Ok(rows::version_dir(self.home(), name, version))
        })?;
        remove_artifacts(self, name, &[dir]);
        Ok(())
    }

    /// The highest live version of `name` whose manifest digest is `sha256`, if any (lets
    /// a pull of the same files be idempotent). A missing model is `Ok(None)`.
    pub fn find_version_by_sha256(&self, name: &str, sha256: &str) -> Result<Option<ModelVersion>> {
        validate::model_name(name)?;
        self.read(|tx| {
            Ok(rows::versions_where(tx, self.home(), "name = ?1 AND sha256 = ?2", params![name, sha256])?
                .into_iter()
                .next())
        })
    }

    /// The digest `source` would get if registered (same manifest rule), without copying.
    /// Reads every byte of the source.
    pub fn digest_source(source: &Path) -> Result<String> {
        Ok(SourceTree::list(source)?.manifest()?.digest())
    }
}

fn sorted_unique(items: &[String]) -> Vec<String> {
    let mut v = items.to_vec();
    v.sort();
    v.dedup();
    v
}

/// Clears a directory already sitting where version `version` of `name` is about to go.
/// Normally it is the leftover of a registration that died between its rename and its
/// commit (the number was never committed, so nothing refers to it) and is removed. On a
/// case-insensitive file system it could instead be the live directory of a model whose
/// name differs only in case: that is refused, never deleted. Runs under the write lock.
fn clear_leftover(tx: &Connection, home: &Path, name: &str, version: i64, dir: &Path) -> Result<()> {
    if fs::symlink_metadata(dir).is_err() {
        return Ok(());
    }
    let mut stmt = tx.prepare(
        "SELECT name FROM model_versions WHERE name = ?1 COLLATE NOCASE AND version = ?2 AND name <> ?1 AND deleted = 0",
    )?;
    let others =
        stmt.query_map(params![name, version], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
    for other in others {
        let theirs: PathBuf = rows::version_dir(home, &other, version);
        if same_file(dir, &theirs) {
            return Err(RegistryError::InvalidParameter(format!(
                "model names {name:?} and {other:?} differ only in case and share {:?} on this case-insensitive \
                 file system; choose another name",
                dir.display().to_string()
            )));
        }
    }
    fs::remove_dir_all(dir).map_err(|e| RegistryError::io(dir, e))
}

#[cfg(unix)]
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_a: &Path, b: &Path) -> bool {
    // Without inode numbers, assume the worst: refusing is safe, deleting might not be.
    b.exists()
}
