//! Input checks shared by the statistics: a sample must be non-empty and finite; a count
//! vector must also be non-negative with a positive total, and two count vectors compared
//! bin by bin must have the same length. Each check is one pass, O(n), and names the
//! offending element in its error.

use crate::error::{Result, StatsError};

/// A non-empty slice of finite numbers.
pub(crate) fn check_sample(what: &'static str, xs: &[f64]) -> Result<()> {
    if xs.is_empty() {
        return Err(StatsError::Empty { what });
    }
    check_finite(what, xs)
}

/// Every element finite (an empty slice passes).
pub(crate) fn check_finite(what: &'static str, xs: &[f64]) -> Result<()> {
    match xs.iter().position(|x| !x.is_finite()) {
        Some(index) => Err(StatsError::NonFinite { what, index, value: xs[index] }),
        None => Ok(()),
    }
}

/// A non-empty vector of finite, non-negative counts (or weights) with a positive total;
/// returns the total.
pub(crate) fn check_counts(what: &'static str, xs: &[f64]) -> Result<f64> {
    check_sample(what, xs)?;
    if let Some(index) = xs.iter().position(|&x| x < 0.0) {
        return Err(StatsError::Negative { what, index, value: xs[index] });
    }
    let total: f64 = xs.iter().sum();
    if total <= 0.0 {
        return Err(StatsError::ZeroTotal { what });
    }
    if !total.is_finite() {
        return Err(StatsError::InvalidArgument(format!("{what} sums to {total}: counts are too large to normalize")));
    }
    Ok(total)
}

/// Two count vectors over the same bins, each normalized to sum to one.
pub(crate) fn normalized_pair(p: &[f64], q: &[f64]) -> Result<(Vec<f64>, Vec<f64>)> {
    if p.len() != q.len() {
        return Err(StatsError::LengthMismatch { what: "distributions p and q", left: p.len(), right: q.len() });
    }
    let p_total = check_counts("p", p)?;
    let q_total = check_counts("q", q)?;
    Ok((p.iter().map(|x| x / p_total).collect(), q.iter().map(|x| x / q_total).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_empty_nan_negative_and_zero_total() {
        assert_eq!(check_sample("a", &[]), Err(StatsError::Empty { what: "a" }));
        assert!(matches!(check_sample("a", &[1.0, f64::NAN]), Err(StatsError::NonFinite { index: 1, .. })));
        assert!(matches!(check_sample("a", &[f64::NEG_INFINITY]), Err(StatsError::NonFinite { index: 0, .. })));
        assert!(matches!(check_counts("p", &[1.0, -1.0]), Err(StatsError::Negative { index: 1, .. })));
        assert_eq!(check_counts("p", &[0.0, 0.0]), Err(StatsError::ZeroTotal { what: "p" }));
        assert!(matches!(check_counts("p", &[f64::MAX, f64::MAX]), Err(StatsError::InvalidArgument(_))));
        assert!(matches!(
            normalized_pair(&[1.0], &[1.0, 2.0]),
            Err(StatsError::LengthMismatch { left: 1, right: 2, .. })
        ));
    }

    #[test]
    fn normalizes_both_vectors() {
        let (p, q) = normalized_pair(&[1.0, 3.0], &[2.0, 2.0]).unwrap();
        assert_eq!(p, vec![0.25, 0.75]);
        assert_eq!(q, vec![0.5, 0.5]);
    }
}
