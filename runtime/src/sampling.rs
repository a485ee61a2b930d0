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

use std::cmp::Ordering;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::time::{SystemTime, UNIX_EPOCH};

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};
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

/// Index of the largest logit; the first one on ties (`torch.argmax`). NaN counts as
/// `-inf`; an empty or all-NaN/`-inf` row gives 0.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = f32::NEG_INFINITY;
    let mut best_i = 0usize;
    for (i, &x) in logits.iter().enumerate() {
        // NaN > best is false, so NaN never wins.
        if x > best {
            best = x;
            best_i = i;
        }
    }
    best_i as u32
}

/// A token still in the running: its (penalised) logit, id and unnormalised softmax
/// weight `exp((logit - max) / temperature)`, which lies in `[0, 1]` and is exactly 1
/// for the maximum.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    logit: f32,
    id: u32,
    weight: f32,
}

/// Most likely first; equal logits by increasing id, so the order is total and every
/// selection below is deterministic (and the head agrees with [`argmax`]).
fn most_likely_first(a: &Candidate, b: &Candidate) -> Ordering {
    b.logit.partial_cmp(&a.logit).unwrap_or(Ordering::Equal).then(a.id.cmp(&b.id))
}

/// Per-request sampler: the request's RNG plus reusable scratch space.
///
/// The RNG is ChaCha8 seeded with `seed_from_u64(seed)`. Without a seed, a fresh one is
/// derived by hashing a process-wide counter and the clock with std's `RandomState`
/// (SipHash keyed from OS randomness once per thread): unpredictable enough for
/// sampling, distinct per request, not meant for cryptography. [`Sampler::seed`]
/// reports the seed in use so a run can be replayed.
#[derive(Clone, Debug)]
pub struct Sampler {
    seed: u64,
    rng: ChaCha8Rng,
    /// `None` = greedy.
    temperature: Option<f32>,
    /// 0 = off.
    top_k: usize,
    /// `>= 1` = off.
    top_p: f64,
    /// `<= 0` = off.
    min_p: f64,
    /// 1 = off.
    repetition_penalty: f32,
    candidates: Vec<Candidate>,
    /// Bitset over the vocabulary marking tokens already penalised in this call.
    seen: Vec<u64>,
}

impl Sampler {
    /// Builds the sampler for one request. Parameters are expected to have passed
    /// [`SamplingParams::validate`]; values outside the accepted ranges are clamped
    /// rather than trusted (NaN temperature → greedy, top-p outside (0, 1) → off, …).
    pub fn new(params: &SamplingParams) -> Sampler {
        let seed = params.seed.unwrap_or_else(fresh_seed);
        let t = params.temperature;
        let temperature =
            if params.top_k == 1 || t.is_nan() || t < GREEDY_TEMPERATURE_EPS { None } else { Some(t.min(f32::MAX)) };
        let top_k = usize::try_from(params.top_k).unwrap_or(0);
        let top_p = if params.top_p > 0.0 && params.top_p < 1.0 { f64::from(params.top_p) } else { 1.0 };
        let min_p = if params.min_p > 0.0 { f64::from(params.min_p.min(1.0)) } else { 0.0 };
        let r = params.repetition_penalty;
        let repetition_penalty = if r.is_finite() && r > 0.0 { r } else { 1.0 };
        Sampler {
            seed,
            rng: ChaCha8Rng::seed_from_u64(seed),
            temperature,
            top_k,
            top_p,
            min_p,
            repetition_penalty,
            candidates: Vec::new(),
            seen: Vec::new(),
        }
    }

    /// The seed of this sampler's RNG (the request's, or the fresh one drawn for it).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// True when this sampler decodes greedily.
    pub fn is_greedy(&self) -> bool {
        self.temperature.is_none()
    }

    /// Samples the next token from one row of logits. `previous` is every token id of
    /// the sequence so far (prompt + generated), used by the repetition penalty.
    ///
    /// On return `logits` holds the penalised logits with NaN replaced by `-inf`;
    /// temperature and the filters are not written back. Consumes exactly one RNG draw.
    pub fn sample(&mut self, logits: &mut [f32], previous: &[u32]) -> u32 {
        // Drawn first and unconditionally: one draw per token, whatever happens below.
        let u = self.next_uniform();
        if self.repetition_penalty != 1.0 {
            self.apply_repetition_penalty(logits, previous);
        }
        for x in logits.iter_mut() {
            if x.is_nan() {
                *x = f32::NEG_INFINITY;
            }
        }
        let Some(temperature) = self.temperature else {
            return argmax(logits);
        };
        self.sample_filtered(logits, temperature, u)
    }

