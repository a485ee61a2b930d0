//! Serving endpoints: traffic split, management API, scale to zero.

use super::*;

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

// Management REST

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
        let mut names = Vec::new();
        for a in batch {
            assert_eq!(a.status, 200, "a request failed during the update: {}", a.text);
            assert_eq!(a.json["choices"][0]["text"], want_text);
            names.push(a.header("served-model-name").unwrap().to_string());
        }
        seen.push(names);
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
    assert!(seen.iter().flatten().all(|n| n == "old" || n == "new"), "{seen:?}");
    // Once a request got `new`, no request sent after it got `old`. The four requests of one
    // round are concurrent, so the server may route them in any order: a round may mix the two,
    // every later round is all `new`.
    if let Some(first_new) = seen.iter().position(|round| round.iter().any(|n| n == "new")) {
        assert!(seen[first_new + 1..].iter().flatten().all(|n| n == "new"), "{seen:?}");
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

// Scale to zero

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
