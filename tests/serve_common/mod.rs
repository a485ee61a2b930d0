//! Helpers for the `runtime serve` end-to-end tests: spawn the real binary on a
//! loopback port, wait for readiness, talk HTTP (reqwest, or raw TCP where a client
//! library would refuse to send the bytes), parse SSE and Prometheus text.

#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub fn tiny() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny/llama_gqa_tied")
}

pub fn tiny_str() -> String {
    tiny().to_str().expect("utf-8 path").to_string()
}

/// The entity name of the tiny model when none is given.
pub const TINY_ENTITY: &str = "llama_gqa_tied";

/// A scratch file path unique to this process and call.
pub fn scratch(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!("keel-serve-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir.join(format!("{}-{name}", N.fetch_add(1, Ordering::Relaxed)))
}

/// A running `runtime serve`; killed on drop.
pub struct Server {
    child: Option<Child>,
    pub base: String,
    pub port: u16,
    pub client: reqwest::Client,
    token: Option<String>,
}

impl Server {
    /// `runtime serve --port 0 ARGS` (plus `--model tiny` unless `--config` or `--model`
    /// is given, and `--threads 1` unless `--threads` is),
    /// with `env` set; returns once the port is bound (not yet ready).
    pub fn spawn_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_runtime"));
        cmd.arg("serve").args(["--port", "0"]);
        if !args.contains(&"--threads") {
            cmd.args(["--threads", "1"]);
        }
        if !args.contains(&"--config") && !args.contains(&"--model") {
            cmd.args(["--model", &tiny_str()]);
        }
        cmd.args(args);
        cmd.env_remove("KEEL_API_KEYS");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("runtime serve starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("listening on http://") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(rest.to_string());
                    }
                }
                // Keep draining so the server never blocks on a full pipe; show it on failure.
                eprintln!("[serve] {line}");
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                panic!("runtime serve {args:?} did not print `listening on` (exit: {status:?})");
            }
        };
        let port: u16 = addr.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port in the listening line");
        assert!(addr.starts_with("127.0.0.1:"), "binds loopback by default: {addr}");
        Server {
            child: Some(child),
            base: format!("http://{addr}"),
            port,
            client: reqwest::Client::builder().pool_max_idle_per_host(64).build().expect("client"),
            token: None,
        }
    }

    pub fn spawn(args: &[&str]) -> Server {
        Server::spawn_with_env(args, &[])
    }

    /// Spawns and waits for `/health/ready`.
    pub async fn start(args: &[&str]) -> Server {
        let s = Server::spawn(args);
        s.wait_ready().await;
        s
    }

    /// Sends `Authorization: Bearer token` on every request made through the helpers.
    pub fn with_token(mut self, token: &str) -> Server {
        self.token = Some(token.to_string());
        self
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = self.client.get(self.url("/health/ready")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "{} never became ready", self.base);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn auth(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    pub fn get_req(&self, path: &str) -> reqwest::RequestBuilder {
        self.auth(self.client.get(self.url(path)))
    }

    pub fn post_req(&self, path: &str) -> reqwest::RequestBuilder {
        self.auth(self.client.post(self.url(path)))
    }

    /// GET → (status, body as text).
    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let r = self.get_req(path).send().await.expect("GET sent");
        let s = r.status().as_u16();
        (s, r.text().await.expect("body"))
    }

    /// GET with an explicit bearer token → (status, body as text).
    pub async fn get_text_with(&self, path: &str, token: &str) -> (u16, String) {
        let r = self.client.get(self.url(path)).bearer_auth(token).send().await.expect("GET sent");
        let s = r.status().as_u16();
        (s, r.text().await.expect("body"))
    }

    /// GET → (status, JSON body).
    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let (s, t) = self.get_text(path).await;
        (s, parse(&t))
    }

    /// POST JSON → full answer.
    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        Answer::of(self.post_req(path).json(body).send().await.expect("POST sent")).await
    }

    /// POST with raw bytes and a content type → full answer.
    pub async fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> Answer {
        let r = self.post_req(path).header("content-type", content_type).body(body).send().await.expect("POST sent");
        Answer::of(r).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Answer {
        Answer::of(self.auth(self.client.put(self.url(path))).json(body).send().await.expect("PUT sent")).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        Answer::of(self.auth(self.client.delete(self.url(path))).send().await.expect("DELETE sent")).await
    }

    /// DELETE with a JSON body → full answer.
    pub async fn delete_json(&self, path: &str, body: &Value) -> Answer {
        Answer::of(self.auth(self.client.delete(self.url(path))).json(body).send().await.expect("DELETE sent")).await
    }

    /// PATCH JSON → full answer.
    pub async fn patch(&self, path: &str, body: &Value) -> Answer {
        Answer::of(self.auth(self.client.patch(self.url(path))).json(body).send().await.expect("PATCH sent")).await
    }

    /// GET with URL-encoded query parameters → full answer.
    pub async fn get_query(&self, path: &str, query: &[(&str, &str)]) -> Answer {
        let mut url = reqwest::Url::parse(&self.url(path)).expect("URL");
        url.query_pairs_mut().extend_pairs(query);
        Answer::of(self.auth(self.client.get(url)).send().await.expect("GET sent")).await
    }

    /// POST a streaming request and read the whole SSE body.
    pub async fn post_sse(&self, path: &str, body: &Value) -> Sse {
        let a = self.post(path, body).await;
        assert_eq!(a.status, 200, "{path} {body}: {}", a.text);
        Sse::parse(&a.text)
    }

    /// Greedy `/v1/completions` text of `prompt`.
    pub async fn greedy(&self, prompt: &str, max_tokens: u32) -> String {
        let a = self
            .post("/v1/completions", &serde_json::json!({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0}))
            .await;
        assert_eq!(a.status, 200, "{}", a.text);
        a.json["choices"][0]["text"].as_str().expect("text").to_string()
    }

    /// Current value of the metric series whose line starts with `prefix` (name and
    /// labels), summed over matching lines; None when absent.
    pub async fn metric(&self, name: &str, label_filter: &[&str]) -> Option<f64> {
        let (s, text) = self.get_text("/metrics").await;
        assert_eq!(s, 200);
        metric_sum(&text, name, label_filter)
    }

    /// SIGTERM (through `kill`, libc is not a dependency).
    pub fn sigterm(&self) {
        let st = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().expect("kill runs");
        assert!(st.success());
    }

    /// The exit status if the process has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        let st = self.child.as_mut().expect("running").try_wait().expect("try_wait")?;
        self.child = None;
        Some(st)
    }

    /// Waits for the process to exit (up to `timeout`).
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(st) = child.try_wait().expect("try_wait") {
                self.child = None;
                return st;
            }
            assert!(Instant::now() < deadline, "server did not exit within {timeout:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// A whole HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Answer {
    pub async fn of(r: reqwest::Response) -> Answer {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.expect("body");
        let json = parse(&text);
        Answer { status, headers, text, json }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a Databricks-shape error with this status and code; returns the message.
    pub fn expect_error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(self.json["error_code"], code, "{}", self.text);
        self.json["message"].as_str().expect("message").to_string()
    }

    /// Asserts an OpenAI-shape error with this status; returns (message, param).
    pub fn expect_openai_error(&self, status: u16) -> (String, Option<String>) {
        assert_eq!(self.status, status, "{}", self.text);
        let e = &self.json["error"];
        assert!(e.is_object(), "OpenAI error shape: {}", self.text);
        for k in ["message", "type", "param", "code"] {
            assert!(e.get(k).is_some(), "error.{k} missing: {}", self.text);
        }
        assert!(self.json.get("error_code").is_none(), "{}", self.text);
        (e["message"].as_str().expect("message").to_string(), e["param"].as_str().map(str::to_string))
    }
}

