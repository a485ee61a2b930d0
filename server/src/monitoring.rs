//! `GET /api/2.0/keel/monitoring` (keel extension): what the dashboard's Monitoring tab
//! shows — the inference tables under `<data_dir>/tables` (SPEC §6.1), the profile and
//! drift metrics `runtime monitor` computed for them (SPEC §6.2), and each endpoint's
//! `auto_capture_config`.
//!
//! Per table: `name`, `endpoints` (those whose capture writes into it), `parts`, `rows`,
//! `last_request_ms`; `profile`: `null` until `runtime monitor profile` ran, else its
//! granularities and the latest [`MAX_WINDOWS`] windows per granularity, one entry per
//! model (`:all` first), with the summary `runtime monitor report` prints; `drift`:
//! `null` until `runtime monitor drift` ran, else the latest window's rows per
//! granularity and drift type (all models, unsliced), most drifted (`js_distance`) first,
//! at most [`MAX_DRIFT_ROWS`]. A table that cannot be read gets `error` instead of
//! failing the route. Files are read on a blocking thread; nothing is cached, so the
//! page always shows what is on disk.

use crate::app::Shared;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use keel_monitor::metrics::source::{list_parts, part_summary};
use keel_monitor::metrics::tables::{DriftRow, ProfileRow, ALL_MODELS, LOG_TYPE_INPUT, TABLE_COLUMN};
use keel_monitor::metrics::{metric_dirs, read_tables};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Windows listed per table and granularity (the latest ones).
pub const MAX_WINDOWS: usize = 12;
/// Drift rows listed per granularity and drift type.
pub const MAX_DRIFT_ROWS: usize = 10;

/// The message shown while there is no inference table.
pub const NO_TABLES: &str = "no inference tables yet: turn capture on for an endpoint \
(`runtime serve --capture-prefix P`, or auto_capture_config in its config) and send it requests";

pub async fn status(State(st): State<Shared>) -> Response {
    let endpoints: Vec<(String, Option<crate::config::AutoCaptureConfig>)> =
        st.endpoints.all().iter().map(|ep| (ep.name.clone(), ep.active().config.auto_capture_config.clone())).collect();
    let dir = st.captures.dir().map(Path::to_path_buf);
    let body = tokio::task::spawn_blocking(move || monitoring_json(dir.as_deref(), &endpoints)).await.unwrap_or_else(
        |e| json!({"tables": [], "endpoints": [], "message": format!("monitoring status failed: {e}")}),
    );
    Json(body).into_response()
}

/// The route's body for tables under `dir` (none when the server has no data directory).
pub fn monitoring_json(dir: Option<&Path>, endpoints: &[(String, Option<crate::config::AutoCaptureConfig>)]) -> Value {
    let mut writers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, ac) in endpoints {
        if let Some(ac) = ac.as_ref().filter(|c| c.enabled) {
            writers.entry(ac.table_name(name)).or_default().push(name.clone());
        }
    }
    let mut names: BTreeSet<String> = writers.keys().cloned().collect();
    if let Some(entries) = dir.and_then(|d| std::fs::read_dir(d).ok()) {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.ends_with("_payload") && !n.starts_with(['_', '.']) && e.path().is_dir() {
                names.insert(n);
            }
        }
    }
    let tables: Vec<Value> = match dir {
        Some(d) => names
            .iter()
            .filter(|n| d.join(n).is_dir())
            .map(|n| table_json(&d.join(n), n, writers.get(n).cloned().unwrap_or_default()))
            .collect(),
        None => Vec::new(),
    };
    let endpoints: Vec<Value> =
        endpoints.iter().map(|(name, ac)| json!({"name": name, "auto_capture_config": ac})).collect();
    let message = if tables.is_empty() { Some(NO_TABLES) } else { None };
    json!({"tables": tables, "endpoints": endpoints, "message": message})
}

