//! Alert rules over the metric tables: `"<metric>(<column>) <op> <number>"`, e.g.
//! `js_distance(response_length) > 0.2`, `avg(execution_time_ms) >= 800`,
//! `count(:table) < 10`, `ks_pvalue(prompt_tokens) < 0.01`.
//!
//! Drift metrics (read from `<T>_drift_metrics`): `count_delta`, `avg_delta`,
//! `percent_null_delta`, `ks_statistic`, `ks_pvalue`, `chi_squared_statistic`,
//! `chi_squared_pvalue`, `js_distance`, `wasserstein_distance`,
//! `population_stability_index` (or `psi`), `tv_distance`, `l_infinity_distance`.
//! Profile metrics (read from `<T>_profile_metrics`): `count`, `num_nulls`,
//! `percent_null`, `avg`, `stddev`, `min`, `max`, `median`, `distinct_count`,
//! `percent_distinct`, `min_length`, `max_length`, `avg_length`.
//! Operators: `>`, `>=`, `<`, `<=`, `==`, `!=`.
//!
//! A rule is evaluated on the rows of one granularity, model id (default `:all`), slice
//! (default: unsliced) and, for drift, drift type; on the latest window that has the
//! metric's rows (or on every window). A null value (e.g. a KS test of a window with no
//! latency values) is reported as "no value" and is not a breach.

use super::tables::{DriftRow, ProfileRow, LOG_TYPE_INPUT, TABLE_COLUMN};
use super::unpack::{columns, ColumnKind};
use super::window::Window;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

impl Op {
    fn holds(self, x: f64, t: f64) -> bool {
        match self {
            Op::Gt => x > t,
            Op::Ge => x >= t,
            Op::Lt => x < t,
            Op::Le => x <= t,
            Op::Eq => x == t,
            Op::Ne => x != t,
        }
    }
}

/// Which table a metric lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Profile,
    Drift,
}

const DRIFT_METRICS: [&str; 13] = [
    "count_delta",
    "avg_delta",
    "percent_null_delta",
    "ks_statistic",
    "ks_pvalue",
    "chi_squared_statistic",
    "chi_squared_pvalue",
    "js_distance",
    "wasserstein_distance",
    "population_stability_index",
    "psi",
    "tv_distance",
    "l_infinity_distance",
];

const PROFILE_METRICS: [&str; 13] = [
    "count",
    "num_nulls",
    "percent_null",
    "avg",
    "stddev",
    "min",
    "max",
    "median",
    "distinct_count",
    "percent_distinct",
    "min_length",
    "max_length",
    "avg_length",
];

/// Whether `metric` has values for a column of `kind` (`None` = `:table`): `None` when
/// it does, else the kinds it applies to (a rule that could never have a value is a
/// mistake, not a quiet "no value").
fn metric_accepts(metric: &str, kind: Option<ColumnKind>) -> Option<&'static str> {
    use ColumnKind::{Categorical, Numeric, Text};
    let (ok, accepts) = match metric {
        "count" | "count_delta" => (true, ""),
        "avg_delta"
        | "ks_statistic"
        | "ks_pvalue"
        | "wasserstein_distance"
        | "avg"
        | "stddev"
        | "min"
        | "max"
        | "median" => (kind == Some(Numeric), "numeric columns"),
        "chi_squared_statistic" | "chi_squared_pvalue" => (kind == Some(Categorical), "categorical columns"),
        "js_distance" | "population_stability_index" | "psi" | "tv_distance" | "l_infinity_distance" => {
            (matches!(kind, Some(Numeric | Categorical)), "numeric and categorical columns")
        }
        "min_length" | "max_length" | "avg_length" => {
            (matches!(kind, Some(Categorical | Text)), "categorical and text columns")
        }
        _ => (kind.is_some(), "columns (not :table)"),
    };
    (!ok).then_some(accepts)
}

/// One parsed rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub text: String,
    pub metric: String,
    pub column: String,
    pub op: Op,
    pub threshold: f64,
}

