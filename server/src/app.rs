//! The axum application: shared state, the route table, and the layers every request
//! passes (auth → handler → status metrics), plus the small liveness / readiness /
//! version / metrics / models routes.
//!
//! Every response carries `x-request-id`, a UUID the server generates per request (the
//! inference table's `databricks_request_id` for captured endpoints).
//!
//! Invariants: auth runs before any handler work and before the body is read (401 costs
//! nothing); only `/ping`, `/health`, `/health/ready` and the dashboard's page and static
//! assets (which hold no data; see `dashboard.rs`) are open when keys are set;
//! once draining, readiness is 503 and new generation requests get 503 while in-flight
//! ones finish.

use crate::auth::ApiKeys;
use crate::endpoint::{Endpoint, Endpoints};
use crate::entity::ServedEntity;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::{dashboard, invocations, management, monitoring, openai};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct AppState {
    pub endpoints: Arc<Endpoints>,
    pub metrics: Arc<Metrics>,
    pub keys: Arc<ApiKeys>,
    pub draining: AtomicBool,
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
    pub version: String,
    /// Wakes the hot-swap watcher after a registry change.
    pub follower: crate::hot_swap::Follower,
    pub registry: Option<Arc<keel_registry::Registry>>,
    /// Inference-table writers of endpoints with capture enabled.
    pub captures: crate::capture::Captures,
}

pub type Shared = Arc<AppState>;

/// Who made the request: a non-secret label of the bearer token (or `anonymous`).
#[derive(Clone, Debug)]
pub struct User(pub String);

/// The server-generated id of a request (header `x-request-id`).
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// Where a request was routed; put on responses for the status metrics.
#[derive(Clone, Debug)]
pub struct Routed {
    pub endpoint: String,
    pub entity: String,
    /// The registry model (or declared model) the entity serves, once resolved.
    pub model_name: Option<String>,
    /// The registry version the entity serves (known once it is loaded).
    pub model_version: Option<u64>,
}

impl Routed {
    pub fn of(ep: &Endpoint, e: &ServedEntity) -> Routed {
        Routed {
            endpoint: ep.name.clone(),
            entity: e.name().to_string(),
            model_name: Routed::model_name_of(e),
            model_version: e.model_version(),
        }
    }

    /// The registry model's name for registry models; otherwise the loaded model's
    /// display name (not the path it was declared with).
    pub fn model_name_of(e: &ServedEntity) -> Option<String> {
        match e.resolved() {
            Some(r) if r.version.is_some() => Some(r.model_name),
            r => e.model_name().or(r.map(|r| r.model_name)),
        }
    }

    /// Adds `served-model-name` (and `served-model-version` for registry models, a keel
    /// extension) and the metrics extension to a response.
    pub fn mark(self, mut r: Response) -> Response {
        if let Ok(v) = HeaderValue::from_str(&self.entity) {
            r.headers_mut().insert("served-model-name", v);
        }
        if let Some(v) = self.model_version {
            r.headers_mut().insert("served-model-version", HeaderValue::from(v));
        }
        r.extensions_mut().insert(self);
        r
    }
}

impl AppState {
    /// 503 while draining.
    pub fn check_accepting(&self) -> Result<(), ApiError> {
        if self.draining.load(Ordering::Acquire) {
            return Err(ApiError::unavailable("the server is shutting down; retry on another replica"));
        }
        Ok(())
    }

    pub fn is_ready(&self) -> bool {
        !self.draining.load(Ordering::Acquire) && self.endpoints.all().iter().all(|e| e.is_ready())
    }
}

