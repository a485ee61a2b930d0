//! Shutdown drains streams; a client that goes away frees its request.

use super::*;

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
