//! `Scheduler`: decides, every engine step, which requests run and how many tokens each
//! computes (vLLM v1 style: no prefill/decode phases).
//!
//! Each step has a token budget. Running requests go first, those decoding (one token
//! left to compute) before those still loading their prompt, so streams keep flowing
//! while long prompts are prefilled in chunks. Waiting requests are then admitted in
//! (priority, arrival) order while budget, blocks and `max_num_seqs` allow, reusing
//! prefix-cached blocks. When a running request needs a block and none is free, the
//! lowest-priority, most recent request not yet scheduled this step is preempted: its
//! blocks are freed, it will be recomputed, and it waits at the front of the queue (its
//! arrival order is kept). A request that cannot fit even alone fails; nothing
//! deadlocks: every step either makes progress or fails a request.

use crate::kv_cache_manager::{ComputedBlocks, KvCacheManager};
use crate::request::{FinishReason, Request, RequestId, RequestStatus};
use crate::{BlockId, Error};
use std::collections::{HashMap, VecDeque};

#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Most requests running at once.
    pub max_num_seqs: usize,
    /// Most tokens computed in one step (the chunked-prefill budget).
    pub max_num_batched_tokens: usize,
    pub num_blocks: usize,
    pub block_size: usize,
    pub enable_prefix_caching: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            max_num_seqs: 64,
            max_num_batched_tokens: 512,
            num_blocks: 1024,
            block_size: 16,
            enable_prefix_caching: true,
        }
    }
}

/// One request's share of a step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduledRequest {
    pub id: RequestId,
    /// Tokens already in the cache before this step.
    pub num_computed_tokens: usize,
    /// The tokens computed this step (positions `num_computed_tokens..`).
    pub token_ids: Vec<u32>,
    /// The request's whole block table after allocation.
    pub block_table: Vec<BlockId>,
    /// This step reaches the request's last known token: its logits are sampled.
    pub samples: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SchedulerOutput {
    pub scheduled: Vec<ScheduledRequest>,
    /// Requests preempted during this step's scheduling.
    pub preempted: Vec<RequestId>,
    /// Requests the scheduler gave up on (they cannot fit even alone), with why.
    pub failed: Vec<(RequestId, String)>,
}

