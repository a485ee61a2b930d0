//! `runtime bench serve`: a load generator for an OpenAI-compatible server (`runtime
//! serve`, llama.cpp's `llama-server`, vLLM), after vLLM's `benchmark_serving.py`.
//!
//! `--num-prompts` streaming requests are sent open loop: all at once with
//! `--request-rate inf`, else with Poisson arrivals (exponential gaps of mean 1/R s from a
//! seeded generator); `--max-concurrency` caps requests in flight (arrivals keep their
//! schedule and wait; a request's clock starts when it is sent). Metrics are defined in
//! `serve_metrics`. Prompts come from `--dataset` (JSONL with `prompt`, or a ShareGPT
//! JSON array) or are synthetic: about `--input-len` words each. Every request asks for
//! `max_tokens` with `ignore_eos` and temperature 0, so outputs have the requested length.

use super::serve_metrics::{summarize, RequestRecord, Slo, Summary};
use super::sse::SseParser;
use crate::commands::UsageError;
use anyhow::{bail, Result};
use clap::Args;
use reqwest::{Client, Url};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

#[derive(Args, Clone, Debug)]
pub struct ServeArgs {
    /// Server base URL (plain http), e.g. http://127.0.0.1:8080.
    #[arg(long)]
    url: String,
    /// Endpoint: /v1/completions or /v1/chat/completions.
    #[arg(long, default_value = "/v1/completions")]
    endpoint: String,
    /// Model name sent with each request (default: the first of GET /v1/models, if any).
    #[arg(long)]
    model: Option<String>,
    #[arg(long, default_value_t = 100)]
    num_prompts: usize,
    /// Requests per second (Poisson arrivals), or `inf` to send all at once.
    #[arg(long, default_value = "inf")]
    request_rate: String,
    /// Most requests in flight (default: no limit).
    #[arg(long)]
    max_concurrency: Option<usize>,
    /// Prompts: JSONL (`prompt`, optional `output_len`/`max_tokens`) or a ShareGPT JSON array.
    #[arg(long)]
    dataset: Option<PathBuf>,
    /// Words per synthetic prompt (without --dataset).
    #[arg(long, default_value_t = 128)]
    input_len: usize,
    /// Tokens to generate per request (unless the dataset line gives its own).
    #[arg(long, default_value_t = 128)]
    output_len: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Bearer token (default: $KEEL_API_KEY).
    #[arg(long)]
    api_key: Option<String>,
    /// SLO for goodput, repeatable: ttft:MS, tpot:MS, e2el:MS.
    #[arg(long)]
    goodput: Vec<String>,
    /// Per-request time limit in seconds.
    #[arg(long, default_value_t = 600.0)]
    timeout_s: f64,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Validated settings of a run.
pub(crate) struct Config {
    /// Full endpoint URL.
    pub url: Url,
    /// Base URL as given, without a trailing `/`.
    pub base: String,
    pub chat: bool,
    pub model: Option<String>,
    /// `None`: all at once.
    pub request_rate: Option<f64>,
    pub max_concurrency: Option<usize>,
    pub prompts: Vec<Prompt>,
    pub seed: u64,
    pub api_key: Option<String>,
    pub slo: Option<Slo>,
    pub timeout: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Prompt {
    pub text: String,
    pub max_tokens: usize,
}

fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

impl ServeArgs {
    pub(crate) fn config(&self) -> Result<Config> {
        let base = self.url.trim_end_matches('/').to_string();
        let bad_url = || usage(format!("--url {:?}: expected a base URL like http://127.0.0.1:8080", self.url));
        let parsed = Url::parse(&base).map_err(|_| bad_url())?;
        if parsed.scheme() != "http" || parsed.host_str().is_none() {
            return Err(usage(format!("--url {:?}: only plain http:// URLs are supported", self.url)));
        }
        if !self.endpoint.starts_with('/') {
            return Err(usage(format!("--endpoint {:?} must start with /", self.endpoint)));
        }
        let url = Url::parse(&format!("{base}{}", self.endpoint)).map_err(|_| bad_url())?;
        let request_rate = match self.request_rate.trim().to_ascii_lowercase().as_str() {
            "inf" | "infinity" => None,
            r => match r.parse::<f64>() {
                Ok(v) if v.is_infinite() && v > 0.0 => None,
                Ok(v) if v.is_finite() && v > 0.0 => Some(v),
                _ => return Err(usage(format!("--request-rate {:?}: expected a rate > 0 or inf", self.request_rate))),
            },
        };
        if self.num_prompts == 0 {
            return Err(usage("--num-prompts must be at least 1"));
        }
        if self.max_concurrency == Some(0) {
            return Err(usage("--max-concurrency must be at least 1"));
        }
        if self.output_len == 0 || (self.dataset.is_none() && self.input_len == 0) {
            return Err(usage("--input-len and --output-len must be at least 1"));
        }
        if !(self.timeout_s.is_finite() && self.timeout_s > 0.0) {
            return Err(usage("--timeout-s must be > 0"));
        }
        let slo = Slo::parse(&self.goodput).map_err(usage)?;
        let prompts = match &self.dataset {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|e| usage(format!("--dataset {}: {e}", path.display())))?;
                let items = parse_dataset(&text, self.output_len)
                    .map_err(|e| usage(format!("--dataset {}: {e}", path.display())))?;
                pick(items, self.num_prompts, self.seed)
            }
            None => synthetic_prompts(self.num_prompts, self.input_len, self.output_len, self.seed),
        };
        Ok(Config {
            url,
            base,
            chat: self.endpoint.trim_end_matches('/').ends_with("chat/completions"),
            model: self.model.clone(),
            request_rate,
            max_concurrency: self.max_concurrency,
            prompts,
            seed: self.seed,
            api_key: self.api_key.clone().or_else(|| std::env::var("KEEL_API_KEY").ok()).filter(|k| !k.is_empty()),
            slo,
            timeout: Duration::from_secs_f64(self.timeout_s),
        })
    }
}

