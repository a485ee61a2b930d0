//! Descriptive statistics of one column in one profile window — the per-column values of
//! `<T>_profile_metrics` (SPEC.md §6.2): [`NumericSummary`] for numeric columns,
//! [`StringSummary`] for string columns.
//!
//! Definitions (chosen to match Lakehouse Monitoring / Spark where they are defined):
//! - `count`: rows in the window, nulls included; `num_nulls`: rows whose value is null;
//!   `percent_null` = 100 · num_nulls / count (a percentage in [0, 100], `None` when
//!   count = 0).
//! - `distinct_count`: distinct non-null values (−0.0 and 0.0 are one value);
//!   `percent_distinct` = 100 · distinct_count / (count − num_nulls), `None` with no
//!   non-null values.
//! - `avg`: arithmetic mean (compensated summation); `stddev`: sample standard deviation
//!   (ddof = 1, Spark's `stddev`), `None` with fewer than two values.
//! - `quantiles` at [`QUANTILE_LEVELS`] = [0, ¼, ½, ¾, 1] and `median` (the ½ quantile),
//!   with numpy's default linear interpolation, so `quantiles[0]` = min and
//!   `quantiles[4]` = max.
//! - `frequent_items`: the `top_k` most frequent values with their counts, ties broken by
//!   the item in ascending (byte) order, so the list is deterministic.
//! - String lengths are in characters (Unicode scalar values, Spark's `length`).
//!
//! Every statistic over values ignores the nulls. Invariant: a summary of a window with no
//! non-null value has `None` for every value statistic, never NaN. Cost: one sort,
//! O(n log n), plus a hash-free `BTreeMap` pass for frequent items.

use crate::error::Result;
use crate::stats::quantile::quantile_sorted;
use std::collections::BTreeMap;

/// Levels at which [`NumericSummary::quantiles`] are taken.
pub const QUANTILE_LEVELS: [f64; 5] = [0.0, 0.25, 0.5, 0.75, 1.0];

/// Number of frequent items kept unless the caller asks otherwise.
pub const DEFAULT_TOP_K: usize = 10;

/// One entry of `frequent_items`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrequentItem {
    pub item: String,
    pub count: u64,
}

/// Profile statistics of a numeric column.
#[derive(Debug, Clone, PartialEq)]
pub struct NumericSummary {
    pub count: u64,
    pub num_nulls: u64,
    pub percent_null: Option<f64>,
    pub avg: Option<f64>,
    pub stddev: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub median: Option<f64>,
    /// The levels of `quantiles`, always [`QUANTILE_LEVELS`].
    pub quantile_levels: [f64; 5],
    /// Quantiles at `quantile_levels`; empty when there is no non-null value.
    pub quantiles: Vec<f64>,
    pub distinct_count: u64,
    pub percent_distinct: Option<f64>,
}

impl NumericSummary {
    /// Summarizes a column whose nulls are `None`. Errors on a NaN or infinite value
    /// (a null must be a `None`, not a NaN).
    pub fn compute(values: &[Option<f64>]) -> Result<Self> {
        let mut xs: Vec<f64> = values.iter().flatten().map(|&x| if x == 0.0 { 0.0 } else { x }).collect();
        crate::stats::check_finite("numeric column values", &xs)?;
        xs.sort_by(f64::total_cmp);
        let count = values.len() as u64;
        let num_nulls = count - xs.len() as u64;
        let n = xs.len();

        let avg = (n > 0).then(|| compensated_sum(xs.iter().copied()) / n as f64);
        let stddev = avg.filter(|_| n > 1).map(|mean| {
            let ss = compensated_sum(xs.iter().map(|x| (x - mean) * (x - mean)));
            (ss / (n - 1) as f64).sqrt()
        });
        let quantiles: Vec<f64> =
            if n == 0 { Vec::new() } else { QUANTILE_LEVELS.iter().map(|&q| quantile_sorted(&xs, q)).collect() };
        let distinct_count = if n == 0 { 0 } else { 1 + xs.windows(2).filter(|w| w[0] != w[1]).count() as u64 };

        Ok(NumericSummary {
            count,
            num_nulls,
            percent_null: percent(num_nulls, count),
            avg,
            stddev,
            min: xs.first().copied(),
            max: xs.last().copied(),
            median: (n > 0).then(|| quantile_sorted(&xs, 0.5)),
            quantile_levels: QUANTILE_LEVELS,
            quantiles,
            distinct_count,
            percent_distinct: percent(distinct_count, n as u64),
        })
    }
}

