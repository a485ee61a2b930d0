//! Runs prepared LLM requests on a leased entity and shapes the answers as OpenAI
//! objects: whole responses, or SSE chunk streams ending in `data: [DONE]`.
//!
//! Invariants: every choice's engine request is submitted before any is awaited (they
//! batch together); dropping the response (client gone) drops the `RequestStream`s,
//! which aborts them in the engine, and drops the `Lease`, which frees the concurrency
//! permit; text deltas come from the engine's incremental decoder, so a chunk never
//! splits a UTF-8 character; the stream ends with `[DONE]` only after every choice
//! finished — an engine error or the deadline ends it with an error object instead.

use crate::entity::Lease;
use crate::error::ApiError;
use crate::llm_request::{Kind, Prepared};
use crate::metrics::{EntityLabels, Metrics};
use axum::response::sse::Event;
use futures::stream::{self, BoxStream, SelectAll, Stream, StreamExt};
use keel_runtime::engine::{RequestStream, TokenEvent, Usage};
use keel_runtime::tokenizer::Tokenizer;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What a generation needs besides the request: where to record, when to give up.
#[derive(Clone)]
pub struct GenCtx {
    pub metrics: Arc<Metrics>,
    pub labels: EntityLabels,
    pub timeout: Duration,
    pub arrived: Instant,
}

/// One finished choice.
#[derive(Debug, Clone, Default)]
pub struct Choice {
    pub text: String,
    pub ids: Vec<u32>,
    pub logprobs: Vec<f32>,
    pub finish_reason: &'static str,
    pub usage: Usage,
}

/// Submits every request (all or none: a failed submit drops, and so aborts, the others).
fn submit_all(lease: &Lease, p: &Prepared) -> Result<Vec<RequestStream>, ApiError> {
    p.requests().into_iter().map(|r| lease.handle.submit(r).map_err(ApiError::from)).collect()
}

/// Per-stream timing for the TTFT / inter-token histograms.
struct Clock {
    last: Option<Instant>,
}

impl Clock {
    fn token(&mut self, ctx: &GenCtx) {
        let now = Instant::now();
        match self.last {
            Some(prev) => ctx.metrics.record_itl(&ctx.labels, now - prev),
            None => ctx.metrics.record_ttft(&ctx.labels, now - ctx.arrived),
        }
        self.last = Some(now);
    }
}

async fn collect(mut rs: RequestStream, ctx: GenCtx) -> Result<Choice, ApiError> {
    let mut c = Choice::default();
    let mut clock = Clock { last: None };
    while let Some(ev) = rs.next().await {
        match ev {
            TokenEvent::Token { id, logprob, text } => {
                clock.token(&ctx);
                c.ids.push(id);
                c.logprobs.push(logprob);
                c.text.push_str(&text);
            }
            TokenEvent::Finished { text, reason, usage, .. } => {
                c.text.push_str(&text);
                c.finish_reason = reason.as_str();
                c.usage = usage;
                ctx.metrics.record_finish(&ctx.labels, ctx.arrived.elapsed(), &usage);
                return Ok(c);
            }
            TokenEvent::Error { message } => return Err(ApiError::internal(message)),
        }
    }
    Err(ApiError::unavailable("the engine stopped before the request finished"))
}

/// Runs all choices to the end (504 past the deadline, aborting them).
pub async fn run_to_end(lease: &Lease, p: &Prepared, ctx: &GenCtx) -> Result<Vec<Choice>, ApiError> {
    let streams = submit_all(lease, p)?;
    let all = futures::future::join_all(streams.into_iter().map(|rs| collect(rs, ctx.clone())));
    match tokio::time::timeout(ctx.timeout, all).await {
        Ok(results) => results.into_iter().collect(),
        Err(_) => Err(ApiError::timeout(ctx.timeout.as_secs())),
    }
}

/// The OpenAI object shapes of one response.
#[derive(Clone)]
pub struct Shape {
    pub kind: Kind,
    pub id: String,
    pub created: u64,
    pub model: String,
    pub logprobs: bool,
    pub tokenizer: Arc<Tokenizer>,
}

