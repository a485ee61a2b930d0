//! `runtime monitor` end to end (SPEC.md §6.2), on inference tables written with the
//! table writer's own Parquet code (synthetic traffic with known distributions) and on a
//! table captured from a real `runtime serve`:
//!
//! - drift scenario: two periods from one prompt distribution do not breach
//!   `js_distance(prompt_length) > 0.2`; a third period from another distribution does
//!   (exit 1, the report names the rule); `--all-windows` shows both verdicts;
//! - the profile is incremental: a re-run with no new part recomputes nothing, a new
//!   part recomputes only its window, and the result equals a full recomputation;
//! - the tables are read back by pyarrow and DuckDB (tools/check_monitor_tables.py);
//! - mistakes are exit 2 with the argument named.

mod serve_common;

use keel_monitor::inference_table::parquet_part::{part_path, write_part};
use keel_monitor::inference_table::{InferenceRecord, RequestMetadata};
use keel_monitor::metrics::tables::{read_drift, read_profile, ProfileRow};
use serde_json::json;
use serve_common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const HOUR_MS: i64 = 3_600_000;
/// 2026-11-02 00:00 UTC.
const T0: i64 = 20_759 * 86_400_000;
const ROWS_PER_HOUR: usize = 200;

fn runtime(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_runtime")).args(args).env("KEEL_HOME", home).output().expect("runtime runs")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn ok(home: &Path, args: &[&str]) -> String {
    let o = runtime(home, args);
    assert!(o.status.success(), "runtime {args:?}: {}", text(&o));
    text(&o)
}

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

const WORDS: [&str; 12] =
    ["model", "data", "token", "cache", "window", "drift", "table", "query", "batch", "alias", "stream", "kernel"];

fn words(rng: &mut Rng, n: u64) -> String {
    (0..n).map(|_| WORDS[rng.range(0, WORDS.len() as u64) as usize]).collect::<Vec<_>>().join(" ")
}

/// One synthetic chat request: `prompt_words` in `[lo, hi)`, latency in `latency`.
fn record(rng: &mut Rng, ts: i64, prompt: (u64, u64), latency: (u64, u64), model_version: &str) -> InferenceRecord {
    let n = rng.range(prompt.0, prompt.1);
    let p = words(rng, n);
    let n = rng.range(20, 40);
    let answer = format!("{}.", words(rng, n));
    let ok = rng.range(0, 50) != 0;
    InferenceRecord {
        databricks_request_id: format!("{ts}-{}", rng.next()),
        client_request_id: None,
        timestamp_ms: ts,
        status_code: if ok { 200 } else { 503 },
        execution_time_ms: rng.range(latency.0, latency.1) as i64,
        sampling_fraction: 1.0,
        request: json!({"messages": [{"role": "user", "content": p}], "max_tokens": 64}).to_string(),
        response: if ok {
            json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}]})
                .to_string()
        } else {
            json!({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "busy"}).to_string()
        },
        request_metadata: RequestMetadata {
            endpoint_name: "chat".into(),
            model_name: Some("summarizer".into()),
            model_version: Some(model_version.into()),
            served_entity_name: Some(format!("summarizer-{model_version}")),
            response_mean_logprob: ok.then(|| -(rng.range(10, 200) as f64) / 100.0),
        },
        prompt_tokens: Some(p.split(' ').count() as i32 + 8),
        completion_tokens: ok.then_some(30),
        ttft_ms: ok.then_some(20),
    }
}

/// A baseline Parquet file with a single profiled column, `prompt_length`.
fn write_prompt_lengths(path: &Path, values: &[f64]) {
    use arrow::array::{ArrayRef, Float64Array, RecordBatch};
    let col: ArrayRef = std::sync::Arc::new(Float64Array::from(values.to_vec()));
    let batch = RecordBatch::try_from_iter([("prompt_length", col)]).expect("batch");
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path).expect("create"), batch.schema(), None)
            .expect("writer");
    w.write(&batch).expect("write");
    w.close().expect("close");
}

