//! API keys, per-user and per-endpoint rate limits, max concurrency.

use super::*;

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
