//! From unpacked rows to metric rows: grouping a window's rows by model and slice, the
//! profile statistics of each group ([`profile_rows`]) and the drift between two groups
//! ([`drift_rows`]).
//!
//! Groups: every row counts in the `:all` model group and, when it names one, in its own
//! `model_name:model_version` group; and, within each, in the unsliced group (`slice_key`
//! null) and in one group per requested slice key it has a value for (`slice_key = k`,
//! `slice_value = v`). Rows without a value for a slice key are in no group of that key.
//!
//! Drift semantics (per column, current window `cur` against `cmp`):
//! - `count_delta` = rows(cur) − rows(cmp); `percent_null_delta` likewise on
//!   `percent_null`; `avg_delta` = avg(cur) − avg(cmp) (numeric).
//! - Numeric: `ks_test` (two-sided two-sample KS), `wasserstein_distance`, and — over ten
//!   quantile bins of `cmp` (see `stats::binning`) — `js_distance`,
//!   `population_stability_index`, `tv_distance`, `l_infinity_distance`.
//! - Categorical: `chi_squared_test` and the four distances over the union of categories.
//! - Text columns and `:table`: the deltas only.
//!
//! A statistic that needs a value on both sides is null when one side has none.
//! Invariant: every function is pure and deterministic (groups are `BTreeMap`s).

use super::tables::{DriftRow, ProfileRow, ALL_MODELS, LOG_TYPE_INPUT, TABLE_COLUMN};
use super::unpack::{columns, ColumnKind, UnpackedRow, CATEGORICAL_COLUMNS, NUMERIC_COLUMNS, TEXT_COLUMNS};
use super::window::Window;
use crate::profile_stats::{NumericSummary, StringSummary, DEFAULT_TOP_K};
use crate::stats;
use std::collections::BTreeMap;

/// Longest frequent item kept in a profile (characters); longer texts are cut and end
/// with `…`, so a profile of long prompts stays small.
pub const MAX_ITEM_CHARS: usize = 256;

/// A group's key: model id, then the slice (`None` for the unsliced group).
pub type GroupKey = (String, Option<(String, String)>);

/// The rows of one window, grouped (see the module doc).
pub fn group<'a>(rows: &[&'a UnpackedRow], slice_keys: &[String]) -> BTreeMap<GroupKey, Vec<&'a UnpackedRow>> {
    let mut groups: BTreeMap<GroupKey, Vec<&UnpackedRow>> = BTreeMap::new();
    for &r in rows {
        let models = std::iter::once(ALL_MODELS.to_string()).chain(r.model_id.clone());
        for m in models {
            groups.entry((m.clone(), None)).or_default().push(r);
            for k in slice_keys {
                if let Some(v) = r.slice_value(k) {
                    groups.entry((m.clone(), Some((k.clone(), v.to_string())))).or_default().push(r);
                }
            }
        }
    }
    groups
}

fn values<'a>(rows: &[&'a UnpackedRow], kind: ColumnKind, name: &str) -> Column<'a> {
    match kind {
        ColumnKind::Numeric => {
            let i = NUMERIC_COLUMNS.iter().position(|c| *c == name).unwrap_or(0);
            Column::Numeric(rows.iter().map(|r| r.numeric[i]).collect())
        }
        ColumnKind::Categorical => {
            let i = CATEGORICAL_COLUMNS.iter().position(|c| *c == name).unwrap_or(0);
            Column::Strings(rows.iter().map(|r| r.categorical[i].as_deref()).collect())
        }
        ColumnKind::Text => {
            let i = TEXT_COLUMNS.iter().position(|c| *c == name).unwrap_or(0);
            Column::Strings(rows.iter().map(|r| r.text[i].as_deref()).collect())
        }
    }
}

enum Column<'a> {
    Numeric(Vec<Option<f64>>),
    Strings(Vec<Option<&'a str>>),
}

fn truncate(item: String) -> String {
    if item.chars().count() <= MAX_ITEM_CHARS {
        return item;
    }
    let mut s: String = item.chars().take(MAX_ITEM_CHARS - 1).collect();
    s.push('…');
    s
}

