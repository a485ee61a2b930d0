//! OpenAI-compatible routes (`/v1/completions`, `/v1/chat/completions`) and the shared
//! path every LLM request takes: pick the endpoint and entity, rate-limit, lease the
//! entity, validate and tokenize, generate (whole or streamed).
//!
//! `model` selects an endpoint by name (traffic split applies) or a served entity by
//! name (no split); absent, the endpoint named `default` (or the only one) answers.

use crate::app::{RequestId, Routed, Shared, User};
use crate::capture::{self, Capture};
use crate::endpoint::Endpoint;
use crate::entity::{Lease, ServedEntity};
use crate::error::ApiError;
use crate::generation::{self, GenCtx, Shape};
use crate::llm_request::{parse_body, Kind, LlmRequest};
use crate::metrics::EntityLabels;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::Sse;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Instant;

/// The request body, or 413 / 400.
pub fn body_bytes(st: &Shared, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(st.max_body_bytes)
        } else {
            ApiError::bad_request(format!("cannot read the request body: {r}"))
        }
    })
}

/// Finds what answers `model`.
pub fn resolve(st: &Shared, model: Option<&str>) -> Result<(Arc<Endpoint>, Option<Arc<ServedEntity>>), ApiError> {
    match model {
        Some(m) if !m.is_empty() => {
            if let Some(ep) = st.endpoints.get(m) {
                return Ok((ep, None));
            }
            if let Some((ep, e)) = st.endpoints.entities().into_iter().find(|(_, e)| e.name() == m) {
                return Ok((ep, Some(e)));
            }
            let known: Vec<String> = st.endpoints.all().iter().map(|e| e.name.clone()).collect();
            let mut err = ApiError::not_found(
                "ENDPOINT_NOT_FOUND",
                format!("model {m:?} is not served here; endpoints: {known:?} (GET /v1/models lists all)"),
            );
            err.param = Some("model".into());
            Err(err)
        }
        _ => {
            if let Some(ep) = st.endpoints.get("default") {
                return Ok((ep, None));
            }
            match st.endpoints.all().as_slice() {
                [one] => Ok((one.clone(), None)),
                _ => Err(ApiError::invalid("model", "is required: this server has several endpoints")),
            }
        }
    }
}

/// A request admitted to an entity: where it went, the lease holding its place, and the
/// context its generation records into.
pub struct Admitted {
    pub routed: Routed,
    pub lease: Lease,
    pub ctx: GenCtx,
}

/// A refusal: the error, and the routing once an entity was chosen (so the response
/// carries `served-model-name` and is counted under that entity).
pub type Refusal = (ApiError, Option<Routed>);

/// The response for a refusal, in OpenAI's error shape when `openai`.
pub fn refuse((e, routed): Refusal, openai: bool) -> Response {
    let r = if openai { e.openai() } else { e }.into_response();
    match routed {
        Some(x) => x.mark(r),
        None => r,
    }
}

/// Admission shared by every generation route: not draining, within the endpoint's rate
/// limits, an entity (the given one, else the traffic split's pick), and a lease on it
/// within the request timeout. `arrived` starts the request's latency clock.
pub async fn admit(
    st: &Shared,
    user: &str,
    ep: &Endpoint,
    entity: Option<Arc<ServedEntity>>,
    arrived: Instant,
) -> Result<Admitted, Refusal> {
    st.check_accepting().and_then(|_| ep.check_rate(user)).map_err(|e| (e, None))?;
    let entity = entity
        .or_else(|| ep.active().route())
        .ok_or_else(|| (ApiError::unavailable(format!("endpoint {:?} routes no traffic", ep.name)), None))?;
    let mut routed = Routed::of(ep, &entity);
    let lease = match tokio::time::timeout(st.request_timeout, entity.lease()).await {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => return Err((e, Some(routed))),
        Err(_) => return Err((ApiError::timeout(st.request_timeout.as_secs()), Some(routed))),
    };
    // Loaded now: the version is known (a load on demand may have resolved it just now).
    routed.model_version = entity.model_version();
    routed.model_name = Routed::model_name_of(&entity);
    let ctx = GenCtx {
        metrics: st.metrics.clone(),
        labels: EntityLabels { endpoint: routed.endpoint.clone(), entity: routed.entity.clone() },
        timeout: st.request_timeout,
        arrived,
        first_token: Default::default(),
    };
    Ok(Admitted { routed, lease, ctx })
}

