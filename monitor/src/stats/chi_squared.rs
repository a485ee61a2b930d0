//! Pearson's chi-squared test of homogeneity for two categorical distributions, the
//! categorical drift test of Lakehouse Monitoring.
//!
//! The two count vectors (aligned over the same categories) are the rows of a 2 × k
//! contingency table, and the result equals
//! `scipy.stats.chi2_contingency([a, b], correction=False)`: expected counts
//! E_rc = row_r · col_c / total, statistic Σ (O − E)² / E, p-value `chi2.sf(stat, k − 1)`.
//!
//! Choices, documented because SciPy would raise instead:
//! - categories that are zero in both vectors are dropped first (their expected count is
//!   zero, which SciPy rejects; they carry no evidence either way), so k counts only
//!   categories seen in at least one window;
//! - with a single category left (k − 1 = 0 degrees of freedom) the distributions are
//!   identical by construction: statistic 0, p-value 1, as SciPy returns for dof = 0;
//! - no Yates continuity correction (`correction=False`), which SciPy would otherwise
//!   apply when dof = 1, so 2-category and k-category columns are treated alike.
//!
//! Counts need not be integers (weighted counts are fine) but must be finite and
//! non-negative, and each vector must have a positive total. Cost: O(k).

use super::input::check_counts;
use super::special::chi2_sf;
use crate::error::{Result, StatsError};

/// Result of a chi-squared test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChiSquaredResult {
    /// Pearson's statistic Σ (O − E)² / E, ≥ 0.
    pub statistic: f64,
    /// P(χ²_dof > statistic), in [0, 1].
    pub pvalue: f64,
    /// Degrees of freedom: the number of categories kept, less one.
    pub dof: usize,
}

/// Chi-squared test that `observed_a` and `observed_b` (counts over the same categories,
/// in the same order) come from one distribution.
pub fn chi_squared_test(observed_a: &[f64], observed_b: &[f64]) -> Result<ChiSquaredResult> {
    if observed_a.len() != observed_b.len() {
        return Err(StatsError::LengthMismatch {
            what: "chi-squared count vectors",
            left: observed_a.len(),
            right: observed_b.len(),
        });
    }
    let total_a = check_counts("chi-squared counts a", observed_a)?;
    let total_b = check_counts("chi-squared counts b", observed_b)?;
    let total = total_a + total_b;

    let mut statistic = 0.0;
    let mut kept = 0usize;
    for (&oa, &ob) in observed_a.iter().zip(observed_b) {
        let col = oa + ob;
        if col == 0.0 {
            continue;
        }
        kept += 1;
        let ea = total_a * col / total;
        let eb = total_b * col / total;
        statistic += (oa - ea).powi(2) / ea + (ob - eb).powi(2) / eb;
    }
    let dof = kept.saturating_sub(1);
    if dof == 0 {
        return Ok(ChiSquaredResult { statistic: 0.0, pvalue: 1.0, dof });
    }
    Ok(ChiSquaredResult { statistic, pvalue: chi2_sf(statistic, dof as f64), dof })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proportional_counts_show_no_drift() {
        let r = chi_squared_test(&[10.0, 20.0, 30.0], &[1.0, 2.0, 3.0]).unwrap();
        assert!(r.statistic.abs() < 1e-12);
        assert!((r.pvalue - 1.0).abs() < 1e-12);
        assert_eq!(r.dof, 2);
    }

    #[test]
    fn two_by_two_table_by_hand() {
        // [[10, 20], [20, 10]]: every expected count is 15, each term 25/15.
        let r = chi_squared_test(&[10.0, 20.0], &[20.0, 10.0]).unwrap();
        assert!((r.statistic - 4.0 * 25.0 / 15.0).abs() < 1e-12);
        assert_eq!(r.dof, 1);
        // dof 1: sf(x) = erfc(√(x/2)); SciPy: chi2.sf(20/3, 1) = 0.009823274507519235.
        assert!((r.pvalue - 0.009_823_274_507_519_235).abs() < 1e-14);
    }

    #[test]
    fn zero_in_both_is_dropped_and_one_category_means_no_drift() {
        let with_zero = chi_squared_test(&[10.0, 0.0, 20.0], &[20.0, 0.0, 10.0]).unwrap();
        let without = chi_squared_test(&[10.0, 20.0], &[20.0, 10.0]).unwrap();
        assert_eq!(with_zero, without);
        let r = chi_squared_test(&[5.0, 0.0], &[7.0, 0.0]).unwrap();
        assert_eq!((r.statistic, r.pvalue, r.dof), (0.0, 1.0, 0));
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(matches!(chi_squared_test(&[1.0], &[1.0, 2.0]), Err(StatsError::LengthMismatch { .. })));
        assert!(matches!(chi_squared_test(&[], &[]), Err(StatsError::Empty { .. })));
        assert!(matches!(chi_squared_test(&[0.0, 0.0], &[1.0, 2.0]), Err(StatsError::ZeroTotal { .. })));
        assert!(matches!(chi_squared_test(&[1.0, -2.0], &[1.0, 2.0]), Err(StatsError::Negative { index: 1, .. })));
        assert!(matches!(chi_squared_test(&[1.0, f64::NAN], &[1.0, 2.0]), Err(StatsError::NonFinite { .. })));
    }
}
