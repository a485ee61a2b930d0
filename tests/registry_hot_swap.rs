//! End to end: an endpoint serving `models:/m@champion` follows the alias when it moves,
//! without failing a request (SPEC §2 config updates, §3 aliases).
//!
//! Two tiny models are registered as versions 1 and 2 of `m` in a scratch `$KEEL_HOME`;
//! the server runs with a short `--alias-poll`. Four clients send requests back to back
//! the whole time. The alias is moved to v2 by another process (`runtime registry alias
//! set`, seen by polling), then back to v1 through the server's MLflow REST API (followed
//! at once). Every request must succeed, carry `served-model-name: m-champion`, and its
//! `served-model-version` must go 1 → 2 → 1 with no request answered by an older version
//! after a client has seen a newer one.

mod serve_common;

use serde_json::json;
use serve_common::{scratch, Server};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny").join(name)
}

fn registry(home: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_runtime"))
        .arg("registry")
        .args(args)
        .env("KEEL_HOME", home)
        .output()
        .expect("runtime registry runs");
    assert!(
        out.status.success(),
        "runtime registry {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One answer: (status, served-model-name, served-model-version).
type Seen = (u16, String, Option<u64>);

async fn client_loop(s: Arc<Server>, stop: Arc<AtomicBool>, log: Arc<Mutex<Vec<Seen>>>) -> Vec<Seen> {
    let mut mine = Vec::new();
    while !stop.load(Ordering::Acquire) {
        let a = s
            .post(
                "/v1/completions",
                &json!({"prompt": "hello", "max_tokens": 16, "temperature": 0, "ignore_eos": true}),
            )
            .await;
        let header = |k: &str| a.headers.get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
        let seen = (
            a.status,
            header("served-model-name").unwrap_or_default(),
            header("served-model-version").and_then(|v| v.parse().ok()),
        );
        log.lock().unwrap().push(seen.clone());
        mine.push(seen);
    }
    mine
}

/// Waits until `n` answers from version `v` have arrived after `from` answers.
async fn wait_for_version(log: &Mutex<Vec<Seen>>, from: usize, v: u64, n: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let count = log.lock().unwrap()[from..].iter().filter(|s| s.2 == Some(v)).count();
        if count >= n {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: fewer than {n} answers from v{v} within 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn endpoint_follows_a_moving_alias_without_failing_a_request() {
    let home = scratch("registry-home");
    std::fs::create_dir_all(&home).unwrap();
    let v1 = fixture("llama_gqa_tied");
    let v2 = fixture("llama_untied_llama3rope");
    registry(&home, &["register", "--name", "m", "--path", v1.to_str().unwrap(), "--alias", "champion"]);
    registry(&home, &["register", "--name", "m", "--path", v2.to_str().unwrap()]);

    let home_s = home.to_str().unwrap().to_string();
    let s = Arc::new(Server::spawn_with_env(
        &["--model", "models:/m@champion", "--alias-poll", "0.2"],
        &[("KEEL_HOME", home_s.as_str())],
    ));
    s.wait_ready().await;
    let (status, ep) = s.get_json("/api/2.0/serving-endpoints/default").await;
    assert_eq!(status, 200);
    assert_eq!(ep["config"]["served_entities"][0]["resolved_version"], "1", "{ep}");

    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..4).map(|_| tokio::spawn(client_loop(s.clone(), stop.clone(), log.clone()))).collect();

    wait_for_version(&log, 0, 1, 8, "before any move").await;
    // Moved by another process: the server sees it at its next poll.
    let mark = log.lock().unwrap().len();
    registry(&home, &["alias", "set", "m", "champion", "2"]);
    wait_for_version(&log, mark, 2, 8, "after `runtime registry alias set m champion 2`").await;

    // Moved through this server's REST API: followed at once.
    let mark = log.lock().unwrap().len();
    let a = s
        .post("/api/2.0/mlflow/registered-models/alias", &json!({"name": "m", "alias": "champion", "version": "1"}))
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    wait_for_version(&log, mark, 1, 8, "after POST registered-models/alias").await;

    stop.store(true, Ordering::Release);
    let mut per_client = Vec::new();
    for c in clients {
        per_client.push(c.await.expect("client loop"));
    }
    let all = log.lock().unwrap().clone();
    assert!(all.len() >= 24, "a steady stream of requests: {}", all.len());
    for (status, name, version) in &all {
        assert_eq!(*status, 200, "every request succeeds during the swaps");
        assert_eq!(name, "m-champion", "served-model-name names the entity");
        assert!(version.is_some(), "every answer says which version served it");
    }
    // Per client (its requests are sequential), versions change at most twice: 1 → 2 → 1.
    for (i, seen) in per_client.iter().enumerate() {
        let mut phases: Vec<u64> = Vec::new();
        for v in seen.iter().filter_map(|s| s.2) {
            if phases.last() != Some(&v) {
                phases.push(v);
            }
        }
        assert!(phases.len() <= 3 && phases.first() == Some(&1), "client {i} saw versions in order {phases:?}");
        assert!([vec![1], vec![1, 2], vec![1, 2, 1]].contains(&phases), "client {i}: {phases:?}");
    }

    let (_, ep) = s.get_json("/api/2.0/serving-endpoints/default").await;
    assert_eq!(ep["state"]["config_update"], "NOT_UPDATING", "{ep}");
    assert_eq!(ep["config"]["served_entities"][0]["resolved_version"], "1", "{ep}");
    assert_eq!(ep["config"]["served_entities"][0]["name"], "m-champion", "{ep}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_that_fails_to_load_leaves_the_old_one_serving() {
    let home = scratch("registry-home-bad");
    std::fs::create_dir_all(&home).unwrap();
    registry(
        &home,
        &["register", "--name", "m", "--path", fixture("llama_gqa_tied").to_str().unwrap(), "--alias", "champion"],
    );
    let out =
        registry(&home, &["register", "--name", "m", "--path", fixture("qwen2_bias").to_str().unwrap(), "--json"]);
    let v2: serde_json::Value = serde_json::from_str(&out).expect("--json output");
    // Corrupt v2's stored weights: its checksum no longer matches, so it must not load.
    let dir = PathBuf::from(v2["model_version"]["keel_artifact_path"].as_str().expect("artifact path"));
    let weights = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .expect("a safetensors file");
    let mut bytes = std::fs::read(&weights).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&weights, bytes).unwrap();

    let home_s = home.to_str().unwrap().to_string();
    let s = Server::spawn_with_env(
        &["--model", "models:/m@champion", "--alias-poll", "0.2"],
        &[("KEEL_HOME", home_s.as_str())],
    );
    s.wait_ready().await;
    let a = s
        .post("/api/2.0/mlflow/registered-models/alias", &json!({"name": "m", "alias": "champion", "version": 2}))
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let deadline = Instant::now() + Duration::from_secs(30);
    let ep = loop {
        let (_, ep) = s.get_json("/api/2.0/serving-endpoints/default").await;
        if ep["state"]["config_update"] == "UPDATE_FAILED" {
            break ep;
        }
        assert!(Instant::now() < deadline, "the failed swap shows UPDATE_FAILED: {ep}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let msg = ep["state"]["config_update_message"].as_str().unwrap_or_default();
    assert!(msg.contains("sha256") || msg.contains("checksum"), "the cause is named: {msg}");
    assert_eq!(ep["config"]["served_entities"][0]["resolved_version"], "1", "{ep}");
    let a = s.post("/v1/completions", &json!({"prompt": "hi", "max_tokens": 2})).await;
    assert_eq!(a.status, 200, "v1 keeps serving: {}", a.text);
    assert_eq!(a.headers.get("served-model-version").and_then(|v| v.to_str().ok()), Some("1"));
    assert_eq!(s.get_text("/health/ready").await.0, 200, "still ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_configs_name_versions_aliases_and_latest() {
    let home = scratch("registry-home-config");
    std::fs::create_dir_all(&home).unwrap();
    let tied = fixture("llama_gqa_tied");
    registry(&home, &["register", "--name", "m", "--path", tied.to_str().unwrap(), "--alias", "champion"]);
    registry(&home, &["register", "--name", "m", "--path", tied.to_str().unwrap()]);
    let home_s = home.to_str().unwrap().to_string();
    let s = Server::spawn_with_env(&[], &[("KEEL_HOME", home_s.as_str())]);
    s.wait_ready().await;
    let entity = |name: &str, version: &str| json!({"name": name, "entity_name": "m", "entity_version": version});
    let body = json!({
        "name": "reg",
        "config": {
            "served_entities": [entity("pinned", "1"), entity("alias", "champion"), entity("newest", "latest")],
            "traffic_config": {"routes": [
                {"served_entity_name": "pinned", "traffic_percentage": 34},
                {"served_entity_name": "alias", "traffic_percentage": 33},
                {"served_entity_name": "newest", "traffic_percentage": 33}
            ]}
        }
    });
    let a = s.post("/api/2.0/serving-endpoints", &body).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..6 {
        let a = s.post("/v1/completions", &json!({"model": "reg", "prompt": "hi", "max_tokens": 2})).await;
        assert_eq!(a.status, 200, "{}", a.text);
        let h = |k: &str| a.headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        seen.insert(h("served-model-name"), h("served-model-version"));
    }
    let expected: std::collections::BTreeMap<String, String> = [("alias", "1"), ("newest", "2"), ("pinned", "1")]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(seen, expected);

    // A missing alias or version fails that endpoint's creation visibly, not the server.
    let bad = json!({"name": "bad", "config": {"served_entities": [entity("x", "nope")]}});
    let a = s.post("/api/2.0/serving-endpoints", &bad).await;
    assert_eq!(a.status, 200, "created; the load fails in the background: {}", a.text);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, ep) = s.get_json("/api/2.0/serving-endpoints/bad").await;
        let e = &ep["config"]["served_entities"][0]["state"];
        if e["deployment"] == "DEPLOYMENT_FAILED" {
            let msg = e["deployment_state_message"].as_str().unwrap_or_default();
            assert!(msg.contains("nope"), "the missing alias is named: {msg}");
            break;
        }
        assert!(Instant::now() < deadline, "entity with a missing alias fails: {ep}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
