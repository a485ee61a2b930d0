//! Turning raw column values into aligned count vectors, the input of the distribution
//! distances (JS, PSI, TV, L∞) and of the chi-squared test.
//!
//! Numeric columns: the bins are fixed by the **baseline** (the earlier window for
//! CONSECUTIVE drift, the baseline table for BASELINE drift) as its quantiles at
//! 1/B, 2/B, ..., (B−1)/B (numpy-style linear quantiles, B = [`DEFAULT_NUMERIC_BINS`] = 10
//! by default), with duplicate cut points removed, so a baseline with heavy ties gets
//! fewer, never empty-by-construction, bins. The outer bins are open-ended, so values of
//! the compared window outside the baseline's range are still counted. Bins are closed
//! on the right: value x falls in bin i = #{cuts c : c < x}, i.e. (c_{i−1}, c_i]
//! (numpy: `searchsorted(cuts, x, side='left')`). With equal-mass baseline bins each bin
//! holds about 1/B of the baseline, which keeps PSI's log-ratios well conditioned.
//!
//! Categorical columns: counts keyed by category are aligned over the sorted union of the
//! two key sets, a category missing on one side counting 0 there.
//!
//! Cost: O(n log n) to build the bins (one sort of the baseline), O(log B) per value.

use super::input::{check_finite, check_sample};
use super::quantile::quantile_sorted;
use crate::error::{Result, StatsError};
use std::collections::BTreeMap;

/// Number of quantile bins used for numeric drift unless the caller asks otherwise.
pub const DEFAULT_NUMERIC_BINS: usize = 10;

/// Bins over the real line cut at a baseline's quantiles.
#[derive(Debug, Clone, PartialEq)]
pub struct NumericBins {
    /// Strictly increasing interior cut points; bins = cuts + 1.
    cuts: Vec<f64>,
}

impl NumericBins {
    /// Bins cut at the `bins`-quantiles of `baseline` (duplicates merged). Errors on an
    /// empty or non-finite baseline, or `bins == 0`.
    pub fn from_baseline(baseline: &[f64], bins: usize) -> Result<Self> {
        if bins == 0 {
            return Err(StatsError::InvalidArgument("the number of bins must be at least 1".into()));
        }
        check_sample("baseline values", baseline)?;
        let mut sorted = baseline.to_vec();
        sorted.sort_by(f64::total_cmp);
        let mut cuts: Vec<f64> = (1..bins).map(|i| quantile_sorted(&sorted, i as f64 / bins as f64)).collect();
        cuts.sort_by(f64::total_cmp);
        cuts.dedup_by(|a, b| a == b);
        Ok(NumericBins { cuts })
    }

    /// Bins with the given cut points (sorted and de-duplicated here); errors on a
    /// non-finite cut.
    pub fn from_cuts(cuts: &[f64]) -> Result<Self> {
        check_finite("bin cut points", cuts)?;
        let mut cuts = cuts.to_vec();
        cuts.sort_by(f64::total_cmp);
        cuts.dedup_by(|a, b| a == b);
        Ok(NumericBins { cuts })
    }

    /// The interior cut points, strictly increasing.
    pub fn cuts(&self) -> &[f64] {
        &self.cuts
    }

    /// Number of bins (at least 1).
    pub fn num_bins(&self) -> usize {
        self.cuts.len() + 1
    }

    /// Index of the bin holding `x`: the number of cut points strictly below it.
    pub fn bin_of(&self, x: f64) -> usize {
        self.cuts.partition_point(|&c| c < x)
    }

    /// Counts of `values` per bin (all zero for an empty slice). Errors on a non-finite
    /// value.
    pub fn counts(&self, values: &[f64]) -> Result<Vec<f64>> {
        check_finite("binned values", values)?;
        let mut counts = vec![0.0; self.num_bins()];
        for &x in values {
            counts[self.bin_of(x)] += 1.0;
        }
        Ok(counts)
    }
}

