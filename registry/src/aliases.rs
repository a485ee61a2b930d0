//! Aliases: a name (`^[A-Za-z0-9_-]+$`, not `latest` / `v<digits>`) that points at exactly
//! one live version of a model. Setting an alias again moves it; deleting a version deletes
//! the aliases pointing at it (in `versions.rs`), so an alias never dangles.

use rusqlite::params;

use crate::error::{RegistryError, Result};
use crate::rows;
use crate::store::Registry;
use crate::types::ModelVersion;
use crate::validate;

impl Registry {
    /// Points `alias` at `version` (moving it if it pointed elsewhere). `NotFound` if the
    /// version is missing or deleted.
    pub fn set_alias(&self, name: &str, alias: &str, version: u64) -> Result<()> {
        validate::model_name(name)?;
        validate::alias(alias)?;
        let version = validate::version(name, version)?;
        self.write(|tx| {
            let id = rows::require_version(tx, name, version)?;
            upsert_alias(tx, id, alias, version)
        })
    }

    /// Removes an alias; `NotFound` if the model has no such alias.
    pub fn delete_alias(&self, name: &str, alias: &str) -> Result<()> {
        validate::model_name(name)?;
        validate::alias(alias)?;
        self.write(|tx| {
            let id = rows::model_id(tx, name)?;
            let n = tx.execute(
                "DELETE FROM registered_model_aliases WHERE model_id = ?1 AND alias = ?2",
                params![id, alias],
            )?;
            if n == 0 {
                return Err(alias_not_found(name, alias));
            }
            Ok(())
        })
    }

    /// The version `alias` points at.
    pub fn get_version_by_alias(&self, name: &str, alias: &str) -> Result<ModelVersion> {
        validate::model_name(name)?;
        validate::alias(alias)?;
        self.read(|tx| {
            let id = rows::model_id(tx, name)?;
            let version: Option<i64> = rusqlite::OptionalExtension::optional(tx.query_row(
                "SELECT version FROM registered_model_aliases WHERE model_id = ?1 AND alias = ?2",
                params![id, alias],
                |r| r.get(0),
            ))?;
            let version = version.ok_or_else(|| alias_not_found(name, alias))?;
            rows::version(tx, self.home(), name, version)
        })
    }
}

fn alias_not_found(name: &str, alias: &str) -> RegistryError {
    RegistryError::NotFound(format!("registered model {name:?} has no alias {alias:?}"))
}

pub(crate) fn upsert_alias(tx: &rusqlite::Connection, model_id: i64, alias: &str, version: i64) -> Result<()> {
    tx.execute(
        "INSERT INTO registered_model_aliases (model_id, alias, version) VALUES (?1, ?2, ?3) \
         ON CONFLICT (model_id, alias) DO UPDATE SET version = excluded.version",
        params![model_id, alias, version],
    )?;
    Ok(())
}
