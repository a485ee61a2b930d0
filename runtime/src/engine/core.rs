//! The engine thread's loop: commands in, steps computed, events out.

use super::metrics::EngineMetrics;
use super::request_state::{Progress, RequestState};
use super::{Command, EngineConfig, TokenEvent};
use crate::forward_batch::ForwardBatch;
use crate::kv_cache::KvCache;
use crate::model::Model;
use crate::sampling::Sampler;
use crate::tokenizer::Tokenizer;
use keel_kernels::aligned::AlignedBuf;
use keel_scheduler::{FinishReason, Request, RequestId, ScheduledRequest, Scheduler, SchedulerConfig};
use std::collections::HashMap;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub(crate) struct EngineCore {
    model: Model,
    kv: KvCache,
    tokenizer: Arc<Tokenizer>,
    scheduler: Scheduler,
    states: HashMap<RequestId, RequestState>,
    metrics: Arc<EngineMetrics>,
    /// The last step's logits; kept for its allocation (`Model::forward_into`).
    logits: AlignedBuf,
}

/// One request's sampling in a step (see `EngineCore::sample`).
struct SampleJob<'a> {
    id: RequestId,
    row: &'a [f32],
    prev: Vec<u32>,
    sampler: &'a mut Sampler,
    out: Option<(u32, f32)>,
}

/// log-softmax of `logits[id]` under the model (before any sampling transform).
fn logprob(logits: &[f32], id: u32) -> f32 {
    logits[id as usize] - keel_kernels::exp::logsumexp(logits)
}

impl EngineCore {
    pub fn new(
        model: Model,
        kv: KvCache,
        tokenizer: Arc<Tokenizer>,
        cfg: &EngineConfig,
        metrics: Arc<EngineMetrics>,
    ) -> EngineCore {
        let scheduler = Scheduler::new(SchedulerConfig {
            max_num_seqs: cfg.max_num_seqs,
            max_num_batched_tokens: cfg.max_num_batched_tokens,
            num_blocks: kv.num_blocks,
            block_size: kv.block_size,
            enable_prefix_caching: cfg.enable_prefix_caching,
        });
        EngineCore { model, kv, tokenizer, scheduler, states: HashMap::new(), metrics, logits: AlignedBuf::new() }
    }

