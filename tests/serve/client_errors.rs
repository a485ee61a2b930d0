//! Bad requests: a 4xx naming the field, never a hang or a 5xx.

use super::*;

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