impl Rule {
    /// Parses a rule; the error names what is wrong and what is accepted.
    pub fn parse(text: &str) -> Result<Rule, String> {
        let t = text.trim();
        let shape = || {
            format!("rule {text:?}: expected \"<metric>(<column>) <op> <number>\", e.g. \"js_distance(response_length) > 0.2\"")
        };
        let open = t.find('(').ok_or_else(shape)?;
        let close = t.find(')').filter(|&c| c > open).ok_or_else(shape)?;
        let metric = t[..open].trim().to_ascii_lowercase();
        let column = t[open + 1..close].trim().to_string();
        let rest = t[close + 1..].trim();
        let (op, num) = [(">=", Op::Ge), ("<=", Op::Le), ("==", Op::Eq), ("!=", Op::Ne), (">", Op::Gt), ("<", Op::Lt)]
            .into_iter()
            .find_map(|(s, op)| rest.strip_prefix(s).map(|n| (op, n.trim())))
            .ok_or_else(shape)?;
        let threshold: f64 = num.parse().ok().filter(|x: &f64| x.is_finite()).ok_or_else(shape)?;
        if !DRIFT_METRICS.contains(&metric.as_str()) && !PROFILE_METRICS.contains(&metric.as_str()) {
            return Err(format!(
                "rule {text:?}: unknown metric {metric:?}; drift metrics: {}; profile metrics: {}",
                DRIFT_METRICS.join(", "),
                PROFILE_METRICS.join(", ")
            ));
        }
        if column != TABLE_COLUMN && !columns().any(|(c, _)| c == column) {
            return Err(format!(
                "rule {text:?}: unknown column {column:?}; columns: {TABLE_COLUMN}, {}",
                columns().map(|(c, _)| c).collect::<Vec<_>>().join(", ")
            ));
        }
        let kind = columns().find(|(c, _)| *c == column).map(|(_, k)| k);
        if let Some(accepts) = metric_accepts(&metric, kind) {
            return Err(format!("rule {text:?}: {metric} applies to {accepts}, and {column} is not one"));
        }
        Ok(Rule { text: t.to_string(), metric, column, op, threshold })
    }

    pub fn source(&self) -> Source {
        if DRIFT_METRICS.contains(&self.metric.as_str()) {
            Source::Drift
        } else {
            Source::Profile
        }
    }

    fn profile_value(&self, r: &ProfileRow) -> Option<f64> {
        let i = |x: Option<i64>| x.map(|v| v as f64);
        match self.metric.as_str() {
            "count" => Some(r.count as f64),
            "num_nulls" => i(r.num_nulls),
            "percent_null" => r.percent_null,
            "avg" => r.avg,
            "stddev" => r.stddev,
            "min" => r.min,
            "max" => r.max,
            "median" => r.median,
            "distinct_count" => i(r.distinct_count),
            "percent_distinct" => r.percent_distinct,
            "min_length" => i(r.min_length),
            "max_length" => i(r.max_length),
            "avg_length" => r.avg_length,
            _ => None,
        }
    }

    fn drift_value(&self, r: &DriftRow) -> Option<f64> {
        let v = match self.metric.as_str() {
            "count_delta" => r.count_delta,
            "avg_delta" => r.avg_delta,
            "percent_null_delta" => r.percent_null_delta,
            "ks_statistic" => r.ks_test.map(|t| t.0),
            "ks_pvalue" => r.ks_test.map(|t| t.1),
            "chi_squared_statistic" => r.chi_squared_test.map(|t| t.0),
            "chi_squared_pvalue" => r.chi_squared_test.map(|t| t.1),
            "js_distance" => r.js_distance,
            "wasserstein_distance" => r.wasserstein_distance,
            "population_stability_index" | "psi" => r.population_stability_index,
            "tv_distance" => r.tv_distance,
            "l_infinity_distance" => r.l_infinity_distance,
            _ => None,
        };
        v.filter(|x| !x.is_nan())
    }
}

