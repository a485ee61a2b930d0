//! The two-sample Kolmogorov–Smirnov test, `scipy.stats.ks_2samp(a, b)` (two-sided,
//! `method='auto'`), re-implemented from SciPy 1.17's algorithm.
//!
//! Statistic: D = max |F_a(x) − F_b(x)| over the pooled sample, the ECDFs taken
//! right-continuous (`searchsorted(side='right')`), so ties are handled exactly.
//!
//! P-value, as SciPy chooses it:
//! - `Auto` is `Exact` when max(n_a, n_b) ≤ 10 000, else `Asymp`.
//! - `Exact` rounds D onto the lattice h / lcm(n_a, n_b) (the reported statistic is that
//!   lattice value) and counts lattice paths: for n_a = n_b the alternating series of
//!   `_compute_prob_outside_square`; otherwise Hodges' "inside method" in Viehmann's
//!   numerically stable 1 − p form (`_compute_outer_prob_inside_method`), O(n_a · window).
//!   A result outside [0, 1] (round-off in extreme tails) falls back to `Asymp`, as
//!   SciPy's does; so does an `Exact` request with lcm ≥ 2³¹.
//! - `Asymp` is `kstwo.sf(D, round(n_a·n_b/(n_a+n_b)))` (see [`super::kolmogorov`]).
//!
//! Cost: two sorts, O(n log n), plus the p-value (O(n) for equal sizes, O(n²·D) at worst
//! for the unequal exact path, which is only taken up to 10 000 per sample).

use super::input::check_sample;
use super::kolmogorov::kstwo_sf;
use crate::error::Result;

/// Largest sample size for which `Auto` computes the exact p-value (SciPy's `MAX_AUTO_N`).
pub const KS_MAX_EXACT_N: usize = 10_000;

/// How the p-value of [`ks_2samp_with_method`] is computed (SciPy's `method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KsMethod {
    /// Exact when both samples have at most [`KS_MAX_EXACT_N`] values, else asymptotic.
    Auto,
    /// Exact lattice-path count (falls back to asymptotic where SciPy does).
    Exact,
    /// The one-sample KS distribution at the effective size n_a·n_b/(n_a+n_b).
    Asymp,
}

/// Result of a two-sample KS test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KsResult {
    /// Largest absolute gap between the two empirical CDFs, in [0, 1].
    pub statistic: f64,
    /// Two-sided p-value, in [0, 1] (NaN only for a forced `Asymp` on two single values,
    /// where SciPy's effective size rounds to 0 and it returns NaN too).
    pub pvalue: f64,
    /// The method that produced `pvalue`: `Exact` or `Asymp`, never `Auto`.
    pub method: KsMethod,
}

/// `scipy.stats.ks_2samp(a, b)`: two-sided two-sample KS test, `method='auto'`.
/// Errors on an empty sample or a NaN/infinite value.
pub fn ks_2samp(a: &[f64], b: &[f64]) -> Result<KsResult> {
    ks_2samp_with_method(a, b, KsMethod::Auto)
}

/// `scipy.stats.ks_2samp(a, b, method=...)`, two-sided.
pub fn ks_2samp_with_method(a: &[f64], b: &[f64], method: KsMethod) -> Result<KsResult> {
    check_sample("KS sample a", a)?;
    check_sample("KS sample b", b)?;
    let a = sorted(a);
    let b = sorted(b);
    let (n1, n2) = (a.len(), b.len());
    let d = max_ecdf_gap(&a, &b);
    let g = gcd(n1, n2);

    let mode = match method {
        KsMethod::Auto if n1.max(n2) <= KS_MAX_EXACT_N => KsMethod::Exact,
        KsMethod::Auto => KsMethod::Asymp,
        KsMethod::Exact if (n1 / g) as f64 >= i32::MAX as f64 / (n2 / g) as f64 => KsMethod::Asymp,
        m => m,
    };
    if mode == KsMethod::Exact {
        if let Some((statistic, pvalue)) = exact_two_sided(n1, n2, g, d) {
            return Ok(KsResult { statistic, pvalue, method: KsMethod::Exact });
        }
    }
    let (m, n) = (n1.max(n2) as f64, n1.min(n2) as f64);
    let en = (m * n / (m + n)).round_ties_even();
    let pvalue = if en < 1.0 { f64::NAN } else { kstwo_sf(en as u64, d).clamp(0.0, 1.0) };
    Ok(KsResult { statistic: d, pvalue, method: KsMethod::Asymp })
}

