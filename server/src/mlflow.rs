//! The registry's REST API under `/api/2.0/mlflow/`: MLflow's paths, parameters and JSON
//! shapes, so `mlflow.MlflowClient` pointed at keel works unchanged.
//!
//! Parameters come from the query string (GET, as MLflow's client sends them) and/or a
//! JSON object body (POST, PATCH, DELETE); a field in both takes the body's value.
//! Versions are strings in JSON (`"version": "3"`), as in MLflow; numbers are accepted
//! too. Every registry call is blocking (SQLite, file copies) and runs off the async
//! workers. After a change that can move what a reference resolves to (alias set or
//! deleted, version created or deleted), the hot-swap watcher is poked so endpoints
//! serving that reference follow at once.

use crate::app::Shared;
use crate::error::ApiError;
use crate::model_info;
use crate::openai::body_bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use axum::{Json, Router};
use bytes::Bytes;
use keel_registry::{ModelVersion, NewVersion, RegisteredModel, Registry, RegistryError};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Default page size of the search routes (MLflow's).
const DEFAULT_MAX_RESULTS: usize = 100;

pub fn routes() -> Router<Shared> {
    let m = "/api/2.0/mlflow";
    Router::new()
        .route(&format!("{m}/registered-models/create"), post(create_model))
        .route(&format!("{m}/registered-models/get"), get(get_model))
        .route(&format!("{m}/registered-models/search"), get(search_models).post(search_models))
        .route(&format!("{m}/registered-models/update"), patch(update_model))
        .route(&format!("{m}/registered-models/delete"), delete(delete_model))
        .route(&format!("{m}/registered-models/set-tag"), post(set_model_tag))
        .route(&format!("{m}/registered-models/delete-tag"), delete(delete_model_tag))
        .route(&format!("{m}/registered-models/alias"), get(get_by_alias).post(set_alias).delete(delete_alias))
        .route(&format!("{m}/registered-models/get-latest-versions"), get(latest_versions).post(latest_versions))
        .route(&format!("{m}/model-versions/create"), post(create_version))
        .route(&format!("{m}/model-versions/get"), get(get_version))
        .route(&format!("{m}/model-versions/search"), get(search_versions).post(search_versions))
        .route(&format!("{m}/model-versions/update"), patch(update_version))
        .route(&format!("{m}/model-versions/delete"), delete(delete_version))
        .route(&format!("{m}/model-versions/set-tag"), post(set_version_tag))
        .route(&format!("{m}/model-versions/delete-tag"), delete(delete_version_tag))
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> ApiError {
        let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ApiError::new(status, e.error_code(), e.to_string())
    }
}

/// A request's parameters: query string merged with the JSON object body.
struct Params(Map<String, Value>);

impl Params {
    fn new(query: HashMap<String, String>, body: &Bytes) -> Result<Params, ApiError> {
        let mut map: Map<String, Value> = query.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
        if !body.iter().all(u8::is_ascii_whitespace) {
            match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(b)) => map.extend(b),
                Ok(_) => return Err(ApiError::bad_request("the request body must be a JSON object")),
                Err(e) => return Err(ApiError::bad_request(format!("the request body is not valid JSON: {e}"))),
            }
        }
        Ok(Params(map))
    }

    fn missing(field: &str) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_PARAMETER_VALUE",
            format!("Missing value for required parameter '{field}'"),
        )
    }

    fn opt_str(&self, field: &str) -> Result<Option<String>, ApiError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::invalid(field, "must be a string")),
        }
    }

    fn str(&self, field: &str) -> Result<String, ApiError> {
        self.opt_str(field)?.filter(|s| !s.is_empty()).ok_or_else(|| Self::missing(field))
    }

    fn version(&self, field: &str) -> Result<u64, ApiError> {
        let bad = || ApiError::invalid(field, "must be a model version number (1, 2, ...)");
        match self.0.get(field) {
            None | Some(Value::Null) => Err(Self::missing(field)),
            Some(Value::String(s)) => s.trim().parse::<u64>().ok().filter(|v| *v > 0).ok_or_else(bad),
            Some(Value::Number(n)) => n.as_u64().filter(|v| *v > 0).ok_or_else(bad),
            Some(_) => Err(bad()),
        }
    }

    fn max_results(&self) -> Result<usize, ApiError> {
        let bad = || ApiError::invalid("max_results", "must be a positive integer");
        match self.0.get("max_results") {
            None | Some(Value::Null) => Ok(DEFAULT_MAX_RESULTS),
            Some(Value::String(s)) => s.trim().parse().map_err(|_| bad()),
            Some(Value::Number(n)) => n.as_u64().map(|v| v as usize).ok_or_else(bad),
            Some(_) => Err(bad()),
        }
    }

    /// `tags: [{key, value}]`.
    fn tags(&self) -> Result<Vec<(String, String)>, ApiError> {
        let Some(v) = self.0.get("tags").filter(|v| !v.is_null()) else { return Ok(Vec::new()) };
        let bad = || ApiError::invalid("tags", "must be a list of {\"key\": ..., \"value\": ...} objects");
        let list = v.as_array().ok_or_else(bad)?;
        list.iter()
            .map(|t| {
                let key = t.get("key").and_then(Value::as_str).ok_or_else(bad)?;
                let value = t.get("value").and_then(Value::as_str).unwrap_or("");
                Ok((key.to_string(), value.to_string()))
            })
            .collect()
    }
}