pub fn router(state: Shared) -> Router {
    let limit = state.max_body_bytes;
    Router::new()
        .route("/ping", get(ping))
        .route("/health", get(ping))
        .route("/health/ready", get(ready))
        .route("/version", get(version))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/invocations", post(invocations::default_invocations))
        .route("/serving-endpoints/{name}/invocations", post(invocations::endpoint_invocations))
        .route("/api/2.0/serving-endpoints", get(management::list).post(management::create))
        .route("/api/2.0/serving-endpoints/{name}", get(management::get).delete(management::delete))
        .route("/api/2.0/serving-endpoints/{name}/config", put(management::update_config))
        .route("/api/2.0/keel/monitoring", get(monitoring::status))
        .merge(crate::mlflow::routes())
        .merge(dashboard::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .layer(middleware::from_fn_with_state(state.clone(), record_status))
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}

/// Routes served without a token: liveness, readiness, and the dashboard's page and
/// assets (no data in them: the page calls the authenticated APIs with the user's token).
/// Gives the request its id (an extension for the handlers) and the response its
/// `x-request-id` header.
async fn request_id(mut req: Request, next: Next) -> Response {
    let id = uuid::Uuid::new_v4().to_string();
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut r = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        r.headers_mut().insert("x-request-id", v);
    }
    r
}

fn is_open_route(path: &str) -> bool {
    matches!(path, "/ping" | "/health" | "/health/ready") || dashboard::is_open_path(path)
}

async fn auth(State(st): State<Shared>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if is_open_route(path) {
        req.extensions_mut().insert(User("anonymous".into()));
        return next.run(req).await;
    }
    let header = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match st.keys.check(header) {
        Ok(user) => {
            req.extensions_mut().insert(User(user));
            next.run(req).await
        }
        Err(e) => {
            let err = ApiError::unauthenticated(format!("{e}; send Authorization: Bearer <token>"));
            let err = if path.starts_with("/v1/") { err.openai() } else { err };
            let mut r = err.into_response();
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
    }
}

async fn record_status(State(st): State<Shared>, req: Request, next: Next) -> Response {
    let r = next.run(req).await;
    let (ep, entity) = match r.extensions().get::<Routed>() {
        Some(x) => (x.endpoint.as_str(), x.entity.as_str()),
        None => ("", ""),
    };
    st.metrics.record_status(ep, entity, r.status().as_u16());
    r
}

async fn method_not_allowed(req: Request) -> Response {
    let path = req.uri().path().to_string();
    let e = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        format!("{} is not allowed on {path}", req.method()),
    );
    if path.starts_with("/v1/") {
        e.openai().into_response()
    } else {
        e.into_response()
    }
}

async fn not_found(req: Request) -> Response {
    let path = req.uri().path().to_string();
    let e = ApiError::not_found("RESOURCE_DOES_NOT_EXIST", format!("no route {} {path}", req.method()));
    if path.starts_with("/v1/") {
        e.openai().into_response()
    } else {
        e.into_response()
    }
}

async fn ping() -> &'static str {
    "OK\n"
}

async fn ready(State(st): State<Shared>) -> Response {
    let endpoints: serde_json::Map<String, serde_json::Value> = st
        .endpoints
        .all()
        .iter()
        .map(|e| (e.name.clone(), json!(if e.is_ready() { "READY" } else { "NOT_READY" })))
        .collect();
    let draining = st.draining.load(Ordering::Acquire);
    let ok = st.is_ready();
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({"status": if ok { "ready" } else if draining { "draining" } else { "not_ready" }, "endpoints": endpoints});
    (status, Json(body)).into_response()
}

async fn version(State(st): State<Shared>) -> Response {
    Json(json!({"version": st.version})).into_response()
}

async fn metrics(State(st): State<Shared>) -> Response {
    let text = st.metrics.render(&st.endpoints);
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}

/// `GET /v1/models`: every endpoint, and every served entity under its own name.
async fn models(State(st): State<Shared>) -> Response {
    let mut data = Vec::new();
    for ep in st.endpoints.all() {
        data.push(json!({"id": ep.name, "object": "model", "created": 0, "owned_by": "keel"}));
        for e in ep.active().entities.iter() {
            if e.name() != ep.name {
                data.push(
                    json!({"id": e.name(), "object": "model", "created": 0, "owned_by": "keel", "parent": ep.name}),
                );
            }
        }
    }
    Json(json!({"object": "list", "data": data})).into_response()
}