/// Which rows a check looks at.
#[derive(Debug, Clone, PartialEq)]
pub struct Scope {
    pub granularity: String,
    pub model_id: String,
    /// `(slice_key, slice_value)`; `None` = the unsliced rows.
    pub slice: Option<(String, String)>,
    /// `CONSECUTIVE` or `BASELINE` (drift rules only).
    pub drift_type: String,
    /// Every window instead of the latest one.
    pub all_windows: bool,
}

/// The outcome of one rule on one window.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub rule: String,
    pub window: Option<Window>,
    pub window_cmp: Option<Window>,
    pub value: Option<f64>,
    pub breached: bool,
}

fn slice_matches(key: &Option<String>, value: &Option<String>, want: &Option<(String, String)>) -> bool {
    match want {
        None => key.is_none(),
        Some((k, v)) => key.as_deref() == Some(k.as_str()) && value.as_deref() == Some(v.as_str()),
    }
}

/// Evaluates `rule` over the rows in `scope`. No matching row at all gives one
/// evaluation with no window and no value.
pub fn evaluate(rule: &Rule, scope: &Scope, profile: &[ProfileRow], drift: &[DriftRow]) -> Vec<Evaluation> {
    let mut found: Vec<(Window, Option<Window>, Option<f64>)> = match rule.source() {
        Source::Profile => profile
            .iter()
            .filter(|r| {
                r.granularity == scope.granularity
                    && r.log_type == LOG_TYPE_INPUT
                    && r.model_id == scope.model_id
                    && r.column_name == rule.column
                    && slice_matches(&r.slice_key, &r.slice_value, &scope.slice)
            })
            .map(|r| (r.window, None, rule.profile_value(r)))
            .collect(),
        Source::Drift => drift
            .iter()
            .filter(|r| {
                r.granularity == scope.granularity
                    && r.drift_type == scope.drift_type
                    && r.model_id == scope.model_id
                    && r.column_name == rule.column
                    && slice_matches(&r.slice_key, &r.slice_value, &scope.slice)
            })
            .map(|r| (r.window, r.window_cmp, rule.drift_value(r)))
            .collect(),
    };
    found.sort_by_key(|f| f.0);
    if !scope.all_windows {
        found = found.pop().into_iter().collect();
    }
    if found.is_empty() {
        return vec![Evaluation {
            rule: rule.text.clone(),
            window: None,
            window_cmp: None,
            value: None,
            breached: false,
        }];
    }
    found
        .into_iter()
        .map(|(window, window_cmp, value)| Evaluation {
            rule: rule.text.clone(),
            window: Some(window),
            window_cmp,
            value,
            breached: value.is_some_and(|v| rule.op.holds(v, rule.threshold)),
        })
        .collect()
}

/// `YYYY-MM-DD HH:MM` (UTC) of a Unix time in milliseconds.
pub fn format_time(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000) / 60_000;
    format!("{} {:02}:{:02}", crate::inference_table::format_date(days as i32), rem / 60, rem % 60)
}