/// A sorted copy; −0.0 is folded into 0.0 so equal values stay one tie group.
fn sorted(xs: &[f64]) -> Vec<f64> {
    let mut v: Vec<f64> = xs.iter().map(|&x| if x == 0.0 { 0.0 } else { x }).collect();
    v.sort_by(f64::total_cmp);
    v
}

/// max |F_a − F_b| over the pooled values, with F(x) = #{≤ x}/n, computed as SciPy does
/// (each CDF as a quotient, then their difference), by merging the sorted samples.
fn max_ecdf_gap(a: &[f64], b: &[f64]) -> f64 {
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j) = (0, 0);
    let (mut max_diff, mut min_diff) = (f64::NEG_INFINITY, f64::INFINITY);
    while i < a.len() || j < b.len() {
        let v = match (a.get(i), b.get(j)) {
            (Some(&x), Some(&y)) => x.min(y),
            (Some(&x), None) => x,
            (None, Some(&y)) => y,
            (None, None) => break,
        };
        while i < a.len() && a[i] <= v {
            i += 1;
        }
        while j < b.len() && b[j] <= v {
            j += 1;
        }
        let diff = i as f64 / n1 - j as f64 / n2;
        max_diff = max_diff.max(diff);
        min_diff = min_diff.min(diff);
    }
    let min_s = (-min_diff).clamp(0.0, 1.0);
    if min_s > max_diff {
        min_s
    } else {
        max_diff
    }
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// SciPy's `_attempt_exact_2kssamp` for the two-sided alternative: the statistic rounded
/// to the lattice h/lcm and its exact p-value, or `None` when the computation is unusable.
fn exact_two_sided(n1: usize, n2: usize, g: usize, d: f64) -> Option<(f64, f64)> {
    let lcm = (n1 / g) * n2;
    let h = (d * lcm as f64).round_ties_even() as usize;
    let d = h as f64 / lcm as f64;
    if h == 0 {
        return Some((d, 1.0));
    }
    let p = if n1 == n2 { prob_outside_square(n1, h) } else { outer_prob_inside_method(n1, n2, g, h)? };
    (0.0..=1.0).contains(&p).then_some((d, p))
}

/// P(D_{n,n} ≥ h/n) = 2 Σ_{k≥1} (−1)^{k−1} C(2n, n−kh) / C(2n, n), evaluated as
/// 2·A₁(1 − A₂(1 − A₃(...))) with each ratio Aₖ a product of h simple factors, so the
/// alternating sum has no cancellation.
fn prob_outside_square(n: usize, h: usize) -> f64 {
    let mut p = 0.0;
    let mut k = n / h;
    loop {
        let mut p1 = 1.0;
        for j in 0..h {
            // Once a factor reaches zero the product stays zero.
            let num = n as f64 - (k * h) as f64 - j as f64;
            p1 = num * p1 / (n + k * h + j + 1) as f64;
        }
        p = p1 * (1.0 - p);
        if k == 0 {
            break;
        }
        k -= 1;
    }
    2.0 * p
}

