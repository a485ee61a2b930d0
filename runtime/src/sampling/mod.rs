//! Sampling: turning one row of logits into one token id.
//!
//! [`SamplingParams`] are a request's generation parameters (OpenAI / vLLM names and
//! defaults); [`SamplingParams::validate`] checks them once, at the edge, and names the
//! offending field exactly as the OpenAI API spells it. A [`Sampler`] is built per
//! request and applies, in the order HF `transformers` and vLLM use:
//!
//! 1. repetition penalty (HF / CTRL: positive logits divided by the penalty, others
//!    multiplied; each distinct previous token once);
//! 2. greedy short cut: temperature below [`GREEDY_TEMPERATURE_EPS`] (0 in practice) or
//!    `top_k == 1` → [`argmax`] (first maximal index on ties, `torch.argmax` semantics);
//! 3. temperature, 4. top-k, 5. top-p (nucleus over the sorted softmax of what top-k
//!    kept, always at least one token), 6. min-p (relative to the largest probability);
//! 7. one uniform draw from the request's own ChaCha8 stream picks a token from the
//!    renormalised distribution.
//!
//! Invariants:
//! - Every call to [`Sampler::sample`] consumes exactly one 64-bit draw from the
//!   request's RNG, whatever path it takes, so a seeded request reproduces its tokens
//!   regardless of other requests in the batch or of which filters cut what.
//! - Greedy decoding depends on the logits alone (no RNG, no batch state).
//! - No input panics: NaN logits count as `-inf`, `+inf` logits share the mass
//!   equally, an all-`-inf` row falls back to [`argmax`] (index 0), an empty row yields
//!   0, out-of-vocabulary ids in `previous` are ignored, and parameters that
//!   [`SamplingParams::validate`] would reject are clamped to their nearest sane meaning.
//! - A token whose (penalised) logit is NaN or `-inf` is never sampled while some other
//!   token has a finite or `+inf` logit.
//!
//! Cost per token over a vocabulary of V: O(V) for the penalty scan, the softmax
//! weights, top-k (`select_nth_unstable`) and min-p; top-p is a weighted quickselect
//! (O(V) expected, no full sort even when the nucleus is most of the vocabulary).
//! Scratch buffers live in the `Sampler` and are reused across calls.
//!
//! Files: `params.rs` (the parameters and their validation), `sampler.rs` (the
//! per-request sampler), `tests.rs` (both; a child of `sampler`, to see its internals).

mod params;
mod sampler;

pub use params::{SamplingParams, GREEDY_TEMPERATURE_EPS, MAX_STOP_STRINGS, MAX_TEMPERATURE};
pub use sampler::{argmax, Sampler};
