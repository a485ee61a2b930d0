//! Reading records out of the SQLite store: the live model of a name, a live version, and
//! the tags and aliases that go with them. Every function takes the connection of an open
//! transaction, so a record and its tags/aliases come from one consistent snapshot. Only
//! live rows (`deleted = 0`) are ever returned; a missing or deleted entity is `NotFound`
//! with a one-line message naming it. Paths are derived from the home directory, never
//! stored, so a registry home can be moved as a whole.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};

use crate::error::{RegistryError, Result};
use crate::manifest::Manifest;
use crate::types::{ModelInfo, ModelVersion, RegisteredModel};

/// `home/artifacts`.
pub fn artifacts_root(home: &Path) -> PathBuf {
    home.join("artifacts")
}

/// `home/artifacts/<name>/<version>`.
pub fn version_dir(home: &Path, name: &str, version: i64) -> PathBuf {
    artifacts_root(home).join(name).join(version.to_string())
}

pub fn model_not_found(name: &str) -> RegistryError {
    RegistryError::NotFound(format!("registered model {name:?} does not exist"))
}

pub fn version_not_found(name: &str, version: i64) -> RegistryError {
    RegistryError::NotFound(format!("registered model {name:?} has no version {version}"))
}

/// The id of the live model called `name`, if any.
pub fn live_model_id(conn: &Connection, name: &str) -> Result<Option<i64>> {
    Ok(conn
        .query_row("SELECT id FROM registered_models WHERE name = ?1 AND deleted = 0", [name], |r| r.get(0))
        .optional()?)
}

/// The id of the live model called `name`, or `NotFound`.
pub fn model_id(conn: &Connection, name: &str) -> Result<i64> {
    live_model_id(conn, name)?.ok_or_else(|| model_not_found(name))
}

/// The live model's id, or `NotFound` unless `name` has a live version `version`.
pub fn require_version(conn: &Connection, name: &str, version: i64) -> Result<i64> {
    let id = model_id(conn, name)?;
    let live: Option<i64> = conn
        .query_row(
            "SELECT 1 FROM model_versions WHERE name = ?1 AND version = ?2 AND deleted = 0",
            params![name, version],
            |r| r.get(0),
        )
        .optional()?;
    live.map(|_| id).ok_or_else(|| version_not_found(name, version))
}

/// The model with row id `id`, with tags, aliases and latest version.
pub fn model(conn: &Connection, id: i64) -> Result<RegisteredModel> {
    let (name, description, creation_timestamp, last_updated_timestamp) = conn.query_row(
        "SELECT name, description, creation_timestamp, last_updated_timestamp FROM registered_models WHERE id = ?1",
        [id],
        |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    let tags = pairs(conn, "SELECT key, value FROM registered_model_tags WHERE model_id = ?1", params![id])?;
    let mut stmt = conn.prepare_cached("SELECT alias, version FROM registered_model_aliases WHERE model_id = ?1")?;
    let aliases = stmt
        .query_map([id], |r| Ok((r.get::<_, String>(0)?, to_u64(r.get(1)?))))?
        .collect::<rusqlite::Result<BTreeMap<_, _>>>()?;
    let latest = latest_version(conn, id)?;
    Ok(RegisteredModel {
        name,
        creation_timestamp,
        last_updated_timestamp,
        description,
        tags,
        aliases,
        latest_version: latest.map(to_u64),
    })
}

/// The highest live version of the model with row id `id`.
pub fn latest_version(conn: &Connection, id: i64) -> Result<Option<i64>> {
    let sql = "SELECT MAX(version) FROM model_versions WHERE model_id = ?1 AND deleted = 0";
    Ok(conn.query_row(sql, [id], |r| r.get(0))?)
}

/// Ids of all live models, by name, optionally only the one called `name`.
pub fn live_model_ids(conn: &Connection, name: Option<&str>) -> Result<Vec<i64>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id FROM registered_models WHERE deleted = 0 AND (?1 IS NULL OR name = ?1) ORDER BY name",
    )?;
    let ids = stmt.query_map([name], |r| r.get(0))?.collect::<rusqlite::Result<Vec<i64>>>()?;
    Ok(ids)
}