fn table_json(dir: &Path, name: &str, endpoints: Vec<String>) -> Value {
    let mut t = json!({"name": name, "endpoints": endpoints, "profile": null, "drift": null});
    let parts = match list_parts(dir) {
        Ok(p) => p,
        Err(e) => {
            t["error"] = json!(e.to_string());
            return t;
        }
    };
    let (mut rows, mut last) = (0usize, None::<i64>);
    for p in &parts {
        match part_summary(dir, p) {
            Ok((n, l)) => {
                rows += n;
                last = l.into_iter().chain(last).max();
            }
            Err(e) => t["error"] = json!(e.to_string()),
        }
    }
    t["parts"] = json!(parts.len());
    t["rows"] = json!(rows);
    t["last_request_ms"] = json!(last);
    let (profile_dir, drift_dir) = metric_dirs(dir);
    if !profile_dir.is_dir() && !drift_dir.is_dir() {
        return t;
    }
    match read_tables(dir) {
        Ok((profile, drift)) => {
            if profile_dir.is_dir() {
                t["profile"] = profile_json(&profile);
            }
            if drift_dir.is_dir() {
                t["drift"] = drift_json(&drift);
            }
        }
        Err(e) => t["error"] = json!(format!("metric tables: {e}")),
    }
    t
}

/// Non-2xx share of a `status_code` profile row, when its frequent items cover every row.
fn error_percent(status: Option<&ProfileRow>) -> Option<f64> {
    let s = status?;
    let items = s.frequent_items.as_ref()?;
    let known: u64 = items.iter().map(|i| i.count).sum();
    (s.count > 0 && known as i64 == s.count).then(|| {
        let errors: u64 = items.iter().filter(|i| !i.item.starts_with('2')).map(|i| i.count).sum();
        100.0 * errors as f64 / s.count as f64
    })
}

fn profile_json(rows: &[ProfileRow]) -> Value {
    let rows: Vec<&ProfileRow> =
        rows.iter().filter(|r| r.log_type == LOG_TYPE_INPUT && r.slice_key.is_none()).collect();
    let granularities: BTreeSet<&str> = rows.iter().map(|r| r.granularity.as_str()).collect();
    let mut windows = Vec::new();
    for g in &granularities {
        let in_g: Vec<&ProfileRow> = rows.iter().copied().filter(|r| r.granularity == *g).collect();
        let starts: BTreeSet<_> = in_g.iter().map(|r| r.window).collect();
        for w in starts.iter().rev().take(MAX_WINDOWS) {
            let in_w: Vec<&ProfileRow> = in_g.iter().copied().filter(|r| r.window == *w).collect();
            let mut models: Vec<&str> =
                in_w.iter().map(|r| r.model_id.as_str()).collect::<BTreeSet<_>>().into_iter().collect();
            models.sort_by_key(|m| (*m != ALL_MODELS, *m));
            for m in models {
                let col = |c: &str| in_w.iter().copied().find(|r| r.model_id == m && r.column_name == c);
                windows.push(json!({
                    "granularity": g,
                    "start_ms": w.start_ms,
                    "end_ms": w.end_ms,
                    "model_id": m,
                    "requests": col(TABLE_COLUMN).map_or(0, |r| r.count),
                    "error_percent": error_percent(col("status_code")),
                    "latency_p50_ms": col("execution_time_ms").and_then(|r| r.median),
                    "latency_avg_ms": col("execution_time_ms").and_then(|r| r.avg),
                    "ttft_p50_ms": col("ttft_ms").and_then(|r| r.median),
                    "prompt_tokens_avg": col("prompt_tokens").and_then(|r| r.avg),
                    "completion_tokens_avg": col("completion_tokens").and_then(|r| r.avg),
                    "fk_grade_avg": col("response_flesch_kincaid_grade").and_then(|r| r.avg),
                    "perplexity_p50": col("response_perplexity").and_then(|r| r.median),
                }));
            }
        }
    }
    json!({"granularities": granularities, "windows": windows})
}

