//! Registered models: create, get, update, search, delete. A model name is live at most
//! once; deleting a model soft-deletes it with all its versions (their rows stay, so a
//! re-created model continues the version numbering) and then removes their artifacts.

use rusqlite::params;

use crate::error::{RegistryError, Result};
use crate::filter::{Filter, Target};
use crate::rows;
use crate::store::{now_ms, remove_artifacts, Registry};
use crate::types::{Page, RegisteredModel};
use crate::validate;

impl Registry {
    /// Creates a model; `AlreadyExists` if a live model has the name.
    pub fn create_model(
        &self,
        name: &str,
        description: Option<&str>,
        tags: &[(String, String)],
    ) -> Result<RegisteredModel> {
        validate::model_name(name)?;
        for (k, v) in tags {
            validate::tag(k, v)?;
        }
        self.write(|tx| {
            if rows::live_model_id(tx, name)?.is_some() {
                return Err(RegistryError::AlreadyExists(format!("registered model {name:?} already exists")));
            }
            let id = insert_model(tx, name, description.unwrap_or(""), now_ms())?;
            for (k, v) in tags {
                upsert_model_tag(tx, id, k, v)?;
            }
            rows::model(tx, id)
        })
    }

    /// The live model called `name`.
    pub fn get_model(&self, name: &str) -> Result<RegisteredModel> {
        validate::model_name(name)?;
        self.read(|tx| rows::model(tx, rows::model_id(tx, name)?))
    }

    /// Replaces the model's description.
    pub fn update_model(&self, name: &str, description: &str) -> Result<RegisteredModel> {
        validate::model_name(name)?;
        self.write(|tx| {
            let id = rows::model_id(tx, name)?;
            tx.execute(
                "UPDATE registered_models SET description = ?2, last_updated_timestamp = ?3 WHERE id = ?1",
                params![id, description, now_ms()],
            )?;
            rows::model(tx, id)
        })
    }

    /// Live models matching `filter` (see `filter.rs`), ordered by name, one page at a time.
    pub fn search_models(
        &self,
        filter: &str,
        max_results: usize,
        page_token: Option<&str>,
    ) -> Result<Page<RegisteredModel>> {
        let filter = Filter::parse(filter, Target::Models)?;
        let all = self.read(|tx| {
            let mut out = Vec::new();
            for id in rows::live_model_ids(tx, filter.exact_name())? {
                let model = rows::model(tx, id)?;
                if filter.matches(&model) {
                    out.push(model);
                }
            }
            Ok(out)
        })?;
        Page::cut(all, max_results, crate::types::MAX_RESULTS_LIMIT, page_token)
    }

    /// Soft-deletes the model, its versions, aliases and tags; removes the artifacts.
    pub fn delete_model(&self, name: &str) -> Result<()> {
        validate::model_name(name)?;
        let dirs = self.write(|tx| {
            let id = rows::model_id(tx, name)?;
            let now = now_ms();
            let mut stmt = tx.prepare("SELECT version FROM model_versions WHERE model_id = ?1 AND deleted = 0")?;
            let versions = stmt.query_map([id], |r| r.get::<_, i64>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
            tx.execute(
                "UPDATE model_versions SET deleted = 1, last_updated_timestamp = ?2 WHERE model_id = ?1 AND deleted = 0",
                params![id, now],
            )?;
            tx.execute(
                "UPDATE registered_models SET deleted = 1, last_updated_timestamp = ?2 WHERE id = ?1",
                params![id, now],
            )?;
            Ok(versions.into_iter().map(|v| rows::version_dir(self.home(), name, v)).collect::<Vec<_>>())
        })?;
        remove_artifacts(self, name, &dirs);
        Ok(())
    }
}

/// Inserts a live model row; the caller has checked that none is live under `name`.
pub(crate) fn insert_model(tx: &rusqlite::Connection, name: &str, description: &str, now: i64) -> Result<i64> {
    tx.execute(
        "INSERT INTO registered_models (name, description, creation_timestamp, last_updated_timestamp) \
         VALUES (?1, ?2, ?3, ?3)",
        params![name, description, now],
    )?;
    Ok(tx.last_insert_rowid())
}

pub(crate) fn upsert_model_tag(tx: &rusqlite::Connection, model_id: i64, key: &str, value: &str) -> Result<()> {
    tx.execute(
        "INSERT INTO registered_model_tags (model_id, key, value) VALUES (?1, ?2, ?3) \
         ON CONFLICT (model_id, key) DO UPDATE SET value = excluded.value",
        params![model_id, key, value],
    )?;
    Ok(())
}
