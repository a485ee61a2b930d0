//! Counters the engine publishes for `/metrics` and benchmarks: plain atomics written by
//! the engine thread after each step, read by anyone.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug)]
pub struct EngineMetrics {
    num_blocks: u64,
    running: AtomicU64,
    waiting: AtomicU64,
    blocks_used: AtomicU64,
    steps: AtomicU64,
    preemptions: AtomicU64,
    tokens_computed: AtomicU64,
    prompt_tokens_cached: AtomicU64,
    generated_tokens: AtomicU64,
    finished: AtomicU64,
}

/// A consistent-enough copy of the counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    pub running: u64,
    pub waiting: u64,
    pub kv_blocks_used: u64,
    pub kv_blocks_total: u64,
    pub steps: u64,
    pub preemptions: u64,
    /// Tokens run through the model (prompts, recomputation after preemption, decodes).
    pub tokens_computed: u64,
    /// Prompt tokens served from the prefix cache instead.
    pub prompt_tokens_cached: u64,
    pub generated_tokens: u64,
    pub finished_requests: u64,
}

impl EngineMetrics {
    pub(crate) fn new(num_blocks: usize) -> EngineMetrics {
        EngineMetrics {
            num_blocks: num_blocks as u64,
            running: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
            blocks_used: AtomicU64::new(0),
            steps: AtomicU64::new(0),
            preemptions: AtomicU64::new(0),
            tokens_computed: AtomicU64::new(0),
            prompt_tokens_cached: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
            finished: AtomicU64::new(0),
        }
    }

    pub(crate) fn set_queues(&self, running: usize, waiting: usize, blocks_used: usize, preemptions: u64) {
        self.running.store(running as u64, Relaxed);
        self.waiting.store(waiting as u64, Relaxed);
        self.blocks_used.store(blocks_used as u64, Relaxed);
        self.preemptions.store(preemptions, Relaxed);
    }

    pub(crate) fn add_step(&self, tokens: usize, generated: usize) {
        self.steps.fetch_add(1, Relaxed);
        self.tokens_computed.fetch_add(tokens as u64, Relaxed);
        self.generated_tokens.fetch_add(generated as u64, Relaxed);
    }

    pub(crate) fn add_cached(&self, tokens: usize) {
        self.prompt_tokens_cached.fetch_add(tokens as u64, Relaxed);
    }

    pub(crate) fn add_finished(&self) {
        self.finished.fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            running: self.running.load(Relaxed),
            waiting: self.waiting.load(Relaxed),
            kv_blocks_used: self.blocks_used.load(Relaxed),
            kv_blocks_total: self.num_blocks,
            steps: self.steps.load(Relaxed),
            preemptions: self.preemptions.load(Relaxed),
            tokens_computed: self.tokens_computed.load(Relaxed),
            prompt_tokens_cached: self.prompt_tokens_cached.load(Relaxed),
            generated_tokens: self.generated_tokens.load(Relaxed),
            finished_requests: self.finished.load(Relaxed),
        }
    }
}
