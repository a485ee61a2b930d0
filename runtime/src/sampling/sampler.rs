//! [`Sampler`]: one request's logits → token pipeline (see the module doc of
//! `sampling`), its RNG and scratch space; [`argmax`] for the greedy path.

use std::cmp::Ordering;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::time::{SystemTime, UNIX_EPOCH};

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

use super::params::{SamplingParams, GREEDY_TEMPERATURE_EPS};

/// Index of the largest logit; the first one on ties (`torch.argmax`). NaN counts as
/// `-inf`; an empty or all-NaN/`-inf` row gives 0.
pub fn argmax(logits: &[f32]) -> u32 {
    keel_kernels::rowmax::argmax(logits) as u32
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

    /// `sample` without a writable copy of the row, for a sampler that would not change
    /// it (greedy, no repetition penalty): the same token and the same one RNG draw.
    /// `None` (nothing drawn) when the row needs `sample`.
    pub fn sample_untransformed(&mut self, logits: &[f32]) -> Option<u32> {
        if self.temperature.is_some() || self.uses_previous() {
            return None;
        }
        let _ = self.next_uniform();
        // `argmax` never picks NaN, as `sample` does after turning NaN into -inf.
        Some(argmax(logits))
    }

    /// Whether `sample` reads its `previous` tokens (the repetition penalty is on).
    pub fn uses_previous(&self) -> bool {
        self.repetition_penalty != 1.0
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
#[path = "tests.rs"]
mod tests;
