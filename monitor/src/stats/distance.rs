//! Distances between two discrete distributions over the same bins or categories: the
//! drift metrics `js_distance`, `population_stability_index`, `tv_distance` and
//! `l_infinity_distance` of Lakehouse Monitoring.
//!
//! Every function takes two count (or weight, or probability) vectors of equal length,
//! normalizes each to sum to one, then compares them bin by bin; inputs must be finite,
//! non-negative and not all zero. Cost: O(k) for k bins.
//!
//! Ranges: JS ∈ [0, √ln 2] (natural log), TV ∈ [0, 1], L∞ ∈ [0, 1], PSI ∈ [0, ∞). All are 0
//! for identical distributions, and all four are symmetric in their arguments (PSI is
//! the Jeffreys divergence KL(a‖e) + KL(e‖a) of the floored proportions).

use super::input::normalized_pair;
use crate::error::Result;

/// Floor applied to each proportion before PSI's log-ratio, so that a bin empty on one
/// side contributes a large but finite term instead of an infinite one.
pub const PSI_EPSILON: f64 = 1e-4;

/// `scipy.spatial.distance.jensenshannon(p, q)` (natural log): the square root of the
/// Jensen–Shannon divergence ½ KL(p‖m) + ½ KL(q‖m), m = (p + q)/2. A divergence that
/// round-off makes slightly negative is taken as 0 (SciPy would return NaN).
pub fn js_distance(p: &[f64], q: &[f64]) -> Result<f64> {
    let (p, q) = normalized_pair(p, q)?;
    let (mut left, mut right) = (0.0, 0.0);
    for (&pi, &qi) in p.iter().zip(&q) {
        let m = (pi + qi) / 2.0;
        left += rel_entr(pi, m);
        right += rel_entr(qi, m);
    }
    Ok(((left + right) / 2.0).max(0.0).sqrt())
}

/// `scipy.special.rel_entr(x, y)` = x ln(x/y) for x, y > 0, 0 for x = 0. Here y = (x + z)/2
/// with z ≥ 0, so y > 0 whenever x > 0 and the infinite case cannot arise.
fn rel_entr(x: f64, y: f64) -> f64 {
    if x > 0.0 && y > 0.0 {
        x * (x / y).ln()
    } else {
        0.0
    }
}

/// Population stability index of `actual` against `expected` (the baseline):
///
/// PSI = Σᵢ (aᵢ − eᵢ) · ln(aᵢ / eᵢ),
///
/// where eᵢ, aᵢ are the normalized proportions, each floored at [`PSI_EPSILON`]
/// (eᵢ ← max(eᵢ, ε), aᵢ ← max(aᵢ, ε); no renormalization afterwards). Every term is
/// ≥ 0, so PSI ≥ 0, with 0 only for identical distributions. Rule of thumb: < 0.1 no
/// significant shift, 0.1–0.25 moderate, > 0.25 major.
pub fn population_stability_index(expected: &[f64], actual: &[f64]) -> Result<f64> {
    let (e, a) = normalized_pair(expected, actual)?;
    Ok(e.iter()
        .zip(&a)
        .map(|(&ei, &ai)| {
            let (ei, ai) = (ei.max(PSI_EPSILON), ai.max(PSI_EPSILON));
            (ai - ei) * (ai / ei).ln()
        })
        .sum())
}

/// Total variation distance ½ Σ |pᵢ − qᵢ| of the normalized vectors.
pub fn tv_distance(p: &[f64], q: &[f64]) -> Result<f64> {
    let (p, q) = normalized_pair(p, q)?;
    Ok(0.5 * p.iter().zip(&q).map(|(a, b)| (a - b).abs()).sum::<f64>())
}

/// L-infinity (Chebyshev) distance maxᵢ |pᵢ − qᵢ| of the normalized vectors.
pub fn l_infinity_distance(p: &[f64], q: &[f64]) -> Result<f64> {
    let (p, q) = normalized_pair(p, q)?;
    Ok(p.iter().zip(&q).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::StatsError;

    #[test]
    fn identical_distributions_are_at_distance_zero() {
        let p = [3.0, 0.0, 5.0, 2.0];
        let q = [6.0, 0.0, 10.0, 4.0]; // same proportions
        assert_eq!(js_distance(&p, &q).unwrap(), 0.0);
        assert!(population_stability_index(&p, &q).unwrap().abs() < 1e-15);
        assert!(tv_distance(&p, &q).unwrap().abs() < 1e-15);
        assert!(l_infinity_distance(&p, &q).unwrap().abs() < 1e-15);
    }

    #[test]
    fn disjoint_distributions_reach_the_maxima() {
        let (p, q) = ([1.0, 0.0], [0.0, 1.0]);
        assert!((js_distance(&p, &q).unwrap() - std::f64::consts::LN_2.sqrt()).abs() < 1e-15);
        assert_eq!(tv_distance(&p, &q).unwrap(), 1.0);
        assert_eq!(l_infinity_distance(&p, &q).unwrap(), 1.0);
        // Two terms of (1 − ε) ln(1/ε): proportions 1 and 0 floored to ε.
        let psi = population_stability_index(&p, &q).unwrap();
        let expect = 2.0 * (1.0 - PSI_EPSILON) * (1.0 / PSI_EPSILON).ln();
        assert!((psi - expect).abs() < 1e-12, "{psi} vs {expect}");
    }

    #[test]
    fn values_by_hand() {
        let (p, q) = ([0.5, 0.5], [0.9, 0.1]);
        assert!((tv_distance(&p, &q).unwrap() - 0.4).abs() < 1e-15);
        assert!((l_infinity_distance(&p, &q).unwrap() - 0.4).abs() < 1e-15);
        let psi = (0.9 - 0.5) * (0.9f64 / 0.5).ln() + (0.1 - 0.5) * (0.1f64 / 0.5).ln();
        assert!((population_stability_index(&p, &q).unwrap() - psi).abs() < 1e-15);
        // All of them are symmetric.
        let (a, b) = ([0.2, 0.3, 0.5], [0.6, 0.3, 0.1]);
        assert_eq!(js_distance(&a, &b).unwrap(), js_distance(&b, &a).unwrap());
        assert!(
            (population_stability_index(&a, &[0.1, 0.1, 0.8]).unwrap()
                - population_stability_index(&[0.1, 0.1, 0.8], &a).unwrap())
            .abs()
                < 1e-15
        );
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(matches!(js_distance(&[1.0], &[1.0, 1.0]), Err(StatsError::LengthMismatch { .. })));
        assert!(matches!(tv_distance(&[], &[]), Err(StatsError::Empty { .. })));
        assert!(matches!(population_stability_index(&[0.0, 0.0], &[1.0, 1.0]), Err(StatsError::ZeroTotal { .. })));
        assert!(matches!(l_infinity_distance(&[1.0, f64::NAN], &[1.0, 1.0]), Err(StatsError::NonFinite { .. })));
        assert!(matches!(js_distance(&[1.0, -1.0], &[1.0, 1.0]), Err(StatsError::Negative { .. })));
    }
}
