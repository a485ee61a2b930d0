//! A request's generation parameters ([`SamplingParams`]) and their validation.

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, Result};

/// Temperatures below this sample greedily (vLLM's `_SAMPLING_EPS`): dividing logits by
/// such a temperature leaves only the maximum with non-negligible mass anyway, and the
/// greedy path is exact and batch invariant.
pub const GREEDY_TEMPERATURE_EPS: f32 = 1e-5;

/// Largest accepted `temperature` (OpenAI and Databricks both document `[0, 2]`).
pub const MAX_TEMPERATURE: f32 = 2.0;

/// Most `stop` strings a request may carry.
pub const MAX_STOP_STRINGS: usize = 16;

/// A request's generation parameters. Field names and defaults follow the OpenAI API
/// (and vLLM for the fields OpenAI lacks); every field may be omitted when
/// deserialising. `stop` accepts a single string or a list of strings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// Softmax temperature; `0` means greedy. Accepted: finite, `0 ..= 2`.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; `-1` or `0` turns it off.
    pub top_k: i32,
    /// Nucleus sampling: keep the smallest set of most likely tokens whose probability
    /// reaches `top_p`; `1` turns it off. Accepted: `(0, 1]`.
    pub top_p: f32,
    /// Drop tokens whose probability is below `min_p` times the largest one; `0` turns
    /// it off. Accepted: `[0, 1]`.
    pub min_p: f32,
    /// HF / CTRL repetition penalty over prompt + generated tokens; `1` turns it off.
    /// Accepted: finite, `> 0`.
    pub repetition_penalty: f32,
    /// Seed of the request's RNG; `None` draws a fresh seed per request.
    pub seed: Option<u64>,
    /// Most tokens to generate. Accepted: `>= 1` (the context bound is checked by the
    /// caller, who knows the prompt length).
    pub max_tokens: usize,
    /// Stop strings, matched on decoded text (see [`crate::stop`]). Accepted: at most
    /// [`MAX_STOP_STRINGS`], none empty.
    #[serde(deserialize_with = "string_or_list")]
    pub stop: Vec<String>,
    /// Keep generating past the end-of-sequence token.
    pub ignore_eos: bool,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 1.0,
            top_k: -1,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            seed: None,
            max_tokens: 256,
            stop: Vec::new(),
            ignore_eos: false,
        }
    }
}

impl SamplingParams {
    /// Default parameters with temperature 0: deterministic, batch-invariant argmax.
    pub fn greedy() -> Self {
        SamplingParams { temperature: 0.0, ..Self::default() }
    }

    /// True when these parameters decode greedily (no randomness reaches the output).
    pub fn is_greedy(&self) -> bool {
        self.temperature.is_nan() || self.temperature < GREEDY_TEMPERATURE_EPS || self.top_k == 1
    }

    /// Checks every field against the ranges documented on it; the error names the
    /// first offending field exactly as the OpenAI API spells it.
    pub fn validate(&self) -> Result<()> {
        let t = self.temperature;
        if !t.is_finite() || !(0.0..=MAX_TEMPERATURE).contains(&t) {
            return Err(Error::invalid(
                "temperature",
                format!("must be a number between 0 and {MAX_TEMPERATURE}, got {t}"),
            ));
        }
        if self.top_k < -1 {
            return Err(Error::invalid(
                "top_k",
                format!("must be -1 or 0 (disabled) or a positive integer, got {}", self.top_k),
            ));
        }
        let p = self.top_p;
        if p.is_nan() || p <= 0.0 || p > 1.0 {
            return Err(Error::invalid("top_p", format!("must be in (0, 1], got {p}")));
        }
        let m = self.min_p;
        if !(0.0..=1.0).contains(&m) {
            return Err(Error::invalid("min_p", format!("must be in [0, 1], got {m}")));
        }
        let r = self.repetition_penalty;
        if !(r.is_finite() && r > 0.0) {
            return Err(Error::invalid("repetition_penalty", format!("must be a finite number > 0, got {r}")));
        }
        if self.max_tokens == 0 {
            return Err(Error::invalid("max_tokens", "must be at least 1, got 0"));
        }
        if self.stop.len() > MAX_STOP_STRINGS {
            return Err(Error::invalid(
                "stop",
                format!("at most {MAX_STOP_STRINGS} stop strings are allowed, got {}", self.stop.len()),
            ));
        }
        if let Some(i) = self.stop.iter().position(String::is_empty) {
            return Err(Error::invalid("stop", format!("stop string {i} is empty")));
        }
        Ok(())
    }
}

/// OpenAI's `stop` is `string | string[] | null`.
fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => Vec::new(),
        Some(OneOrMany::One(s)) => vec![s],
        Some(OneOrMany::Many(v)) => v,
    })
}