const VERSION_COLUMNS: &str = "name, version, creation_timestamp, last_updated_timestamp, description, source, \
                               run_id, status, model_file, size_bytes, sha256, info";

/// Live version `version` of `name`, or `NotFound`.
pub fn version(conn: &Connection, home: &Path, name: &str, version: i64) -> Result<ModelVersion> {
    model_id(conn, name)?;
    versions_where(conn, home, "name = ?1 AND version = ?2", params![name, version])?
        .pop()
        .ok_or_else(|| version_not_found(name, version))
}

/// Live versions matching `condition` (SQL over `model_versions` columns), ordered by name,
/// then version descending.
pub fn versions_where(
    conn: &Connection,
    home: &Path,
    condition: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<ModelVersion>> {
    let sql = format!(
        "SELECT {VERSION_COLUMNS} FROM model_versions WHERE deleted = 0 AND ({condition}) ORDER BY name, version DESC"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt
        .query_map(args, |r| {
            Ok(VersionRow {
                name: r.get(0)?,
                version: r.get(1)?,
                creation_timestamp: r.get(2)?,
                last_updated_timestamp: r.get(3)?,
                description: r.get(4)?,
                source: r.get(5)?,
                run_id: r.get(6)?,
                status: r.get(7)?,
                model_file: r.get(8)?,
                size_bytes: r.get(9)?,
                sha256: r.get(10)?,
                info: r.get(11)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter().map(|row| row.into_version(conn, home)).collect()
}

/// The manifest recorded for live version `version` of `name`.
pub fn manifest(conn: &Connection, name: &str, version: i64) -> Result<Manifest> {
    require_version(conn, name, version)?;
    let json: String = conn.query_row(
        "SELECT manifest FROM model_versions WHERE name = ?1 AND version = ?2",
        params![name, version],
        |r| r.get(0),
    )?;
    Ok(serde_json::from_str(&json)?)
}

struct VersionRow {
    name: String,
    version: i64,
    creation_timestamp: i64,
    last_updated_timestamp: i64,
    description: String,
    source: String,
    run_id: Option<String>,
    status: String,
    model_file: String,
    size_bytes: i64,
    sha256: String,
    info: String,
}

impl VersionRow {
    fn into_version(self, conn: &Connection, home: &Path) -> Result<ModelVersion> {
        let tags = pairs(
            conn,
            "SELECT key, value FROM model_version_tags WHERE name = ?1 AND version = ?2",
            params![self.name, self.version],
        )?;
        let mut stmt = conn.prepare_cached(
            "SELECT a.alias FROM registered_model_aliases a JOIN registered_models m ON m.id = a.model_id \
             WHERE m.name = ?1 AND m.deleted = 0 AND a.version = ?2 ORDER BY a.alias",
        )?;
        let aliases =
            stmt.query_map(params![self.name, self.version], |r| r.get(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
        let info: ModelInfo = serde_json::from_str(&self.info)?;
        let artifact_dir = version_dir(home, &self.name, self.version);
        Ok(ModelVersion {
            model_path: artifact_dir.join(&self.model_file),
            artifact_dir,
            version: to_u64(self.version),
            name: self.name,
            creation_timestamp: self.creation_timestamp,
            last_updated_timestamp: self.last_updated_timestamp,
            description: self.description,
            source: self.source,
            run_id: self.run_id,
            status: self.status,
            tags,
            aliases,
            size_bytes: to_u64(self.size_bytes),
            sha256: self.sha256,
            info,
        })
    }
}

fn pairs(conn: &Connection, sql: &str, args: impl rusqlite::Params) -> Result<BTreeMap<String, String>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let map = stmt.query_map(args, |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?;
    Ok(map)
}

/// Stored counts and versions are never negative (CHECK constraints and validation).
pub fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}
