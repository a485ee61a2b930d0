//! `Request`: one sequence's bookkeeping — its tokens, how many are in the KV cache, and
//! where it is in its life.
//!
//! Invariant: `num_computed_tokens <= num_tokens()`. There are no prefill/decode phases:
//! a request simply has `num_computed_tokens` catching up with `num_tokens()`; when they
//! meet after a step, that step produced logits and the engine sampled a token.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestStatus {
    Waiting,
    Running,
    /// Blocks were taken back; it waits at the front of the queue to be recomputed.
    Preempted,
    Finished(FinishReason),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// EOS or a stop string.
    Stop,
    /// `max_tokens` or the context window.
    Length,
    /// The client went away or asked to stop.
    Aborted,
    /// It could not be run (e.g. it outgrew the whole KV cache).
    Error,
}

impl FinishReason {
    /// The OpenAI spelling (`stop`, `length`, `abort`, `error`).
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Aborted => "abort",
            FinishReason::Error => "error",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Request {
    pub id: RequestId,
    pub prompt_ids: Vec<u32>,
    pub output_ids: Vec<u32>,
    pub num_computed_tokens: usize,
    /// Tokens found in the prefix cache when it was last scheduled from the queue.
    pub num_cached_tokens: usize,
    pub status: RequestStatus,
    /// Lower runs first; FCFS among equals.
    pub priority: i32,
    /// Admission order (FCFS tie-break).
    pub arrival: u64,
    pub num_preemptions: u32,
}

impl Request {
    pub fn new(id: RequestId, prompt_ids: Vec<u32>, priority: i32) -> Request {
        Request {
            id,
            prompt_ids,
            output_ids: Vec::new(),
            num_computed_tokens: 0,
            num_cached_tokens: 0,
            status: RequestStatus::Waiting,
            priority,
            arrival: 0,
            num_preemptions: 0,
        }
    }

    pub fn num_tokens(&self) -> usize {
        self.prompt_ids.len() + self.output_ids.len()
    }

    /// Token `i` of prompt ++ output.
    pub fn token(&self, i: usize) -> u32 {
        let p = self.prompt_ids.len();
        if i < p {
            self.prompt_ids[i]
        } else {
            self.output_ids[i - p]
        }
    }

    /// Tokens `range` of prompt ++ output.
    pub fn tokens(&self, start: usize, end: usize) -> Vec<u32> {
        (start..end).map(|i| self.token(i)).collect()
    }

    pub fn is_finished(&self) -> bool {
        matches!(self.status, RequestStatus::Finished(_))
    }

    /// Queue order: priority, then arrival.
    pub(crate) fn order_key(&self) -> (i32, u64) {
        (self.priority, self.arrival)
    }
}