/// Counts of `baseline` and `current` over the [`DEFAULT_NUMERIC_BINS`] quantile bins of
/// `baseline`: the pair to hand to [`super::js_distance`] or
/// [`super::population_stability_index`].
pub fn numeric_bin_counts(baseline: &[f64], current: &[f64]) -> Result<(Vec<f64>, Vec<f64>)> {
    let bins = NumericBins::from_baseline(baseline, DEFAULT_NUMERIC_BINS)?;
    Ok((bins.counts(baseline)?, bins.counts(current)?))
}

/// Two categorical count maps aligned over the same categories.
#[derive(Debug, Clone, PartialEq)]
pub struct AlignedCounts {
    /// The union of both key sets, in ascending order.
    pub categories: Vec<String>,
    /// Counts of the first map, 0 where a category is absent.
    pub a: Vec<f64>,
    /// Counts of the second map, 0 where a category is absent.
    pub b: Vec<f64>,
}

/// Aligns two `category → count` maps over the sorted union of their categories.
pub fn align_categorical_counts(a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>) -> AlignedCounts {
    let mut union: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for (k, &v) in a {
        union.entry(k).or_default().0 = v;
    }
    for (k, &v) in b {
        union.entry(k).or_default().1 = v;
    }
    let mut out = AlignedCounts {
        categories: Vec::with_capacity(union.len()),
        a: Vec::with_capacity(union.len()),
        b: Vec::new(),
    };
    for (k, (x, y)) in union {
        out.categories.push(k.to_string());
        out.a.push(x as f64);
        out.b.push(y as f64);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deciles_of_a_uniform_grid() {
        let base: Vec<f64> = (0..=100).map(|i| i as f64).collect();
        let bins = NumericBins::from_baseline(&base, 10).unwrap();
        assert_eq!(bins.cuts(), &[10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0]);
        assert_eq!(bins.num_bins(), 10);
        // Right-closed bins, open-ended outer bins.
        assert_eq!(bins.bin_of(10.0), 0);
        assert_eq!(bins.bin_of(10.5), 1);
        assert_eq!(bins.bin_of(-1e9), 0);
        assert_eq!(bins.bin_of(1e9), 9);
        let counts = bins.counts(&base).unwrap();
        assert_eq!(counts.iter().sum::<f64>(), 101.0);
        assert_eq!(counts[0], 11.0); // 0..=10
        assert_eq!(counts[9], 10.0); // 91..=100
    }

    #[test]
    fn ties_merge_cut_points() {
        let base = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 3.0];
        let bins = NumericBins::from_baseline(&base, 10).unwrap();
        assert_eq!(bins.cuts(), &[1.0, 1.2000000000000002, 2.0999999999999996]);
        let constant = NumericBins::from_baseline(&[4.0; 7], 10).unwrap();
        assert_eq!(constant.num_bins(), 2);
        assert_eq!(constant.counts(&[4.0, 5.0, 3.0]).unwrap(), vec![2.0, 1.0]);
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(NumericBins::from_baseline(&[1.0], 0).is_err());
        assert!(NumericBins::from_baseline(&[], 10).is_err());
        assert!(NumericBins::from_baseline(&[1.0, f64::NAN], 10).is_err());
        let bins = NumericBins::from_baseline(&[1.0, 2.0], 2).unwrap();
        assert!(bins.counts(&[f64::INFINITY]).is_err());
        assert_eq!(bins.counts(&[]).unwrap(), vec![0.0, 0.0]);
        assert!(NumericBins::from_cuts(&[f64::NAN]).is_err());
        assert_eq!(NumericBins::from_cuts(&[2.0, 1.0, 2.0]).unwrap().cuts(), &[1.0, 2.0]);
    }

    #[test]
    fn categories_align_over_the_union() {
        let a: BTreeMap<String, u64> = [("b".to_string(), 2), ("a".to_string(), 1)].into();
        let b: BTreeMap<String, u64> = [("c".to_string(), 5), ("a".to_string(), 3)].into();
        let aligned = align_categorical_counts(&a, &b);
        assert_eq!(aligned.categories, vec!["a", "b", "c"]);
        assert_eq!(aligned.a, vec![1.0, 2.0, 0.0]);
        assert_eq!(aligned.b, vec![3.0, 0.0, 5.0]);
        let empty = align_categorical_counts(&BTreeMap::new(), &BTreeMap::new());
        assert!(empty.categories.is_empty());
    }
}