    /// A uniform `f64` in `[0, 1)` from the top 53 bits of one `u64` draw.
    fn next_uniform(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// HF `RepetitionPenaltyLogitsProcessor`: `x > 0 → x / p`, else `x * p`, once per
    /// distinct token id present in `previous`.
    fn apply_repetition_penalty(&mut self, logits: &mut [f32], previous: &[u32]) {
        let penalty = self.repetition_penalty;
        let words = logits.len().div_ceil(64);
        if self.seen.len() < words {
            self.seen.resize(words, 0);
        }
        for &id in previous {
            let i = id as usize;
            let Some(x) = logits.get_mut(i) else { continue };
            let bit = 1u64 << (i % 64);
            let word = &mut self.seen[i / 64];
            if *word & bit != 0 {
                continue;
            }
            *word |= bit;
            *x = if *x > 0.0 { *x / penalty } else { *x * penalty };
        }
        // Clear only the words we touched: O(len(previous)), not O(V).
        for &id in previous {
            if let Some(word) = self.seen.get_mut(id as usize / 64) {
                *word = 0;
            }
        }
    }

    /// Temperature → top-k → top-p → min-p → draw. `logits` hold no NaN here.
    fn sample_filtered(&mut self, logits: &[f32], temperature: f32, u: f64) -> u32 {
        let candidates = &mut self.candidates;
        candidates.clear();
        let mut max = f32::NEG_INFINITY;
        for (i, &x) in logits.iter().enumerate() {
            if x > f32::NEG_INFINITY {
                // `+ 0.0` turns -0.0 into +0.0 so the sort agrees with `argmax` on ties.
                candidates.push(Candidate { logit: x + 0.0, id: i as u32, weight: 0.0 });
                max = max.max(x);
            }
        }
        if candidates.is_empty() {
            return argmax(logits);
        }
        if max == f32::INFINITY {
            // Infinite logits take all the mass, shared equally among them.
            candidates.retain(|c| c.logit == f32::INFINITY);
            for c in candidates.iter_mut() {
                c.logit = 0.0;
            }
            max = 0.0;
        }

        // Top-k: the k most likely (ties broken by id), in no particular order.
        if self.top_k > 0 && self.top_k < candidates.len() {
            candidates.select_nth_unstable_by(self.top_k - 1, most_likely_first);
            candidates.truncate(self.top_k);
        }

        // Temperature: weights relative to the maximum, so nothing overflows and the
        // maximum keeps weight exactly 1 (the total is never 0).
        for c in candidates.iter_mut() {
            c.weight = ((c.logit - max) / temperature).exp();
        }

        if self.top_p < 1.0 {
            nucleus(candidates, self.top_p);
        }

        if self.min_p > 0.0 {
            // p_i >= min_p * p_max  ⇔  (logit_i - max) / T >= ln(min_p); compared in
            // logit space so min_p = 1 keeps exactly the maximal tokens.
            let ln_min_p = self.min_p.ln();
            let t = f64::from(temperature);
            candidates.retain(|c| (f64::from(c.logit) - f64::from(max)) / t >= ln_min_p);
        }

        draw(candidates, u).unwrap_or_else(|| argmax(logits))
    }
}

/// Keeps the smallest most-likely-first set whose weight reaches `top_p` of the total
/// (HF / vLLM: a token stays if the mass strictly before it, in sorted order, is below
/// `top_p`); always at least one token.
///
/// A weighted quickselect rather than a full sort: each round partitions the undecided
/// range around its median and keeps only the half holding the cut, so the cost is
/// O(V) expected, even when the nucleus is most of the vocabulary. The kept tokens end
/// up in `candidates[..keep]` in no particular order.
fn nucleus(candidates: &mut Vec<Candidate>, top_p: f64) {
    let mass = |cs: &[Candidate]| cs.iter().map(|c| f64::from(c.weight)).sum::<f64>();
    let target = top_p * mass(candidates);
    // Invariant: candidates[..lo] are more likely than candidates[lo..hi], which are
    // more likely than candidates[hi..]; all of [..lo] is kept (its mass `before` is
    // below target) and nothing of [hi..] is needed.
    let (mut lo, mut hi) = (0, candidates.len());
    let mut before = 0.0f64;
    let keep = loop {
        if hi - lo <= 64 {
            let tail = &mut candidates[lo..hi];
            tail.sort_unstable_by(most_likely_first);
            let mut cumulative = before;
            let mut keep = hi;
            for (i, c) in tail.iter().enumerate() {
                cumulative += f64::from(c.weight);
                if cumulative >= target {
                    keep = lo + i + 1;
                    break;
                }
            }
            break keep;
        }
        let mid = lo + (hi - lo) / 2;
        candidates[lo..hi].select_nth_unstable_by(mid - lo, most_likely_first);
        let above = mass(&candidates[lo..mid]);
        if before + above >= target {
            hi = mid;
        } else if before + above + f64::from(candidates[mid].weight) >= target {
            break mid + 1;
        } else {
            before += above + f64::from(candidates[mid].weight);
            lo = mid + 1;
        }
    };
    candidates.truncate(keep.max(1));
}

/// Inverse-CDF draw over the candidates' weights with `u` in `[0, 1)`. `None` only when
/// no candidate has positive weight (cannot happen while the maximum is kept).
fn draw(candidates: &[Candidate], u: f64) -> Option<u32> {
    let total: f64 = candidates.iter().map(|c| f64::from(c.weight)).sum();
    let target = u * total;
    let mut cumulative = 0.0f64;
    let mut last_positive = None;
    for c in candidates {
        if c.weight > 0.0 {
            cumulative += f64::from(c.weight);
            last_positive = Some(c.id);
            if target < cumulative {
                return Some(c.id);
            }
        }
    }
    // Rounding left `target` at or past the final sum: the last token with mass.
    last_positive
}

/// A fresh, per-request seed: SipHash (keyed from OS randomness per thread by std) of a
/// process-wide counter and the current time.
fn fresh_seed() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, AtomicOrdering::Relaxed));
    if let Ok(now) = SystemTime::now().duration_since(UNIX_EPOCH) {
        hasher.write_u128(now.as_nanos());
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn params(temperature: f32) -> SamplingParams {
        SamplingParams { temperature, seed: Some(7), ..SamplingParams::default() }
    }

    fn softmax(logits: &[f32], t: f64) -> Vec<f64> {
        let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let w: Vec<f64> = logits.iter().map(|&x| ((x as f64 - max) / t).exp()).collect();
        let s: f64 = w.iter().sum();
        w.iter().map(|x| x / s).collect()
    }

    /// Empirical frequencies of `draws` samples.
    fn frequencies(p: &SamplingParams, logits: &[f32], draws: usize) -> Vec<f64> {
        let mut sampler = Sampler::new(p);
        let mut counts = vec![0usize; logits.len()];
        for _ in 0..draws {
            let mut row = logits.to_vec();
            counts[sampler.sample(&mut row, &[]) as usize] += 1;
        }
        counts.iter().map(|&c| c as f64 / draws as f64).collect()
    }

    /// Pearson's chi-square of observed frequencies against expected probabilities.
    fn chi_square(freq: &[f64], expected: &[f64], draws: usize) -> f64 {
        freq.iter()
            .zip(expected)
            .filter(|(_, &e)| e > 0.0)
            .map(|(&f, &e)| {
                let (o, e) = (f * draws as f64, e * draws as f64);
                (o - e) * (o - e) / e
            })
            .sum()
    }

    fn assert_matches(freq: &[f64], expected: &[f64], draws: usize) {
        for (i, (&f, &e)) in freq.iter().zip(expected).enumerate() {
            assert!((f - e).abs() < 0.01, "token {i}: frequency {f} vs probability {e}");
            if e == 0.0 {
                assert_eq!(f, 0.0, "token {i} has probability 0 but was sampled");
            }
        }
        let dof = expected.iter().filter(|&&e| e > 0.0).count() - 1;
        // Well above the 99.9% quantile of chi-square for these few degrees of freedom.
        let bound = 20.0 + 3.0 * dof as f64;
        let chi2 = chi_square(freq, expected, draws);
        assert!(chi2 < bound, "chi-square {chi2} (dof {dof})");
    }

    const LOGITS: [f32; 5] = [1.0, 2.5, 0.3, 2.0, -1.0];

    #[test]
    fn argmax_takes_first_max_and_skips_nan() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 1.0, f32::NAN]), 1);
        assert_eq!(argmax(&[f32::NAN, f32::NAN]), 0);
        assert_eq!(argmax(&[f32::NEG_INFINITY, f32::NEG_INFINITY]), 0);
        assert_eq!(argmax(&[0.0, f32::INFINITY, f32::INFINITY]), 1);
        assert_eq!(argmax(&[]), 0);
    }

    #[test]
    fn sampling_matches_softmax_at_temperature_one() {
        let draws = 200_000;
        let freq = frequencies(&params(1.0), &LOGITS, draws);
        assert_matches(&freq, &softmax(&LOGITS, 1.0), draws);
    }

    #[test]
    fn temperature_scales_the_distribution() {
        let draws = 100_000;
        let cold = frequencies(&params(0.5), &LOGITS, draws);
        let warm = frequencies(&params(2.0), &LOGITS, draws);
        assert_matches(&cold, &softmax(&LOGITS, 0.5), draws);
        assert_matches(&warm, &softmax(&LOGITS, 2.0), draws);
        let base = softmax(&LOGITS, 1.0);
        // Colder concentrates on the best token, warmer spreads to the worst.
        assert!(cold[1] > base[1] + 0.05 && warm[1] < base[1] - 0.05);
        assert!(warm[4] > base[4] && cold[4] < base[4]);
    }

    #[test]
    fn top_k_keeps_the_k_best_renormalised() {
        let draws = 100_000;
        let p = SamplingParams { top_k: 2, ..params(1.0) };
        let freq = frequencies(&p, &LOGITS, draws);
        let mut expected = softmax(&[f32::NEG_INFINITY, 2.5, f32::NEG_INFINITY, 2.0], 1.0);
        expected.push(0.0);
        assert_matches(&freq, &expected, draws);
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        // Probabilities 0.5, 0.3, 0.15, 0.05: with top_p 0.7 the mass before token 1
        // (0.5) is below 0.7 so it stays; the mass before token 2 (0.8) is not.
        let logits: Vec<f32> = [0.5f32, 0.3, 0.15, 0.05].iter().map(|p| p.ln()).collect();
        let draws = 100_000;
        let p = SamplingParams { top_p: 0.7, ..params(1.0) };
        let freq = frequencies(&p, &logits, draws);
        assert_matches(&freq, &[0.625, 0.375, 0.0, 0.0], draws);
    }

    #[test]
    fn top_p_over_a_large_vocabulary_grows_past_the_first_prefix() {
        // A flat 1000-token distribution: the nucleus at 0.5 is 500 tokens, beyond the
        // first 64- and 256-token prefixes.
        let logits = vec![0.0f32; 1000];
        let p = SamplingParams { top_p: 0.5, ..params(1.0) };
        let mut sampler = Sampler::new(&p);
        let mut seen = vec![false; 1000];
        for _ in 0..20_000 {
            let mut row = logits.clone();
            seen[sampler.sample(&mut row, &[]) as usize] = true;
        }
        // Ties break by id, so the nucleus is exactly tokens 0..500.
        assert!(seen[..500].iter().all(|&s| s));
        assert!(seen[500..].iter().all(|&s| !s));
    }

    #[test]
    fn min_p_drops_tokens_below_the_fraction_of_the_max() {
        let logits: Vec<f32> = [0.5f32, 0.3, 0.15, 0.05].iter().map(|p| p.ln()).collect();
        let draws = 100_000;
        let p = SamplingParams {
            min_p: 0.2, // threshold 0.1: token 3 (0.05) goes
            ..params(1.0)
        };
        let freq = frequencies(&p, &logits, draws);
        assert_matches(&freq, &[0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0], draws);
    }

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative_once() {
        let p = SamplingParams { repetition_penalty: 2.0, ..SamplingParams::greedy() };
        let mut sampler = Sampler::new(&p);
        let mut logits = [2.0f32, -1.0, 0.5, 3.0, 0.0];
        // Token 0 and 1 repeat: still penalised once; 7 is out of vocabulary.
        let token = sampler.sample(&mut logits, &[0, 1, 1, 0, 4, 7]);
        assert_eq!(logits, [1.0, -2.0, 0.5, 3.0, 0.0]);
        assert_eq!(token, 3);
        // And the bitset is clean for the next call.
        let mut logits = [2.0f32, -1.0, 0.5, 3.0, 0.0];
        sampler.sample(&mut logits, &[3]);
        assert_eq!(logits, [2.0, -1.0, 0.5, 1.5, 0.0]);
    }

    #[test]
    fn repetition_penalty_can_change_the_greedy_choice() {
        let p = SamplingParams { repetition_penalty: 1.5, ..SamplingParams::greedy() };
        let mut logits = [2.0f32, 1.5];
        assert_eq!(Sampler::new(&p).sample(&mut logits, &[0]), 1);
    }

    #[test]
    fn same_seed_same_tokens_different_seed_differs() {
        let logits: Vec<f32> = (0..200).map(|i| ((i * 37) % 23) as f32 * 0.1).collect();
        let run = |seed| {
            let mut s = Sampler::new(&SamplingParams { seed: Some(seed), top_p: 0.9, ..SamplingParams::default() });
            (0..500).map(|_| s.sample(&mut logits.clone(), &[])).collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn unseeded_samplers_get_distinct_seeds() {
        let a = Sampler::new(&SamplingParams::default());
        let b = Sampler::new(&SamplingParams::default());
        assert_ne!(a.seed(), b.seed());
        let c = Sampler::new(&params(1.0));
        assert_eq!(c.seed(), 7);
    }

    #[test]
    fn one_draw_per_token_whatever_the_path() {
        // A greedy step, a nucleus-of-one step and an empty row each consume one draw,
        // like a plain sampled step: afterwards both samplers produce the same tokens.
        let logits = LOGITS.to_vec();
        let mut a = Sampler::new(&params(1.0));
        let mut b = Sampler::new(&params(1.0));
        a.temperature = None;
        a.sample(&mut logits.clone(), &[]);
        a.temperature = Some(1.0);
        a.top_p = 1e-9;
        a.sample(&mut logits.clone(), &[]);
        a.top_p = 1.0;
        a.sample(&mut [], &[]);
        for _ in 0..3 {
            b.sample(&mut logits.clone(), &[]);
        }
        let ta: Vec<u32> = (0..50).map(|_| a.sample(&mut logits.clone(), &[])).collect();
        let tb: Vec<u32> = (0..50).map(|_| b.sample(&mut logits.clone(), &[])).collect();
        assert_eq!(ta, tb);
    }

    #[test]
    fn degenerate_rows_do_not_panic() {
        let mut s =
            Sampler::new(&SamplingParams { top_k: 3, top_p: 0.5, min_p: 0.1, repetition_penalty: 1.3, ..params(1.0) });
        assert_eq!(s.sample(&mut [], &[0, 5]), 0);
        assert_eq!(s.sample(&mut [f32::NAN, f32::NAN], &[1]), 0);
        assert_eq!(s.sample(&mut [f32::NEG_INFINITY, f32::NAN, f32::NEG_INFINITY], &[]), 0);
        assert_eq!(s.sample(&mut [f32::NAN, 1.0, f32::NAN], &[]), 1);
        for _ in 0..100 {
            let t = s.sample(&mut [1.0, f32::INFINITY, 0.0, f32::INFINITY], &[]);
            assert!(t == 1 || t == 3);
        }
    }

    #[test]
    fn validate_accepts_defaults_and_the_edges() {
        SamplingParams::default().validate().unwrap();
        SamplingParams::greedy().validate().unwrap();
        SamplingParams {
            temperature: 2.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 1.0,
            max_tokens: 1,
            stop: vec!["x".into(); MAX_STOP_STRINGS],
            ..SamplingParams::default()
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn validate_names_each_bad_field() {
        let d = SamplingParams::default;
        let cases: Vec<(&str, SamplingParams)> = vec![
            ("temperature", SamplingParams { temperature: f32::NAN, ..d() }),
            ("temperature", SamplingParams { temperature: -0.1, ..d() }),
            ("temperature", SamplingParams { temperature: 2.5, ..d() }),
            ("temperature", SamplingParams { temperature: f32::INFINITY, ..d() }),
            ("top_k", SamplingParams { top_k: -2, ..d() }),
            ("top_p", SamplingParams { top_p: 0.0, ..d() }),
            ("top_p", SamplingParams { top_p: 1.5, ..d() }),
            ("top_p", SamplingParams { top_p: f32::NAN, ..d() }),
            ("min_p", SamplingParams { min_p: -0.1, ..d() }),
            ("min_p", SamplingParams { min_p: 1.1, ..d() }),
            ("min_p", SamplingParams { min_p: f32::NAN, ..d() }),
            ("repetition_penalty", SamplingParams { repetition_penalty: 0.0, ..d() }),
            ("repetition_penalty", SamplingParams { repetition_penalty: -1.0, ..d() }),
            ("repetition_penalty", SamplingParams { repetition_penalty: f32::INFINITY, ..d() }),
            ("max_tokens", SamplingParams { max_tokens: 0, ..d() }),
            ("stop", SamplingParams { stop: vec!["a".into(); MAX_STOP_STRINGS + 1], ..d() }),
            ("stop", SamplingParams { stop: vec!["a".into(), String::new()], ..d() }),
        ];
        for (field, p) in cases {
            let err = p.validate().expect_err(field);
            match &err {
                Error::InvalidArgument { field: f, .. } => assert_eq!(*f, field, "{p:?}"),
                other => panic!("{field}: unexpected error {other:?}"),
            }
            assert!(err.to_string().contains(field), "{err}");
        }
    }

    #[test]
    fn params_deserialize_with_defaults_and_stop_forms() {
        let p: SamplingParams = serde_json::from_str("{}").unwrap();
        assert_eq!(p, SamplingParams::default());
        let p: SamplingParams = serde_json::from_str(r#"{"temperature": 0, "stop": "\n", "seed": 3}"#).unwrap();
        assert_eq!(p.stop, vec!["\n".to_string()]);
        assert_eq!(p.seed, Some(3));
        assert!(p.is_greedy());
        let p: SamplingParams = serde_json::from_str(r#"{"stop": ["a", "b"]}"#).unwrap();
        assert_eq!(p.stop, vec!["a".to_string(), "b".to_string()]);
        let p: SamplingParams = serde_json::from_str(r#"{"stop": null}"#).unwrap();
        assert!(p.stop.is_empty());
        let round: SamplingParams = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(round, p);
    }

    fn finite_logits() -> impl Strategy<Value = Vec<f32>> {
        prop::collection::vec(-30.0f32..30.0, 1..300)
    }

    /// Any f32 at all, NaN and infinities included.
    fn any_logits() -> impl Strategy<Value = Vec<f32>> {
        let special = prop_oneof![
            Just(f32::NAN),
            Just(f32::INFINITY),
            Just(f32::NEG_INFINITY),
            Just(f32::MAX),
            Just(-f32::MAX),
            Just(-0.0f32),
        ];
        let value = prop_oneof![3 => -50.0f32..50.0, 1 => special, 1 => any::<f32>()];
        prop::collection::vec(value, 0..200)
    }

    proptest! {
        #[test]
        fn greedy_is_argmax(logits in finite_logits(), seed in any::<u64>()) {
            let mut s = Sampler::new(&SamplingParams { seed: Some(seed), ..SamplingParams::greedy() });
            prop_assert_eq!(s.sample(&mut logits.clone(), &[]), argmax(&logits));
        }

        #[test]
        fn top_k_one_is_greedy(logits in finite_logits(), t in 0.01f32..2.0, seed in any::<u64>()) {
            let mut s = Sampler::new(&SamplingParams { top_k: 1, temperature: t, seed: Some(seed), ..SamplingParams::default() });
            prop_assert_eq!(s.sample(&mut logits.clone(), &[]), argmax(&logits));
        }

        #[test]
        fn tiny_top_p_is_greedy(logits in finite_logits(), t in 0.01f32..2.0, seed in any::<u64>()) {
            let mut s = Sampler::new(&SamplingParams { top_p: 1e-9, temperature: t, seed: Some(seed), ..SamplingParams::default() });
            for _ in 0..5 {
                prop_assert_eq!(s.sample(&mut logits.clone(), &[]), argmax(&logits));
            }
        }

        #[test]
        fn min_p_one_is_greedy(logits in finite_logits(), t in 0.01f32..2.0, seed in any::<u64>()) {
            let mut s = Sampler::new(&SamplingParams { min_p: 1.0, temperature: t, seed: Some(seed), ..SamplingParams::default() });
            let best = logits[argmax(&logits) as usize];
            for _ in 0..5 {
                // Exactly greedy up to ties: only maximal tokens survive.
                let token = s.sample(&mut logits.clone(), &[]) as usize;
                prop_assert_eq!(logits[token], best);
            }
        }

        #[test]
        fn nucleus_equals_the_sorted_prefix(
            logits in prop::collection::vec(prop_oneof![-8.0f32..8.0, Just(1.0f32)], 1..2000),
            top_p in 0.001f64..1.0,
        ) {
            let mut candidates: Vec<Candidate> = logits
                .iter()
                .enumerate()
                .map(|(i, &x)| Candidate { logit: x, id: i as u32, weight: 0.0 })
                .collect();
            let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            for c in candidates.iter_mut() {
                c.weight = (c.logit - max).exp();
            }
            // Reference: sort everything, cut where the running mass reaches top_p.
            let mut sorted = candidates.clone();
            sorted.sort_by(most_likely_first);
            let total: f64 = sorted.iter().map(|c| f64::from(c.weight)).sum();
            let mut cumulative = 0.0;
            let mut keep = sorted.len();
            for (i, c) in sorted.iter().enumerate() {
                cumulative += f64::from(c.weight);
                if cumulative >= top_p * total {
                    keep = i + 1;
                    break;
                }
            }
            nucleus(&mut candidates, top_p);
            let mut got: Vec<u32> = candidates.iter().map(|c| c.id).collect();
            got.sort_unstable();
            let mut want: Vec<u32> = sorted[..keep].iter().map(|c| c.id).collect();
            want.sort_unstable();
            // Summation order differs, so allow the cut to move by one token at a
            // boundary the sums straddle by rounding.
            if got != want {
                prop_assert!((got.len() as i64 - want.len() as i64).abs() <= 1);
                let (short, long) = if got.len() < want.len() { (&got, &want) } else { (&want, &got) };
                prop_assert!(short.iter().all(|id| long.contains(id)));
                let edge = &sorted[short.len().min(sorted.len() - 1)];
                let before: f64 = sorted[..short.len()].iter().map(|c| f64::from(c.weight)).sum();
                prop_assert!((before - top_p * total).abs() < 1e-9 * total, "edge {:?}", edge);
            }
        }

        #[test]
        fn seeded_sampling_reproduces(logits in finite_logits(), seed in any::<u64>(), top_k in -1i32..20, top_p in 0.05f32..=1.0) {
            let p = SamplingParams { seed: Some(seed), top_k, top_p, ..SamplingParams::default() };
            let (mut a, mut b) = (Sampler::new(&p), Sampler::new(&p));
            for _ in 0..20 {
                prop_assert_eq!(a.sample(&mut logits.clone(), &[1, 2]), b.sample(&mut logits.clone(), &[1, 2]));
            }
        }

        #[test]
        fn never_panics_and_never_picks_impossible_tokens(
            logits in any_logits(),
            previous in prop::collection::vec(0u32..250, 0..50),
            temperature in prop_oneof![Just(f32::NAN), Just(f32::INFINITY), Just(0.0f32), Just(1e-30f32), -1.0f32..5.0],
            top_k in -3i32..10,
            top_p in prop_oneof![Just(f32::NAN), Just(0.0f32), -1.0f32..2.0],
            min_p in prop_oneof![Just(f32::NAN), -1.0f32..2.0],
            repetition_penalty in prop_oneof![Just(f32::NAN), Just(0.0f32), Just(f32::INFINITY), -2.0f32..3.0],
            seed in any::<u64>(),
        ) {
            let p = SamplingParams { temperature, top_k, top_p, min_p, repetition_penalty, seed: Some(seed), ..SamplingParams::default() };
            let mut s = Sampler::new(&p);
            let mut row = logits.clone();
            let token = s.sample(&mut row, &previous) as usize;
            if logits.is_empty() {
                prop_assert_eq!(token, 0);
            } else {
                prop_assert!(token < logits.len());
                prop_assert!(row.iter().all(|x| !x.is_nan()));
                if row.iter().any(|&x| x > f32::NEG_INFINITY) {
                    prop_assert!(row[token] > f32::NEG_INFINITY, "picked {} from {:?}", token, row);
                }
            }
        }
    }
}