/// A parsed SSE body: the JSON of every `data:` line and whether `[DONE]` ended it.
#[derive(Debug)]
pub struct Sse {
    pub events: Vec<Value>,
    pub done: bool,
}

impl Sse {
    pub fn parse(text: &str) -> Sse {
        let mut events = Vec::new();
        let mut done = false;
        for line in text.lines() {
            let Some(data) = line.strip_prefix("data:") else { continue };
            let data = data.trim_start();
            assert!(!done, "data after [DONE]: {data}");
            if data == "[DONE]" {
                done = true;
                continue;
            }
            let v: Value = serde_json::from_str(data).unwrap_or_else(|e| panic!("data line is not JSON ({e}): {data}"));
            events.push(v);
        }
        Sse { events, done }
    }

    /// Concatenated text of choice `index` (chat `delta.content` or completion `text`).
    pub fn text(&self, index: u64) -> String {
        let mut s = String::new();
        for e in &self.events {
            for c in e["choices"].as_array().into_iter().flatten() {
                if c["index"].as_u64() == Some(index) {
                    if let Some(t) = c["delta"]["content"].as_str().or_else(|| c["text"].as_str()) {
                        s.push_str(t);
                    }
                }
            }
        }
        s
    }

    pub fn finish_reasons(&self) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        for e in &self.events {
            for c in e["choices"].as_array().into_iter().flatten() {
                if let Some(f) = c["finish_reason"].as_str() {
                    out.push((c["index"].as_u64().expect("index"), f.to_string()));
                }
            }
        }
        out
    }

    /// The chunks carrying `usage` (non-null).
    pub fn usage_chunks(&self) -> Vec<&Value> {
        self.events.iter().filter(|e| e.get("usage").is_some_and(|u| !u.is_null())).collect()
    }
}

/// Sum of the samples of `name` (exact metric name) whose label set contains every
/// `label_filter` fragment (e.g. `status="200"`).
pub fn metric_sum(text: &str, name: &str, label_filter: &[&str]) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let (n, labels) = match series.find('{') {
            Some(i) => (&series[..i], &series[i..]),
            None => (series, ""),
        };
        if n != name || !label_filter.iter().all(|f| labels.contains(f)) {
            continue;
        }
        let v: f64 = value.parse().unwrap_or_else(|_| panic!("bad sample: {line}"));
        *found.get_or_insert(0.0) += v;
    }
    found
}

/// Raw HTTP/1.1 over TCP: sends `head` then `body`, returns (status, whole answer text).
/// For bytes a client library would not send (a Content-Length larger than the body).
pub fn raw_http(port: u16, head: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    s.write_all(head.as_bytes()).expect("write head");
    s.write_all(body).expect("write body");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    // Read until the server closes or the headers and a Content-Length body are in.
    loop {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        let text = String::from_utf8_lossy(&buf);
        if let Some(i) = text.find("\r\n\r\n") {
            let len = text[..i]
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>()))
                .and_then(Result::ok);
            if len.is_some_and(|n| buf.len() >= i + 4 + n) {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status =
        text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status: {text:?}"));
    (status, text)
}

/// The JSON body of a raw answer.
pub fn raw_body_json(answer: &str) -> Value {
    answer.split_once("\r\n\r\n").map(|(_, b)| parse(b)).unwrap_or(Value::Null)
}

/// Writes an endpoints TOML file and returns its path.
pub fn config_file(toml: &str) -> PathBuf {
    let p = scratch("endpoints.toml");
    std::fs::write(&p, toml).expect("write config");
    p
}
