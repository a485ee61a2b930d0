//! The `Engine`: one thread that owns a `Model`, its paged `KvCache` and a `Scheduler`,
//! and runs the continuous-batching step loop for every request of that model.
//!
//! Callers (the CLI, the HTTP server, batch mode) hold an `EngineHandle`. `submit`
//! validates a request against the model, then hands it to the engine over a bounded
//! channel (full → `SubmitError::QueueFull`, never unbounded memory) and returns a
//! `RequestStream` of `TokenEvent`s. Dropping the stream aborts the request; its blocks
//! are freed at the next step. Each step: schedule → one `ForwardBatch` with every
//! scheduled token of every request → sample each request with its own parameters and
//! seed → detokenize, check stops → events. Requests join and leave at every step.
//!
//! Threads talk through channels, not shared locks (DESIGN.md); only the metrics are
//! shared, as atomics.

mod core;
mod metrics;
mod request_state;

pub use metrics::{EngineMetrics, MetricsSnapshot};
pub use request_state::check_request;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::kv_cache::{KvCache, KvCacheDtype, BLOCK_SIZE};
use crate::model::Model;
use crate::sampling::SamplingParams;
use crate::tokenizer::Tokenizer;
pub use keel_scheduler::{FinishReason, RequestId};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Most requests in the running batch.
    pub max_num_seqs: usize,
    /// Most tokens computed per step (chunked-prefill budget); at least `max_num_seqs`.
    pub max_num_batched_tokens: usize,
    /// Bytes of KV cache; `None` = enough for `max_num_seqs` full contexts, capped at 1 GiB.
    pub kv_cache_bytes: Option<usize>,
    pub enable_prefix_caching: bool,
    /// What the KV cache stores (f32 = exact).
    pub kv_cache_dtype: KvCacheDtype,
    /// Requests that may wait in the submission channel.
    pub queue_capacity: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_num_seqs: 64,
            max_num_batched_tokens: 512,
            kv_cache_bytes: None,
            enable_prefix_caching: true,
            kv_cache_dtype: KvCacheDtype::F32,
            queue_capacity: 1024,
        }
    }
}

impl EngineConfig {
    fn validate(&self) -> Result<()> {
        if self.max_num_seqs == 0 {
            return Err(Error::invalid("max_num_seqs", "must be at least 1"));
        }
        if self.max_num_batched_tokens < self.max_num_seqs {
            return Err(Error::invalid(
                "max_num_batched_tokens",
                format!("must be at least max_num_seqs ({})", self.max_num_seqs),
            ));
        }
        if self.queue_capacity == 0 {
            return Err(Error::invalid("queue_capacity", "must be at least 1"));
        }
        Ok(())
    }