/// Proportion of monotone lattice paths from (0,0) to (m,n) that leave the band
/// |x/m − y/n| < h/lcm(m,n) — the exact two-sided p-value for unequal sizes. One column of
/// the path-count table is kept, as a sliding window, and the recursion is on 1 − p
/// (Viehmann 2021) so that small p-values keep their precision. `None` if an index would
/// leave the window (it does not for valid input; this replaces a panic).
fn outer_prob_inside_method(m: usize, n: usize, g: usize, h: usize) -> Option<f64> {
    let (m, n) = if m < n { (n, m) } else { (m, n) };
    let (mg, ng) = ((m / g) as i64, (n / g) as i64);
    let (n_i, h_i) = (n as i64, h as i64);

    let mut minj: i64 = 0;
    let mut maxj: i64 = ((h as f64 / mg as f64).ceil() as i64).min(n_i + 1);
    let mut curlen = maxj - minj;
    let len_a = (2 * maxj + 2).min(n_i + 1) as usize;
    let mut a = vec![1.0f64; len_a];
    a.get_mut(minj as usize..maxj as usize)?.fill(0.0);
    for i in 1..=(m as i64) {
        let (lastminj, lastlen) = (minj, curlen);
        minj = ((((ng * i - h_i) as f64) / mg as f64).floor() as i64 + 1).max(0).min(n_i);
        maxj = ((((ng * i + h_i) as f64) / mg as f64).ceil() as i64).min(n_i + 1);
        if maxj <= minj {
            return Some(1.0);
        }
        let mut val = if minj == 0 { 0.0 } else { 1.0 };
        let fi = i as f64;
        for jj in 0..(maxj - minj) {
            let j = jj + minj;
            let prev = *a.get(usize::try_from(jj + minj - lastminj).ok()?)?;
            val = (prev * fi + val * j as f64) / (fi + j as f64);
            *a.get_mut(jj as usize)? = val;
        }
        curlen = maxj - minj;
        if lastlen > curlen {
            let start = (maxj - minj) as usize;
            let end = start + (lastlen - curlen) as usize;
            // numpy clips a slice at the array's end.
            let end = end.min(a.len());
            if start < end {
                a[start..end].fill(1.0);
            }
        }
    }
    a.get(usize::try_from(maxj - minj - 1).ok()?).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::StatsError;

    #[test]
    fn identical_samples_give_zero_and_one() {
        let a = [1.0, 2.0, 2.0, 3.5, -1.0];
        let r = ks_2samp(&a, &a).unwrap();
        assert_eq!((r.statistic, r.pvalue, r.method), (0.0, 1.0, KsMethod::Exact));
        let r = ks_2samp_with_method(&a, &a, KsMethod::Asymp).unwrap();
        assert_eq!((r.statistic, r.pvalue), (0.0, 1.0));
    }

    #[test]
    fn disjoint_samples_give_one_and_the_path_count() {
        let a = [1.0, 2.0, 3.0, 4.0, 5.0];
        let b = [10.0, 11.0, 12.0, 13.0, 14.0];
        let r = ks_2samp(&a, &b).unwrap();
        assert_eq!(r.statistic, 1.0);
        // Only the two extreme paths out of C(10, 5) = 252 reach the corner.
        assert!((r.pvalue - 2.0 / 252.0).abs() < 1e-15, "{}", r.pvalue);
        // Unequal sizes, disjoint: 2 / C(7, 3) = 2/35.
        let r = ks_2samp(&[0.0, 0.5, 0.7], &[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(r.statistic, 1.0);
        assert!((r.pvalue - 2.0 / 35.0).abs() < 1e-15, "{}", r.pvalue);
    }

    #[test]
    fn ties_across_samples_count_once() {
        // F_a and F_b step together at 2.0; the gap is at 1.0: 1/2 − 0 → 1/2.
        let r = ks_2samp(&[1.0, 2.0], &[2.0, 2.0, 3.0, 3.0]).unwrap();
        assert_eq!(r.statistic, 0.5);
        // −0.0 and 0.0 are the same value.
        let r = ks_2samp(&[-0.0, 1.0], &[0.0, 1.0]).unwrap();
        assert_eq!(r.statistic, 0.0);
    }

    #[test]
    fn bad_input_is_an_error() {
        assert_eq!(ks_2samp(&[], &[1.0]), Err(StatsError::Empty { what: "KS sample a" }));
        assert_eq!(ks_2samp(&[1.0], &[]), Err(StatsError::Empty { what: "KS sample b" }));
        assert!(matches!(ks_2samp(&[1.0, f64::NAN], &[1.0]), Err(StatsError::NonFinite { index: 1, .. })));
        assert!(matches!(ks_2samp(&[1.0], &[f64::INFINITY]), Err(StatsError::NonFinite { index: 0, .. })));
    }

    #[test]
    fn auto_switches_to_asymptotic_above_the_exact_limit() {
        let a: Vec<f64> = (0..KS_MAX_EXACT_N + 1).map(|i| i as f64).collect();
        let b: Vec<f64> = (0..50).map(|i| i as f64 * 200.0).collect();
        assert_eq!(ks_2samp(&a, &b).unwrap().method, KsMethod::Asymp);
        assert_eq!(ks_2samp(&a[..KS_MAX_EXACT_N], &b).unwrap().method, KsMethod::Exact);
    }

    #[test]
    fn exact_and_asymptotic_agree_for_moderate_samples() {
        // Two shifted grids: the p-values of both methods are close for n = 400.
        let a: Vec<f64> = (0..400).map(|i| (i as f64 * 0.618_033_988_7).fract()).collect();
        let b: Vec<f64> = (0..300).map(|i| (i as f64 * 0.414_213_562_3).fract() * 1.1).collect();
        let e = ks_2samp_with_method(&a, &b, KsMethod::Exact).unwrap();
        let s = ks_2samp_with_method(&a, &b, KsMethod::Asymp).unwrap();
        assert_eq!(e.method, KsMethod::Exact);
        assert!((e.statistic - s.statistic).abs() < 1e-12);
        assert!((e.pvalue - s.pvalue).abs() < 0.02, "{} vs {}", e.pvalue, s.pvalue);
    }
}
