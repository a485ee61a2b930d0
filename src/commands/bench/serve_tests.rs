//! Tests of `bench serve`: pure helpers, and whole runs against an in-process mock
//! OpenAI streaming server (axum on 127.0.0.1:0).

use super::*;
use axum::body::{Body, Bytes};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use clap::Parser;
use futures::StreamExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    a: ServeArgs,
}

fn args(extra: &[&str]) -> Result<ServeArgs, clap::Error> {
    let mut v = vec!["bench-serve"];
    v.extend_from_slice(extra);
    Cli::try_parse_from(v).map(|c| c.a)
}

fn config(extra: &[&str]) -> Result<Config> {
    args(extra).expect("clap").config()
}

#[test]
fn poisson_arrivals_are_seeded_with_mean_gap_one_over_rate() {
    assert_eq!(arrival_offsets(4, None, 0), vec![0.0; 4]);
    let a = arrival_offsets(20_000, Some(50.0), 7);
    assert_eq!(a, arrival_offsets(20_000, Some(50.0), 7));
    assert_ne!(a, arrival_offsets(20_000, Some(50.0), 8));
    assert_eq!(a[0], 0.0);
    assert!(a.windows(2).all(|w| w[1] >= w[0]));
    let mean_gap = a[a.len() - 1] / (a.len() - 1) as f64;
    assert!((mean_gap - 0.02).abs() < 0.001, "{mean_gap}");
}

#[test]
fn synthetic_prompts_have_the_requested_words_and_differ() {
    let p = synthetic_prompts(3, 16, 9, 1);
    assert!(p.iter().all(|p| p.text.split_whitespace().count() == 16 && p.max_tokens == 9));
    assert_ne!(p[0].text, p[1].text);
    assert_eq!(p, synthetic_prompts(3, 16, 9, 1));
}

#[test]
fn datasets_jsonl_and_sharegpt() {
    let jsonl =
        "{\"prompt\": \"a b\", \"output_len\": 5}\n\n{\"prompt\": \"c\", \"max_tokens\": 7}\n{\"prompt\": \"d\"}\n";
    let p = parse_dataset(jsonl, 3).unwrap();
    let got: Vec<_> = p.iter().map(|p| (p.text.as_str(), p.max_tokens)).collect();
    assert_eq!(got, vec![("a b", 5), ("c", 7), ("d", 3)]);
    let sharegpt = r#"[{"conversations": [{"from": "human", "value": "hi there"}, {"from": "gpt", "value": "x"}]},
                      {"conversations": []}, {"id": 3}]"#;
    let p = parse_dataset(sharegpt, 4).unwrap();
    assert_eq!(p, vec![Prompt { text: "hi there".into(), max_tokens: 4 }]);
    assert!(parse_dataset("{\"text\": 1}\n", 4).unwrap_err().contains("line 1"));
    assert!(parse_dataset("not json\n", 4).is_err());
    assert!(parse_dataset("[]", 4).is_err());
    assert!(parse_dataset("", 4).is_err());
    // Fewer prompts than requests: a seeded shuffle, cycled.
    let items: Vec<_> = (0..3).map(|i| Prompt { text: i.to_string(), max_tokens: 1 }).collect();
    let picked = pick(items, 7, 0);
    assert_eq!(picked.len(), 7);
    assert_eq!(picked[0], picked[3]);
    let mut first: Vec<_> = picked[..3].iter().map(|p| p.text.clone()).collect();
    first.sort();
    assert_eq!(first, vec!["0", "1", "2"]);
}

