//! Tags on models and versions: `set` upserts, `delete` of a missing key is a no-op, but
//! the model (and version) must be live. Keys are 1..=250 characters, values at most 5000.

use rusqlite::params;

use crate::error::Result;
use crate::models::upsert_model_tag;
use crate::rows;
use crate::store::Registry;
use crate::validate;

impl Registry {
    /// Sets (or replaces) a tag on a model.
    pub fn set_model_tag(&self, name: &str, key: &str, value: &str) -> Result<()> {
        validate::model_name(name)?;
        validate::tag(key, value)?;
        self.write(|tx| upsert_model_tag(tx, rows::model_id(tx, name)?, key, value))
    }

    /// Removes a tag from a model; a missing tag is fine, a missing model is `NotFound`.
    pub fn delete_model_tag(&self, name: &str, key: &str) -> Result<()> {
        validate::model_name(name)?;
        validate::tag_key(key)?;
        self.write(|tx| {
            let id = rows::model_id(tx, name)?;
            tx.execute("DELETE FROM registered_model_tags WHERE model_id = ?1 AND key = ?2", params![id, key])?;
            Ok(())
        })
    }

    /// Sets (or replaces) a tag on a version.
    pub fn set_version_tag(&self, name: &str, version: u64, key: &str, value: &str) -> Result<()> {
        validate::model_name(name)?;
        let version = validate::version(name, version)?;
        validate::tag(key, value)?;
        self.write(|tx| {
            rows::require_version(tx, name, version)?;
            upsert_version_tag(tx, name, version, key, value)
        })
    }

    /// Removes a tag from a version; a missing tag is fine, a missing version is `NotFound`.
    pub fn delete_version_tag(&self, name: &str, version: u64, key: &str) -> Result<()> {
        validate::model_name(name)?;
        let version = validate::version(name, version)?;
        validate::tag_key(key)?;
        self.write(|tx| {
            rows::require_version(tx, name, version)?;
            tx.execute(
                "DELETE FROM model_version_tags WHERE name = ?1 AND version = ?2 AND key = ?3",
                params![name, version, key],
            )?;
            Ok(())
        })
    }
}

pub(crate) fn upsert_version_tag(
    tx: &rusqlite::Connection,
    name: &str,
    version: i64,
    key: &str,
    value: &str,
) -> Result<()> {
    tx.execute(
        "INSERT INTO model_version_tags (name, version, key, value) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (name, version, key) DO UPDATE SET value = excluded.value",
        params![name, version, key, value],
    )?;
    Ok(())
}
