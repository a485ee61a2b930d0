//! End-to-end tests of `runtime serve` (SPEC §2, §4): the real binary on a loopback
//! port, the tiny fixture model, plain HTTP. Each test starts its own server(s) so they
//! can run in parallel; greedy (`temperature: 0`) answers are compared across routes.

#[path = "../serve_common/mod.rs"]
mod serve_common;

use serde_json::{json, Value};
use serve_common::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const PROMPTS: [&str; 3] = ["the cat sat", "hello world", "a, b and \"c\""];

fn usage_ok(u: &Value) {
    let p = u["prompt_tokens"].as_u64().expect("prompt_tokens");
    let c = u["completion_tokens"].as_u64().expect("completion_tokens");
    assert!(p > 0, "{u}");
    assert_eq!(u["total_tokens"].as_u64(), Some(p + c), "{u}");
}

fn finish_ok(f: &Value) {
    assert!(f == "stop" || f == "length", "finish_reason {f}");
}

/// Prompts x `n` of [`big_stream`].
const BIG_PROMPTS: usize = 8;
const BIG_N: usize = 16;

/// A stream far larger than the loopback socket buffers (8 prompts x 16 choices x 250
/// tokens with logprobs, ~9 MB; the kernel holds ~4 MB): a client that stops reading
/// keeps it in flight on the server. (The tiny model makes 200 tokens in ~20 ms, so
/// only backpressure keeps a request in flight long enough to act on it.)
fn big_stream() -> Value {
    let prompts: Vec<String> = (0..BIG_PROMPTS).map(|i| format!("p{i}")).collect();
    json!({"prompt": prompts, "max_tokens": 250, "temperature": 0, "ignore_eos": true, "stream": true, "n": BIG_N, "logprobs": 1})
}

async fn wait_endpoint(s: &Server, name: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (st, j) = s.get_json(&format!("/api/2.0/serving-endpoints/{name}")).await;
        assert_eq!(st, 200, "{j}");
        if ok(&j) {
            return j;
        }
        assert!(Instant::now() < deadline, "endpoint {name} never reached {what}: {j}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

mod client_errors;
mod endpoints;
mod lifecycle;
mod limits;
mod protocols;