fn tags_json(tags: &std::collections::BTreeMap<String, String>) -> Value {
    Value::Array(tags.iter().map(|(k, v)| json!({"key": k, "value": v})).collect())
}

/// A model version in MLflow's JSON shape (keel's extra fields under `keel_*`).
pub fn version_json(v: &ModelVersion) -> Value {
    json!({
        "name": v.name,
        "version": v.version.to_string(),
        "creation_timestamp": v.creation_timestamp,
        "last_updated_timestamp": v.last_updated_timestamp,
        "current_stage": "None",
        "description": v.description,
        "source": v.source,
        "run_id": v.run_id.clone().unwrap_or_default(),
        "status": v.status,
        "tags": tags_json(&v.tags),
        "aliases": v.aliases,
        "keel_artifact_path": v.model_path.display().to_string(),
        "keel_sha256": v.sha256,
        "keel_size_bytes": v.size_bytes,
        "keel_model_info": v.info,
    })
}

/// A registered model in MLflow's JSON shape, with its latest version when there is one.
pub fn model_json(m: &RegisteredModel, latest: Option<&ModelVersion>) -> Value {
    json!({
        "name": m.name,
        "creation_timestamp": m.creation_timestamp,
        "last_updated_timestamp": m.last_updated_timestamp,
        "description": m.description,
        "tags": tags_json(&m.tags),
        "aliases": m.aliases.iter().map(|(a, v)| json!({"alias": a, "version": v.to_string()})).collect::<Vec<_>>(),
        "latest_versions": latest.map(|v| vec![version_json(v)]).unwrap_or_default(),
    })
}

/// The registry, or 503 when this server runs without one.
fn registry(st: &Shared) -> Result<Arc<Registry>, ApiError> {
    st.registry.clone().ok_or_else(|| ApiError::unavailable("this server runs without a model registry"))
}

/// Runs `f` on the registry off the async workers; answers its JSON or its error.
async fn call(
    st: &Shared,
    query: Q,
    body: B,
    poke: bool,
    f: impl FnOnce(&Registry, Params) -> Result<Value, ApiError> + Send + 'static,
) -> Response {
    let run = || async {
        let reg = registry(st)?;
        let Query(query) = query.map_err(|e| ApiError::bad_request(format!("bad query string: {e}")))?;
        let params = Params::new(query, &body_bytes(st, body)?)?;
        tokio::task::spawn_blocking(move || f(&reg, params))
            .await
            .map_err(|e| ApiError::internal(format!("registry call panicked: {e}")))?
    };
    match run().await {
        Ok(v) => {
            if poke {
                st.follower.poke();
            }
            Json(v).into_response()
        }
        Err(e) => e.into_response(),
    }
}

type Q = Result<Query<HashMap<String, String>>, QueryRejection>;
type B = Result<Bytes, BytesRejection>;

fn latest_of(reg: &Registry, m: &RegisteredModel) -> Result<Option<ModelVersion>, ApiError> {
    Ok(match m.latest_version {
        Some(v) => Some(reg.get_version(&m.name, v)?),
        None => None,
    })
}

async fn create_model(State(st): State<Shared>, q: Q, body: B) -> Response {
    call(&st, q, body, false, |reg, p| {
        let m = reg.create_model(&p.str("name")?, p.opt_str("description")?.as_deref(), &p.tags()?)?;
        Ok(json!({"registered_model": model_json(&m, None)}))
    })
    .await
}

async fn get_model(State(st): State<Shared>, q: Q, body: B) -> Response {
    call(&st, q, body, false, |reg, p| {
        let m = reg.get_model(&p.str("name")?)?;
        Ok(json!({"registered_model": model_json(&m, latest_of(reg, &m)?.as_ref())}))
    })
    .await
}

async fn search_models(State(st): State<Shared>, q: Q, body: B) -> Response {
    call(&st, q, body, false, |reg, p| {
        let filter = p.opt_str("filter")?.unwrap_or_default();
        let page = reg.search_models(&filter, p.max_results()?, p.opt_str("page_token")?.as_deref())?;
        let items = page
            .items
            .iter()
            .map(|m| Ok(model_json(m, latest_of(reg, m)?.as_ref())))
            .collect::<Result<Vec<_>, ApiError>>()?;
        let mut v = json!({"registered_models": items});
        if let Some(t) = page.next_page_token {
            v["next_page_token"] = Value::String(t);
        }
        Ok(v)
    })
    .await
}

async fn update_model(State(st): State<Shared>, q: Q, body: B) -> Response {
    call(&st, q, body, false, |reg, p| {
        let m = reg.update_model(&p.str("name")?, &p.opt_str("description")?.unwrap_or_default())?;
        Ok(json!({"registered_model": model_json(&m, latest_of(reg, &m)?.as_ref())}))
    })
    .await
}