impl SchedulerOutput {
    pub fn num_scheduled_tokens(&self) -> usize {
        self.scheduled.iter().map(|s| s.token_ids.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.scheduled.is_empty()
    }
}

#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    kv: KvCacheManager,
    requests: HashMap<RequestId, Request>,
    /// Sorted by (priority, arrival).
    waiting: VecDeque<RequestId>,
    /// In admission order.
    running: Vec<RequestId>,
    next_arrival: u64,
    num_preemptions: u64,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Scheduler {
        let kv = KvCacheManager::new(config.num_blocks, config.block_size, config.enable_prefix_caching);
        Scheduler {
            config,
            kv,
            requests: HashMap::new(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            next_arrival: 0,
            num_preemptions: 0,
        }
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    pub fn kv_cache(&self) -> &KvCacheManager {
        &self.kv
    }

    pub fn request(&self, id: RequestId) -> Option<&Request> {
        self.requests.get(&id)
    }

    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn has_unfinished(&self) -> bool {
        !self.requests.is_empty()
    }

    pub fn num_preemptions(&self) -> u64 {
        self.num_preemptions
    }

    /// Queues a request. Errors if its id is taken, its prompt is empty, or its prompt
    /// can never fit in the cache.
    pub fn add_request(&mut self, mut req: Request) -> Result<(), Error> {
        if self.requests.contains_key(&req.id) {
            return Err(Error::DuplicateRequest(req.id));
        }
        if req.prompt_ids.is_empty() {
            return Err(Error::EmptyPrompt(req.id));
        }
        let cap = self.kv.capacity_tokens();
        if req.num_tokens() > cap {
            return Err(Error::TooLong { id: req.id, tokens: req.num_tokens(), capacity: cap });
        }
        req.arrival = self.next_arrival;
        self.next_arrival += 1;
        req.status = RequestStatus::Waiting;
        let id = req.id;
        self.requests.insert(id, req);
        self.enqueue(id);
        Ok(())
    }

    fn enqueue(&mut self, id: RequestId) {
        let key = self.requests[&id].order_key();
        let pos = self.waiting.partition_point(|w| self.requests[w].order_key() <= key);
        self.waiting.insert(pos, id);
    }

    /// Ends a request (finished, aborted or failed) and frees its blocks; returns it.
    pub fn finish_request(&mut self, id: RequestId, reason: FinishReason) -> Option<Request> {
        let mut req = self.requests.remove(&id)?;
        self.running.retain(|r| *r != id);
        self.waiting.retain(|r| *r != id);
        self.kv.free(id);
        req.status = RequestStatus::Finished(reason);
        Some(req)
    }

    fn preempt(&mut self, id: RequestId) {
        self.kv.free(id);
        self.running.retain(|r| *r != id);
        let req = self.requests.get_mut(&id).expect("running request exists");
        req.status = RequestStatus::Preempted;
        req.num_computed_tokens = 0;
        req.num_preemptions += 1;
        self.num_preemptions += 1;
        self.enqueue(id);
    }

    pub fn schedule(&mut self) -> SchedulerOutput {
        let mut out = SchedulerOutput::default();
        let mut budget = self.config.max_num_batched_tokens;
        let mut done: Vec<RequestId> = Vec::new();

        // Running requests: decodes first, then continuing prefills, each in admission order.
        let mut order: Vec<RequestId> = self.running.clone();
        order.sort_by_key(|id| {
            let r = &self.requests[id];
            r.num_tokens() - r.num_computed_tokens != 1
        });
        for id in order {
            if budget == 0 {
                break;
            }
            if !self.running.contains(&id) {
                continue; // preempted earlier in this step
            }
            let (left, computed) = {
                let r = &self.requests[&id];
                (r.num_tokens() - r.num_computed_tokens, r.num_computed_tokens)
            };
            let n = left.min(budget);
            if n == 0 {
                continue;
            }
            loop {
                if self.kv.allocate_slots(&self.requests[&id], n, &ComputedBlocks::default()) {
                    out.scheduled.push(self.scheduled(id, computed, n));
                    done.push(id);
                    budget -= n;
                    break;
                }
                // Victim: lowest priority, latest arrival, not yet scheduled this step.
                let victim = self
                    .running
                    .iter()
                    .copied()
                    .filter(|r| !done.contains(r))
                    .max_by_key(|r| self.requests[r].order_key())
                    .expect("the request itself is running");
                if victim == id && self.running.len() == 1 && done.is_empty() {
                    // Alone and still no room: it can never fit.
                    let tokens = computed + n;
                    let msg = format!(
                        "request {id}: {tokens} tokens outgrew the KV cache ({} token slots)",
                        self.kv.capacity_tokens()
                    );
                    self.finish_request(id, FinishReason::Error);
                    out.failed.push((id, msg));
                    break;
                }
                self.preempt(victim);
                out.preempted.push(victim);
                if victim == id {
                    break;
                }
            }
        }

        // Waiting requests, unless this step had to preempt (admitting now would thrash).
        while out.preempted.is_empty() && budget > 0 && self.running.len() < self.config.max_num_seqs {
            let Some(&id) = self.waiting.front() else {
                break;
            };
            let computed = self.kv.get_computed_blocks(&self.requests[&id]);
            let left = self.requests[&id].num_tokens() - computed.num_tokens;
            let n = left.min(budget);
            if !self.kv.allocate_slots(&self.requests[&id], n, &computed) {
                break;
            }
            self.waiting.pop_front();
            self.running.push(id);
            let r = self.requests.get_mut(&id).expect("waiting request exists");
            r.status = RequestStatus::Running;
            r.num_computed_tokens = computed.num_tokens;
            r.num_cached_tokens = computed.num_tokens;
            out.scheduled.push(self.scheduled(id, computed.num_tokens, n));
            budget -= n;
        }
        out
    }

    fn scheduled(&self, id: RequestId, computed: usize, n: usize) -> ScheduledRequest {
        let r = &self.requests[&id];
        ScheduledRequest {
            id,
            num_computed_tokens: computed,
            token_ids: r.tokens(computed, computed + n),
            block_table: self.kv.block_table(id).to_vec(),
            samples: computed + n == r.num_tokens(),
        }
    }

    /// Records a computed step: advances every scheduled request and appends the
    /// tokens sampled for those whose `samples` flag was set.
    pub fn update_from_output(&mut self, output: &SchedulerOutput, sampled: &[(RequestId, u32)]) {
        for s in &output.scheduled {
            let Some(r) = self.requests.get_mut(&s.id) else {
                continue;
            };
            if r.status != RequestStatus::Running {
                continue;
            }
            r.num_computed_tokens = s.num_computed_tokens + s.token_ids.len();
        }
        for &(id, tok) in sampled {
            if let Some(r) = self.requests.get_mut(&id) {
                r.output_ids.push(tok);
            }
        }
        for s in &output.scheduled {
            if let Some(r) = self.requests.get(&s.id) {
                self.kv.cache_blocks(r);
            }
        }
    }

    /// Checks the block manager's invariants and the queues' consistency; for tests.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.kv.check_invariants()?;
        for id in &self.running {
            let r = &self.requests[id];
            if r.status != RequestStatus::Running {
                return Err(format!("{id} is in running with status {:?}", r.status));
            }
            if self.kv.block_table(*id).len() * self.kv.block_size() < r.num_computed_tokens {
                return Err(format!("{id}: computed tokens exceed its blocks"));
            }
        }
        for id in &self.waiting {
            if !self.kv.block_table(*id).is_empty() {
                return Err(format!("waiting {id} holds blocks"));
            }
        }
        if self.running.len() + self.waiting.len() != self.requests.len() {
            return Err("requests are neither running nor waiting".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