/// Writes one part of `ROWS_PER_HOUR` rows in hour `hour` after T0.
fn write_hour(table: &Path, hour: i64, prompt: (u64, u64), latency: (u64, u64), seed: u64, segment: &str) {
    let mut rng = Rng(seed);
    let recs: Vec<InferenceRecord> = (0..ROWS_PER_HOUR)
        .map(|i| {
            let ts = T0 + hour * HOUR_MS + (i as i64 * HOUR_MS) / ROWS_PER_HOUR as i64;
            record(&mut rng, ts, prompt, latency, if i % 4 == 0 { "2" } else { "1" })
        })
        .collect();
    let refs: Vec<&InferenceRecord> = recs.iter().collect();
    write_part(&part_path(table, recs[0].date_days(), segment), &refs).expect("write part");
}

const SHORT: (u64, u64) = (5, 15);
const LONG: (u64, u64) = (60, 100);
const FAST: (u64, u64) = (100, 200);
const SLOW: (u64, u64) = (300, 500);

fn home() -> PathBuf {
    let h = scratch("monitor-home");
    std::fs::create_dir_all(h.join("tables")).expect("home");
    h
}

#[test]
fn drift_scenario_breaches_only_when_the_prompts_change() {
    let home = home();
    let table = home.join("tables/chat_payload");
    write_hour(&table, 0, SHORT, FAST, 1, "a");
    write_hour(&table, 1, SHORT, FAST, 2, "b");
    let rule = "js_distance(prompt_length) > 0.2";
    let g = ["--granularity", "1 hour"];

    // Two periods from the same distribution: no breach.
    ok(&home, &[&["monitor", "profile", "--table", "chat_payload"][..], &g].concat());
    ok(&home, &[&["monitor", "drift", "--table", "chat_payload"][..], &g].concat());
    let o = runtime(
        &home,
        &["monitor", "check", "--table", "chat_payload", "--rule", rule, "--rule", "ks_pvalue(prompt_length) < 0.001"],
    );
    assert!(o.status.success(), "same distribution breached: {}", text(&o));
    assert!(text(&o).contains("no rule breached"), "{}", text(&o));

    // A third period with long prompts (and slow answers): breach, exit 1.
    write_hour(&table, 2, LONG, SLOW, 3, "c");
    ok(&home, &[&["monitor", "profile", "--table", "chat_payload"][..], &g].concat());
    ok(&home, &[&["monitor", "drift", "--table", "chat_payload"][..], &g].concat());
    let o = runtime(&home, &["monitor", "check", "--table", "chat_payload", "--rule", rule]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("BREACHED") && out.contains(rule) && out.contains("2026-11-02 02:00 vs 2026-11-02 01:00"),
        "{out}"
    );
    assert!(out.contains("1 of 1 rule evaluation(s) breached"), "{out}");

    // Every window: hour 1 vs 0 ok, hour 2 vs 1 breached.
    let o = runtime(&home, &["monitor", "check", "--table", "chat_payload", "--rule", rule, "--all-windows"]);
    assert_eq!(o.status.code(), Some(1));
    let lines: Vec<String> = text(&o).lines().filter(|l| l.contains(rule)).map(str::to_string).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].trim_start().starts_with("ok") && lines[1].trim_start().starts_with("BREACHED"), "{lines:?}");

    // The values behind the verdicts, read from the drift table.
    let drift = read_drift(&home.join("tables/chat_payload_drift_metrics")).expect("drift table");
    let js = |start: i64| {
        drift
            .iter()
            .find(|r| {
                r.window.start_ms == T0 + start * HOUR_MS
                    && r.model_id == ":all"
                    && r.slice_key.is_none()
                    && r.column_name == "prompt_length"
            })
            .and_then(|r| r.js_distance)
            .expect("js_distance")
    };
    assert!(js(1) < 0.2 && js(2) > 0.5, "js {} then {}", js(1), js(2));
    let lat = drift
        .iter()
        .find(|r| r.window.start_ms == T0 + 2 * HOUR_MS && r.model_id == ":all" && r.column_name == "execution_time_ms")
        .expect("latency drift");
    let (ks, p) = lat.ks_test.expect("ks_test");
    assert!(ks == 1.0 && p < 1e-10 && lat.avg_delta.unwrap() > 150.0, "{lat:?}");
    // Per model version rows exist too (model_id = name:version).
    assert!(drift.iter().any(|r| r.model_id == "summarizer:2"), "no per-version drift rows");

    // BASELINE drift against hour 0's part (an inference-table file used as the baseline):
    // hour 0 equals it, hour 1 is close, hour 2 breaches.
    let baseline = table.join("date=2026-11-02/part-a.parquet");
    let baseline = baseline.to_str().unwrap();
    let out = ok(&home, &[&["monitor", "drift", "--table", "chat_payload", "--baseline", baseline][..], &g].concat());
    assert!(out.contains("3 window(s)") && out.contains("BASELINE"), "{out}");
    let o = runtime(
        &home,
        &["monitor", "check", "--table", "chat_payload", "--rule", rule, "--drift-type", "baseline", "--all-windows"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let verdicts: Vec<bool> =
        text(&o).lines().filter(|l| l.contains(rule)).map(|l| l.trim_start().starts_with("BREACHED")).collect();
    assert_eq!(verdicts, [false, false, true], "{}", text(&o));
    let drift = read_drift(&home.join("tables/chat_payload_drift_metrics")).expect("drift table");
    let hour0 = drift
        .iter()
        .find(|r| {
            r.drift_type == "BASELINE"
                && r.window.start_ms == T0
                && r.model_id == ":all"
                && r.column_name == "prompt_length"
        })
        .expect("baseline row for hour 0");
    assert_eq!((hour0.window_cmp, hour0.js_distance, hour0.ks_test.map(|k| k.0)), (None, Some(0.0), Some(0.0)));
    // `runtime monitor unpack` of a table holding the same rows as hour 0 is an equivalent
    // baseline: same BASELINE drift for every window.
    // Per model and per slice too: the unpacked file keeps model_id and the slice columns.
    type Key = (String, Option<String>, i64);
    let baseline_js = |drift: &[keel_monitor::metrics::tables::DriftRow]| -> Vec<(Key, Option<f64>, Option<f64>)> {
        let mut v: Vec<_> = drift
            .iter()
            .filter(|r| r.drift_type == "BASELINE" && r.column_name == "prompt_length")
            .map(|r| {
                let key = (r.model_id.clone(), r.slice_value.clone(), r.window.start_ms);
                (key, r.js_distance, r.ks_test.map(|k| k.1))
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let sliced = [&["monitor", "drift", "--table", "chat_payload", "--slice", "status_code"][..], &g].concat();
    ok(&home, &[&sliced[..], &["--baseline", baseline]].concat());
    let from_part = baseline_js(&read_drift(&home.join("tables/chat_payload_drift_metrics")).expect("drift table"));
    write_hour(&home.join("tables/base_payload"), 0, SHORT, FAST, 1, "a");
    let unpacked = home.join("base.parquet");
    let out = ok(&home, &["monitor", "unpack", "--table", "base_payload", "--output", unpacked.to_str().unwrap()]);
    assert!(out.contains(&format!("{ROWS_PER_HOUR} rows")), "{out}");
    ok(&home, &[&sliced[..], &["--baseline", unpacked.to_str().unwrap()]].concat());
    let drift2 = read_drift(&home.join("tables/chat_payload_drift_metrics")).expect("drift table");
    assert_eq!(baseline_js(&drift2), from_part);
    // 3 windows × (:all, summarizer:1, summarizer:2) × (unsliced, 200, 503).
    assert_eq!(from_part.len(), 27, "{from_part:?}");
    assert!(from_part.iter().any(|(k, _, _)| k.0 == "summarizer:2" && k.1.as_deref() == Some("200")));

    // A baseline file with only some profiled columns: the others have no deltas (not a
    // 100 % null baseline) and no baseline profile rows.
    let partial = home.join("partial.parquet");
    write_prompt_lengths(&partial, &[20.0, 40.0, 60.0]);
    ok(&home, &[&sliced[..], &["--baseline", partial.to_str().unwrap()]].concat());
    let drift3 = read_drift(&home.join("tables/chat_payload_drift_metrics")).expect("drift table");
    let base3 = |c: &str| {
        drift3
            .iter()
            .find(|r| r.drift_type == "BASELINE" && r.model_id == ":all" && r.slice_key.is_none() && r.column_name == c)
            .unwrap_or_else(|| panic!("no BASELINE row for {c}"))
            .clone()
    };
    let absent = base3("response_length");
    assert_eq!((absent.percent_null_delta, absent.avg_delta, absent.js_distance), (None, None, None), "{absent:?}");
    let present = base3("prompt_length");
    assert!(present.js_distance.is_some() && present.percent_null_delta == Some(0.0), "{present:?}");
    let o = runtime(
        &home,
        &[
            "monitor",
            "profile",
            "--table",
            "chat_payload",
            "--baseline",
            partial.to_str().unwrap(),
            "--granularity",
            "1 hour",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let columns: std::collections::BTreeSet<String> = read_profile(&home.join("tables/chat_payload_profile_metrics"))
        .unwrap()
        .into_iter()
        .filter(|r| r.log_type == "BASELINE")
        .map(|r| r.column_name)
        .collect();
    assert_eq!(columns, [":table", "prompt_length"].map(String::from).into(), "{columns:?}");

    // The profile of the baseline itself: log_type BASELINE rows.
    ok(&home, &[&["monitor", "profile", "--table", "chat_payload", "--baseline", baseline][..], &g].concat());
    let profile = read_profile(&home.join("tables/chat_payload_profile_metrics")).unwrap();
    let base = profile
        .iter()
        .find(|r| {
            r.log_type == "BASELINE" && r.model_id == ":all" && r.slice_key.is_none() && r.column_name == ":table"
        })
        .expect("baseline profile");
    assert_eq!(base.count, ROWS_PER_HOUR as i64);

    // The report shows the three windows and names the drifted columns.
    let report = ok(&home, &["monitor", "report", "--table", "chat_payload"]);
    eprintln!("{report}");
    assert!(
        report.contains("2026-11-02 02:00") && report.contains("summarizer:1") && report.contains("prompt_length"),
        "{report}"
    );

    check_with_python(&home.join("tables/chat_payload"), 3 * ROWS_PER_HOUR);
    let _ = std::fs::remove_dir_all(&home);
}

fn profile_files(dir: &Path) -> Vec<(String, std::time::SystemTime)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .expect("profile dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".parquet"))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.metadata().unwrap().modified().unwrap()))
        .collect();
    v.sort();
    v
}

fn sorted(mut rows: Vec<ProfileRow>) -> Vec<ProfileRow> {
    rows.sort_by(|a, b| {
        (a.window, &a.granularity, &a.model_id, &a.slice_key, &a.slice_value, &a.column_name).cmp(&(
            b.window,
            &b.granularity,
            &b.model_id,
            &b.slice_key,
            &b.slice_value,
            &b.column_name,
        ))
    });
    rows
}

#[test]
fn profile_recomputes_only_windows_with_new_rows() {
    let home = home();
    let table = home.join("tables/inc_payload");
    write_hour(&table, 0, SHORT, FAST, 10, "a");
    write_hour(&table, 1, SHORT, FAST, 11, "b");
    let args = ["monitor", "profile", "--table", "inc_payload", "--granularity", "1 hour", "--slice", "model_version"];
    let out = ok(&home, &args);
    assert!(out.contains("2 new part(s), 2 window(s) recomputed from 400 rows"), "{out}");
    let dir = home.join("tables/inc_payload_profile_metrics");
    let before = profile_files(&dir);
    assert_eq!(before.len(), 2, "{before:?}");

    std::thread::sleep(Duration::from_millis(20));
    let out = ok(&home, &args);
    assert!(out.contains("0 new part(s), 0 window(s) recomputed"), "{out}");
    assert_eq!(profile_files(&dir), before, "nothing is rewritten without new rows");

    // New rows in hour 1 only (a second part of the same day): only that window changes.
    let mut rng = Rng(99);
    let extra: Vec<InferenceRecord> =
        (0..7).map(|i| record(&mut rng, T0 + HOUR_MS + 1000 * i, SHORT, FAST, "1")).collect();
    let refs: Vec<&InferenceRecord> = extra.iter().collect();
    write_part(&part_path(&table, extra[0].date_days(), "late"), &refs).unwrap();
    let out = ok(&home, &args);
    assert!(out.contains("1 new part(s), 1 window(s) recomputed from 207 rows"), "{out}");
    let after = profile_files(&dir);
    assert_eq!(after[0], before[0], "hour 0 untouched");
    assert_ne!(after[1].1, before[1].1, "hour 1 rewritten");

    let incremental = sorted(read_profile(&dir).unwrap());
    let table_count = |rows: &[ProfileRow], start: i64| {
        rows.iter()
            .find(|r| {
                r.window.start_ms == start && r.model_id == ":all" && r.slice_key.is_none() && r.column_name == ":table"
            })
            .map(|r| r.count)
    };
    assert_eq!(table_count(&incremental, T0), Some(200));
    assert_eq!(table_count(&incremental, T0 + HOUR_MS), Some(207));
    assert!(incremental
        .iter()
        .any(|r| r.slice_key.as_deref() == Some("model_version") && r.slice_value.as_deref() == Some("2")));

    // Same result as a full recomputation.
    std::fs::remove_dir_all(&dir).unwrap();
    ok(&home, &args);
    assert_eq!(sorted(read_profile(&dir).unwrap()), incremental);
    let _ = std::fs::remove_dir_all(&home);
}

#[test]
fn mistakes_are_exit_2_with_the_argument_named() {
    let home = home();
    let table = home.join("tables/e_payload");
    write_hour(&table, 0, SHORT, FAST, 5, "a");
    let cases: [(&[&str], &str); 7] = [
        (&["monitor", "profile", "--table", "missing_payload"], "--table missing_payload"),
        (&["monitor", "profile", "--table", "e_payload", "--granularity", "1 fortnight"], "--granularity"),
        (&["monitor", "drift", "--table", "e_payload", "--slice", "prompt"], "--slice prompt"),
        (&["monitor", "profile", "--table", "e_payload", "--baseline", "/nonexistent.parquet"], "--baseline"),
        (&["monitor", "check", "--table", "e_payload", "--rule", "js_distance(nope) > 1"], "unknown column \"nope\""),
        (&["monitor", "check", "--table", "e_payload", "--rule", "avg(ttft_ms) > 1"], "run `runtime monitor profile`"),
        (&["monitor", "report", "--table", "e_payload"], "run `runtime monitor profile`"),
    ];
    for (args, needle) in cases {
        let o = runtime(&home, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(needle), "{args:?}: {}", text(&o));
    }
    // Once the metric tables exist: rules that can never have a value, typos in the scope,
    // and a baseline that is not Parquet are mistakes too.
    ok(&home, &["monitor", "profile", "--table", "e_payload"]);
    let not_parquet = home.join("notes.txt");
    std::fs::write(&not_parquet, "not parquet").unwrap();
    fn check<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        [&["monitor", "check", "--table", "e_payload"][..], extra].concat()
    }
    let empty_dir = home.join("tables");
    let cases: [(Vec<&str>, &str); 6] = [
        (check(&["--rule", "avg(prompt) > 1"]), "avg applies to numeric columns"),
        (check(&["--rule", "count(:table) < 1", "--model-id", "summariser:1"]), "model ids in the tables: :all"),
        (check(&["--rule", "count(:table) < 1", "--slice", "colour=red"]), "colour is not a column to slice by"),
        (check(&["--rule", "count(:table) < 1", "--slice", "status_code=200"]), "run profile/drift with --slice"),
        (
            vec!["monitor", "drift", "--table", "e_payload", "--baseline", not_parquet.to_str().unwrap()],
            "is not a readable Parquet file",
        ),
        (
            vec!["monitor", "profile", "--table", "e_payload", "--baseline", empty_dir.to_str().unwrap()],
            "has no date=*/part-*.parquet files",
        ),
    ];
    for (args, needle) in cases {
        let o = runtime(&home, &args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(needle), "{args:?}: {}", text(&o));
    }
    // The right scope works: exit 0 for a rule that holds nowhere.
    let o = runtime(&home, &check(&["--rule", "count(:table) < 1", "--model-id", "summarizer:1"]));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let _ = std::fs::remove_dir_all(&home);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_captured_table_gets_text_metrics_and_perplexity() {
    let home = home();
    let home_s = home.to_str().expect("utf-8").to_string();
    let mut s = Server::spawn_with_env(&["--capture-prefix", "live"], &[("KEEL_HOME", &home_s)]);
    s.wait_ready().await;
    for i in 0..6 {
        let a = s
            .post(
                "/v1/chat/completions",
                &json!({"messages": [{"role": "user", "content": format!("Tell me about item {i}.")}], "max_tokens": 8, "temperature": 0}),
            )
            .await;
        assert_eq!(a.status, 200, "{}", a.text);
    }
    let a = s.post("/v1/completions", &json!({"prompt": "x", "top_k": -3})).await;
    assert_eq!(a.status, 400);
    s.sigterm();
    assert!(s.wait_exit(Duration::from_secs(60)).success());

    let out = ok(
        &home,
        &["monitor", "profile", "--table", "live_payload", "--granularity", "1 day", "--slice", "status_code"],
    );
    assert!(out.contains("7 rows"), "{out}");
    let rows = read_profile(&home.join("tables/live_payload_profile_metrics")).unwrap();
    let get = |c: &str| {
        rows.iter()
            .find(|r| r.model_id == ":all" && r.slice_key.is_none() && r.column_name == c)
            .unwrap_or_else(|| panic!("{c}"))
    };
    assert_eq!(get(":table").count, 7);
    let ppl = get("response_perplexity");
    assert_eq!(ppl.num_nulls, Some(1), "the 400 has no perplexity: {ppl:?}");
    assert!(ppl.min.unwrap() >= 1.0, "perplexity is at least 1: {ppl:?}");
    let prompt = get("prompt_length");
    assert_eq!((prompt.min, prompt.max), (Some(1.0), Some("Tell me about item 0.".len() as f64)));
    assert!(get("response_length").avg.unwrap() > 0.0);
    assert_eq!(get("completion_tokens").max, Some(8.0));
    let status = get("status_code");
    let items = status.frequent_items.as_ref().unwrap();
    assert_eq!((items[0].item.as_str(), items[0].count), ("200", 6));
    assert!(rows
        .iter()
        .any(|r| r.slice_key.as_deref() == Some("status_code") && r.slice_value.as_deref() == Some("400")));
    // The model id of a path model is its served name (no registry version).
    assert!(
        rows.iter().any(|r| r.model_id == TINY_ENTITY),
        "{:?}",
        rows.iter().map(|r| &r.model_id).collect::<std::collections::BTreeSet<_>>()
    );
    let _ = std::fs::remove_dir_all(&home);
}

/// tools/check_monitor_tables.py: pyarrow and DuckDB read the metric tables.
fn check_with_python(table: &Path, rows: usize) {
    let python = match std::env::var("KEEL_TABLES_PYTHON") {
        Ok(p) => p,
        Err(_) => {
            assert!(
                std::env::var("KEEL_REQUIRE_TEST_ASSETS").as_deref() != Ok("1"),
                "KEEL_TABLES_PYTHON is not set (tools/test.sh installs pyarrow and duckdb)"
            );
            eprintln!("skipping the pyarrow/DuckDB check: KEEL_TABLES_PYTHON not set");
            return;
        }
    };
    let name = table.file_name().unwrap().to_string_lossy().into_owned();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/check_monitor_tables.py");
    let out = Command::new(python)
        .arg(script)
        .arg(table.with_file_name(format!("{name}_profile_metrics")))
        .arg(table.with_file_name(format!("{name}_drift_metrics")))
        .arg(rows.to_string())
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "check_monitor_tables.py:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
}