fn drift_json(rows: &[DriftRow]) -> Value {
    let rows: Vec<&DriftRow> = rows
        .iter()
        .filter(|r| r.model_id == ALL_MODELS && r.slice_key.is_none() && r.column_name != TABLE_COLUMN)
        .collect();
    let keys: BTreeSet<(&str, &str)> = rows.iter().map(|r| (r.granularity.as_str(), r.drift_type.as_str())).collect();
    let mut out = Vec::new();
    for (g, dt) in keys {
        let group: Vec<&DriftRow> = rows.iter().copied().filter(|r| r.granularity == g && r.drift_type == dt).collect();
        let Some(last) = group.iter().map(|r| r.window).max() else { continue };
        let mut latest: Vec<&DriftRow> =
            group.into_iter().filter(|r| r.window == last && r.js_distance.is_some()).collect();
        latest.sort_by(|a, b| b.js_distance.unwrap_or(0.0).total_cmp(&a.js_distance.unwrap_or(0.0)));
        for r in latest.into_iter().take(MAX_DRIFT_ROWS) {
            out.push(json!({
                "granularity": g,
                "drift_type": dt,
                "start_ms": r.window.start_ms,
                "cmp_start_ms": r.window_cmp.map(|w| w.start_ms),
                "column": r.column_name,
                "js_distance": r.js_distance,
                "population_stability_index": r.population_stability_index,
                "ks_statistic": r.ks_test.map(|t| t.0),
                "ks_pvalue": r.ks_test.map(|t| t.1).filter(|p| !p.is_nan()),
                "chi_squared_pvalue": r.chi_squared_test.map(|t| t.1).filter(|p| !p.is_nan()),
                "avg_delta": r.avg_delta,
            }));
        }
    }
    json!({"rows": out})
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_monitor::inference_table::parquet_part::{part_path, write_part};
    use keel_monitor::inference_table::{InferenceRecord, RequestMetadata};
    use keel_monitor::metrics::Granularity;

    const HOUR: i64 = 3_600_000;

    fn record(ts: i64, prompt: &str, status: i32) -> InferenceRecord {
        InferenceRecord {
            databricks_request_id: format!("id-{ts}"),
            client_request_id: None,
            timestamp_ms: ts,
            status_code: status,
            execution_time_ms: 100 + prompt.len() as i64,
            sampling_fraction: 1.0,
            request: json!({"prompt": prompt}).to_string(),
            response: json!({"choices": [{"text": "An answer.", "finish_reason": "stop"}]}).to_string(),
            request_metadata: RequestMetadata {
                endpoint_name: "chat".into(),
                model_name: Some("m".into()),
                model_version: Some("1".into()),
                served_entity_name: Some("m-1".into()),
                response_mean_logprob: Some(-0.5),
            },
            prompt_tokens: Some(3),
            completion_tokens: Some(3),
            ttft_ms: Some(10),
        }
    }

    fn capture_on() -> Vec<(String, Option<crate::config::AutoCaptureConfig>)> {
        let ac: crate::config::AutoCaptureConfig = serde_json::from_value(json!({"enabled": true})).unwrap();
        vec![("chat".into(), Some(ac)), ("other".into(), None)]
    }

    #[test]
    fn lists_tables_with_their_profile_and_drift() {
        let tables = std::env::temp_dir().join(format!("keel-monitoring-{}", uuid::Uuid::new_v4().simple()));
        let t = tables.join("chat_payload");
        let t0 = 20_000 * 24 * HOUR;
        let hour0: Vec<_> = (0..10).map(|i| record(t0 + i * 1000, "short", if i == 0 { 500 } else { 200 })).collect();
        let hour1: Vec<_> = (0..6).map(|i| record(t0 + HOUR + i * 1000, &"long ".repeat(40), 200)).collect();
        write_part(&part_path(&t, hour0[0].date_days(), "a"), &hour0.iter().collect::<Vec<_>>()).unwrap();

        // Before any metrics: the table with its rows, profile and drift null.
        let j = monitoring_json(Some(&tables), &capture_on());
        assert_eq!(j["message"], Value::Null);
        let tj = &j["tables"][0];
        assert_eq!(
            (tj["name"].as_str(), tj["rows"].as_u64(), tj["parts"].as_u64()),
            (Some("chat_payload"), Some(10), Some(1))
        );
        assert_eq!(tj["endpoints"], json!(["chat"]));
        assert_eq!((tj["profile"].is_null(), tj["drift"].is_null()), (true, true));
        assert_eq!(tj["last_request_ms"].as_i64(), Some(t0 + 9000));

        write_part(&part_path(&t, hour1[0].date_days(), "b"), &hour1.iter().collect::<Vec<_>>()).unwrap();
        let (p, d) = metric_dirs(&t);
        let g = Granularity::parse("1 hour").unwrap();
        keel_monitor::metrics::profile(&t, &p, g, &[], None).unwrap();
        keel_monitor::metrics::drift(&t, &d, g, &[], None).unwrap();
        let j = monitoring_json(Some(&tables), &capture_on());
        let tj = &j["tables"][0];
        assert_eq!(tj["rows"].as_u64(), Some(16));
        assert_eq!(tj["profile"]["granularities"], json!(["1 hour"]));
        let windows = tj["profile"]["windows"].as_array().unwrap();
        // Latest window first; `:all` before the model.
        assert_eq!(windows[0]["start_ms"].as_i64(), Some(t0 + HOUR));
        assert_eq!((windows[0]["model_id"].as_str(), windows[0]["requests"].as_i64()), (Some(":all"), Some(6)));
        assert_eq!(windows[1]["model_id"].as_str(), Some("m:1"));
        let w0 = windows.iter().find(|w| w["start_ms"].as_i64() == Some(t0) && w["model_id"] == ":all").unwrap();
        assert_eq!((w0["requests"].as_i64(), w0["error_percent"].as_f64()), (Some(10), Some(10.0)));
        assert!((w0["perplexity_p50"].as_f64().unwrap() - 0.5f64.exp()).abs() < 1e-9);
        let drift = tj["drift"]["rows"].as_array().unwrap();
        assert_eq!(drift[0]["drift_type"], "CONSECUTIVE");
        assert_eq!(drift[0]["cmp_start_ms"].as_i64(), Some(t0));
        let js: Vec<f64> = drift.iter().map(|r| r["js_distance"].as_f64().unwrap()).collect();
        assert!(js.windows(2).all(|w| w[0] >= w[1]), "sorted by js: {js:?}");
        let prompt = drift.iter().find(|r| r["column"] == "prompt_length").expect("prompt_length drift");
        assert!(prompt["js_distance"].as_f64().unwrap() > 0.5, "{prompt}");
        let _ = std::fs::remove_dir_all(&tables);
    }

    #[test]
    fn no_tables_gives_the_message_and_the_capture_configs() {
        let tables = std::env::temp_dir().join(format!("keel-monitoring-{}", uuid::Uuid::new_v4().simple()));
        let j = monitoring_json(Some(&tables), &[("other".into(), None)]);
        assert_eq!(j["tables"], json!([]));
        assert_eq!(j["message"], NO_TABLES);
        assert_eq!(j["endpoints"][0]["name"], "other");
        let j = monitoring_json(None, &capture_on());
        assert_eq!(j["tables"], json!([]));
    }

    #[test]
    fn an_unreadable_table_reports_its_error() {
        let tables = std::env::temp_dir().join(format!("keel-monitoring-{}", uuid::Uuid::new_v4().simple()));
        let day = tables.join("bad_payload/date=2026-01-01");
        std::fs::create_dir_all(&day).unwrap();
        std::fs::write(day.join("part-x.parquet"), b"not parquet").unwrap();
        let j = monitoring_json(Some(&tables), &[]);
        assert!(j["tables"][0]["error"].as_str().unwrap().contains("part-x.parquet"), "{j}");
        let _ = std::fs::remove_dir_all(&tables);
    }
}
