//! End-to-end tests of inference-table capture (SPEC §6.1): the real binary with
//! `--capture-prefix`, the tiny fixture model, the table read back with the `parquet`
//! crate (and, when KEEL_TABLES_PYTHON is set, with pyarrow and DuckDB through
//! tools/check_inference_table.py).
//!
//! - every request routed to the endpoint (completions, chat, streams, scoring, 400s
//!   after routing; with and without `client_request_id`) is exactly one row after a
//!   clean shutdown, with the values the client saw;
//! - `kill -9` right after the last answer loses nothing: the restarted server replays
//!   the WAL and every acknowledged request is in the table exactly once.

mod serve_common;

use arrow::array::{Array, AsArray, MapArray};
use arrow::datatypes::{Date32Type, Float64Type, Int32Type, Int64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{json, Value};
use serve_common::*;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// One row of the table.
#[derive(Debug, Clone)]
struct Row {
    id: String,
    client_id: Option<String>,
    date: i32,
    timestamp_ms: i64,
    status: i32,
    execution_time_ms: i64,
    sampling_fraction: f64,
    request: String,
    response: String,
    metadata: BTreeMap<String, Option<String>>,
    prompt_tokens: Option<i32>,
    completion_tokens: Option<i32>,
    ttft_ms: Option<i64>,
}

/// Every visible part file of the table (hidden and `_` paths skipped, as readers do).
fn part_files(table: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(dirs) = std::fs::read_dir(table) else { return out };
    for d in dirs {
        let d = d.expect("dir entry").path();
        let name = d.file_name().and_then(|n| n.to_str()).unwrap_or("").to_string();
        if !name.starts_with("date=") {
            assert!(name.starts_with('_'), "unexpected entry {name} in the table dir");
            continue;
        }
        for f in std::fs::read_dir(&d).expect("partition dir") {
            let f = f.expect("entry").path();
            let fname = f.file_name().and_then(|n| n.to_str()).unwrap_or("").to_string();
            assert!(!fname.starts_with('.'), "a temporary part was left behind: {}", f.display());
            assert!(fname.starts_with("part-") && fname.ends_with(".parquet"), "{fname}");
            out.push(f);
        }
    }
    out.sort();
    out
}

fn opt<T>(valid: bool, v: T) -> Option<T> {
    valid.then_some(v)
}

fn read_table(table: &Path) -> Vec<Row> {
    let mut rows = Vec::new();
    for f in part_files(table) {
        let partition = f.parent().and_then(|p| p.file_name()).and_then(|n| n.to_str()).unwrap_or("").to_string();
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&f).expect("open part"))
            .expect("a Parquet file")
            .build()
            .expect("reader");
        for b in reader {
            let b = b.expect("batch");
            let s = |i: usize| b.column(i).as_string::<i32>().clone();
            let (id, client, request, response) = (s(0), s(1), s(7), s(8));
            let date = b.column(2).as_primitive::<Date32Type>();
            let ts = b.column(3).as_primitive::<Int64Type>();
            let status = b.column(4).as_primitive::<Int32Type>();
            let exec = b.column(5).as_primitive::<Int64Type>();
            let frac = b.column(6).as_primitive::<Float64Type>();
            let md = b.column(9).as_any().downcast_ref::<MapArray>().expect("map column");
            let pt = b.column(10).as_primitive::<Int32Type>();
            let ct = b.column(11).as_primitive::<Int32Type>();
            let ttft = b.column(12).as_primitive::<Int64Type>();
            for i in 0..b.num_rows() {
                let entries = md.value(i);
                let keys = entries.column(0).as_string::<i32>();
                let vals = entries.column(1).as_string::<i32>();
                let metadata = (0..keys.len())
                    .map(|j| (keys.value(j).to_string(), opt(vals.is_valid(j), vals.value(j).to_string())))
                    .collect();
                let row = Row {
                    id: id.value(i).to_string(),
                    client_id: opt(client.is_valid(i), client.value(i).to_string()),
                    date: date.value(i),
                    timestamp_ms: ts.value(i),
                    status: status.value(i),
                    execution_time_ms: exec.value(i),
                    sampling_fraction: frac.value(i),
                    request: request.value(i).to_string(),
                    response: response.value(i).to_string(),
                    metadata,
                    prompt_tokens: opt(pt.is_valid(i), pt.value(i)),
                    completion_tokens: opt(ct.is_valid(i), ct.value(i)),
                    ttft_ms: opt(ttft.is_valid(i), ttft.value(i)),
                };
                // The partition directory is the row's UTC day.
                assert_eq!(row.date as i64, row.timestamp_ms.div_euclid(86_400_000), "{row:?}");
                assert!(partition.starts_with("date=20"), "{partition}");
                rows.push(row);
            }
        }
    }
    rows
}