/// splitmix64: a tiny seeded generator for arrivals, shuffles and synthetic prompts.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// When each request is due, in seconds from the start: the first at 0, then exponential
/// gaps of mean 1/rate (all 0 for an infinite rate).
pub(crate) fn arrival_offsets(n: usize, rate: Option<f64>, seed: u64) -> Vec<f64> {
    let Some(rate) = rate else { return vec![0.0; n] };
    let mut rng = Rng::new(seed ^ 0xA5A5_5A5A_0F0F_F0F0);
    let mut t = 0.0;
    (0..n)
        .map(|i| {
            if i > 0 {
                t += -(1.0 - rng.next_f64()).ln() / rate;
            }
            t
        })
        .collect()
}

const WORDS: &[&str] = &[
    "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on", "not", "he",
    "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "had", "they", "you", "were", "their",
    "one", "all", "we", "can", "her", "has", "there", "been", "if", "more", "when", "will", "would", "who", "so", "no",
    "time", "people", "water", "city", "world", "house", "river", "music", "light", "story", "garden", "number",
    "paper", "mountain", "window", "question",
];

/// `n` prompts of `words` words each, different per prompt (no shared prefix to cache).
pub(crate) fn synthetic_prompts(n: usize, words: usize, max_tokens: usize, seed: u64) -> Vec<Prompt> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let text = (0..words).map(|_| WORDS[rng.below(WORDS.len())]).collect::<Vec<_>>().join(" ");
            Prompt { text, max_tokens }
        })
        .collect()
}

/// Dataset prompts: a JSON array (ShareGPT `conversations[0].value`, or objects with
/// `prompt`), else JSONL objects with `prompt` and optional `output_len`/`max_tokens`.
pub(crate) fn parse_dataset(text: &str, default_max_tokens: usize) -> Result<Vec<Prompt>, String> {
    let from_obj = |v: &Value| -> Option<Prompt> {
        let text = v
            .get("prompt")
            .and_then(Value::as_str)
            .or_else(|| v.get("conversations")?.get(0)?.get("value")?.as_str())?;
        let max_tokens = ["output_len", "max_tokens"]
            .iter()
            .find_map(|k| v.get(*k)?.as_u64())
            .map_or(default_max_tokens, |m| m as usize)
            .max(1);
        Some(Prompt { text: text.to_string(), max_tokens })
    };
    let items: Vec<Prompt> = if text.trim_start().starts_with('[') {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("not a JSON array: {e}"))?;
        v.as_array().into_iter().flatten().filter_map(from_obj).collect()
    } else {
        let mut items = Vec::new();
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line).map_err(|e| format!("line {}: {e}", i + 1))?;
            items.push(from_obj(&v).ok_or_else(|| format!("line {}: no \"prompt\" string", i + 1))?);
        }
        items
    };
    if items.is_empty() {
        return Err("no prompts".into());
    }
    Ok(items)
}