#[test]
fn bad_usage_is_exit_code_2() {
    let dir = std::env::temp_dir().join(format!("keel-bench-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad_dataset = dir.join("bad.jsonl");
    std::fs::write(&bad_dataset, "{\"no_prompt\": 1}\n").unwrap();
    let bad_dataset = bad_dataset.to_str().unwrap();
    for bad in [
        &["--url", "not a url"][..],
        &["--url", "https://example.com"],
        &["--url", "http://h:1", "--request-rate", "0"],
        &["--url", "http://h:1", "--request-rate=-3"],
        &["--url", "http://h:1", "--request-rate", "fast"],
        &["--url", "http://h:1", "--num-prompts", "0"],
        &["--url", "http://h:1", "--max-concurrency", "0"],
        &["--url", "http://h:1", "--goodput", "ttft"],
        &["--url", "http://h:1", "--goodput", "latency:10"],
        &["--url", "http://h:1", "--dataset", "/nonexistent/keel.jsonl"],
        &["--url", "http://h:1", "--dataset", bad_dataset],
        &["--url", "http://h:1", "--endpoint", "v1/completions"],
    ] {
        let e = config(bad).err().unwrap_or_else(|| panic!("{bad:?} accepted"));
        assert_eq!(crate::commands::exit_code(&e), 2, "{bad:?}: {e}");
    }
    std::fs::remove_dir_all(&dir).ok();
    let c = config(&["--url", "http://h:1/", "--request-rate", "2.5", "--endpoint", "/v1/chat/completions"]).unwrap();
    assert_eq!((c.url.as_str(), c.chat, c.request_rate), ("http://h:1/v1/chat/completions", true, Some(2.5)));
    assert_eq!(config(&["--url", "http://h:1"]).unwrap().request_rate, None);
}

#[test]
fn chunk_text_completions_and_chat() {
    assert_eq!(chunk_text(&json!({"choices": [{"text": "a"}]})), Some("a"));
    assert_eq!(chunk_text(&json!({"choices": [{"delta": {"content": "b"}}]})), Some("b"));
    assert_eq!(chunk_text(&json!({"choices": [{"delta": {"role": "assistant", "content": ""}}]})), None);
    assert_eq!(chunk_text(&json!({"choices": [], "usage": {"completion_tokens": 3}})), None);
}

// ---- mock server ----

#[derive(Default)]
struct Mock {
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    bodies: Mutex<Vec<Value>>,
}

struct InFlight(Arc<Mock>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Paths: `[/VARIANT]/v1/completions` or `/v1/chat/completions`, where VARIANT is
/// `nousage` (no usage chunk), `nodone` (no [DONE]) or `fail` (HTTP 500).
async fn mock_handler(st: Arc<Mock>, method: Method, uri: Uri, body: Bytes) -> Response {
    let path = uri.path();
    if method == Method::GET && path.ends_with("/v1/models") {
        return axum::Json(json!({"object": "list", "data": [{"id": "mock"}]})).into_response();
    }
    if path.starts_with("/fail/") {
        return (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response();
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    st.bodies.lock().unwrap().push(body.clone());
    let n = st.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    st.max_in_flight.fetch_max(n, Ordering::SeqCst);
    let guard = InFlight(st.clone());
    let k = body["max_tokens"].as_u64().unwrap_or(1);
    let chat = path.ends_with("/chat/completions");
    let mut events = Vec::new();
    if chat {
        events.push(json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}).to_string());
    }
    for i in 0..k {
        let text = format!(" tök{i}");
        let choice =
            if chat { json!({"index": 0, "delta": {"content": text}}) } else { json!({"index": 0, "text": text}) };
        events.push(json!({"choices": [choice]}).to_string());
    }
    if !path.starts_with("/nousage/") {
        events.push(json!({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": k}}).to_string());
    }
    if !path.starts_with("/nodone/") {
        events.push("[DONE]".into());
    }
    // Each event goes out in two writes, cut inside the JSON (and inside "ö").
    let mut pieces = Vec::new();
    for e in events {
        let s = format!("data: {e}\n\n").into_bytes();
        let cut = s.len() / 2 + 1;
        pieces.push(Bytes::copy_from_slice(&s[..cut]));
        pieces.push(Bytes::copy_from_slice(&s[cut..]));
    }
    let stream = futures::stream::iter(pieces).then(move |b| {
        let _alive = &guard;
        async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            Ok::<_, std::convert::Infallible>(b)
        }
    });
    Response::builder().header("content-type", "text/event-stream").body(Body::from_stream(stream)).unwrap()
}

/// Starts the mock; returns its base URL and state.
async fn start_mock() -> (String, Arc<Mock>) {
    let st = Arc::new(Mock::default());
    let s2 = st.clone();
    let app = axum::Router::new()
        .fallback(move |method: Method, uri: Uri, body: Bytes| mock_handler(s2.clone(), method, uri, body));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), st)
}

async fn bench(extra: &[&str]) -> Result<(Summary, Option<String>)> {
    benchmark(Arc::new(config(extra)?)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_server_all_requests_complete() {
    let (url, st) = start_mock().await;
    let (s, model) =
        bench(&["--url", &url, "--num-prompts", "8", "--input-len", "12", "--output-len", "5"]).await.unwrap();
    assert_eq!((s.completed, s.failed), (8, 0), "{:?}", s.first_error);
    assert_eq!(s.total_output_tokens, 8 * 5);
    assert_eq!(s.total_input_tokens, 8 * 7, "usage.prompt_tokens counts");
    assert!(s.ttft.mean > 0.0 && s.itl.mean > 0.0 && s.tpot.mean > 0.0);
    assert!(s.e2el.mean >= s.ttft.mean);
    assert!(s.request_throughput > 0.0 && s.goodput.is_none());
    assert_eq!(model.as_deref(), Some("mock"));
    let bodies = st.bodies.lock().unwrap();
    assert_eq!(bodies.len(), 8);
    let b = &bodies[0];
    assert_eq!((b["stream"].clone(), b["ignore_eos"].clone()), (json!(true), json!(true)));
    assert_eq!((b["temperature"].clone(), b["max_tokens"].clone()), (json!(0.0), json!(5)));
    assert_eq!(b["stream_options"]["include_usage"], json!(true));
    assert_eq!(b["model"], json!("mock"));
    assert_eq!(b["prompt"].as_str().unwrap().split_whitespace().count(), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_usage_tokens_are_counted_from_chunks() {
    let (url, _) = start_mock().await;
    let url = format!("{url}/nousage");
    let (s, _) = bench(&["--url", &url, "--num-prompts", "4", "--input-len", "9", "--output-len", "6"]).await.unwrap();
    assert_eq!((s.completed, s.failed), (4, 0));
    assert_eq!((s.total_output_tokens, s.total_input_tokens), (4 * 6, 4 * 9));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_endpoint_skips_the_role_chunk() {
    let (url, st) = start_mock().await;
    let a = ["--url", &url, "--endpoint", "/v1/chat/completions", "--num-prompts", "3", "--output-len", "4"];
    let (s, _) = bench(&a).await.unwrap();
    assert_eq!((s.completed, s.failed, s.total_output_tokens), (3, 0, 12));
    assert_eq!(st.bodies.lock().unwrap()[0]["messages"][0]["role"], json!("user"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_and_missing_done_are_failures() {
    let (url, _) = start_mock().await;
    let (s, _) = bench(&["--url", &format!("{url}/fail"), "--num-prompts", "5"]).await.unwrap();
    assert_eq!((s.completed, s.failed), (0, 5));
    assert_eq!(s.first_error.as_deref(), Some("HTTP 500: boom"));
    assert_eq!(s.total_output_tokens, 0);
    let (s, _) = bench(&["--url", &format!("{url}/nodone"), "--num-prompts", "2", "--output-len", "3"]).await.unwrap();
    assert_eq!((s.completed, s.failed), (0, 2));
    assert!(s.first_error.unwrap().contains("[DONE]"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poisson_rate_with_concurrency_cap_and_goodput() {
    let (url, st) = start_mock().await;
    let a = ["--url", &url, "--num-prompts", "10", "--request-rate", "400", "--max-concurrency", "2"];
    let a: Vec<&str> = a.iter().copied().chain(["--output-len", "4", "--goodput", "e2el:60000"]).collect();
    let (s, _) = bench(&a).await.unwrap();
    assert_eq!((s.completed, s.failed, s.total_output_tokens), (10, 0, 40));
    assert!(st.max_in_flight.load(Ordering::SeqCst) <= 2);
    assert!((s.goodput.unwrap() - s.request_throughput).abs() < 1e-9);
    let (s, _) = bench(&["--url", &url, "--num-prompts", "2", "--goodput", "ttft:0.000001"]).await.unwrap();
    assert_eq!(s.goodput, Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_is_one_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let e = bench(&["--url", &format!("http://127.0.0.1:{port}"), "--num-prompts", "2"]).await.unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.starts_with("cannot connect to http://127.0.0.1:"), "{msg}");
    assert!(!msg.contains('\n'));
    assert_eq!(crate::commands::exit_code(&e), 1);
}
