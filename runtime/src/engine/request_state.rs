//! What the engine keeps per request beside the scheduler's bookkeeping: the event
//! channel, the request's own sampler (its seed and RNG survive preemption), the
//! incremental detokenizer and stop-string matcher, and timings.

use super::{Timings, TokenEvent, Usage};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::sampling::{Sampler, SamplingParams};
use crate::stop::StopMatcher;
use crate::tokenizer::{IncrementalDecoder, Tokenizer};
use keel_scheduler::FinishReason;
use std::time::Instant;
use tokio::sync::mpsc::UnboundedSender;

/// Checks a request against the model before any work is done: each violation names
/// the field (`prompt`, `max_tokens`, or a sampling parameter).
pub fn check_request(cfg: &ModelConfig, prompt_ids: &[u32], params: &SamplingParams) -> Result<()> {
    params.validate()?;
    let ctx = cfg.max_position_embeddings;
    if prompt_ids.is_empty() {
        return Err(Error::invalid("prompt", "the prompt is empty (no tokens)"));
    }
    if let Some(t) = prompt_ids.iter().find(|t| **t as usize >= cfg.vocab_size) {
        return Err(Error::invalid("prompt", format!("token id {t} is outside the vocabulary ({})", cfg.vocab_size)));
    }
    if prompt_ids.len() >= ctx {
        return Err(Error::invalid(
            "prompt",
            format!("the prompt has {} tokens; the context window is {ctx}", prompt_ids.len()),
        ));
    }
    if prompt_ids.len() + params.max_tokens > ctx {
        return Err(Error::invalid(
            "max_tokens",
            format!(
                "{} prompt tokens + max_tokens {} exceed the context window of {ctx}; at most {} new tokens fit",
                prompt_ids.len(),
                params.max_tokens,
                ctx - prompt_ids.len()
            ),
        ));
    }
    Ok(())
}

pub(crate) struct RequestState {
    pub events: UnboundedSender<TokenEvent>,
    pub params: SamplingParams,
    pub sampler: Sampler,
    decoder: IncrementalDecoder,
    stops: StopMatcher,
    pub prompt_len: usize,
    pub completion_len: usize,
    pub cached_tokens: usize,
    pub submitted: Instant,
    pub started: Option<Instant>,
    pub first_token: Option<Instant>,
}

/// What happened to a request after one sampled token.
pub(crate) enum Progress {
    Continue,
    Finished(FinishReason),
    /// The client is gone.
    Disconnected,
}

impl RequestState {
    pub fn new(
        events: UnboundedSender<TokenEvent>,
        prompt_ids: &[u32],
        params: SamplingParams,
        submitted: Instant,
    ) -> RequestState {
        RequestState {
            events,
            sampler: Sampler::new(&params),
            decoder: IncrementalDecoder::new(prompt_ids),
            stops: StopMatcher::new(&params.stop),
            params,
            prompt_len: prompt_ids.len(),
            completion_len: 0,
            cached_tokens: 0,
            submitted,
            started: None,
            first_token: None,
        }
    }

    /// Handles one sampled token: detokenize, check EOS / stop strings / length, emit.
    pub fn on_token(&mut self, tok: &Tokenizer, id: u32, logprob: f32, ctx: usize) -> Progress {
        self.completion_len += 1;
        if self.first_token.is_none() {
            self.first_token = Some(Instant::now());
        }
        let eos = !self.params.ignore_eos && tok.eos_token_ids().contains(&id);
        let (text, stopped) = if eos {
            (String::new(), false)
        } else {
            match self.decoder.push(tok, id) {
                Ok(delta) => {
                    let out = self.stops.push(&delta);
                    (out.text, out.stopped)
                }
                Err(e) => {
                    let _ = self.events.send(TokenEvent::Error { message: format!("detokenizing token {id}: {e}") });
                    return Progress::Finished(FinishReason::Error);
                }
            }
        };
        if self.events.send(TokenEvent::Token { id, logprob, text }).is_err() {
            return Progress::Disconnected;
        }
        if eos || stopped {
            Progress::Finished(FinishReason::Stop)
        } else if self.completion_len >= self.params.max_tokens || self.prompt_len + self.completion_len >= ctx {
            Progress::Finished(FinishReason::Length)
        } else {
            Progress::Continue
        }
    }

    /// Sends the final event.
    pub fn finish(&mut self, reason: FinishReason, preemptions: u32) {
        let text = if self.stops.is_stopped() { String::new() } else { self.stops.finish() };
        let now = Instant::now();
        let timings = Timings {
            queue: self.started.map_or(now - self.submitted, |s| s - self.submitted),
            ttft: self.first_token.map_or(now - self.submitted, |t| t - self.submitted),
            e2e: now - self.submitted,
        };
        let usage = Usage {
            prompt_tokens: self.prompt_len,
            completion_tokens: self.completion_len,
            cached_tokens: self.cached_tokens,
            preemptions,
        };
        let _ = self.events.send(TokenEvent::Finished { text, reason, usage, timings });
    }
}