/// Serves one LLM request on `ep` (or the given entity of it). Errors come back with the
/// routing already attached, so they carry `served-model-name` once an entity is known.
/// A stream takes `capture` and logs itself; otherwise the caller logs the response
/// (`capture::respond`), with the token counts recorded here.
#[allow(clippy::too_many_arguments)]
pub async fn serve_llm(
    st: &Shared,
    user: &str,
    ep: Arc<Endpoint>,
    entity: Option<Arc<ServedEntity>>,
    req: LlmRequest,
    kind: Kind,
    model_name: String,
    openai_errors: bool,
    capture: &mut Option<Capture>,
) -> Response {
    let Admitted { routed, lease, ctx } = match admit(st, user, &ep, entity, Instant::now()).await {
        Ok(a) => a,
        Err(r) => return refuse(r, openai_errors),
    };
    let tok = lease.handle.tokenizer().clone();
    let prepared = match req.prepare(kind, &tok, lease.handle.model_config()) {
        Ok(p) => p,
        Err(e) => return refuse((e, Some(routed)), openai_errors),
    };
    let shape = Shape::new(kind, model_name, prepared.logprobs, tok);
    let result = if prepared.stream {
        if let Some(c) = capture.as_mut() {
            c.route(&routed);
        }
        generation::stream_response(lease, &prepared, shape, ctx, capture).map(|s| Sse::new(s).into_response())
    } else {
        generation::run_to_end(&lease, &prepared, &ctx).await.map(|c| {
            if let Some(cap) = capture.as_mut() {
                let (prompt, completion) = generation::token_counts(&c, prepared.n);
                cap.generation(prompt, completion, ctx.ttft(), generation::mean_logprob(&c));
            }
            Json(shape.full(&c, prepared.n)).into_response()
        })
    };
    match result {
        Ok(r) => routed.mark(r),
        Err(e) => refuse((e, Some(routed)), openai_errors),
    }
}

async fn openai_route(
    st: Shared,
    user: User,
    id: RequestId,
    body: Result<Bytes, BytesRejection>,
    kind: Kind,
) -> Response {
    let arrived = Instant::now();
    let bytes = match body_bytes(&st, body) {
        Ok(b) => b,
        Err(e) => return e.openai().into_response(),
    };
    let req = match parse_body::<LlmRequest>(&bytes) {
        Ok(r) => r,
        Err(e) => {
            // Still JSON with a servable `model`: the error is logged on that endpoint.
            let cap = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| resolve(&st, v.get("model").and_then(|m| m.as_str())).ok())
                .and_then(|(ep, _)| Capture::begin(&st, &ep, &id, &bytes, arrived));
            return capture::respond(cap, e.openai().into_response()).await;
        }
    };
    let (ep, entity) = match resolve(&st, req.model.as_deref()) {
        Ok(x) => x,
        Err(e) => return e.openai().into_response(),
    };
    let mut cap = Capture::begin(&st, &ep, &id, &bytes, arrived);
    let name = req.model.clone().filter(|m| !m.is_empty()).unwrap_or_else(|| ep.name.clone());
    let resp = serve_llm(&st, &user.0, ep, entity, req, kind, name, true, &mut cap).await;
    capture::respond(cap, resp).await
}

pub async fn completions(
    State(st): State<Shared>,
    Extension(user): Extension<User>,
    Extension(id): Extension<RequestId>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    openai_route(st, user, id, body, Kind::Completion).await
}

pub async fn chat_completions(
    State(st): State<Shared>,
    Extension(user): Extension<User>,
    Extension(id): Extension<RequestId>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    openai_route(st, user, id, body, Kind::Chat).await
}