/// Profile statistics of a string column.
#[derive(Debug, Clone, PartialEq)]
pub struct StringSummary {
    pub count: u64,
    pub num_nulls: u64,
    pub percent_null: Option<f64>,
    pub distinct_count: u64,
    pub percent_distinct: Option<f64>,
    /// Most frequent values, most frequent first, ties by item ascending.
    pub frequent_items: Vec<FrequentItem>,
    pub min_length: Option<u64>,
    pub max_length: Option<u64>,
    pub avg_length: Option<f64>,
}

impl StringSummary {
    /// Summarizes a column whose nulls are `None`, keeping the `top_k` most frequent values.
    pub fn compute<S: AsRef<str>>(values: &[Option<S>], top_k: usize) -> Self {
        let count = values.len() as u64;
        let present: Vec<&str> = values.iter().flatten().map(AsRef::as_ref).collect();
        let num_nulls = count - present.len() as u64;
        let counts = count_values(present.iter().copied());
        let lengths: Vec<u64> = present.iter().map(|s| s.chars().count() as u64).collect();
        let n = lengths.len();
        StringSummary {
            count,
            num_nulls,
            percent_null: percent(num_nulls, count),
            distinct_count: counts.len() as u64,
            percent_distinct: percent(counts.len() as u64, n as u64),
            frequent_items: top_items(counts, top_k),
            min_length: lengths.iter().min().copied(),
            max_length: lengths.iter().max().copied(),
            avg_length: (n > 0).then(|| lengths.iter().sum::<u64>() as f64 / n as f64),
        }
    }
}

/// The `k` most frequent of `values` with their counts, ties broken by item ascending.
pub fn frequent_items<'a>(values: impl IntoIterator<Item = &'a str>, k: usize) -> Vec<FrequentItem> {
    top_items(count_values(values), k)
}

fn count_values<'a>(values: impl IntoIterator<Item = &'a str>) -> BTreeMap<&'a str, u64> {
    let mut counts = BTreeMap::new();
    for v in values {
        *counts.entry(v).or_insert(0u64) += 1;
    }
    counts
}

fn top_items(counts: BTreeMap<&str, u64>, k: usize) -> Vec<FrequentItem> {
    // The map iterates items ascending; a stable sort by count descending keeps that
    // order among equal counts.
    let mut items: Vec<(&str, u64)> = counts.into_iter().collect();
    items.sort_by_key(|&(_, count)| std::cmp::Reverse(count));
    items.truncate(k);
    items.into_iter().map(|(item, count)| FrequentItem { item: item.to_string(), count }).collect()
}

/// 100 · part / whole, `None` for an empty whole.
fn percent(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| 100.0 * part as f64 / whole as f64)
}

