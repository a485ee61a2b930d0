//! Tests of the sampler and its parameters.

use super::*;
use crate::error::Error;
use crate::sampling::MAX_STOP_STRINGS;
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

    /// The copy-free path gives `sample`'s token and draws as much from the RNG (the two
    /// samplers agree afterwards), and declines whenever `sample` would change the row.
    #[test]
    fn untransformed_greedy_is_sample(logits in any_logits(), seed in any::<u64>(), penalty in prop::bool::ANY) {
        let p = SamplingParams {
            seed: Some(seed),
            repetition_penalty: if penalty { 1.3 } else { 1.0 },
            ..SamplingParams::greedy()
        };
        let (mut a, mut b) = (Sampler::new(&p), Sampler::new(&p));
        match a.sample_untransformed(&logits) {
            Some(t) => {
                prop_assert!(!penalty);
                prop_assert_eq!(t, b.sample(&mut logits.clone(), &[]));
            }
            None => prop_assert!(penalty),
        }
        let mut sampled = Sampler::new(&SamplingParams { temperature: 1.0, ..p });
        prop_assert!(sampled.sample_untransformed(&logits).is_none());
        if !penalty {
            a.temperature = Some(1.0);
            b.temperature = Some(1.0);
            let l = [0.5f32, 0.1, 0.3];
            for _ in 0..5 {
                prop_assert_eq!(a.sample(&mut l.to_vec(), &[]), b.sample(&mut l.to_vec(), &[]));
            }
        }
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
