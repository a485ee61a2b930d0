//! `GET /api/2.0/keel/monitoring` (keel extension): what the dashboard's Monitoring tab
//! shows — the monitoring tables (inference tables and their profile / drift metrics,
//! SPEC §6.1–6.2) and each endpoint's `auto_capture_config`.
//!
//! Today no table exists: inference-table capture and `runtime monitor` are not built
//! yet, so `tables` is always empty and `message` says so. Nothing is invented here; the
//! monitor issue fills `tables` (one object per table: `name`, `kind` = `payload` |
//! `profile_metrics` | `drift_metrics`, `endpoint`) and the tab lists them.

use crate::app::Shared;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// The message shown while there is nothing to list.
pub const NO_TABLES: &str = "no monitoring tables yet: this version of keel writes no inference tables \
or profile/drift metrics (auto_capture_config.enabled is refused until it does)";

pub async fn status(State(st): State<Shared>) -> Response {
    let endpoints: Vec<Value> = st
        .endpoints
        .all()
        .iter()
        .map(|ep| {
            let capture = ep.active().config.auto_capture_config.clone();
            json!({"name": ep.name, "auto_capture_config": capture})
        })
        .collect();
    Json(json!({"tables": [], "endpoints": endpoints, "message": NO_TABLES})).into_response()
}