/// Neumaier's compensated sum: error O(ε) independent of the length.
fn compensated_sum(xs: impl Iterator<Item = f64>) -> f64 {
    let (mut sum, mut comp) = (0.0f64, 0.0f64);
    for x in xs {
        let t = sum + x;
        comp += if sum.abs() >= x.abs() { (sum - t) + x } else { (x - t) + sum };
        sum = t;
    }
    sum + comp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::StatsError;

    #[test]
    fn numeric_summary_by_hand() {
        let s = NumericSummary::compute(&[Some(4.0), None, Some(1.0), Some(2.0), Some(2.0), None]).unwrap();
        assert_eq!((s.count, s.num_nulls), (6, 2));
        assert!((s.percent_null.unwrap() - 100.0 / 3.0).abs() < 1e-12);
        assert_eq!(s.avg, Some(2.25));
        // Σ(x − 2.25)² = 3.0625 + 1.5625 + 0.0625 + 0.0625 = 4.75; / 3
        assert!((s.stddev.unwrap() - (4.75f64 / 3.0).sqrt()).abs() < 1e-15);
        assert_eq!((s.min, s.max, s.median), (Some(1.0), Some(4.0), Some(2.0)));
        assert_eq!(s.quantiles, vec![1.0, 1.75, 2.0, 2.5, 4.0]);
        assert_eq!(s.distinct_count, 3);
        assert_eq!(s.percent_distinct, Some(75.0));
    }

    #[test]
    fn empty_and_all_null_columns_have_no_value_statistics() {
        for values in [vec![], vec![None, None]] {
            let s = NumericSummary::compute(&values).unwrap();
            assert_eq!(s.num_nulls, values.len() as u64);
            assert_eq!((s.avg, s.stddev, s.min, s.max, s.median), (None, None, None, None, None));
            assert!(s.quantiles.is_empty());
            assert_eq!((s.distinct_count, s.percent_distinct), (0, None));
        }
        assert_eq!(NumericSummary::compute(&[]).unwrap().percent_null, None);
        let one = NumericSummary::compute(&[Some(3.0)]).unwrap();
        assert_eq!((one.avg, one.stddev), (Some(3.0), None));
    }

    #[test]
    fn nan_is_an_error_not_a_null() {
        let err = NumericSummary::compute(&[Some(1.0), Some(f64::NAN)]).unwrap_err();
        assert!(matches!(err, StatsError::NonFinite { .. }));
    }

    #[test]
    fn signed_zeros_are_one_distinct_value() {
        let s = NumericSummary::compute(&[Some(-0.0), Some(0.0)]).unwrap();
        assert_eq!(s.distinct_count, 1);
    }

    #[test]
    fn compensated_mean_survives_cancellation() {
        let xs: Vec<Option<f64>> = [1e16, 1.0, -1e16, 1.0].iter().map(|&x| Some(x)).collect();
        assert_eq!(NumericSummary::compute(&xs).unwrap().avg, Some(0.5));
    }

    #[test]
    fn string_summary_by_hand() {
        let values = [Some("b"), Some("a"), None, Some("ccc"), Some("b"), Some("a"), Some("é")];
        let s = StringSummary::compute(&values, 2);
        assert_eq!((s.count, s.num_nulls, s.distinct_count), (7, 1, 4));
        assert_eq!(s.percent_distinct, Some(100.0 * 4.0 / 6.0));
        // a and b both twice: ties broken by item ascending.
        assert_eq!(
            s.frequent_items,
            vec![FrequentItem { item: "a".into(), count: 2 }, FrequentItem { item: "b".into(), count: 2 }]
        );
        assert_eq!((s.min_length, s.max_length), (Some(1), Some(3)));
        assert_eq!(s.avg_length, Some(8.0 / 6.0));
        let none: [Option<String>; 1] = [None];
        let s = StringSummary::compute(&none, 5);
        assert_eq!((s.min_length, s.avg_length, s.percent_distinct), (None, None, None));
        assert!(s.frequent_items.is_empty());
    }

    #[test]
    fn frequent_items_orders_by_count_then_item() {
        let items = frequent_items(["x", "y", "x", "z", "y", "x", "w"], 3);
        let got: Vec<(&str, u64)> = items.iter().map(|i| (i.item.as_str(), i.count)).collect();
        assert_eq!(got, vec![("x", 3), ("y", 2), ("w", 1)]);
        assert!(frequent_items(["a"], 0).is_empty());
    }
}
