//! `/api/2.0/serving-endpoints`: create, list, get, update config, delete — the
//! Databricks serving-endpoints REST API, on the same structs as the `--config` file.
//!
//! Create and config updates answer at once; loading happens in the background and
//! shows in `state.ready` / `state.config_update` (poll `GET .../{name}`), as on
//! Databricks. Deleting an endpoint lets its in-flight requests finish (they hold the
//! entities); new requests get 404.

use crate::app::Shared;
use crate::config::{EndpointConfig, EndpointSpec};
use crate::error::ApiError;
use crate::llm_request::parse_body;
use crate::openai::body_bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde_json::json;

fn not_found(name: &str) -> ApiError {
    ApiError::not_found("RESOURCE_DOES_NOT_EXIST", format!("serving endpoint {name:?} does not exist"))
}

/// Opens the inference table of an endpoint whose new config enables capture (off the
/// async workers: opening replays a crashed WAL).
async fn prepare_capture(st: &Shared, endpoint: &str, config: &EndpointConfig) -> Result<(), ApiError> {
    if !config.auto_capture_config.as_ref().is_some_and(|c| c.enabled) {
        return Ok(());
    }
    let (st, endpoint, config) = (st.clone(), endpoint.to_string(), config.clone());
    tokio::task::spawn_blocking(move || st.captures.prepare(&endpoint, &config))
        .await
        .unwrap_or_else(|e| Err(ApiError::internal(format!("opening the inference table failed: {e}"))))
}

pub async fn create(State(st): State<Shared>, body: Result<Bytes, BytesRejection>) -> Response {
    let spec = match body_bytes(&st, body).and_then(|b| parse_body::<EndpointSpec>(&b)) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let mut checked = spec.clone();
    if let Err(e) = checked.validate() {
        return e.into_response();
    }
    if let Err(e) = prepare_capture(&st, &checked.name, &checked.config).await {
        return e.into_response();
    }
    match st.endpoints.create(spec) {
        Ok(ep) => {
            tracing::info!("endpoint {} created", ep.name);
            Json(ep.to_json()).into_response()
        }
        Err(e) => e.into_response(),
    }
}

pub async fn list(State(st): State<Shared>) -> Response {
    let all: Vec<_> = st.endpoints.all().iter().map(|e| e.to_json()).collect();
    Json(json!({ "endpoints": all })).into_response()
}

pub async fn get(State(st): State<Shared>, Path(name): Path<String>) -> Response {
    match st.endpoints.get(&name) {
        Some(ep) => Json(ep.to_json()).into_response(),
        None => not_found(&name).into_response(),
    }
}

pub async fn update_config(
    State(st): State<Shared>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(ep) = st.endpoints.get(&name) else {
        return not_found(&name).into_response();
    };
    let config = match body_bytes(&st, body).and_then(|b| parse_body::<EndpointConfig>(&b)) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let mut checked = config.clone();
    if let Err(e) = checked.validate() {
        return e.into_response();
    }
    if let Err(e) = prepare_capture(&st, &name, &checked).await {
        return e.into_response();
    }
    match ep.update_config(config, &st.endpoints.loader, &st.endpoints.engine_config) {
        Ok(()) => Json(ep.to_json()).into_response(),
        Err(e) => e.into_response(),
    }
}

pub async fn delete(State(st): State<Shared>, Path(name): Path<String>) -> Response {
    match st.endpoints.remove(&name) {
        Some(_) => {
            tracing::info!("endpoint {name} deleted");
            Json(json!({})).into_response()
        }
        None => not_found(&name).into_response(),
    }
}