fn percent(part: usize, whole: usize) -> Option<f64> {
    (whole > 0).then(|| 100.0 * part as f64 / whole as f64)
}

/// The profile rows of every group of one window.
pub fn profile_rows(
    window: Window,
    granularity: &str,
    log_type: &str,
    groups: &BTreeMap<GroupKey, Vec<&UnpackedRow>>,
) -> Vec<ProfileRow> {
    let mut out = Vec::new();
    for ((model_id, slice), rows) in groups {
        let base = ProfileRow {
            window,
            granularity: granularity.to_string(),
            model_id: model_id.clone(),
            slice_key: slice.as_ref().map(|s| s.0.clone()),
            slice_value: slice.as_ref().map(|s| s.1.clone()),
            log_type: log_type.to_string(),
            count: rows.len() as i64,
            ..Default::default()
        };
        out.push(ProfileRow { column_name: TABLE_COLUMN.into(), data_type: "table".into(), ..base.clone() });
        for (name, kind) in columns() {
            let mut row = ProfileRow { column_name: name.into(), data_type: kind.data_type().into(), ..base.clone() };
            match values(rows, kind, name) {
                Column::Numeric(v) => {
                    // Unpacked values are finite by construction, so this cannot fail.
                    let Ok(s) = NumericSummary::compute(&v) else { continue };
                    row.num_nulls = Some(s.num_nulls as i64);
                    row.percent_null = s.percent_null;
                    row.avg = s.avg;
                    row.stddev = s.stddev;
                    row.min = s.min;
                    row.max = s.max;
                    row.median = s.median;
                    row.quantiles = (!s.quantiles.is_empty()).then_some(s.quantiles);
                    row.distinct_count = Some(s.distinct_count as i64);
                    row.percent_distinct = s.percent_distinct;
                }
                Column::Strings(v) => {
                    let s = StringSummary::compute(&v, DEFAULT_TOP_K);
                    row.num_nulls = Some(s.num_nulls as i64);
                    row.percent_null = s.percent_null;
                    row.distinct_count = Some(s.distinct_count as i64);
                    row.percent_distinct = s.percent_distinct;
                    row.frequent_items = Some(
                        s.frequent_items
                            .into_iter()
                            .map(|mut i| {
                                i.item = truncate(i.item);
                                i
                            })
                            .collect(),
                    );
                    row.min_length = s.min_length.map(|x| x as i64);
                    row.max_length = s.max_length.map(|x| x as i64);
                    row.avg_length = s.avg_length;
                }
            }
            out.push(row);
        }
    }
    out
}

/// `log_type` for the profile of the inference table itself.
pub fn input_log_type() -> &'static str {
    LOG_TYPE_INPUT
}