async fn delete_model(State(st): State<Shared>, q: Q, body: B) -> Response {
    call(&st, q, body, true, |reg, p| {
        reg.delete_model(&p.str("name")?)?;
        Ok(json!({}))
    })
    .await
}

async fn set_model_tag(State(st): State<Shared>, q: Q, body: B) -> Response {
    call(&st, q, body, false, |reg, p| {
        reg.set_model_tag(&p.str("name")?, &p.str("key")?, &p.opt_str("value")?.unwrap_or_default())?;
        Ok(json!({}))
    })
    .await
}

async fn delete_model_tag(State(st): State<Shared>, q: Q, body: B) -> Response {
    call(&st, q, body, false, |reg, p| {
        reg.delete_model_tag(&p.str("name")?, &p.str("key")?)?;
        Ok(json!({}))
    })
    .await
}

async fn set_alias(State(st): State<Shared>, q: Q, body: B) -> Response {
    call(&st, q, body, true, |reg, p| {
        reg.set_alias(&p.str("name")?, &p.str("alias")?, p.version("version")?)?;
        Ok(json!({}))
    })
    .await
}

async fn delete_alias(State(st): State<Shared>, q: Q, body: B) -> Response {
    call(&st, q, body, true, |reg, p| {
        reg.delete_alias(&p.str("name")?, &p.str("alias")?)?;
        Ok(json!({}))
    })
    .await
}

async fn get_by_alias(State(st): State<Shared>, q: Q, body: B) -> Response {
    call(&st, q, body, false, |reg, p| {
        let v = reg.get_version_by_alias(&p.str("name")?, &p.str("alias")?)?;
        Ok(json!({"model_version": version_json(&v)}))
    })
    .await
}

async fn latest_versions(State(st): State<Shared>, q: Q, body: B) -> Response {
    call(&st, q, body, false, |reg, p| {
        let m = reg.get_model(&p.str("name")?)?;
        let latest = latest_of(reg, &m)?;
        Ok(json!({"model_versions": latest.iter().map(version_json).collect::<Vec<_>>()}))
    })
    .await
}

async fn create_version(State(st): State<Shared>, q: Q, body: B) -> Response {
    call(&st, q, body, true, |reg, p| {
        let name = p.str("name")?;
        // As MLflow's REST API: the registered model must exist (its client's
        // `register_model` creates it first; `runtime registry register` does both).
        reg.get_model(&name)?;
        let source = PathBuf::from(p.str("source")?);
        let info = model_info::describe(&source).map_err(|m| ApiError::invalid("source", m))?;
        let v = reg.create_version(
            &name,
            NewVersion {
                source,
                description: p.opt_str("description")?,
                tags: p.tags()?,
                aliases: Vec::new(),
                info,
                run_id: p.opt_str("run_id")?,
            },
        )?;
        Ok(json!({"model_version": version_json(&v)}))
    })
    .await
}

async fn get_version(State(st): State<Shared>, q: Q, body: B) -> Response {
    call(&st, q, body, false, |reg, p| {
        let v = reg.get_version(&p.str("name")?, p.version("version")?)?;
        Ok(json!({"model_version": version_json(&v)}))
    })
    .await
}

async fn search_versions(State(st): State<Shared>, q: Q, body: B) -> Response {
    call(&st, q, body, false, |reg, p| {
        let filter = p.opt_str("filter")?.unwrap_or_default();
        let page = reg.search_versions(&filter, p.max_results()?, p.opt_str("page_token")?.as_deref())?;
        let mut v = json!({"model_versions": page.items.iter().map(version_json).collect::<Vec<_>>()});
        if let Some(t) = page.next_page_token {
            v["next_page_token"] = Value::String(t);
        }
        Ok(v)
    })
    .await
}

async fn update_version(State(st): State<Shared>, q: Q, body: B) -> Response {
    call(&st, q, body, false, |reg, p| {
        let v =
            reg.update_version(&p.str("name")?, p.version("version")?, &p.opt_str("description")?.unwrap_or_default())?;
        Ok(json!({"model_version": version_json(&v)}))
    })
    .await
}

async fn delete_version(State(st): State<Shared>, q: Q, body: B) -> Response {
    call(&st, q, body, true, |reg, p| {
        reg.delete_version(&p.str("name")?, p.version("version")?)?;
        Ok(json!({}))
    })
    .await
}

async fn set_version_tag(State(st): State<Shared>, q: Q, body: B) -> Response {
    call(&st, q, body, false, |reg, p| {
        reg.set_version_tag(
            &p.str("name")?,
            p.version("version")?,
            &p.str("key")?,
            &p.opt_str("value")?.unwrap_or_default(),
        )?;
        Ok(json!({}))
    })
    .await
}

async fn delete_version_tag(State(st): State<Shared>, q: Q, body: B) -> Response {
    call(&st, q, body, false, |reg, p| {
        reg.delete_version_tag(&p.str("name")?, p.version("version")?, &p.str("key")?)?;
        Ok(json!({}))
    })
    .await
}
