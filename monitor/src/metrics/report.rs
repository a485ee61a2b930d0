//! `runtime monitor report`: a readable summary of the latest windows of the metric
//! tables — per window and model, traffic, errors, latency, tokens, readability and
//! perplexity from the profile, then the columns that drifted most.
//!
//! Invariant: the report only reads rows (it computes nothing new), so it always agrees
//! with the tables a user can query.

use super::rules::format_time;
use super::tables::{DriftRow, ProfileRow, ALL_MODELS, LOG_TYPE_INPUT, TABLE_COLUMN};
use std::collections::BTreeSet;
use std::fmt::Write;

fn find<'a>(rows: &[&'a ProfileRow], model: &str, column: &str) -> Option<&'a ProfileRow> {
    rows.iter().copied().find(|r| r.model_id == model && r.column_name == column)
}

fn num(x: Option<f64>, decimals: usize) -> String {
    x.map_or("-".into(), |v| format!("{v:.decimals$}"))
}

/// Percentage of rows whose status code is not 2xx, from the status column's counts.
fn error_percent(status: Option<&ProfileRow>) -> Option<f64> {
    let s = status?;
    let items = s.frequent_items.as_ref()?;
    let known: u64 = items.iter().map(|i| i.count).sum();
    if s.count <= 0 || known as i64 != s.count {
        // More distinct codes than frequent items kept: cannot tell exactly.
        return None;
    }
    let errors: u64 = items.iter().filter(|i| !i.item.starts_with('2')).map(|i| i.count).sum();
    Some(100.0 * errors as f64 / s.count as f64)
}

/// The report for granularity `granularity`, the latest `windows` windows.
pub fn render(table: &str, granularity: &str, windows: usize, profile: &[ProfileRow], drift: &[DriftRow]) -> String {
    let mut out = String::new();
    let rows: Vec<&ProfileRow> = profile
        .iter()
        .filter(|r| r.granularity == granularity && r.log_type == LOG_TYPE_INPUT && r.slice_key.is_none())
        .collect();
    let all_windows: BTreeSet<_> = rows.iter().map(|r| r.window).collect();
    let latest: Vec<_> = all_windows.iter().rev().take(windows).rev().copied().collect();
    let _ = writeln!(
        out,
        "{table}: {} window(s) of {granularity} profiled; showing the latest {}",
        all_windows.len(),
        latest.len()
    );
    let _ = writeln!(
        out,
        "\n{:<17} {:<24} {:>8} {:>7} {:>9} {:>9} {:>9} {:>8} {:>8} {:>7} {:>8}",
        "window (UTC)",
        "model",
        "requests",
        "errors%",
        "lat p50",
        "lat avg",
        "ttft p50",
        "prompt",
        "compl.",
        "FK",
        "ppl p50"
    );
    for w in &latest {
        let in_window: Vec<&ProfileRow> = rows.iter().copied().filter(|r| r.window == *w).collect();
        let mut models: Vec<&str> =
            in_window.iter().map(|r| r.model_id.as_str()).collect::<BTreeSet<_>>().into_iter().collect();
        models.sort_by_key(|m| (*m != ALL_MODELS, *m));
        for (i, m) in models.iter().enumerate() {
            let g = |c: &str| find(&in_window, m, c);
            let when = if i == 0 { format_time(w.start_ms) } else { String::new() };
            let _ = writeln!(
                out,
                "{:<17} {:<24} {:>8} {:>7} {:>9} {:>9} {:>9} {:>8} {:>8} {:>7} {:>8}",
                when,
                m,
                g(TABLE_COLUMN).map_or(0, |r| r.count),
                num(error_percent(g("status_code")), 1),
                num(g("execution_time_ms").and_then(|r| r.median), 0),
                num(g("execution_time_ms").and_then(|r| r.avg), 0),
                num(g("ttft_ms").and_then(|r| r.median), 0),
                num(g("prompt_tokens").and_then(|r| r.avg), 1),
                num(g("completion_tokens").and_then(|r| r.avg), 1),
                num(g("response_flesch_kincaid_grade").and_then(|r| r.avg), 1),
                num(g("response_perplexity").and_then(|r| r.median), 2),
            );
        }
    }
    let _ = writeln!(
        out,
        "(latency and TTFT in ms; prompt/compl. = mean tokens; FK = mean Flesch-Kincaid grade of answers)"
    );

    for drift_type in ["CONSECUTIVE", "BASELINE"] {
        let d: Vec<&DriftRow> = drift
            .iter()
            .filter(|r| {
                r.granularity == granularity
                    && r.drift_type == drift_type
                    && r.model_id == ALL_MODELS
                    && r.slice_key.is_none()
                    && r.column_name != TABLE_COLUMN
            })
            .collect();
        let Some(last) = d.iter().map(|r| r.window).max() else { continue };
        let mut top: Vec<&&DriftRow> = d.iter().filter(|r| r.window == last && r.js_distance.is_some()).collect();
        top.sort_by(|a, b| b.js_distance.unwrap_or(0.0).total_cmp(&a.js_distance.unwrap_or(0.0)));
        let against = match top.first().and_then(|r| r.window_cmp) {
            Some(c) => format!("window {}", format_time(c.start_ms)),
            None => "the baseline".into(),
        };
        let _ = writeln!(
            out,
            "\n{drift_type} drift of window {} against {against} (all models), largest first:",
            format_time(last.start_ms)
        );
        let _ = writeln!(
            out,
            "  {:<38} {:>8} {:>8} {:>10} {:>10} {:>12}",
            "column", "js", "psi", "ks stat", "ks p", "avg delta"
        );
        for r in top.iter().take(6) {
            let _ = writeln!(
                out,
                "  {:<38} {:>8} {:>8} {:>10} {:>10} {:>12}",
                r.column_name,
                num(r.js_distance, 3),
                num(r.population_stability_index, 3),
                num(r.ks_test.map(|t| t.0), 3),
                num(r.ks_test.map(|t| t.1).filter(|p| !p.is_nan()), 4),
                num(r.avg_delta, 2),
            );
        }
    }
    out
}