/// `n` prompts from a seeded shuffle of `items`, cycling when there are fewer.
fn pick(mut items: Vec<Prompt>, n: usize, seed: u64) -> Vec<Prompt> {
    let mut rng = Rng::new(seed);
    for i in (1..items.len()).rev() {
        items.swap(i, rng.below(i + 1));
    }
    (0..n).map(|i| items[i % items.len()].clone()).collect()
}

/// An error with its causes, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut c = e;
    while let Some(s) = c.source() {
        c = s;
    }
    c.to_string()
}

fn with_auth(rb: reqwest::RequestBuilder, cfg: &Config) -> reqwest::RequestBuilder {
    match &cfg.api_key {
        Some(k) => rb.bearer_auth(k),
        None => rb,
    }
}

/// Checks that the server answers (any HTTP status will do) and returns the first model
/// id of `GET /v1/models`, when there is one.
async fn probe(client: &Client, cfg: &Config) -> Result<Option<String>> {
    let rb = client.get(format!("{}/v1/models", cfg.base)).timeout(Duration::from_secs(30));
    match with_auth(rb, cfg).send().await {
        Ok(resp) if resp.status().is_success() => {
            let v: Value = resp.json().await.unwrap_or(Value::Null);
            Ok(v["data"][0]["id"].as_str().map(str::to_string))
        }
        Ok(_) => Ok(None),
        Err(e) if e.is_connect() => {
            bail!("cannot connect to {}: {} (is the server running?)", cfg.base, root_cause(&e))
        }
        Err(e) => bail!("{}: {}", cfg.base, error_chain(&e)),
    }
}

fn request_body(cfg: &Config, model: Option<&str>, p: &Prompt) -> Value {
    let mut body = json!({
        "max_tokens": p.max_tokens,
        "temperature": 0.0,
        "ignore_eos": true,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    if cfg.chat {
        body["messages"] = json!([{"role": "user", "content": p.text}]);
    } else {
        body["prompt"] = json!(p.text);
    }
    if let Some(m) = model {
        body["model"] = json!(m);
    }
    body
}

/// Text of a streamed chunk: `choices[0].text` (completions) or `choices[0].delta.content`.
fn chunk_text(v: &Value) -> Option<&str> {
    let c = v.get("choices")?.get(0)?;
    let t = c.get("text").and_then(Value::as_str);
    let t = t.or_else(|| c.get("delta")?.get("content")?.as_str());
    let t = t.or_else(|| c.get("delta")?.get("reasoning_content")?.as_str());
    t.filter(|t| !t.is_empty())
}

/// Sends one streaming request and times it.
async fn send_one(client: &Client, cfg: &Config, model: Option<&str>, p: &Prompt) -> RequestRecord {
    let mut rec = RequestRecord { prompt_tokens: p.text.split_whitespace().count(), ..RequestRecord::default() };
    let start = Instant::now();
    let result = stream_one(client, cfg, model, p, start, &mut rec).await;
    rec.latency_s = start.elapsed().as_secs_f64();
    match result {
        Ok(()) => rec.success = true,
        Err(e) => rec.error = Some(e),
    }
    rec
}

async fn stream_one(
    client: &Client,
    cfg: &Config,
    model: Option<&str>,
    p: &Prompt,
    start: Instant,
    rec: &mut RequestRecord,
) -> Result<(), String> {
    let rb = client.post(cfg.url.clone()).json(&request_body(cfg, model, p));
    let mut resp = with_auth(rb, cfg).send().await.map_err(|e| error_chain(&e))?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        let body: String = body.trim().chars().take(300).collect();
        return Err(format!("HTTP {}: {body}", status.as_u16()));
    }
    let mut parser = SseParser::default();
    let (mut chunks, mut usage_tokens, mut done) = (0usize, None, false);
    let mut last: Option<Instant> = None;
    loop {
        let piece = resp.chunk().await.map_err(|e| error_chain(&e))?;
        let events = match &piece {
            Some(bytes) => parser.feed(bytes),
            None => parser.finish(),
        };
        let now = Instant::now();
        for data in events {
            if data.trim() == "[DONE]" {
                done = true;
                continue;
            }
            let Ok(v) = serde_json::from_str::<Value>(&data) else { continue };
            if let Some(err) = v.get("error") {
                return Err(format!("error in stream: {}", err.get("message").unwrap_or(err)));
            }
            if chunk_text(&v).is_some() {
                match last {
                    None => rec.ttft_s = (now - start).as_secs_f64(),
                    Some(prev) => rec.itl_s.push((now - prev).as_secs_f64()),
                }
                last = Some(now);
                chunks += 1;
            }
            if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
                usage_tokens = u["completion_tokens"].as_u64().or(usage_tokens);
                if let Some(pt) = u["prompt_tokens"].as_u64() {
                    rec.prompt_tokens = pt as usize;
                }
            }
        }
        if piece.is_none() {
            break;
        }
    }
    if !done {
        return Err("stream ended without data: [DONE]".into());
    }
    if last.is_none() {
        return Err("stream had no content chunk".into());
    }
    rec.output_tokens = usage_tokens.map_or(chunks, |t| t as usize);
    Ok(())
}