    pub fn run(mut self, rx: Receiver<Command>) {
        loop {
            // Idle: block for work. Busy: take whatever arrived, then step.
            if !self.scheduler.has_unfinished() {
                match rx.recv() {
                    Ok(cmd) => {
                        if !self.handle(cmd) {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
            loop {
                match rx.try_recv() {
                    Ok(cmd) => {
                        if !self.handle(cmd) {
                            return;
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        if !self.scheduler.has_unfinished() {
                            return;
                        }
                        break;
                    }
                }
            }
            if self.scheduler.has_unfinished() {
                self.step();
            } else {
                // Aborts (and refused adds) change the queues without a step: publish
                // them before blocking, or the gauges stay stale while idle.
                self.publish();
            }
        }
    }

    /// Returns false on shutdown.
    fn handle(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Add { id, req, events, submitted } => {
                let state = RequestState::new(events, &req.prompt_ids, req.params, submitted);
                match self.scheduler.add_request(Request::new(id, req.prompt_ids, req.priority)) {
                    Ok(()) => {
                        self.states.insert(id, state);
                    }
                    Err(e) => {
                        let _ = state.events.send(TokenEvent::Error { message: e.to_string() });
                    }
                }
            }
            Command::Abort(id) => self.finish(id, FinishReason::Aborted),
            Command::Shutdown => {
                let ids: Vec<RequestId> = self.states.keys().copied().collect();
                for id in ids {
                    self.finish(id, FinishReason::Aborted);
                }
                return false;
            }
        }
        true
    }

    /// Each sampling request's next token and its log-probability, in `scheduled` order.
    /// The requests are spread over the kernel pool: a request draws only from its own
    /// sampler and logits row, so which thread runs it changes nothing (run one after the
    /// other, sampling took ~7% of a 32-sequence decode step).
    fn sample(&mut self, scheduled: &[ScheduledRequest], logits: &[f32]) -> Vec<(RequestId, u32, f32)> {
        let vocab = self.model.config.vocab_size;
        let mut samplers: HashMap<RequestId, &mut Sampler> =
            self.states.iter_mut().map(|(id, st)| (*id, &mut st.sampler)).collect();
        let mut rows = logits.chunks_exact(vocab);
        let mut jobs = Vec::new();
        for s in scheduled.iter().filter(|s| s.samples) {
            let row = rows.next().expect("one logits row per sampling request");
            let (Some(sampler), Some(req)) = (samplers.remove(&s.id), self.scheduler.request(s.id)) else {
                continue;
            };
            // Only the repetition penalty reads the sequence so far.
            let prev = if sampler.uses_previous() { req.tokens(0, req.num_tokens()) } else { Vec::new() };
            jobs.push(Mutex::new(SampleJob { id: s.id, row, prev, sampler, out: None }));
        }
        keel_kernels::parallel::parallel_for(jobs.len(), &|i| {
            let mut guard = jobs[i].lock().unwrap_or_else(|e| e.into_inner());
            let job = &mut *guard;
            // A copy of the row only for samplers that change it (not greedy ones).
            let tok = job.sampler.sample_untransformed(job.row).unwrap_or_else(|| {
                let mut work = job.row.to_vec();
                job.sampler.sample(&mut work, &job.prev)
            });
            job.out = Some((tok, logprob(job.row, tok)));
        });
        jobs.into_iter()
            .filter_map(|j| {
                let j = j.into_inner().unwrap_or_else(|e| e.into_inner());
                j.out.map(|(tok, lp)| (j.id, tok, lp))
            })
            .collect()
    }

    fn finish(&mut self, id: RequestId, reason: FinishReason) {
        let req = self.scheduler.finish_request(id, reason);
        if let Some(mut st) = self.states.remove(&id) {
            st.finish(reason, req.map_or(0, |r| r.num_preemptions));
            self.metrics.add_finished();
        }
    }

    fn step(&mut self) {
        let out = self.scheduler.schedule();
        for (id, msg) in &out.failed {
            if let Some(st) = self.states.remove(id) {
                let _ = st.events.send(TokenEvent::Error { message: msg.clone() });
                self.metrics.add_finished();
            }
        }
        if out.is_empty() {
            self.publish();
            return;
        }
        let now = Instant::now();
        let mut batch = ForwardBatch::default();
        for s in &out.scheduled {
            batch.push_seq(&s.token_ids, s.num_computed_tokens, &s.block_table, self.kv.block_size, s.samples);
            if let Some(st) = self.states.get_mut(&s.id) {
                if st.started.is_none() {
                    st.started = Some(now);
                    st.cached_tokens = s.num_computed_tokens;
                    self.metrics.add_cached(s.num_computed_tokens);
                }
            }
        }
        let mut logits = std::mem::take(&mut self.logits);
        match self.model.forward_into(&batch, &mut self.kv, &mut logits) {
            Ok(()) => {}
            Err(e) => {
                self.logits = logits;
                // A model fault fails this step's requests, not the engine.
                for s in &out.scheduled {
                    if let Some(st) = self.states.remove(&s.id) {
                        let _ = st.events.send(TokenEvent::Error { message: format!("forward pass failed: {e}") });
                    }
                    self.scheduler.finish_request(s.id, FinishReason::Error);
                }
                self.publish();
                return;
            }
        }
        let sampled = self.sample(&out.scheduled, &logits);
        self.logits = logits;
        let pairs: Vec<(RequestId, u32)> = sampled.iter().map(|(id, t, _)| (*id, *t)).collect();
        self.scheduler.update_from_output(&out, &pairs);
        // Counted before any event goes out, so a client that saw its last token also
        // sees the step that made it in the metrics.
        self.metrics.add_step(out.num_scheduled_tokens(), pairs.len());
        let ctx = self.model.config.max_position_embeddings;
        for (id, tok, lp) in sampled {
            let Some(st) = self.states.get_mut(&id) else {
                continue;
            };
            match st.on_token(&self.tokenizer, tok, lp, ctx) {
                Progress::Continue => {}
                Progress::Finished(reason) => self.finish(id, reason),
                Progress::Disconnected => self.finish(id, FinishReason::Aborted),
            }
        }
        self.publish();
    }

    fn publish(&self) {
        self.metrics.set_queues(
            self.scheduler.num_running(),
            self.scheduler.num_waiting(),
            self.scheduler.kv_cache().pool().num_used(),
            self.scheduler.num_preemptions(),
        );
    }
}
