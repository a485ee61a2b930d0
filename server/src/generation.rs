//! Runs prepared LLM requests on a leased entity and shapes the answers as OpenAI
//! objects: whole responses, or SSE chunk streams ending in `data: [DONE]`.
//!
//! Invariants: every choice's engine request is submitted before any is awaited (they
//! batch together); dropping the response (client gone) drops the `RequestStream`s,
//! which aborts them in the engine, and drops the `Lease`, which frees the concurrency
//! permit; text deltas come from the engine's incremental decoder, so a chunk never
//! splits a UTF-8 character; the stream ends with `[DONE]` only after every choice
//! finished — an engine error or the deadline ends it with an error object instead.
//!
//! A captured stream ([`crate::capture`]) assembles the answer as the non-streaming
//! response object (same shape as `run_to_end` + [`Shape::full`] would give) and logs it
//! before its last event leaves; an abandoned stream logs what it had, with status 499.

use crate::capture::Capture;
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
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What a generation needs besides the request: where to record, when to give up.
#[derive(Clone)]
pub struct GenCtx {
    pub metrics: Arc<Metrics>,
    pub labels: EntityLabels,
    pub timeout: Duration,
    pub arrived: Instant,
    /// Arrival to the request's first token (over all its choices), once there is one.
    pub first_token: Arc<OnceLock<Duration>>,
}

impl GenCtx {
    pub fn ttft(&self) -> Option<Duration> {
        self.first_token.get().copied()
    }
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
            None => {
                let ttft = now - ctx.arrived;
                ctx.metrics.record_ttft(&ctx.labels, ttft);
                let _ = ctx.first_token.set(ttft);
            }
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

/// Prompt and completion tokens of finished choices, as `usage` counts them (the
/// prompt of `n` choices once).
pub fn token_counts(choices: &[Choice], n: usize) -> (usize, usize) {
    let prompt = choices.iter().step_by(n.max(1)).map(|c| c.usage.prompt_tokens).sum();
    (prompt, choices.iter().map(|c| c.usage.completion_tokens).sum())
}

/// Mean log-probability of every token the choices generated (the inference table's
/// `response_mean_logprob`); `None` when they generated nothing.
pub fn mean_logprob(choices: &[Choice]) -> Option<f64> {
    let n: usize = choices.iter().map(|c| c.logprobs.len()).sum();
    let sum: f64 = choices.iter().flat_map(|c| &c.logprobs).map(|&x| f64::from(x)).sum();
    (n > 0 && sum.is_finite()).then(|| sum / n as f64)
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
    /// The inference-table capture, until the record is submitted.
    capture: Option<Capture>,
    /// The answer as assembled so far (kept only when captured).
    choices: Vec<Choice>,
    /// The error that ended the stream, if one did.
    error: Option<ApiError>,
}

impl StreamState {
    /// Token counts, as `usage` counts them (each prompt once for `n` choices).
    fn counts(&self) -> (usize, usize) {
        let prompt = self.usage.iter().step_by(self.n.max(1)).map(|u| u.prompt_tokens).sum();
        (prompt, self.usage.iter().map(|u| u.completion_tokens).sum())
    }

    /// The status and body to log: the error that ended the stream, or the assembled
    /// non-streaming response.
    fn outcome(&self) -> (u16, String) {
        match &self.error {
            Some(e) => (e.status.as_u16(), e.body().to_string()),
            None => (200, self.shape.full(&self.choices, self.n).to_string()),
        }
    }

    fn take_capture(&mut self) -> Option<Capture> {
        let mut cap = self.capture.take()?;
        let (prompt, completion) = self.counts();
        cap.generation(prompt, completion, self.ctx.ttft(), mean_logprob(&self.choices));
        Some(cap)
    }
}

impl Drop for StreamState {
    /// The client went away (or the drain deadline cut the stream) before the end.
    fn drop(&mut self) {
        if let Some(cap) = self.take_capture() {
            let (_, body) = self.outcome();
            cap.finish_detached(499, body);
        }
    }
}

/// Submits every choice and returns the SSE events of the response. Once submitted,
/// the stream owns `capture` and logs the request itself.
pub fn stream_response(
    lease: Lease,
    p: &Prepared,
    shape: Shape,
    ctx: GenCtx,
    capture: &mut Option<Capture>,
) -> Result<impl Stream<Item = Result<Event, Infallible>>, ApiError> {
    let streams = submit_all(&lease, p)?;
    let total = streams.len();
    let capture = capture.take();
    let choices = if capture.is_some() { vec![Choice::default(); total] } else { Vec::new() };
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
        capture,
        choices,
        error: None,
    };
    Ok(stream::unfold(state, |mut s| async move {
        loop {
            if s.finished && s.out.len() == 1 {
                // The last event is next: the record goes to the table first.
                if let Some(cap) = s.take_capture() {
                    let (status, body) = s.outcome();
                    cap.finish(status, body).await;
                }
            }
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
                Err(_) => {
                    // The error object the client gets says 504 / deadline, and so does the log.
                    s.error = Some(ApiError::timeout(s.ctx.timeout.as_secs()).openai());
                    (0, TokenEvent::Error { message: String::new() })
                }
            };
            if let Some(c) = s.choices.get_mut(i) {
                match &ev {
                    TokenEvent::Token { id, logprob, text } => {
                        c.ids.push(*id);
                        c.logprobs.push(*logprob);
                        c.text.push_str(text);
                    }
                    TokenEvent::Finished { text, reason, usage, .. } => {
                        c.text.push_str(text);
                        c.finish_reason = reason.as_str();
                        c.usage = *usage;
                    }
                    TokenEvent::Error { .. } => {}
                }
            }
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
                    let e = s.error.get_or_insert_with(|| ApiError::internal(message).openai());
                    s.out.push_back(Out::Json(e.body()));
                    s.finished = true;
                    s.lease = None;
                }
            }
        }
    }))
}