/// Runs the benchmark: probes the server, then sends every prompt on its schedule.
/// Returns the summary and the model name used.
pub(crate) async fn benchmark(cfg: Arc<Config>) -> Result<(Summary, Option<String>)> {
    let client = Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .timeout(cfg.timeout)
        .build()
        .map_err(|e| anyhow::anyhow!("HTTP client: {}", error_chain(&e)))?;
    let probed = probe(&client, &cfg).await?;
    let model = cfg.model.clone().or(probed);
    let model_name = model.clone();
    let model: Option<Arc<str>> = model.map(Into::into);
    let offsets = arrival_offsets(cfg.prompts.len(), cfg.request_rate, cfg.seed);
    let limit = cfg.max_concurrency.map(|c| Arc::new(Semaphore::new(c)));
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(offsets.len());
    for (i, off) in offsets.into_iter().enumerate() {
        tokio::time::sleep_until(start + Duration::from_secs_f64(off)).await;
        let (client, cfg, model, limit) = (client.clone(), cfg.clone(), model.clone(), limit.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = match &limit {
                Some(s) => Some(s.clone().acquire_owned().await.expect("semaphore is never closed")),
                None => None,
            };
            send_one(&client, &cfg, model.as_deref(), &cfg.prompts[i]).await
        }));
    }
    let mut records = Vec::with_capacity(tasks.len());
    for t in futures::future::join_all(tasks).await {
        records.push(t.unwrap_or_else(|e| RequestRecord { error: Some(format!("task: {e}")), ..Default::default() }));
    }
    let duration = start.elapsed().as_secs_f64();
    Ok((summarize(&records, duration, cfg.slo.as_ref()), model_name))
}

pub fn run(a: ServeArgs) -> Result<()> {
    let cfg = Arc::new(a.config()?);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (s, model) = rt.block_on(benchmark(cfg.clone()))?;
    if a.json {
        let mut v = s.to_json();
        v["url"] = json!(cfg.url.as_str());
        v["model"] = json!(model);
        v["num_prompts"] = json!(cfg.prompts.len());
        v["request_rate"] = json!(cfg.request_rate);
        v["max_concurrency"] = json!(cfg.max_concurrency);
        println!("{v}");
    } else {
        print!("{}", s.table(cfg.request_rate, cfg.max_concurrency));
    }
    if s.completed == 0 {
        bail!("all {} requests failed: {}", s.failed, s.first_error.as_deref().unwrap_or("unknown error"));
    }
    Ok(())
}

#[cfg(test)]
#[path = "serve_tests.rs"]
mod tests;