impl Shape {
    pub fn new(kind: Kind, model: String, logprobs: bool, tokenizer: Arc<Tokenizer>) -> Shape {
        let prefix = if kind == Kind::Chat { "chatcmpl" } else { "cmpl" };
        Shape {
            kind,
            id: format!("{prefix}-{}", uuid::Uuid::new_v4().simple()),
            created: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            model,
            logprobs,
            tokenizer,
        }
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Completion, _) => "text_completion",
        }
    }

    fn token_text(&self, id: u32) -> String {
        self.tokenizer.decode(&[id], false).unwrap_or_default()
    }

    fn logprobs_json(&self, ids: &[u32], lps: &[f32], text_offset: usize) -> Value {
        if !self.logprobs {
            return Value::Null;
        }
        let tokens: Vec<String> = ids.iter().map(|&t| self.token_text(t)).collect();
        match self.kind {
            Kind::Chat => json!({"content": tokens.iter().zip(lps).map(|(t, lp)| json!({
                "token": t, "logprob": lp, "bytes": t.as_bytes(), "top_logprobs": []
            })).collect::<Vec<_>>()}),
            Kind::Completion => {
                let mut off = text_offset;
                let offsets: Vec<usize> = tokens
                    .iter()
                    .map(|t| {
                        let o = off;
                        off += t.len();
                        o
                    })
                    .collect();
                json!({"tokens": tokens, "token_logprobs": lps, "top_logprobs": null, "text_offset": offsets})
            }
        }
    }

    pub fn usage_json(usage: &[Usage], n: usize) -> Value {
        // n choices of one prompt share it: count each prompt once.
        let prompt: usize = usage.iter().step_by(n.max(1)).map(|u| u.prompt_tokens).sum();
        let cached: usize = usage.iter().step_by(n.max(1)).map(|u| u.cached_tokens).sum();
        let completion: usize = usage.iter().map(|u| u.completion_tokens).sum();
        json!({
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        })
    }

    /// The whole (non-streaming) response.
    pub fn full(&self, choices: &[Choice], n: usize) -> Value {
        let cs: Vec<Value> = choices
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let lp = self.logprobs_json(&c.ids, &c.logprobs, 0);
                match self.kind {
                    Kind::Chat => json!({
                        "index": i,
                        "message": {"role": "assistant", "content": c.text},
                        "logprobs": lp,
                        "finish_reason": c.finish_reason,
                    }),
                    Kind::Completion => {
                        json!({"index": i, "text": c.text, "logprobs": lp, "finish_reason": c.finish_reason})
                    }
                }
            })
            .collect();
        let usage: Vec<Usage> = choices.iter().map(|c| c.usage).collect();
        json!({
            "id": self.id,
            "object": self.object(false),
            "created": self.created,
            "model": self.model,
            "choices": cs,
            "usage": Shape::usage_json(&usage, n),
            "system_fingerprint": null,
        })
    }

    fn chunk(&self, choice: Value) -> Value {
        json!({"id": self.id, "object": self.object(true), "created": self.created, "model": self.model, "choices": [choice]})
    }

    fn delta(&self, index: usize, text: &str, lp: Value, finish: Option<&str>, first: bool) -> Value {
        match self.kind {
            Kind::Chat => {
                let delta =
                    if first { json!({"role": "assistant", "content": text}) } else { json!({"content": text}) };
                self.chunk(json!({"index": index, "delta": delta, "logprobs": lp, "finish_reason": finish}))
            }
            Kind::Completion => {
                self.chunk(json!({"index": index, "text": text, "logprobs": lp, "finish_reason": finish}))
            }
        }
    }
}

enum Out {
    Json(Value),
    Done,
}

fn event(o: Out) -> Result<Event, Infallible> {
    Ok(match o {
        Out::Json(v) => Event::default().data(v.to_string()),
        Out::Done => Event::default().data("[DONE]"),
    })
}

/// One choice's engine events, tagged with the choice index; ends after the terminal event.
fn tagged(index: usize, rs: RequestStream) -> BoxStream<'static, (usize, TokenEvent)> {
    stream::unfold(Some(rs), move |rs| async move {
        let mut rs = rs?;
        match rs.next().await {
            Some(ev @ TokenEvent::Token { .. }) => Some(((index, ev), Some(rs))),
            Some(ev) => Some(((index, ev), None)),
            None => Some(((index, TokenEvent::Error { message: "the engine stopped".into() }), None)),
        }
    })
    .boxed()
}