fn mean(xs: &[f64]) -> Option<f64> {
    (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
}

fn present<T: Copy>(v: &[Option<T>]) -> Vec<T> {
    v.iter().flatten().copied().collect()
}

/// Fills the four distances from two aligned count vectors (`cmp` first); errors (an
/// empty side) leave them null.
fn distances(row: &mut DriftRow, cmp: &[f64], cur: &[f64]) {
    row.js_distance = stats::js_distance(cmp, cur).ok();
    row.population_stability_index = stats::population_stability_index(cmp, cur).ok();
    row.tv_distance = stats::tv_distance(cmp, cur).ok();
    row.l_infinity_distance = stats::l_infinity_distance(cmp, cur).ok();
}

/// The drift rows of every group present in both `cur` and `cmp`.
pub fn drift_rows(
    key: (Window, Option<Window>, &str, &str),
    cur: &BTreeMap<GroupKey, Vec<&UnpackedRow>>,
    cmp: &BTreeMap<GroupKey, Vec<&UnpackedRow>>,
) -> Vec<DriftRow> {
    let (window, window_cmp, drift_type, granularity) = key;
    let mut out = Vec::new();
    for (gk, rows) in cur {
        let Some(base_rows) = cmp.get(gk) else { continue };
        let (model_id, slice) = gk;
        let base = DriftRow {
            window,
            window_cmp,
            drift_type: drift_type.to_string(),
            granularity: granularity.to_string(),
            model_id: model_id.clone(),
            slice_key: slice.as_ref().map(|s| s.0.clone()),
            slice_value: slice.as_ref().map(|s| s.1.clone()),
            count_delta: Some(rows.len() as f64 - base_rows.len() as f64),
            ..Default::default()
        };
        out.push(DriftRow { column_name: TABLE_COLUMN.into(), data_type: "table".into(), ..base.clone() });
        for (name, kind) in columns() {
            let mut row = DriftRow { column_name: name.into(), data_type: kind.data_type().into(), ..base.clone() };
            match (values(rows, kind, name), values(base_rows, kind, name)) {
                (Column::Numeric(c), Column::Numeric(b)) => {
                    let (xc, xb) = (present(&c), present(&b));
                    row.percent_null_delta = percent(c.len() - xc.len(), c.len())
                        .zip(percent(b.len() - xb.len(), b.len()))
                        .map(|(x, y)| x - y);
                    row.avg_delta = mean(&xc).zip(mean(&xb)).map(|(x, y)| x - y);
                    if !xc.is_empty() && !xb.is_empty() {
                        row.ks_test = stats::ks_2samp(&xb, &xc).ok().map(|k| (k.statistic, k.pvalue));
                        row.wasserstein_distance = stats::wasserstein_distance(&xb, &xc).ok();
                        if let Ok((cb, cc)) = stats::numeric_bin_counts(&xb, &xc) {
                            distances(&mut row, &cb, &cc);
                        }
                    }
                }
                (Column::Strings(c), Column::Strings(b)) => {
                    let count = |v: &[Option<&str>]| {
                        let mut m: BTreeMap<String, u64> = BTreeMap::new();
                        for s in v.iter().flatten() {
                            *m.entry((*s).to_string()).or_default() += 1;
                        }
                        m
                    };
                    let nulls = |v: &[Option<&str>]| v.iter().filter(|x| x.is_none()).count();
                    row.percent_null_delta =
                        percent(nulls(&c), c.len()).zip(percent(nulls(&b), b.len())).map(|(x, y)| x - y);
                    if kind == ColumnKind::Categorical {
                        let aligned = stats::align_categorical_counts(&count(&b), &count(&c));
                        if !aligned.categories.is_empty() {
                            row.chi_squared_test =
                                stats::chi_squared_test(&aligned.a, &aligned.b).ok().map(|t| (t.statistic, t.pvalue));
                            distances(&mut row, &aligned.a, &aligned.b);
                        }
                    }
                }
                _ => {}
            }
            out.push(row);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(ts: i64, model: Option<&str>, latency: f64, status: &str) -> UnpackedRow {
        let mut r = UnpackedRow { timestamp_ms: ts, model_id: model.map(str::to_string), ..Default::default() };
        r.numeric[0] = Some(latency);
        r.categorical[0] = Some(status.to_string());
        r.slices.insert("status_code".into(), status.into());
        r.text[0] = Some("x".repeat(300));
        r
    }

    #[test]
    fn groups_cover_all_models_each_model_and_slices() {
        let rows = [row(0, Some("m:1"), 1.0, "200"), row(1, Some("m:2"), 2.0, "500"), row(2, None, 3.0, "200")];
        let refs: Vec<&UnpackedRow> = rows.iter().collect();
        let g = group(&refs, &["status_code".to_string()]);
        let n = |m: &str, s: Option<(&str, &str)>| {
            g.get(&(m.to_string(), s.map(|(k, v)| (k.to_string(), v.to_string())))).map_or(0, Vec::len)
        };
        assert_eq!(n(":all", None), 3);
        assert_eq!(n("m:1", None), 1);
        assert_eq!(n("m:2", None), 1);
        assert_eq!(n(":all", Some(("status_code", "200"))), 2);
        assert_eq!(n("m:2", Some(("status_code", "500"))), 1);
        assert_eq!(g.len(), 3 + 2 + 2, "{:?}", g.keys().collect::<Vec<_>>());
    }

    #[test]
    fn profile_rows_have_table_and_column_statistics() {
        let rows = [row(0, Some("m:1"), 1.0, "200"), row(1, Some("m:1"), 3.0, "200"), row(2, Some("m:1"), 5.0, "500")];
        let refs: Vec<&UnpackedRow> = rows.iter().collect();
        let g = group(&refs, &[]);
        let w = Window { start_ms: 0, end_ms: 60_000 };
        let p = profile_rows(w, "1 minute", input_log_type(), &g);
        let get = |m: &str, c: &str| p.iter().find(|r| r.model_id == m && r.column_name == c).unwrap();
        assert_eq!(get(":all", TABLE_COLUMN).count, 3);
        let lat = get("m:1", "execution_time_ms");
        assert_eq!((lat.avg, lat.median, lat.min, lat.max), (Some(3.0), Some(3.0), Some(1.0), Some(5.0)));
        assert_eq!(lat.quantiles.as_deref(), Some(&[1.0, 2.0, 3.0, 4.0, 5.0][..]));
        let ttft = get("m:1", "ttft_ms");
        assert_eq!((ttft.num_nulls, ttft.percent_null, ttft.avg), (Some(3), Some(100.0), None));
        let status = get(":all", "status_code");
        assert_eq!(status.frequent_items.as_ref().unwrap()[0].item, "200");
        assert_eq!(status.frequent_items.as_ref().unwrap()[0].count, 2);
        assert_eq!(status.distinct_count, Some(2));
        let prompt = get(":all", "prompt");
        assert_eq!(prompt.max_length, Some(300));
        assert_eq!(prompt.frequent_items.as_ref().unwrap()[0].item.chars().count(), MAX_ITEM_CHARS);
        // 1 table row + every column, for each of the two groups.
        assert_eq!(p.len(), 2 * (1 + columns().count()));
    }

    #[test]
    fn drift_between_shifted_windows() {
        let a: Vec<UnpackedRow> = (0..50).map(|i| row(i, Some("m:1"), i as f64, "200")).collect();
        let b: Vec<UnpackedRow> =
            (0..60).map(|i| row(i, Some("m:1"), 100.0 + i as f64, if i % 2 == 0 { "200" } else { "500" })).collect();
        let (ra, rb): (Vec<&UnpackedRow>, Vec<&UnpackedRow>) = (a.iter().collect(), b.iter().collect());
        let (ga, gb) = (group(&ra, &[]), group(&rb, &[]));
        let w1 = Window { start_ms: 0, end_ms: 10 };
        let w2 = Window { start_ms: 10, end_ms: 20 };
        let d = drift_rows((w2, Some(w1), "CONSECUTIVE", "1 minute"), &gb, &ga);
        let get = |c: &str| d.iter().find(|r| r.model_id == ":all" && r.column_name == c).unwrap();
        assert_eq!(get(TABLE_COLUMN).count_delta, Some(10.0));
        let lat = get("execution_time_ms");
        assert_eq!(lat.avg_delta, Some(129.5 - 24.5));
        let (ks, p) = lat.ks_test.unwrap();
        assert_eq!(ks, 1.0);
        assert!(p < 1e-10);
        assert_eq!(
            lat.wasserstein_distance,
            Some(
                stats::wasserstein_distance(
                    &present(&a.iter().map(|r| r.numeric[0]).collect::<Vec<_>>()),
                    &present(&b.iter().map(|r| r.numeric[0]).collect::<Vec<_>>())
                )
                .unwrap()
            )
        );
        assert!(lat.js_distance.unwrap() > 0.7 && (lat.tv_distance.unwrap() - 0.9).abs() < 1e-9, "{lat:?}");
        let st = get("status_code");
        assert!(st.chi_squared_test.unwrap().1 < 1e-6);
        assert!((st.tv_distance.unwrap() - 0.5).abs() < 1e-12);
        assert!(st.ks_test.is_none() && lat.chi_squared_test.is_none());
        // The same rows against themselves: no drift.
        let same = drift_rows((w1, Some(w1), "CONSECUTIVE", "1 minute"), &ga, &ga);
        let lat = same.iter().find(|r| r.column_name == "execution_time_ms").unwrap();
        assert_eq!((lat.ks_test.unwrap().0, lat.js_distance, lat.avg_delta), (0.0, Some(0.0), Some(0.0)));
    }
}