    /// KV-cache blocks for `cfg` under this configuration.
    pub fn num_blocks(&self, cfg: &ModelConfig) -> usize {
        let per_block = KvCache::bytes_per_block(cfg, self.kv_cache_dtype);
        let bytes = self.kv_cache_bytes.unwrap_or_else(|| {
            let want = self.max_num_seqs.saturating_mul(cfg.max_position_embeddings).div_ceil(BLOCK_SIZE) * per_block;
            want.min(1 << 30)
        });
        (bytes / per_block).max(1)
    }
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerationRequest {
    pub prompt_ids: Vec<u32>,
    pub params: SamplingParams,
    /// Lower runs first; FCFS among equals.
    pub priority: i32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Prompt tokens found in the prefix cache (not recomputed).
    pub cached_tokens: usize,
    pub preemptions: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Timings {
    /// Submission → the request's first step.
    pub queue: Duration,
    /// Submission → first token.
    pub ttft: Duration,
    /// Submission → finish.
    pub e2e: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TokenEvent {
    /// A sampled token, its log-probability under the model, and the text it makes
    /// available (possibly empty: incomplete UTF-8 or a possible stop-string prefix).
    Token { id: u32, logprob: f32, text: String },
    /// The end: held-back text released (if any), why, counts and timings.
    Finished { text: String, reason: FinishReason, usage: Usage, timings: Timings },
    /// The request could not be served.
    Error { message: String },
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Invalid(#[from] Error),
    #[error("the engine queue is full ({0} requests waiting); retry later")]
    QueueFull(usize),
    #[error("the engine has stopped")]
    Stopped,
}

pub(crate) enum Command {
    Add {
        id: RequestId,
        req: GenerationRequest,
        events: tokio::sync::mpsc::UnboundedSender<TokenEvent>,
        submitted: Instant,
    },
    Abort(RequestId),
    Shutdown,
}

/// The caller's side of an engine; cheap to clone.
#[derive(Clone)]
pub struct EngineHandle {
    tx: SyncSender<Command>,
    next_id: Arc<AtomicU64>,
    config: Arc<ModelConfig>,
    tokenizer: Arc<Tokenizer>,
    metrics: Arc<EngineMetrics>,
    queue_capacity: usize,
    /// False once the engine thread has left its loop (shutdown or panic).
    alive: Arc<AtomicBool>,
}

/// A request's events, in order, ending with `Finished` or `Error`. Dropping it aborts
/// the request.
pub struct RequestStream {
    pub id: RequestId,
    rx: tokio::sync::mpsc::UnboundedReceiver<TokenEvent>,
    tx: SyncSender<Command>,
    done: bool,
}

impl RequestStream {
    /// Next event, blocking the thread (for non-async callers).
    pub fn blocking_next(&mut self) -> Option<TokenEvent> {
        let e = self.rx.blocking_recv();
        self.note(&e);
        e
    }

    /// Next event if one is ready, without waiting.
    pub fn try_next(&mut self) -> Option<TokenEvent> {
        let e = self.rx.try_recv().ok();
        if e.is_some() {
            self.note(&e);
        }
        e
    }

    /// Next event (for async callers).
    pub async fn next(&mut self) -> Option<TokenEvent> {
        let e = self.rx.recv().await;
        self.note(&e);
        e
    }

    fn note(&mut self, e: &Option<TokenEvent>) {
        if matches!(e, None | Some(TokenEvent::Finished { .. }) | Some(TokenEvent::Error { .. })) {
            self.done = true;
        }
    }
}

/// A finished request, collected from its events.
#[derive(Clone, Debug)]
pub struct Completion {
    pub completion_ids: Vec<u32>,
    /// Log-probability of each completion token under the model.
    pub logprobs: Vec<f32>,
    pub text: String,
    pub finish_reason: FinishReason,
    pub usage: Usage,
    pub timings: Timings,
}

impl RequestStream {
    /// Blocks until the request ends, calling `on_text` with each piece of text.
    pub fn collect_blocking(mut self, on_text: &mut dyn FnMut(&str)) -> Result<Completion> {
        let (mut ids, mut logprobs, mut text) = (Vec::new(), Vec::new(), String::new());
        while let Some(ev) = self.blocking_next() {
            match ev {
                TokenEvent::Token { id, logprob, text: t } => {
                    ids.push(id);
                    logprobs.push(logprob);
                    if !t.is_empty() {
                        on_text(&t);
                        text.push_str(&t);
                    }
                }
                TokenEvent::Finished { text: t, reason, usage, timings } => {
                    if !t.is_empty() {
                        on_text(&t);
                        text.push_str(&t);
                    }
                    return Ok(Completion {
                        completion_ids: ids,
                        logprobs,
                        text,
                        finish_reason: reason,
                        usage,
                        timings,
                    });
                }
                TokenEvent::Error { message } => return Err(Error::Model(message)),
            }
        }
        Err(Error::Model("the engine stopped before the request finished".into()))
    }
}

impl Drop for RequestStream {
    fn drop(&mut self) {
        if !self.done {
            // Best effort: if the queue is full, the engine notices the closed stream itself.
            let _ = self.tx.try_send(Command::Abort(self.id));
        }
    }
}

impl EngineHandle {
    pub fn model_config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn tokenizer(&self) -> &Arc<Tokenizer> {
        &self.tokenizer
    }

    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    /// Validates and queues a request.
    pub fn submit(&self, req: GenerationRequest) -> Result<RequestStream, SubmitError> {
        check_request(&self.config, &req.prompt_ids, &req.params)?;
        let id = RequestId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let (etx, erx) = tokio::sync::mpsc::unbounded_channel();
        match self.tx.try_send(Command::Add { id, req, events: etx, submitted: Instant::now() }) {
            Ok(()) => Ok(RequestStream { id, rx: erx, tx: self.tx.clone(), done: false }),
            Err(TrySendError::Full(_)) => Err(SubmitError::QueueFull(self.queue_capacity)),
            Err(TrySendError::Disconnected(_)) => Err(SubmitError::Stopped),
        }
    }

    /// True while the engine thread runs its step loop (false after shutdown or a panic).
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Stops the engine: running requests end with `Aborted`.
    pub fn shutdown(&self) {
        let _ = self.tx.send(Command::Shutdown);
    }
}

/// A running engine: its handle and its thread.
pub struct Engine {
    pub handle: EngineHandle,
    thread: Option<JoinHandle<()>>,
}

impl Engine {
    /// Starts the step loop on its own thread; the engine owns `model` from now on.
    pub fn start(model: Model, tokenizer: Arc<Tokenizer>, config: EngineConfig) -> Result<Engine> {
        config.validate()?;
        let num_blocks = config.num_blocks(&model.config);
        let kv = KvCache::with_dtype(&model.config, num_blocks, config.kv_cache_dtype)?;
        let (tx, rx) = sync_channel(config.queue_capacity);
        let metrics = Arc::new(EngineMetrics::new(num_blocks));
        let handle = EngineHandle {
            tx,
            next_id: Arc::new(AtomicU64::new(0)),
            config: Arc::new(model.config.clone()),
            tokenizer: tokenizer.clone(),
            metrics: metrics.clone(),
            queue_capacity: config.queue_capacity,
            alive: Arc::new(AtomicBool::new(true)),
        };
        let core = core::EngineCore::new(model, kv, tokenizer, &config, metrics);
        let alive = AliveGuard(handle.alive.clone());
        let thread = std::thread::Builder::new()
            .name("keel-engine".into())
            .spawn(move || {
                let _alive = alive;
                core.run(rx)
            })
            .map_err(|e| Error::Model(format!("cannot start the engine thread: {e}")))?;
        Ok(Engine { handle, thread: Some(thread) })
    }
}

/// Clears the engine's alive flag when the thread ends, however it ends.
struct AliveGuard(Arc<AtomicBool>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
