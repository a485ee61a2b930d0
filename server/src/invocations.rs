//! MLflow scoring (`POST /invocations`, the default endpoint) and Databricks endpoint
//! queries (`POST /serving-endpoints/{name}/invocations`).
//!
//! A JSON body with top-level `messages`, `prompt` or `input` is the unified LLM format
//! and is answered in OpenAI shape (streaming allowed); any other body is the MLflow
//! scoring protocol (`dataframe_split`, `dataframe_records`, `instances`, `inputs`, or
//! CSV) and is answered `{"predictions": [...]}`, one string per row, in row order.
//! Errors use the Databricks shape here. Scoring rows default to 256 new tokens.

use crate::app::{RequestId, Shared, User};
use crate::capture::{self, Capture};
use crate::endpoint::Endpoint;
use crate::error::ApiError;
use crate::generation;
use crate::llm_request::{parse_body, Kind, LlmRequest};
use crate::openai::{admit, body_bytes, refuse, resolve, serve_llm, Admitted};
use crate::scoring::{self, BodyFormat, ScoringError, ScoringInput};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;

/// New tokens per scoring row when `params.max_tokens` is absent.
pub const SCORING_DEFAULT_MAX_TOKENS: u64 = 256;

impl From<ScoringError> for ApiError {
    fn from(e: ScoringError) -> ApiError {
        match e {
            ScoringError::BadRequest(m) => ApiError::bad_request(m),
            ScoringError::InvalidParameter(m) => {
                ApiError::new(axum::http::StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE", m)
            }
            ScoringError::UnsupportedMediaType(m) => ApiError::unsupported_media_type(m),
        }
    }
}

pub async fn default_invocations(
    State(st): State<Shared>,
    Extension(user): Extension<User>,
    Extension(id): Extension<RequestId>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match resolve(&st, None) {
        Ok((ep, _)) => invoke(st, user, id, ep, headers, body).await,
        Err(e) => e.into_response(),
    }
}

pub async fn endpoint_invocations(
    State(st): State<Shared>,
    Extension(user): Extension<User>,
    Extension(id): Extension<RequestId>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match st.endpoints.require(&name) {
        Ok(ep) => invoke(st, user, id, ep, headers, body).await,
        Err(e) => e.into_response(),
    }
}

/// The endpoint is known here, so every outcome from now on is captured (when the
/// endpoint captures), parse errors included; a body that cannot be read is not.
async fn invoke(
    st: Shared,
    user: User,
    id: RequestId,
    ep: Arc<Endpoint>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let arrived = Instant::now();
    let mut cap = match &body {
        Ok(b) => Capture::begin(&st, &ep, &id, b, arrived),
        Err(_) => None,
    };
    let resp = match parse_invocation(&st, &headers, body) {
        Ok(Invocation::Llm(req, kind)) => {
            let name = ep.name.clone();
            serve_llm(&st, &user.0, ep, None, req, kind, name, false, &mut cap).await
        }
        Ok(Invocation::Scoring(input)) => score(&st, &user.0, ep, input, arrived, cap.as_mut()).await,
        Err(e) => e.into_response(),
    };
    capture::respond(cap, resp).await
}

// One per request, moved once: the size difference costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
enum Invocation {
    Llm(LlmRequest, Kind),
    Scoring(ScoringInput),
}

fn parse_invocation(
    st: &Shared,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Invocation, ApiError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let format = scoring::body_format(content_type)?;
    let body = body_bytes(st, body)?;
    match format {
        BodyFormat::Csv => Ok(Invocation::Scoring(scoring::parse_csv(&body)?)),
        BodyFormat::Json => {
            let v: Value = parse_body(&body)?;
            if scoring::is_unified_llm_body(&v) {
                let req: LlmRequest = parse_body(&body)?;
                let kind = req.kind()?;
                Ok(Invocation::Llm(req, kind))
            } else {
                Ok(Invocation::Scoring(scoring::parse_json(&v)?))
            }
        }
    }
}

/// The generation parameters of a scoring request (`params`), as an LLM request.
fn scoring_request(input: &ScoringInput) -> Result<LlmRequest, ApiError> {
    let params = Value::Object(input.params.clone());
    let mut req: LlmRequest = serde_path_to_error::deserialize(params).map_err(|e| {
        let path = e.path().to_string();
        ApiError::invalid(format!("params.{path}"), e.into_inner())
    })?;
    if req.stream == Some(true) {
        return Err(ApiError::invalid("params.stream", "predictions are not streamed; use the chat format to stream"));
    }
    if req.n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid("params.n", "the scoring protocol returns one prediction per row (n = 1)"));
    }
    if req.prompt.is_some() || req.messages.is_some() || req.input.is_some() {
        return Err(ApiError::invalid("params", "prompts go in the rows, not in params"));
    }
    req.prompt = Some(Value::Array(input.prompts.iter().map(|p| Value::String(p.clone())).collect()));
    req.default_max_tokens = Some(SCORING_DEFAULT_MAX_TOKENS);
    Ok(req)
}

async fn score(
    st: &Shared,
    user: &str,
    ep: Arc<Endpoint>,
    input: ScoringInput,
    arrived: Instant,
    capture: Option<&mut Capture>,
) -> Response {
    let req = match scoring_request(&input) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let Admitted { routed, lease, ctx } = match admit(st, user, &ep, None, arrived).await {
        Ok(a) => a,
        Err(r) => return refuse(r, false),
    };
    let prepared = match req.prepare(Kind::Completion, lease.handle.tokenizer(), lease.handle.model_config()) {
        Ok(p) => p,
        Err(e) => return refuse((e, Some(routed)), false),
    };
    match generation::run_to_end(&lease, &prepared, &ctx).await {
        Ok(choices) => {
            if let Some(cap) = capture {
                let (prompt, completion) = generation::token_counts(&choices, prepared.n);
                cap.generation(prompt, completion, ctx.ttft(), generation::mean_logprob(&choices));
            }
            let preds: Vec<String> = choices.into_iter().map(|c| c.text).collect();
            routed.mark(Json(json!({ "predictions": preds })).into_response())
        }
        Err(e) => refuse((e, Some(routed)), false),
    }
}