/// What the client sent and saw for one request.
#[derive(Debug)]
struct Sent {
    path: &'static str,
    body: String,
    status: u16,
    client_id: Option<String>,
    stream: bool,
    answer: String,
}

async fn send(s: &Server, path: &'static str, body: Value) -> (String, Sent) {
    let text = body.to_string();
    let a = s.post_raw(path, "application/json", text.clone().into_bytes()).await;
    let id = a.header("x-request-id").expect("x-request-id on every response").to_string();
    let sent = Sent {
        path,
        status: a.status,
        client_id: body["client_request_id"].as_str().map(str::to_string),
        stream: body["stream"] == json!(true),
        body: text,
        answer: a.text,
    };
    (id, sent)
}

/// A scratch KEEL_HOME (models are given by path, so it only holds the registry and tables).
fn keel_home() -> PathBuf {
    let h = scratch("keel-home");
    std::fs::create_dir_all(&h).expect("KEEL_HOME");
    h
}

fn table_dir(home: &Path, prefix: &str) -> PathBuf {
    home.join("tables").join(format!("{prefix}_payload"))
}

/// The mixed workload: (path, body) of every request, all of which reach the endpoint.
fn workload() -> Vec<(&'static str, Value)> {
    vec![
        (
            "/v1/completions",
            json!({"prompt": "the cat sat", "max_tokens": 5, "temperature": 0, "client_request_id": "c-1"}),
        ),
        ("/v1/completions", json!({"prompt": ["a", "b"], "max_tokens": 3, "temperature": 0})),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "temperature": 0, "client_request_id": "c-chat"}),
        ),
        (
            "/v1/completions",
            json!({"prompt": "stream me", "max_tokens": 6, "temperature": 0, "stream": true, "stream_options": {"include_usage": true}, "client_request_id": "c-stream"}),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "yo"}], "max_tokens": 5, "temperature": 0, "stream": true}),
        ),
        (
            "/invocations",
            json!({"dataframe_split": {"columns": ["prompt"], "data": [["x"], ["y"]]}, "params": {"max_tokens": 3, "temperature": 0}, "client_request_id": "c-score"}),
        ),
        (
            "/serving-endpoints/default/invocations",
            json!({"messages": [{"role": "user", "content": "hey"}], "max_tokens": 3, "temperature": 0}),
        ),
        // 400s after routing: a value the model cannot take, an ill-typed field, a bad scoring body.
        ("/v1/completions", json!({"prompt": "x", "top_k": -3, "client_request_id": "c-bad"})),
        ("/v1/chat/completions", json!({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"})),
        ("/invocations", json!({"dataframe_split": {"columns": ["prompt"], "data": [["x"]]}, "instances": ["y"]})),
    ]
}

/// Text a non-streaming OpenAI answer holds (all choices, in order).
fn answer_text(v: &Value) -> String {
    v["choices"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["text"].as_str().or_else(|| c["message"]["content"].as_str()).unwrap_or("").to_string())
        .collect::<Vec<_>>()
        .join("|")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_routed_request_is_one_row_after_a_clean_shutdown() {
    let home = keel_home();
    let home_s = home.to_str().expect("utf-8").to_string();
    let mut s = Server::spawn_with_env(&["--capture-prefix", "e2e"], &[("KEEL_HOME", &home_s)]);
    s.wait_ready().await;

    let mut sent: HashMap<String, Sent> = HashMap::new();
    for (path, body) in workload() {
        let (id, x) = send(&s, path, body).await;
        assert!(sent.insert(id, x).is_none(), "request ids are unique");
    }
    let statuses: Vec<u16> = sent.values().map(|x| x.status).collect();
    assert_eq!(statuses.iter().filter(|&&c| c == 200).count(), 7, "{sent:#?}");
    assert_eq!(statuses.iter().filter(|&&c| c == 400).count(), 3, "{sent:#?}");
    // Not routed, so not logged: an unknown model, a body that is not JSON.
    let a = s.post("/v1/completions", &json!({"model": "nope", "prompt": "x"})).await;
    assert_eq!(a.status, 404);
    assert!(a.header("x-request-id").is_some(), "x-request-id on every response");
    let a = s.post_raw("/v1/completions", "application/json", b"{not json".to_vec()).await;
    assert_eq!(a.status, 400);
    let n = sent.len() as f64;
    assert_eq!(s.metric("keel_capture_records_total", &[r#"endpoint="default""#]).await, Some(n));
    assert_eq!(s.metric("keel_capture_dropped_total", &[r#"endpoint="default""#]).await, Some(0.0));
    assert_eq!(s.metric("keel_capture_late_acks_total", &[r#"endpoint="default""#]).await, Some(0.0));

    s.sigterm();
    assert!(s.wait_exit(Duration::from_secs(60)).success());
    let table = table_dir(&home, "e2e");
    // Clean shutdown compacts: the WAL is empty, everything is Parquet.
    let wal: Vec<_> = std::fs::read_dir(table.join("_wal"))
        .expect("_wal")
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(wal.is_empty(), "WAL left after a clean shutdown: {wal:?}");
    let rows = read_table(&table);
    assert_eq!(rows.len(), sent.len(), "one row per routed request: {rows:#?}");

    for row in &rows {
        let x = sent.get(&row.id).unwrap_or_else(|| panic!("row for an unknown request id: {row:?}"));
        assert_eq!(row.status as u16, x.status, "{row:?}");
        assert_eq!(row.client_id, x.client_id, "{row:?}");
        assert_eq!(row.request, x.body, "the raw request body");
        assert_eq!(row.sampling_fraction, 1.0);
        assert!(row.execution_time_ms >= 0 && row.execution_time_ms < 60_000, "{row:?}");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        assert!(row.timestamp_ms <= now && row.timestamp_ms > now - 600_000, "{row:?}");
        assert_eq!(row.metadata.get("endpoint_name"), Some(&Some("default".to_string())), "{row:?}");
        let keys: Vec<&str> = row.metadata.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["endpoint_name", "model_name", "model_version", "response_mean_logprob", "served_entity_name"]
        );
        let response: Value = serde_json::from_str(&row.response).expect("the response column is JSON");
        if x.status == 200 {
            assert_eq!(row.metadata["served_entity_name"].as_deref(), Some(TINY_ENTITY), "{row:?}");
            assert_eq!(row.metadata["model_name"].as_deref(), Some(TINY_ENTITY), "{row:?}");
            assert_eq!(row.metadata["model_version"], None, "a path model has no registry version");
            let (p, c) = (row.prompt_tokens.expect("prompt_tokens"), row.completion_tokens.expect("completion_tokens"));
            assert!(p > 0 && c > 0, "{row:?}");
            assert!(row.ttft_ms.is_some_and(|t| t >= 0 && t <= row.execution_time_ms), "{row:?}");
            // The model's own mean log-probability of what it generated: a finite number <= 0.
            let lp = row.metadata["response_mean_logprob"].as_deref().expect("response_mean_logprob");
            let lp: f64 = lp.parse().unwrap_or_else(|e| panic!("response_mean_logprob {lp:?}: {e}"));
            assert!(lp.is_finite() && lp <= 0.0, "{row:?}");
            if x.stream {
                // A stream is logged as the assembled (non-streaming) response.
                let sse = Sse::parse(&x.answer);
                assert!(sse.done);
                assert_eq!(answer_text(&response), sse.text(0), "{row:?}");
                let object = response["object"].as_str().unwrap();
                assert!(object == "text_completion" || object == "chat.completion", "{object}");
                assert_eq!(response["usage"]["completion_tokens"].as_i64(), Some(c as i64));
            } else {
                assert_eq!(row.response, x.answer, "the raw response body");
                if x.path == "/invocations" {
                    assert_eq!(response["predictions"].as_array().map(Vec::len), Some(2));
                } else {
                    assert_eq!(response["usage"]["prompt_tokens"].as_i64(), Some(p as i64));
                    assert_eq!(response["usage"]["completion_tokens"].as_i64(), Some(c as i64));
                }
            }
        } else {
            assert_eq!(row.response, x.answer, "the error body as sent");
            assert!(row.completion_tokens.is_none() && row.ttft_ms.is_none(), "{row:?}");
            let is_error = response.get("error").is_some() || response.get("error_code").is_some();
            assert!(is_error, "{row:?}");
        }
    }

    check_with_python(&table, rows.len());
    let _ = std::fs::remove_dir_all(&home);
}

/// tools/check_inference_table.py: pyarrow.dataset and DuckDB read the table.
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
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/check_inference_table.py");
    let out = Command::new(python).arg(script).arg(table).arg(rows.to_string()).output().expect("python runs");
    assert!(
        out.status.success(),
        "check_inference_table.py:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_after_the_last_answer_loses_nothing() {
    const N: usize = 24;
    let home = keel_home();
    let home_s = home.to_str().expect("utf-8").to_string();
    let args = ["--capture-prefix", "crash"];
    let s = Server::spawn_with_env(&args, &[("KEEL_HOME", &home_s)]);
    s.wait_ready().await;

    // Concurrent clients, streams and whole answers mixed; each id is collected once its
    // answer is complete.
    let s = std::sync::Arc::new(s);
    let mut tasks = Vec::new();
    for i in 0..N {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let body = match i % 3 {
                0 => json!({"prompt": format!("req {i}"), "max_tokens": 4, "temperature": 0, "client_request_id": format!("c{i}")}),
                1 => json!({"prompt": format!("req {i}"), "max_tokens": 4, "temperature": 0, "stream": true}),
                _ => json!({"messages": [{"role": "user", "content": format!("req {i}")}], "max_tokens": 4}),
            };
            let path = if i % 3 == 2 { "/v1/chat/completions" } else { "/v1/completions" };
            let (id, x) = send(&s, path, body).await;
            assert_eq!(x.status, 200, "{}", x.answer);
            if x.stream {
                assert!(Sse::parse(&x.answer).done, "complete stream");
            }
            id
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.expect("client task"));
    }
    // kill -9 right after the last answer: no drain, no compaction.
    let mut s = std::sync::Arc::try_unwrap(s).unwrap_or_else(|_| panic!("clients are done"));
    let st = Command::new("kill").args(["-KILL", &s.pid().to_string()]).status().expect("kill runs");
    assert!(st.success());
    s.wait_exit(Duration::from_secs(20));
    let table = table_dir(&home, "crash");
    assert!(read_table(&table).is_empty(), "compaction had not run: the rows are only in the WAL");

    // Restart with the same KEEL_HOME and capture settings: the WAL is replayed before
    // the server is ready.
    let mut s = Server::spawn_with_env(&args, &[("KEEL_HOME", &home_s)]);
    s.wait_ready().await;
    let mut got: Vec<String> = read_table(&table).into_iter().map(|r| r.id).collect();
    got.sort();
    ids.sort();
    assert_eq!(got, ids, "every acknowledged request exactly once after replay");

    // The restarted server's own shutdown adds nothing twice.
    let (id, x) = send(&s, "/v1/completions", json!({"prompt": "after", "max_tokens": 2})).await;
    assert_eq!(x.status, 200);
    s.sigterm();
    assert!(s.wait_exit(Duration::from_secs(60)).success());
    ids.push(id);
    ids.sort();
    let mut got: Vec<String> = read_table(&table).into_iter().map(|r| r.id).collect();
    got.sort();
    assert_eq!(got, ids);
    let _ = std::fs::remove_dir_all(&home);
}

#[tokio::test(flavor = "multi_thread")]
async fn rest_endpoints_capture_a_deterministic_sample() {
    let home = keel_home();
    let home_s = home.to_str().expect("utf-8").to_string();
    let mut s = Server::spawn_with_env(&[], &[("KEEL_HOME", &home_s)]);
    s.wait_ready().await;
    let endpoint = |prefix: &str, fraction: f64| {
        json!({"name": "logged", "config": {
            "served_entities": [{"name": "tiny", "entity_name": tiny_str()}],
            "auto_capture_config": {"enabled": true, "table_name_prefix": prefix, "sampling_fraction": fraction},
        }})
    };
    // Unsafe names and fractions are refused before anything is created.
    let a = s.post("/api/2.0/serving-endpoints", &endpoint("../etc", 0.5)).await;
    assert!(a.expect_error(400, "INVALID_PARAMETER_VALUE").contains("table_name_prefix"));
    let a = s.post("/api/2.0/serving-endpoints", &endpoint("rest", 0.0)).await;
    assert!(a.expect_error(400, "INVALID_PARAMETER_VALUE").contains("sampling_fraction"));
    let a = s.post("/api/2.0/serving-endpoints", &endpoint("rest", 0.5)).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json["config"]["auto_capture_config"]["sampling_fraction"], 0.5);
    s.wait_ready().await;

    let mut kept = Vec::new();
    for i in 0..32 {
        let body = json!({"prompt": format!("p{i}"), "max_tokens": 1});
        let (id, x) = send(&s, "/serving-endpoints/logged/invocations", body).await;
        assert_eq!(x.status, 200, "{}", x.answer);
        if keel_server::capture::sampled(&id, 0.5) {
            kept.push(id);
        }
    }
    // The default endpoint does not capture.
    assert_eq!(s.post("/v1/completions", &json!({"prompt": "x", "max_tokens": 1})).await.status, 200);
    let queued = s.metric("keel_capture_records_total", &[r#"endpoint="logged""#]).await;
    assert_eq!(queued, Some(kept.len() as f64));
    assert!(s.metric("keel_capture_records_total", &[r#"endpoint="default""#]).await.is_none());
    assert!((4..=28).contains(&kept.len()), "a sample, not all or nothing: {}", kept.len());

    s.sigterm();
    assert!(s.wait_exit(Duration::from_secs(60)).success());
    let rows = read_table(&table_dir(&home, "rest"));
    let mut got: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    got.sort();
    kept.sort();
    assert_eq!(got, kept, "exactly the sampled requests");
    for r in &rows {
        assert_eq!(r.sampling_fraction, 0.5);
        assert_eq!(r.metadata["endpoint_name"].as_deref(), Some("logged"));
        assert_eq!(r.metadata["served_entity_name"].as_deref(), Some("tiny"));
    }
    let tables: Vec<_> = std::fs::read_dir(home.join("tables")).expect("tables/").filter_map(|e| e.ok()).collect();
    assert_eq!(tables.len(), 1, "only the capturing endpoint has a table: {tables:?}");
    let _ = std::fs::remove_dir_all(&home);
}