impl fmt::Display for Evaluation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.breached { "BREACHED" } else { "ok" };
        match (self.window, self.value) {
            (None, _) => write!(
                f,
                "no data   {}: no rows for this rule (run `runtime monitor profile`/`drift` first?)",
                self.rule
            ),
            (Some(w), v) => {
                let value = v.map_or("no value".to_string(), |v| format!("{v:.6}"));
                let cmp = match self.window_cmp {
                    Some(c) => format!(" vs {}", format_time(c.start_ms)),
                    None => String::new(),
                };
                write!(f, "{verdict:<9} {}: {value} (window {}{cmp})", self.rule, format_time(w.start_ms))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rules_and_names_mistakes() {
        let r = Rule::parse(" js_distance(response_length) > 0.2 ").unwrap();
        assert_eq!(
            (r.metric.as_str(), r.column.as_str(), r.op, r.threshold),
            ("js_distance", "response_length", Op::Gt, 0.2)
        );
        assert_eq!(r.source(), Source::Drift);
        let r = Rule::parse("count(:table)<=10").unwrap();
        assert_eq!((r.op, r.source()), (Op::Le, Source::Profile));
        assert!(Rule::parse("js_distance(nope) > 1").unwrap_err().contains("unknown column \"nope\""));
        assert!(Rule::parse("bogus(prompt) > 1").unwrap_err().contains("unknown metric"));
        for bad in [
            "js_distance(prompt)",
            "js_distance(prompt) > x",
            "js_distance prompt > 1",
            "js_distance(prompt) ~ 1",
            "avg(prompt) > inf",
        ] {
            assert!(Rule::parse(bad).is_err(), "{bad:?} accepted");
        }
        // A metric the column can never have is a mistake, named with what it applies to.
        for (bad, needle) in [
            ("ks_pvalue(status_code) < 0.01", "numeric columns"),
            ("avg(prompt) > 1", "numeric columns"),
            ("ks_statistic(:table) > 0.5", "numeric columns"),
            ("chi_squared_pvalue(prompt_length) < 0.01", "categorical columns"),
            ("js_distance(response) > 0.2", "numeric and categorical columns"),
            ("avg_length(latency) > 1", "unknown column"),
            ("max_length(prompt_length) > 1", "categorical and text columns"),
            ("percent_null(:table) > 1", "not :table"),
        ] {
            let e = Rule::parse(bad).unwrap_err();
            assert!(e.contains(needle), "{bad:?}: {e}");
        }
        for good in [
            "count(:table) < 10",
            "count_delta(:table) < -5",
            "chi_squared_pvalue(finish_reason) < 0.01",
            "js_distance(status_code) > 0.1",
            "avg_length(response) > 100",
            "percent_null(response) > 5",
            "distinct_count(prompt_length) > 1",
        ] {
            assert!(Rule::parse(good).is_ok(), "{good:?}: {:?}", Rule::parse(good));
        }
    }

    fn drift_row(start: i64, js: Option<f64>) -> DriftRow {
        DriftRow {
            window: Window { start_ms: start, end_ms: start + 10 },
            window_cmp: Some(Window { start_ms: start - 10, end_ms: start }),
            drift_type: "CONSECUTIVE".into(),
            granularity: "1 hour".into(),
            model_id: ":all".into(),
            column_name: "response_length".into(),
            js_distance: js,
            ..Default::default()
        }
    }

    #[test]
    fn evaluates_the_latest_window_or_all() {
        let rows = [drift_row(10, Some(0.5)), drift_row(20, Some(0.1)), drift_row(30, None)];
        let rule = Rule::parse("js_distance(response_length) > 0.2").unwrap();
        let mut scope = Scope {
            granularity: "1 hour".into(),
            model_id: ":all".into(),
            slice: None,
            drift_type: "CONSECUTIVE".into(),
            all_windows: false,
        };
        let latest = evaluate(&rule, &scope, &[], &rows);
        assert_eq!((latest.len(), latest[0].value, latest[0].breached), (1, None, false));
        scope.all_windows = true;
        let all = evaluate(&rule, &scope, &[], &rows);
        assert_eq!(all.iter().map(|e| e.breached).collect::<Vec<_>>(), [true, false, false]);
        assert!(all[0].to_string().starts_with("BREACHED"), "{}", all[0]);
        scope.model_id = "m:1".into();
        let none = evaluate(&rule, &scope, &[], &rows);
        assert_eq!((none[0].window, none[0].breached), (None, false));
        assert!(none[0].to_string().starts_with("no data"));
    }

    #[test]
    fn formats_utc_times() {
        assert_eq!(format_time(0), "1970-01-01 00:00");
        assert_eq!(format_time(20_780 * 86_400_000 + 3_600_000 * 13 + 60_000 * 5 + 999), "2026-11-23 13:05");
    }
}