struct StreamState {
    lease: Option<Lease>,
    events: SelectAll<BoxStream<'static, (usize, TokenEvent)>>,
    shape: Shape,
    ctx: GenCtx,
    deadline: tokio::time::Instant,
    n: usize,
    include_usage: bool,
    started: Vec<bool>,
    clocks: Vec<Clock>,
    offsets: Vec<usize>,
    usage: Vec<Usage>,
    remaining: usize,
    /// Events ready to send before reading more.
    out: std::collections::VecDeque<Out>,
    finished: bool,
}

/// Submits every choice and returns the SSE events of the response.
pub fn stream_response(
    lease: Lease,
    p: &Prepared,
    shape: Shape,
    ctx: GenCtx,
) -> Result<impl Stream<Item = Result<Event, Infallible>>, ApiError> {
    let streams = submit_all(&lease, p)?;
    let total = streams.len();
    let events = stream::select_all(streams.into_iter().enumerate().map(|(i, rs)| tagged(i, rs)));
    let state = StreamState {
        lease: Some(lease),
        events,
        deadline: tokio::time::Instant::now() + ctx.timeout,
        shape,
        ctx,
        n: p.n,
        include_usage: p.include_usage,
        started: vec![false; total],
        clocks: (0..total).map(|_| Clock { last: None }).collect(),
        offsets: vec![0; total],
        usage: vec![Usage::default(); total],
        remaining: total,
        out: Default::default(),
        finished: false,
    };
    Ok(stream::unfold(state, |mut s| async move {
        loop {
            if let Some(o) = s.out.pop_front() {
                return Some((event(o), s));
            }
            if s.finished {
                return None;
            }
            if s.remaining == 0 {
                if s.include_usage {
                    let mut u = s.shape.chunk(Value::Null);
                    u["choices"] = json!([]);
                    u["usage"] = Shape::usage_json(&s.usage, s.n);
                    s.out.push_back(Out::Json(u));
                }
                s.out.push_back(Out::Done);
                s.finished = true;
                s.lease = None;
                continue;
            }
            let next = tokio::time::timeout_at(s.deadline, s.events.next()).await;
            let (i, ev) = match next {
                Ok(Some(x)) => x,
                Ok(None) => (0, TokenEvent::Error { message: "the engine stopped".into() }),
                Err(_) => (0, TokenEvent::Error { message: ApiError::timeout(s.ctx.timeout.as_secs()).message }),
            };
            match ev {
                TokenEvent::Token { id, logprob, text } => {
                    s.clocks[i].token(&s.ctx);
                    if text.is_empty() && !s.shape.logprobs {
                        continue;
                    }
                    let lp = s.shape.logprobs_json(&[id], &[logprob], s.offsets[i]);
                    s.offsets[i] += text.len();
                    let first = !std::mem::replace(&mut s.started[i], true);
                    s.out.push_back(Out::Json(s.shape.delta(i, &text, lp, None, first)));
                }
                TokenEvent::Finished { text, reason, usage, .. } => {
                    s.ctx.metrics.record_finish(&s.ctx.labels, s.ctx.arrived.elapsed(), &usage);
                    s.usage[i] = usage;
                    s.remaining -= 1;
                    let first = !std::mem::replace(&mut s.started[i], true);
                    s.out.push_back(Out::Json(s.shape.delta(i, &text, Value::Null, Some(reason.as_str()), first)));
                }
                TokenEvent::Error { message } => {
                    // Ends the stream without [DONE]: the client sees the error, not a truncated success.
                    s.out.push_back(Out::Json(ApiError::internal(message).openai().body()));
                    s.finished = true;
                    s.lease = None;
                }
            }
        }
    }))
}

/// Choices for the MLflow scoring protocol: one prediction string per prompt.
pub async fn predictions(lease: &Lease, p: &Prepared, ctx: &GenCtx) -> Result<Vec<String>, ApiError> {
    Ok(run_to_end(lease, p, ctx).await?.into_iter().map(|c| c.text).collect())
}
