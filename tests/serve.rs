//! End-to-end tests of `runtime serve` (SPEC §2, §4): the real binary on a loopback
//! port, the tiny fixture model, plain HTTP. Each test starts its own server(s) so they
//! can run in parallel; greedy (`temperature: 0`) answers are compared across routes.

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

// ---------------------------------------------------------------------------------
// 1. Routes and formats
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn openai_completions_chat_logprobs_and_models() {
    let s = Server::start(&[]).await;

    // A string prompt.
    let a = s.post("/v1/completions", &json!({"prompt": PROMPTS[0], "max_tokens": 8, "temperature": 0})).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.header("served-model-name"), Some(TINY_ENTITY));
    let j = &a.json;
    assert_eq!(j["object"], "text_completion");
    assert!(j["id"].as_str().unwrap().starts_with("cmpl-"), "{j}");
    assert!(j["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(j["model"], "default");
    assert_eq!(j["choices"].as_array().unwrap().len(), 1);
    finish_ok(&j["choices"][0]["finish_reason"]);
    usage_ok(&j["usage"]);
    assert!(j["usage"]["completion_tokens"].as_u64().unwrap() <= 8);
    let greedy0 = j["choices"][0]["text"].as_str().unwrap().to_string();
    // Greedy is deterministic.
    assert_eq!(s.greedy(PROMPTS[0], 8).await, greedy0);

    // A list of prompts: one choice per prompt, in order, each its own greedy text.
    let a = s.post("/v1/completions", &json!({"prompt": PROMPTS, "max_tokens": 8, "temperature": 0})).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let choices = a.json["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3, "{}", a.text);
    for (i, p) in PROMPTS.iter().enumerate() {
        assert_eq!(choices[i]["index"], i);
        assert_eq!(choices[i]["text"].as_str().unwrap(), s.greedy(p, 8).await, "prompt {i}");
    }
    usage_ok(&a.json["usage"]);

    // n = 2: two choices; greedy makes them equal.
    let a = s.post("/v1/completions", &json!({"prompt": PROMPTS[0], "max_tokens": 8, "temperature": 0, "n": 2})).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let choices = a.json["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2);
    assert_eq!(choices[0]["index"], 0);
    assert_eq!(choices[1]["index"], 1);
    assert_eq!(choices[0]["text"], greedy0);
    assert_eq!(choices[1]["text"], greedy0);
    // n choices of one prompt count the prompt once.
    let single = s.post("/v1/completions", &json!({"prompt": PROMPTS[0], "max_tokens": 8, "temperature": 0})).await;
    assert_eq!(a.json["usage"]["prompt_tokens"], single.json["usage"]["prompt_tokens"]);
    // Seeded sampling is reproducible.
    let body = json!({"prompt": PROMPTS[1], "max_tokens": 12, "temperature": 1.0, "seed": 7, "n": 2});
    let x = s.post("/v1/completions", &body).await;
    let y = s.post("/v1/completions", &body).await;
    assert_eq!(x.status, 200, "{}", x.text);
    assert_eq!(x.json["choices"], y.json["choices"]);

    // Chat.
    let chat = json!({"messages": [{"role": "user", "content": "hi there"}], "max_tokens": 8, "temperature": 0});
    let a = s.post("/v1/chat/completions", &chat).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.header("served-model-name"), Some(TINY_ENTITY));
    let j = &a.json;
    assert_eq!(j["object"], "chat.completion");
    assert!(j["id"].as_str().unwrap().starts_with("chatcmpl-"), "{j}");
    assert_eq!(j["choices"][0]["message"]["role"], "assistant");
    assert!(j["choices"][0]["message"]["content"].is_string(), "{j}");
    finish_ok(&j["choices"][0]["finish_reason"]);
    usage_ok(&j["usage"]);

    // Logprobs: completions (integer) and chat (boolean), one per generated token.
    let a = s
        .post(
            "/v1/completions",
            &json!({"prompt": PROMPTS[0], "max_tokens": 6, "temperature": 0, "logprobs": 1, "ignore_eos": true}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let lp = &a.json["choices"][0]["logprobs"];
    let n = a.json["usage"]["completion_tokens"].as_u64().unwrap() as usize;
    assert_eq!(n, 6);
    assert_eq!(lp["tokens"].as_array().map(Vec::len), Some(n), "{lp}");
    assert_eq!(lp["text_offset"].as_array().map(Vec::len), Some(n), "{lp}");
    let lps = lp["token_logprobs"].as_array().unwrap();
    assert_eq!(lps.len(), n);
    assert!(lps.iter().all(|v| v.as_f64().is_some_and(|x| x <= 1e-6 && x.is_finite())), "{lp}");
    let a = s
        .post(
            "/v1/chat/completions",
            &json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "temperature": 0, "logprobs": true, "ignore_eos": true}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let content = a.json["choices"][0]["logprobs"]["content"].as_array().expect("logprobs.content");
    assert_eq!(content.len(), 5);
    assert!(content.iter().all(|c| c["token"].is_string() && c["logprob"].as_f64().is_some_and(|x| x <= 1e-6)));
    // Without logprobs the field is null.
    assert!(s.post("/v1/chat/completions", &chat).await.json["choices"][0]["logprobs"].is_null());

    // /v1/models lists the endpoint and its entity; `model` may name either.
    let (st, m) = s.get_json("/v1/models").await;
    assert_eq!(st, 200);
    assert_eq!(m["object"], "list");
    let ids: Vec<&str> = m["data"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&"default") && ids.contains(&TINY_ENTITY), "{m}");
    assert!(m["data"].as_array().unwrap().iter().all(|d| d["object"] == "model"));
    let a = s
        .post(
            "/v1/completions",
            &json!({"model": TINY_ENTITY, "prompt": PROMPTS[0], "max_tokens": 8, "temperature": 0}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json["model"], TINY_ENTITY);
    assert_eq!(a.json["choices"][0]["text"], greedy0);
    let a = s.post("/v1/completions", &json!({"model": "nope", "prompt": "x"})).await;
    let (msg, param) = a.expect_openai_error(404);
    assert_eq!(param.as_deref(), Some("model"));
    assert!(msg.contains("nope"), "{msg}");
}

#[tokio::test(flavor = "multi_thread")]
async fn streaming_equals_non_streaming() {
    let s = Server::start(&[]).await;

    // Chat, with and without the usage chunk.
    let body =
        json!({"messages": [{"role": "user", "content": "tell me a story"}], "max_tokens": 40, "temperature": 0});
    let full = s.post("/v1/chat/completions", &body).await;
    assert_eq!(full.status, 200, "{}", full.text);
    let want = full.json["choices"][0]["message"]["content"].as_str().unwrap();
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let sse = s.post_sse("/v1/chat/completions", &streamed).await;
    assert!(sse.done, "ends with data: [DONE]");
    assert_eq!(sse.text(0), want);
    assert_eq!(sse.finish_reasons(), vec![(0, full.json["choices"][0]["finish_reason"].as_str().unwrap().to_string())]);
    assert!(sse.usage_chunks().is_empty(), "no usage chunk without include_usage");
    assert_eq!(sse.events[0]["choices"][0]["delta"]["role"], "assistant");
    let id = &sse.events[0]["id"];
    assert!(id.as_str().unwrap().starts_with("chatcmpl-"));
    for e in &sse.events {
        assert_eq!(e["object"], "chat.completion.chunk", "{e}");
        assert_eq!(&e["id"], id, "one id per stream");
    }
    streamed["stream_options"] = json!({"include_usage": true});
    let sse = s.post_sse("/v1/chat/completions", &streamed).await;
    assert!(sse.done);
    assert_eq!(sse.text(0), want);
    let usage = sse.usage_chunks();
    assert_eq!(usage.len(), 1, "{:?}", sse.events);
    assert_eq!(usage[0]["choices"], json!([]));
    // Token counts match (cached_tokens may differ: the prefix cache is warm now).
    for k in ["prompt_tokens", "completion_tokens", "total_tokens"] {
        assert_eq!(usage[0]["usage"][k], full.json["usage"][k], "{k}");
    }
    assert!(std::ptr::eq(usage[0], sse.events.last().unwrap()), "usage chunk is the last before [DONE]");

    // Completions: a list of prompts streams one choice per prompt.
    let body = json!({"prompt": [PROMPTS[0], PROMPTS[2]], "max_tokens": 30, "temperature": 0});
    let full = s.post("/v1/completions", &body).await;
    assert_eq!(full.status, 200, "{}", full.text);
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let sse = s.post_sse("/v1/completions", &streamed).await;
    assert!(sse.done);
    for i in 0..2 {
        assert_eq!(sse.text(i), full.json["choices"][i as usize]["text"].as_str().unwrap(), "choice {i}");
    }
    let mut reasons = sse.finish_reasons();
    reasons.sort();
    assert_eq!(reasons.len(), 2, "one finish per choice: {reasons:?}");
    assert!(sse.events.iter().all(|e| e["object"] == "text_completion"));
    for k in ["prompt_tokens", "completion_tokens", "total_tokens"] {
        assert_eq!(sse.usage_chunks()[0]["usage"][k], full.json["usage"][k], "{k}");
    }

    // A long stream with ignore_eos ends with finish_reason length.
    let sse = s
        .post_sse(
            "/v1/completions",
            &json!({"prompt": "x", "max_tokens": 60, "temperature": 0, "ignore_eos": true, "stream": true}),
        )
        .await;
    assert!(sse.done);
    assert_eq!(sse.finish_reasons(), vec![(0, "length".to_string())]);
}

#[tokio::test(flavor = "multi_thread")]
async fn mlflow_invocations_every_format() {
    let s = Server::start(&[]).await;
    let mut want = Vec::new();
    for p in PROMPTS {
        want.push(json!(s.greedy(p, 6).await));
    }
    let want = Value::Array(want);
    let params = json!({"temperature": 0, "max_tokens": 6});
    let bodies = [
        json!({"dataframe_split": {"columns": ["prompt"], "data": PROMPTS.iter().map(|p| json!([p])).collect::<Vec<_>>()}, "params": params}),
        // The `prompt` column wins over an earlier string column.
        json!({"dataframe_split": {"index": [0, 1, 2], "columns": ["id", "prompt"], "data": PROMPTS.iter().map(|p| json!(["zzz", p])).collect::<Vec<_>>()}, "params": params}),
        json!({"dataframe_records": PROMPTS.iter().map(|p| json!({"prompt": p})).collect::<Vec<_>>(), "params": params}),
        json!({"instances": PROMPTS.iter().map(|p| json!({"prompt": p})).collect::<Vec<_>>(), "params": params}),
        json!({"instances": PROMPTS, "params": params}),
        json!({"inputs": {"prompt": PROMPTS}, "params": params}),
        json!({"inputs": PROMPTS, "params": params}),
    ];
    for b in &bodies {
        let a = s.post("/invocations", b).await;
        assert_eq!(a.status, 200, "{b}: {}", a.text);
        assert_eq!(a.json, json!({"predictions": want}), "{b}");
        assert_eq!(a.header("served-model-name"), Some(TINY_ENTITY));
        let a = s.post("/serving-endpoints/default/invocations", b).await;
        assert_eq!(a.status, 200, "{b}: {}", a.text);
        assert_eq!(a.json["predictions"], want, "{b}");
    }
    // charset=utf-8 is the one parameter allowed.
    let a = s.post_raw("/invocations", "application/json; charset=utf-8", bodies[0].to_string().into_bytes()).await;
    assert_eq!(a.json["predictions"], want, "{}", a.text);

    // CSV: one prediction per record, in row order (quoted fields may hold commas,
    // quotes and newlines). CSV carries no params, so these are sampled with the
    // defaults (temperature 1): check the count, then the order through a greedy body
    // would need params; instead check that the row count and shape are right.
    let csv = "id,prompt\n1,the cat sat\n2,\"multi\nline, \"\"quoted\"\"\"\n3,x\n";
    let a = s.post_raw("/invocations", "text/csv", csv.as_bytes().to_vec()).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let preds = a.json["predictions"].as_array().expect("predictions");
    assert_eq!(preds.len(), 3, "{}", a.text);
    assert!(preds.iter().all(Value::is_string));
    let a = s.post_raw("/invocations", "text/csv; charset=UTF-8", b"prompt\nhello\n".to_vec()).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json["predictions"].as_array().map(Vec::len), Some(1));

    // Unified bodies answer in OpenAI shape, on both invocation routes.
    let chat = json!({"messages": [{"role": "user", "content": "hi there"}], "max_tokens": 8, "temperature": 0});
    let want_chat = s.post("/v1/chat/completions", &chat).await.json["choices"][0]["message"]["content"].clone();
    for route in ["/serving-endpoints/default/invocations", "/invocations"] {
        let a = s.post(route, &chat).await;
        assert_eq!(a.status, 200, "{route}: {}", a.text);
        assert!(a.json.get("predictions").is_none(), "{}", a.text);
        assert_eq!(a.json["object"], "chat.completion");
        assert_eq!(a.json["choices"][0]["message"]["content"], want_chat, "{route}");
        assert_eq!(a.header("served-model-name"), Some(TINY_ENTITY));
    }
    let a = s
        .post(
            "/serving-endpoints/default/invocations",
            &json!({"prompt": PROMPTS[1], "max_tokens": 6, "temperature": 0}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json["object"], "text_completion");
    assert_eq!(a.json["choices"][0]["text"], want[1]);
    // And can stream.
    let mut streamed = chat.clone();
    streamed["stream"] = json!(true);
    let sse = s.post_sse("/serving-endpoints/default/invocations", &streamed).await;
    assert!(sse.done);
    assert_eq!(sse.text(0), want_chat.as_str().unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn liveness_readiness_version_metrics() {
    let s = Server::start(&[]).await;
    for p in ["/ping", "/health"] {
        let (st, _) = s.get_text(p).await;
        assert_eq!(st, 200, "{p}");
    }
    let (st, r) = s.get_json("/health/ready").await;
    assert_eq!(st, 200);
    assert_eq!(r["status"], "ready", "{r}");
    let (st, v) = s.get_json("/version").await;
    assert_eq!(st, 200);
    assert!(v["version"].as_str().is_some_and(|v| !v.is_empty()), "{v}");

    s.greedy("hello", 4).await;
    s.greedy("hello", 4).await;
    let bad = s.post("/invocations", &json!({})).await;
    assert_eq!(bad.status, 400);
    let r = s.get_req("/metrics").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("application/openmetrics-text") || ct.starts_with("text/plain"), "{ct}");
    let text = r.text().await.unwrap();
    let ok = metric_sum(&text, "keel_requests_total", &["status=\"200\"", "endpoint=\"default\""]);
    assert!(ok.is_some_and(|n| n >= 2.0), "keel_requests_total{{status=200}} >= 2:\n{text}");
    assert!(metric_sum(&text, "keel_requests_total", &["status=\"400\""]).is_some_and(|n| n >= 1.0), "{text}");
    let kv = metric_sum(&text, "keel_kv_cache_blocks_total", &[&format!("entity=\"{TINY_ENTITY}\"")]);
    assert!(kv.is_some_and(|n| n > 0.0), "keel_kv_cache_blocks_total > 0:\n{text}");
    assert!(metric_sum(&text, "keel_generation_tokens_total", &[]).is_some_and(|n| n >= 8.0), "{text}");
    assert!(text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).all(|l| l.starts_with("keel_")), "{text}");
}

// ---------------------------------------------------------------------------------
// 2. Client errors
// ---------------------------------------------------------------------------------

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

fn long_prompt() -> String {
    // Byte-level BPE on the tiny vocabulary: well over 256 tokens.
    (0..400).map(|i| format!("w{i} ")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn client_errors_are_4xx_naming_the_field() {
    let s = Server::start(&["--max-body", "64KiB"]).await;

    // MLflow bodies need exactly one input key.
    let m = s.post("/invocations", &json!({"params": {"max_tokens": 2}})).await.expect_error(400, "BAD_REQUEST");
    assert!(m.contains("none"), "{m}");
    let two = json!({"instances": ["a"], "inputs": ["b"]});
    let m = s.post("/invocations", &two).await.expect_error(400, "BAD_REQUEST");
    assert!(m.contains("instances") && m.contains("inputs"), "{m}");
    s.post("/serving-endpoints/default/invocations", &two).await.expect_error(400, "BAD_REQUEST");

    // Prompt longer than the context; max_tokens beyond it.
    let long = long_prompt();
    let (m, p) = s.post("/v1/completions", &json!({"prompt": long, "max_tokens": 1})).await.expect_openai_error(400);
    assert_eq!(p.as_deref(), Some("prompt"), "{m}");
    let m = s
        .post("/serving-endpoints/default/invocations", &json!({"prompt": long, "max_tokens": 1}))
        .await
        .expect_error(400, "INVALID_PARAMETER_VALUE");
    assert!(m.contains("prompt"), "{m}");
    let m = s
        .post("/invocations", &json!({"inputs": [long], "params": {"max_tokens": 1}}))
        .await
        .expect_error(400, "INVALID_PARAMETER_VALUE");
    assert!(m.contains("prompt"), "{m}");
    let (m, p) = s
        .post("/v1/chat/completions", &json!({"messages": [{"role": "user", "content": long}]}))
        .await
        .expect_openai_error(400);
    assert_eq!(p.as_deref(), Some("messages"), "{m}");
    let (m, p) = s.post("/v1/completions", &json!({"prompt": "hi", "max_tokens": 1000})).await.expect_openai_error(400);
    assert_eq!(p.as_deref(), Some("max_tokens"), "{m}");
    let m = s
        .post("/invocations", &json!({"inputs": ["hi"], "params": {"max_tokens": 1000}}))
        .await
        .expect_error(400, "INVALID_PARAMETER_VALUE");
    assert!(m.contains("max_tokens"), "{m}");
    let (_, p) = s
        .post("/v1/chat/completions", &json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 256}))
        .await
        .expect_openai_error(400);
    assert_eq!(p.as_deref(), Some("max_tokens"));

    // Invalid UTF-8.
    let bad_utf8 = b"{\"prompt\": \"caf\xc3\x28 \xff\", \"max_tokens\": 2}".to_vec();
    let (m, _) = s.post_raw("/v1/completions", "application/json", bad_utf8.clone()).await.expect_openai_error(400);
    assert!(m.contains("UTF-8"), "{m}");
    let m = s.post_raw("/invocations", "application/json", bad_utf8.clone()).await.expect_error(400, "BAD_REQUEST");
    assert!(m.contains("UTF-8"), "{m}");
    let m =
        s.post_raw("/invocations", "text/csv", b"prompt\n\xff\xfe\n".to_vec()).await.expect_error(400, "BAD_REQUEST");
    assert!(m.contains("UTF-8"), "{m}");
    let m = s
        .post_raw("/api/2.0/serving-endpoints", "application/json", b"{\"name\": \"\xff\"}".to_vec())
        .await
        .expect_error(400, "BAD_REQUEST");
    assert!(m.contains("UTF-8"), "{m}");

    // NaN temperature (what Python's json.dumps writes), negative top_k.
    let nan = br#"{"prompt": "hi", "max_tokens": 2, "temperature": NaN}"#.to_vec();
    let (m, p) = s.post_raw("/v1/completions", "application/json", nan.clone()).await.expect_openai_error(400);
    assert_eq!(p.as_deref(), Some("temperature"), "{m}");
    let m = s
        .post_raw("/serving-endpoints/default/invocations", "application/json", nan)
        .await
        .expect_error(400, "INVALID_PARAMETER_VALUE");
    assert!(m.contains("temperature"), "{m}");
    let m = s
        .post_raw(
            "/invocations",
            "application/json",
            br#"{"inputs": ["hi"], "params": {"temperature": NaN, "max_tokens": 2}}"#.to_vec(),
        )
        .await
        .expect_error(400, "INVALID_PARAMETER_VALUE");
    assert!(m.contains("temperature"), "{m}");
    let (m, p) = s.post("/v1/completions", &json!({"prompt": "hi", "top_k": -5})).await.expect_openai_error(400);
    assert_eq!(p.as_deref(), Some("top_k"), "{m}");
    let m = s
        .post("/invocations", &json!({"inputs": ["hi"], "params": {"top_k": -5}}))
        .await
        .expect_error(400, "INVALID_PARAMETER_VALUE");
    assert!(m.contains("top_k"), "{m}");
    let (_, p) = s
        .post("/v1/chat/completions", &json!({"messages": [{"role": "user", "content": "hi"}], "top_k": -5}))
        .await
        .expect_openai_error(400);
    assert_eq!(p.as_deref(), Some("top_k"));

    // 404s.
    let m = s
        .post("/serving-endpoints/nope/invocations", &json!({"inputs": ["hi"]}))
        .await
        .expect_error(404, "ENDPOINT_NOT_FOUND");
    assert!(m.contains("nope"), "{m}");
    let (st, j) = s.get_json("/api/2.0/serving-endpoints/nope").await;
    assert_eq!(st, 404);
    assert_eq!(j["error_code"], "RESOURCE_DOES_NOT_EXIST", "{j}");
    s.delete("/api/2.0/serving-endpoints/nope").await.expect_error(404, "RESOURCE_DOES_NOT_EXIST");
    s.put("/api/2.0/serving-endpoints/nope/config", &json!({"served_entities": [{"entity_name": tiny_str()}]}))
        .await
        .expect_error(404, "RESOURCE_DOES_NOT_EXIST");
    let (st, j) = s.get_json("/no/such/route").await;
    assert_eq!(st, 404);
    assert_eq!(j["error_code"], "RESOURCE_DOES_NOT_EXIST", "{j}");

    // 409: an endpoint name that exists.
    let spec =
        |name: &str| json!({"name": name, "config": {"served_entities": [{"name": "e", "entity_name": tiny_str()}]}});
    s.post("/api/2.0/serving-endpoints", &spec("default")).await.expect_error(409, "RESOURCE_ALREADY_EXISTS");
    let a = s.post("/api/2.0/serving-endpoints", &spec("twice")).await;
    assert_eq!(a.status, 200, "{}", a.text);
    s.post("/api/2.0/serving-endpoints", &spec("twice")).await.expect_error(409, "RESOURCE_ALREADY_EXISTS");

    // 400: traffic percentages not summing to 100 (and the endpoint is not created).
    let bad_split = json!({"name": "split", "config": {
        "served_entities": [{"name": "a", "entity_name": tiny_str()}, {"name": "b", "entity_name": tiny_str()}],
        "traffic_config": {"routes": [
            {"served_entity_name": "a", "traffic_percentage": 60},
            {"served_entity_name": "b", "traffic_percentage": 30}]}}});
    let m = s.post("/api/2.0/serving-endpoints", &bad_split).await.expect_error(400, "INVALID_PARAMETER_VALUE");
    assert!(m.contains("100"), "{m}");
    let (st, _) = s.get_json("/api/2.0/serving-endpoints/split").await;
    assert_eq!(st, 404, "a rejected endpoint is not created");
    let m = s
        .put(
            "/api/2.0/serving-endpoints/default/config",
            &json!({"served_entities": [{"name": "a", "entity_name": tiny_str()}],
                    "traffic_config": {"routes": [{"served_entity_name": "a", "traffic_percentage": 101}]}}),
        )
        .await
        .expect_error(400, "INVALID_PARAMETER_VALUE");
    assert!(m.contains("traffic_percentage"), "{m}");

    // 413: a body over --max-body, with a Content-Length and chunked.
    let big = json!({"prompt": "x".repeat(80 * 1024)});
    s.post("/v1/completions", &big).await.expect_openai_error(413);
    s.post("/invocations", &json!({"inputs": ["x".repeat(80 * 1024)]})).await.expect_error(413, "REQUEST_TOO_LARGE");
    let (st, answer) = raw_http(
        s.port,
        "POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n",
        &[b' '; 70 * 1024],
    );
    assert_eq!(st, 413, "{answer}");
    assert_eq!(raw_body_json(&answer)["error_code"], "REQUEST_TOO_LARGE", "{answer}");
    let mut chunked = Vec::new();
    for _ in 0..9 {
        chunked.extend_from_slice(b"2000\r\n");
        chunked.extend_from_slice(&[b' '; 0x2000]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (st, answer) = raw_http(
        s.port,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        &chunked,
    );
    assert_eq!(st, 413, "{answer}");
    assert!(raw_body_json(&answer)["error"].is_object(), "{answer}");

    // 415: content types other than JSON and CSV on the scoring routes.
    let m =
        s.post_raw("/invocations", "text/plain", b"hello".to_vec()).await.expect_error(415, "UNSUPPORTED_MEDIA_TYPE");
    assert!(m.contains("text/plain"), "{m}");
    s.post_raw("/serving-endpoints/default/invocations", "application/xml", b"<x/>".to_vec())
        .await
        .expect_error(415, "UNSUPPORTED_MEDIA_TYPE");
    s.post_raw("/invocations", "application/json; charset=latin-1", b"{}".to_vec())
        .await
        .expect_error(415, "UNSUPPORTED_MEDIA_TYPE");

    // After all that, the server still serves.
    assert_eq!(s.post("/v1/completions", &json!({"prompt": "hi", "max_tokens": 2})).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_and_per_user_rate_limit() {
    let keys = scratch("keys");
    std::fs::write(&keys, "# tokens\ntok-a\n\ntok-b\n").unwrap();
    let s = Server::spawn_with_env(
        &["--api-keys-file", keys.to_str().unwrap(), "--rate-limit-per-user", "3"],
        &[("KEEL_API_KEYS", "tok-c, tok-d")],
    );
    // The open routes need no token (wait_ready polls /health/ready without one).
    s.wait_ready().await;
    for p in ["/ping", "/health", "/health/ready"] {
        assert_eq!(s.client.get(s.url(p)).send().await.unwrap().status(), 200, "{p}");
    }
    // Everything else: 401 without a token, with a wrong one, or a malformed header;
    // before any work (a 415 body still gets 401).
    let body = json!({"inputs": ["hi"], "params": {"max_tokens": 2}});
    for auth in [None, Some("Bearer nope"), Some("Bearer tok-a2"), Some("Basic dG9rLWE="), Some("tok-a")] {
        let with = |rb: reqwest::RequestBuilder| match auth {
            Some(h) => rb.header("authorization", h),
            None => rb,
        };
        for p in ["/version", "/metrics", "/api/2.0/serving-endpoints", "/api/2.0/serving-endpoints/default"] {
            let a = Answer::of(with(s.client.get(s.url(p))).send().await.unwrap()).await;
            a.expect_error(401, "UNAUTHENTICATED");
        }
        let a = Answer::of(with(s.client.post(s.url("/invocations"))).json(&body).send().await.unwrap()).await;
        let m = a.expect_error(401, "UNAUTHENTICATED");
        assert!(!m.contains("tok-"), "never echo a token: {m}");
        assert_eq!(a.header("www-authenticate"), Some("Bearer"));
        let a = Answer::of(
            with(s.client.post(s.url("/invocations")))
                .header("content-type", "text/plain")
                .body("x")
                .send()
                .await
                .unwrap(),
        )
        .await;
        a.expect_error(401, "UNAUTHENTICATED");
        let a = Answer::of(with(s.client.get(s.url("/v1/models"))).send().await.unwrap()).await;
        a.expect_openai_error(401);
        let a = Answer::of(
            with(s.client.post(s.url("/v1/completions"))).json(&json!({"prompt": "x"})).send().await.unwrap(),
        )
        .await;
        a.expect_openai_error(401);
    }
    // Tokens from the file and from KEEL_API_KEYS both work.
    for t in ["tok-c", "tok-d"] {
        let (st, _) = Server::get_text_with(&s, "/v1/models", t).await;
        assert_eq!(st, 200, "{t}");
    }

    // --rate-limit-per-user 3: the 4th generation call of a user is refused; other users
    // keep their own budget.
    for i in 0..3 {
        let a = Answer::of(s.client.post(s.url("/invocations")).bearer_auth("tok-a").json(&body).send().await.unwrap())
            .await;
        assert_eq!(a.status, 200, "call {i}: {}", a.text);
    }
    let a =
        Answer::of(s.client.post(s.url("/invocations")).bearer_auth("tok-a").json(&body).send().await.unwrap()).await;
    let m = a.expect_error(429, "REQUEST_LIMIT_EXCEEDED");
    assert!(m.contains("per user"), "{m}");
    assert!(a.header("retry-after").and_then(|v| v.parse::<u64>().ok()).is_some_and(|s| s >= 1), "{:?}", a.headers);
    let a = Answer::of(
        s.client
            .post(s.url("/v1/completions"))
            .bearer_auth("tok-a")
            .json(&json!({"prompt": "x", "max_tokens": 1}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let (_, _) = a.expect_openai_error(429);
    assert_eq!(a.json["error"]["code"], "request_limit_exceeded", "{}", a.text);
    let a =
        Answer::of(s.client.post(s.url("/invocations")).bearer_auth("tok-b").json(&body).send().await.unwrap()).await;
    assert_eq!(a.status, 200, "another user: {}", a.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn per_endpoint_rate_limit_and_max_concurrency() {
    let s = Server::start(&["--rate-limit-per-endpoint", "2"]).await;
    let body = json!({"prompt": "x", "max_tokens": 1});
    for _ in 0..2 {
        assert_eq!(s.post("/v1/completions", &body).await.status, 200);
    }
    s.post("/serving-endpoints/default/invocations", &body).await.expect_error(429, "REQUEST_LIMIT_EXCEEDED");
    drop(s);

    // --max-concurrency 1: while one request runs, others get 429 at once. The held
    // stream is big and left unread, so the server blocks writing it and it stays in
    // flight (the tiny model generates 200 tokens in ~20 ms).
    let s = Server::start(&["--max-concurrency", "1"]).await;
    let mut held = s.post_req("/serving-endpoints/default/invocations").json(&big_stream()).send().await.unwrap();
    assert_eq!(held.status(), 200);
    let mut bytes = held.chunk().await.unwrap().unwrap().to_vec();
    let small = json!({"prompt": "y", "max_tokens": 1});
    let tries =
        futures::future::join_all((0..4).map(|_| s.post("/serving-endpoints/default/invocations", &small))).await;
    for a in &tries {
        let m = a.expect_error(429, "REQUEST_LIMIT_EXCEEDED");
        assert!(m.contains("max_concurrency"), "{m}");
        assert!(a.header("retry-after").is_some());
    }
    s.post("/v1/completions", &json!({"prompt": "y", "max_tokens": 1})).await.expect_openai_error(429);
    while let Some(c) = held.chunk().await.unwrap() {
        bytes.extend_from_slice(&c);
    }
    assert!(Sse::parse(std::str::from_utf8(&bytes).unwrap()).done);
    // Once the stream is done, the permit is back.
    assert_eq!(s.post("/v1/completions", &json!({"prompt": "x", "max_tokens": 1})).await.status, 200);
}

// ---------------------------------------------------------------------------------
// 3. Traffic split
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn traffic_split_follows_percentages() {
    let tiny = tiny_str();
    let cfg = config_file(&format!(
        r#"
[[endpoints]]
name = "split"
[[endpoints.config.served_entities]]
name = "seventy"
entity_name = "{tiny}"
[[endpoints.config.served_entities]]
name = "thirty"
entity_name = "{tiny}"
[[endpoints.config.traffic_config.routes]]
served_entity_name = "seventy"
traffic_percentage = 70
[[endpoints.config.traffic_config.routes]]
served_entity_name = "thirty"
traffic_percentage = 30
"#
    ));
    let s = Server::start(&["--config", cfg.to_str().unwrap()]).await;
    let t0 = Instant::now();
    let total = 1000;
    let body = json!({"prompt": "x", "max_tokens": 1});
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(32));
    let s = std::sync::Arc::new(s);
    let mut tasks = Vec::new();
    for i in 0..total {
        let s = s.clone();
        let sem = sem.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire().await.unwrap();
            // Alternate the two query routes; both are split.
            let a = if i % 2 == 0 {
                s.post("/serving-endpoints/split/invocations", &body).await
            } else {
                s.post("/v1/completions", &json!({"model": "split", "prompt": "x", "max_tokens": 1})).await
            };
            assert_eq!(a.status, 200, "{}", a.text);
            a.header("served-model-name").expect("served-model-name").to_string()
        }));
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    for t in tasks {
        *counts.entry(t.await.unwrap()).or_default() += 1;
    }
    eprintln!("traffic split: {counts:?} in {:?}", t0.elapsed());
    assert_eq!(counts.values().sum::<usize>(), total);
    for (name, pct) in [("seventy", 70.0), ("thirty", 30.0)] {
        let share = 100.0 * counts.get(name).copied().unwrap_or(0) as f64 / total as f64;
        assert!((share - pct).abs() <= 5.0, "{name}: {share}% vs {pct}% ({counts:?})");
    }
    // `model` naming an entity bypasses the split.
    let a = s.post("/v1/completions", &json!({"model": "thirty", "prompt": "x", "max_tokens": 1})).await;
    assert_eq!(a.header("served-model-name"), Some("thirty"));
    // Status metrics are labelled by entity.
    let n = s.metric("keel_requests_total", &["entity=\"thirty\"", "status=\"200\""]).await.unwrap_or(0.0);
    assert!(n >= 280.0, "{n}");
}

// ---------------------------------------------------------------------------------
// 4. Management REST
// ---------------------------------------------------------------------------------

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

#[tokio::test(flavor = "multi_thread")]
async fn management_create_update_delete() {
    let s = Server::start(&[]).await;
    let tiny = tiny_str();
    let spec = json!({"name": "mgmt", "config": {"served_entities": [
        {"name": "old", "entity_name": tiny, "max_concurrency": 8}]},
        "tags": [{"key": "team", "value": "e2e"}]});
    let a = s.post("/api/2.0/serving-endpoints", &spec).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json["name"], "mgmt");
    assert!(a.json["state"]["ready"].is_string(), "{}", a.text);
    let j = wait_endpoint(&s, "mgmt", "READY", |j| j["state"]["ready"] == "READY").await;
    assert_eq!(j["state"]["config_update"], "NOT_UPDATING");
    assert_eq!(j["config"]["served_entities"][0]["name"], "old");
    assert_eq!(j["config"]["served_entities"][0]["state"]["deployment"], "DEPLOYMENT_READY", "{j}");
    assert_eq!(j["config"]["traffic_config"]["routes"][0]["traffic_percentage"], 100, "{j}");
    assert_eq!(j["tags"][0]["key"], "team");
    let (st, list) = s.get_json("/api/2.0/serving-endpoints").await;
    assert_eq!(st, 200);
    let names: Vec<&str> = list["endpoints"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"mgmt") && names.contains(&"default"), "{list}");

    let q = json!({"prompt": "hello", "max_tokens": 3, "temperature": 0});
    let a = s.post("/serving-endpoints/mgmt/invocations", &q).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.header("served-model-name"), Some("old"));
    let want_text = a.json["choices"][0]["text"].clone();

    // Update to a new entity: traffic moves only once it is loaded, and no request fails
    // meanwhile.
    let upd = json!({"served_entities": [{"name": "new", "entity_name": tiny, "max_concurrency": 8}]});
    let a = s.put("/api/2.0/serving-endpoints/mgmt/config", &upd).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (st, j) = s.get_json("/api/2.0/serving-endpoints/mgmt").await;
        assert_eq!(st, 200);
        let state = j["state"]["config_update"].as_str().unwrap().to_string();
        assert_ne!(state, "UPDATE_FAILED", "{j}");
        let batch = futures::future::join_all((0..4).map(|_| s.post("/serving-endpoints/mgmt/invocations", &q))).await;
        for a in batch {
            assert_eq!(a.status, 200, "a request failed during the update: {}", a.text);
            assert_eq!(a.json["choices"][0]["text"], want_text);
            seen.push(a.header("served-model-name").unwrap().to_string());
        }
        if state == "NOT_UPDATING" {
            break;
        }
        assert!(Instant::now() < deadline, "update never finished: {j}");
    }
    let j = wait_endpoint(&s, "mgmt", "NOT_UPDATING", |j| j["state"]["config_update"] == "NOT_UPDATING").await;
    assert_eq!(j["config"]["served_entities"][0]["name"], "new", "{j}");
    assert_eq!(j["state"]["ready"], "READY");
    assert!(j.get("pending_config").is_none(), "{j}");
    assert!(j["config"]["config_version"].as_u64().unwrap() >= 2, "{j}");
    for _ in 0..5 {
        let a = s.post("/serving-endpoints/mgmt/invocations", &q).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.header("served-model-name"), Some("new"), "traffic switched");
    }
    assert!(seen.iter().all(|n| n == "old" || n == "new"), "{seen:?}");
    // Once a request got `new`, none got `old` again.
    if let Some(first_new) = seen.iter().position(|n| n == "new") {
        assert!(seen[first_new..].iter().all(|n| n == "new"), "{seen:?}");
    }

    // An update to an entity that cannot load fails and the old config keeps serving.
    let bad = json!({"served_entities": [{"name": "broken", "entity_name": "/nonexistent/model/dir"}]});
    let a = s.put("/api/2.0/serving-endpoints/mgmt/config", &bad).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let j = wait_endpoint(&s, "mgmt", "UPDATE_FAILED", |j| j["state"]["config_update"] != "IN_PROGRESS").await;
    assert_eq!(j["state"]["config_update"], "UPDATE_FAILED", "{j}");
    assert!(j["state"]["config_update_message"].as_str().is_some_and(|m| m.contains("broken")), "{j}");
    assert_eq!(j["config"]["served_entities"][0]["name"], "new", "{j}");
    let a = s.post("/serving-endpoints/mgmt/invocations", &q).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.header("served-model-name"), Some("new"));

    // Delete: queries 404, GET 404, list without it.
    let a = s.delete("/api/2.0/serving-endpoints/mgmt").await;
    assert_eq!(a.status, 200, "{}", a.text);
    s.post("/serving-endpoints/mgmt/invocations", &q).await.expect_error(404, "ENDPOINT_NOT_FOUND");
    let (st, _) = s.get_json("/api/2.0/serving-endpoints/mgmt").await;
    assert_eq!(st, 404);
    let (_, list) = s.get_json("/api/2.0/serving-endpoints").await;
    assert!(list["endpoints"].as_array().unwrap().iter().all(|e| e["name"] != "mgmt"), "{list}");
    let (_, r) = s.get_json("/health/ready").await;
    assert_eq!(r["status"], "ready", "{r}");
    // The default endpoint is untouched.
    assert_eq!(s.post("/invocations", &json!({"inputs": ["x"], "params": {"max_tokens": 1}})).await.status, 200);
}

// ---------------------------------------------------------------------------------
// 5. Scale to zero
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn scale_to_zero_unloads_and_reloads() {
    let tiny = tiny_str();
    let cfg = config_file(&format!(
        r#"
[[endpoints]]
name = "stz"
[[endpoints.config.served_entities]]
name = "sleepy"
entity_name = "{tiny}"
scale_to_zero_enabled = true
scale_to_zero_idle_seconds = 1
"#
    ));
    let s = Server::start(&["--config", cfg.to_str().unwrap()]).await;
    let q = json!({"prompt": "hello", "max_tokens": 4, "temperature": 0});
    let a = s.post("/serving-endpoints/stz/invocations", &q).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let want = a.json["choices"][0]["text"].clone();
    let deployment = |j: &Value| j["config"]["served_entities"][0]["state"]["deployment"].clone();
    let t0 = Instant::now();
    let j =
        wait_endpoint(&s, "stz", "DEPLOYMENT_SCALED_TO_ZERO", |j| deployment(j) == "DEPLOYMENT_SCALED_TO_ZERO").await;
    assert!(t0.elapsed() < Duration::from_secs(10), "took {:?}", t0.elapsed());
    assert_eq!(j["state"]["ready"], "READY", "scaled to zero still counts as ready: {j}");
    let (st, _) = s.get_json("/health/ready").await;
    assert_eq!(st, 200);
    let kv = s.metric("keel_entity_loaded", &["entity=\"sleepy\""]).await;
    assert_eq!(kv, Some(0.0));
    // The next request reloads and succeeds (it waits; no error), with the same answer.
    let a = s.post("/serving-endpoints/stz/invocations", &q).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json["choices"][0]["text"], want);
    let (_, j) = s.get_json("/api/2.0/serving-endpoints/stz").await;
    assert_eq!(deployment(&j), "DEPLOYMENT_READY", "{j}");
    // And it scales to zero again; a streaming request also reloads.
    wait_endpoint(&s, "stz", "DEPLOYMENT_SCALED_TO_ZERO", |j| deployment(j) == "DEPLOYMENT_SCALED_TO_ZERO").await;
    let mut sq = q.clone();
    sq["stream"] = json!(true);
    let sse = s.post_sse("/serving-endpoints/stz/invocations", &sq).await;
    assert!(sse.done);
    assert_eq!(sse.text(0), want.as_str().unwrap());
}

// ---------------------------------------------------------------------------------
// 6. Drain on SIGTERM; 7. client disconnect
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_in_flight_streams_and_exits_0() {
    let mut s = Server::start(&[]).await;
    let mut r = s.post_req("/v1/completions").json(&big_stream()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut bytes = r.chunk().await.unwrap().expect("a first chunk").to_vec();
    // The stream is admitted and blocked on the unread socket.
    assert_eq!(s.metric("keel_num_requests_in_flight", &[]).await, Some(1.0));
    s.sigterm();
    // Readiness turns 503 (or the listener is gone) while the stream is still served.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match s.client.get(s.url("/health/ready")).send().await {
            Ok(a) if a.status() == 503 => {
                let j: Value = a.json().await.unwrap();
                assert_eq!(j["status"], "draining", "{j}");
                break;
            }
            Ok(a) => assert_eq!(a.status(), 200, "readiness during drain"),
            Err(_) => break, // connection refused: the listener is closed
        }
        assert!(Instant::now() < deadline, "readiness never turned 503");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // New work is refused (503 or no connection).
    if let Ok(a) = s.client.post(s.url("/v1/completions")).json(&json!({"prompt": "y", "max_tokens": 1})).send().await {
        assert_eq!(a.status(), 503);
    }
    // The process waits for the unread stream.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(s.try_exit().is_none(), "the server exited with a stream in flight");
    while let Some(c) = r.chunk().await.expect("the in-flight stream is not cut") {
        bytes.extend_from_slice(&c);
    }
    // Whole stream: chunk boundaries may split a UTF-8 character, the text may not.
    let sse = Sse::parse(std::str::from_utf8(&bytes).expect("the stream is UTF-8"));
    assert!(sse.done, "the in-flight stream ends with [DONE]");
    let mut reasons = sse.finish_reasons();
    reasons.sort();
    let choices = (BIG_PROMPTS * BIG_N) as u64;
    assert_eq!(reasons, (0..choices).map(|i| (i, "length".to_string())).collect::<Vec<_>>());
    for i in 0..choices {
        assert!(!sse.text(i).is_empty());
    }
    let st = s.wait_exit(Duration::from_secs(20));
    assert_eq!(st.code(), Some(0), "{st:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn client_disconnect_frees_the_request() {
    let s = Server::start(&[]).await;
    let body = big_stream();
    for route in ["/v1/completions", "/serving-endpoints/default/invocations"] {
        let mut r = s.post_req(route).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let first = r.chunk().await.unwrap().expect("first chunk");
        assert!(first.starts_with(b"data:"), "{first:?}");
        assert_eq!(s.metric("keel_num_requests_in_flight", &[]).await, Some(1.0), "the stream is in flight");
        drop(r);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let inflight = s.metric("keel_num_requests_in_flight", &[]).await.expect("in-flight gauge");
            let running = s.metric("keel_num_requests_running", &[]).await.unwrap_or(0.0);
            if inflight == 0.0 && running == 0.0 {
                break;
            }
            assert!(Instant::now() < deadline, "in flight {inflight}, running {running} after the client left");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Still serving.
    assert_eq!(s.post("/v1/completions", &json!({"prompt": "x", "max_tokens": 2})).await.status, 200);
}
