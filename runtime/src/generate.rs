//! One sequence, start to finish: prefill (in chunks) then decode, sampling each token,
//! streaming text deltas that never split a UTF-8 character nor show a stop string.
//!
//! This is the single-sequence driver used by `runtime generate` and `runtime bench`
//! until the continuous-batching engine takes over; it already speaks the engine's
//! language (`ForwardBatch` over a paged `KvCache` with a block table), so the model
//! code is the same in both.
//!
//! Limits are checked before any work: an empty prompt, a prompt that fills the
//! context window, or `prompt + max_tokens` beyond it are errors naming the field.

use crate::error::{Error, Result};
use crate::forward_batch::ForwardBatch;
use crate::kv_cache::{KvCache, BLOCK_SIZE};
use crate::model::Model;
use crate::sampling::{Sampler, SamplingParams};
use crate::stop::StopMatcher;
use crate::tokenizer::{IncrementalDecoder, Tokenizer};
use serde::Serialize;
use std::time::{Duration, Instant};

/// Tokens per prefill step: bounds activation memory for long prompts.
pub const PREFILL_CHUNK: usize = 512;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// EOS or a stop string.
    Stop,
    /// `max_tokens` or the context window.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

#[derive(Clone, Debug)]
pub struct GenerationOutput {
    pub prompt_ids: Vec<u32>,
    pub completion_ids: Vec<u32>,
    pub text: String,
    pub finish_reason: FinishReason,
    /// Time to compute the prompt and sample the first token.
    pub prefill_time: Duration,
    /// Time for every later token.
    pub decode_time: Duration,
}

impl GenerationOutput {
    pub fn prefill_tokens_per_s(&self) -> f64 {
        self.prompt_ids.len() as f64 / self.prefill_time.as_secs_f64().max(1e-9)
    }

    /// Decode rate over the tokens after the first (the first comes with the prefill).
    pub fn decode_tokens_per_s(&self) -> f64 {
        let n = self.completion_ids.len().saturating_sub(1);
        if n == 0 {
            return 0.0;
        }
        n as f64 / self.decode_time.as_secs_f64().max(1e-9)
    }
}

/// Checks a request against the model before any work is done.
pub fn check_request(model: &Model, prompt_ids: &[u32], params: &SamplingParams) -> Result<()> {
    params.validate()?;
    let ctx = model.config.max_position_embeddings;
    if prompt_ids.is_empty() {
        return Err(Error::invalid("prompt", "the prompt is empty (no tokens)"));
    }
    if let Some(t) = prompt_ids
        .iter()
        .find(|t| **t as usize >= model.config.vocab_size)
    {
        return Err(Error::invalid(
            "prompt",
            format!("token id {t} is outside the vocabulary"),
        ));
    }
    if prompt_ids.len() >= ctx {
        return Err(Error::invalid(
            "prompt",
            format!(
                "the prompt has {} tokens; the context window is {ctx}",
                prompt_ids.len()
            ),
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

/// Generates a completion of `prompt_ids`, calling `on_text` with each new piece of text.
pub fn generate(
    model: &Model,
    tokenizer: &Tokenizer,
    prompt_ids: &[u32],
    params: &SamplingParams,
    on_text: &mut dyn FnMut(&str),
) -> Result<GenerationOutput> {
    check_request(model, prompt_ids, params)?;
    let total = prompt_ids.len() + params.max_tokens;
    let mut kv = KvCache::new(&model.config, total.div_ceil(BLOCK_SIZE))?;
    let block_table: Vec<u32> = (0..kv.num_blocks as u32).collect();
    let mut sampler = Sampler::new(params);
    let mut decoder = IncrementalDecoder::new(prompt_ids);
    let mut stops = StopMatcher::new(&params.stop);
    let eos: &[u32] = if params.ignore_eos {
        &[]
    } else {
        tokenizer.eos_token_ids()
    };

    let mut tokens: Vec<u32> = prompt_ids.to_vec();
    let mut completion = Vec::new();
    let mut text = String::new();
    let started = Instant::now();
    let mut prefill_time = Duration::ZERO;
    let mut computed = 0;
    let mut stopped_by_string = false;
    let finish_reason = loop {
        // Feed everything not yet in the cache: prompt chunks, then one token at a time.
        let end = (computed + PREFILL_CHUNK).min(tokens.len());
        let last_chunk = end == tokens.len();
        let mut batch = ForwardBatch::default();
        batch.push_seq(
            &tokens[computed..end],
            computed,
            &block_table,
            BLOCK_SIZE,
            last_chunk,
        );
        let mut logits = model.forward(&batch, &mut kv)?;
        computed = end;
        if !last_chunk {
            continue;
        }
        let next = sampler.sample(&mut logits, &tokens);
        if completion.is_empty() {
            prefill_time = started.elapsed();
        }
        if eos.contains(&next) {
            completion.push(next);
            break FinishReason::Stop;
        }
        completion.push(next);
        tokens.push(next);
        let delta = decoder.push(tokenizer, next)?;
        let out = stops.push(&delta);
        if !out.text.is_empty() {
            on_text(&out.text);
            text.push_str(&out.text);
        }
        if out.stopped {
            stopped_by_string = true;
            break FinishReason::Stop;
        }
        if completion.len() >= params.max_tokens {
            break FinishReason::Length;
        }
    };
    if !stopped_by_string {
        // Text held back as a possible stop-string prefix is final now.
        let rest = stops.finish();
        if !rest.is_empty() {
            on_text(&rest);
            text.push_str(&rest);
        }
    }
    Ok(GenerationOutput {
        prompt_ids: prompt_ids.to_vec(),
        completion_ids: completion,
        text,
        finish_reason,
        prefill_time,
        decode_time: started.elapsed() - prefill_time,
    })
}
