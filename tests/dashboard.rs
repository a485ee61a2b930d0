//! The `/dashboard` page end to end: the real `runtime serve` (tiny model, an API key in
//! `KEEL_API_KEYS`; for the browser test one endpoint splitting traffic 80/20 between a
//! registry model served by alias and a plain path) and a real headless Chromium driven by
//! `tools/browser/dashboard_check.mjs` (playwright-core over the DevTools protocol):
//! the page asks for the token, lists the endpoint and its entity, streams playground
//! answers with token counts and timings, draws live-metrics charts with data points,
//! shows an inference table's profile and drift metrics in the Monitoring tab (a table
//! written with keel-monitor's Parquet code, metrics computed by the real `runtime monitor
//! profile` / `drift`), and saves a screenshot of each tab.
//!
//! Needs node, Chromium (`/usr/bin/chromium` or `KEEL_CHROMIUM`) and
//! `tools/browser/node_modules` (`npm ci` there); tools/test.sh installs them. Without
//! them the browser test skips, unless `KEEL_REQUIRE_TEST_ASSETS=1` (then it fails).
//! Screenshots go to `KEEL_SCREENSHOT_DIR` when set (`docs/screenshots` refreshes the
//! committed ones), else under the target directory.

mod serve_common;

use keel_monitor::inference_table::parquet_part::{part_path, write_part};
use keel_monitor::inference_table::{InferenceRecord, RequestMetadata};
use serve_common::{config_file, scratch, tiny_str, Server};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "sk-keel-dashboard-test";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch `$KEEL_HOME` with the tiny model registered as `tiny-chat` v1, alias
/// `champion`, and an endpoints file serving it at 80% beside the plain path at 20%.
fn registry_and_config() -> (PathBuf, PathBuf) {
    let home = scratch("dashboard-home");
    std::fs::create_dir_all(&home).expect("scratch KEEL_HOME");
    let out = Command::new(env!("CARGO_BIN_EXE_runtime"))
        .args(["registry", "register", "--name", "tiny-chat", "--path", &tiny_str(), "--alias", "champion"])
        .env("KEEL_HOME", &home)
        .output()
        .expect("runtime registry runs");
    assert!(out.status.success(), "register: {}", String::from_utf8_lossy(&out.stderr));
    let config = config_file(&format!(
        r#"
[[endpoints]]
name = "default"
rate_limits = [{{ calls = 6000, key = "user", renewal_period = "minute" }}]
tags = [{{ key = "team", value = "playground" }}]
[[endpoints.config.served_entities]]
name = "champion"
entity_name = "tiny-chat"
entity_version = "champion"
[[endpoints.config.served_entities]]
name = "challenger"
entity_name = "{}"
max_concurrency = 8
scale_to_zero_enabled = true
[[endpoints.config.traffic_config.routes]]
served_entity_name = "champion"
traffic_percentage = 80
[[endpoints.config.traffic_config.routes]]
served_entity_name = "challenger"
traffic_percentage = 20
"#,
        tiny_str()
    ));
    (home, config)
}

/// Requests in the two windows of the demo inference table (the latter is the latest).
const DEMO_ROWS: [usize; 2] = [12, 8];

/// `$KEEL_HOME/tables/demo_payload`: an hour of short prompts then an hour of long ones
/// (2026-11-02 10:00 and 11:00 UTC), profiled and drift-checked by hourly windows with the
/// real `runtime monitor`.
fn demo_inference_table(home: &Path) {
    let table = home.join("tables/demo_payload");
    let t0: i64 = 20_759 * 86_400_000 + 10 * 3_600_000;
    for (hour, &n) in DEMO_ROWS.iter().enumerate() {
        let recs: Vec<InferenceRecord> = (0..n)
            .map(|i| {
                let words = if hour == 0 { 4 + i % 5 } else { 60 + 3 * i };
                let prompt = vec!["token"; words].join(" ");
                InferenceRecord {
                    databricks_request_id: format!("req-{hour}-{i}"),
                    client_request_id: None,
                    timestamp_ms: t0 + hour as i64 * 3_600_000 + i as i64 * 60_000,
                    status_code: if i == 0 { 429 } else { 200 },
                    execution_time_ms: 40 + 5 * words as i64,
                    sampling_fraction: 1.0,
                    request: serde_json::json!({"messages": [{"role": "user", "content": prompt}]}).to_string(),
                    response: serde_json::json!({"choices": [{"message": {"role": "assistant", "content": "A short answer."}, "finish_reason": "stop"}]}).to_string(),
                    request_metadata: RequestMetadata {
                        endpoint_name: "default".into(),
                        model_name: Some("tiny-chat".into()),
                        model_version: Some("1".into()),
                        served_entity_name: Some("champion".into()),
                        response_mean_logprob: Some(-1.25),
                    },
                    prompt_tokens: Some(words as i32 + 6),
                    completion_tokens: Some(4),
                    ttft_ms: Some(12),
                }
            })
            .collect();
        let refs: Vec<&InferenceRecord> = recs.iter().collect();
        write_part(&part_path(&table, recs[0].date_days(), &format!("h{hour}")), &refs).expect("demo part");
    }
    for cmd in ["profile", "drift"] {
        let out = Command::new(env!("CARGO_BIN_EXE_runtime"))
            .args(["monitor", cmd, "--table", "demo_payload", "--granularity", "1 hour"])
            .env("KEEL_HOME", home)
            .output()
            .expect("runtime monitor runs");
        assert!(out.status.success(), "monitor {cmd}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// node, Chromium and playwright-core, or why not.
fn browser_tools() -> Result<(String, PathBuf), String> {
    let node = std::env::var("KEEL_NODE").unwrap_or_else(|_| "node".into());
    match Command::new(&node).arg("--version").output() {
        Ok(o) if o.status.success() => {}
        _ => return Err(format!("{node} (node) is not runnable; set KEEL_NODE or install node")),
    }
    let chromium = PathBuf::from(std::env::var("KEEL_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    if !chromium.exists() {
        return Err(format!("{} is missing (apt-get install chromium, or set KEEL_CHROMIUM)", chromium.display()));
    }
    if !repo().join("tools/browser/node_modules/playwright-core/package.json").exists() {
        return Err("tools/browser/node_modules is missing (run `npm ci` in tools/browser)".into());
    }
    Ok((node, chromium))
}

#[tokio::test]
async fn dashboard_is_open_but_its_data_is_not() {
    let s = Server::spawn_with_env(&[], &[("KEEL_API_KEYS", TOKEN)]);
    s.wait_ready().await;
    let r = s.client.get(s.url("/dashboard")).send().await.expect("GET /dashboard");
    assert_eq!(r.status(), 200);
    let ct = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    assert_eq!(ct, "text/html; charset=utf-8");
    let html = r.text().await.expect("body");
    assert!(html.contains("/dashboard/app.js") && !html.contains(TOKEN));
    for (path, ct) in [("/dashboard/app.js", "text/javascript"), ("/dashboard/style.css", "text/css")] {
        let r = s.client.get(s.url(path)).send().await.expect("GET asset");
        assert_eq!(r.status(), 200, "{path}");
        let got = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
        assert!(got.starts_with(ct), "{path}: {got}");
    }
    for path in ["/metrics", "/api/2.0/serving-endpoints", "/api/2.0/keel/monitoring", "/v1/models"] {
        assert_eq!(s.get_text(path).await.0, 401, "{path} needs the token");
        assert_eq!(s.get_text_with(path, TOKEN).await.0, 200, "{path} with the token");
    }
}

#[tokio::test]
async fn dashboard_in_headless_chromium() {
    let (node, chromium) = match browser_tools() {
        Ok(t) => t,
        Err(why) => {
            assert!(std::env::var("KEEL_REQUIRE_TEST_ASSETS").as_deref() != Ok("1"), "{why}");
            eprintln!("skipping the browser test: {why}");
            return;
        }
    };
    let shots = match std::env::var("KEEL_SCREENSHOT_DIR") {
        Ok(d) => repo().join(d),
        Err(_) => Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots"),
    };
    let (home, config) = registry_and_config();
    demo_inference_table(&home);
    let home = home.to_str().expect("utf-8 path");
    let s = Server::spawn_with_env(
        &["--config", config.to_str().expect("utf-8 path")],
        &[("KEEL_API_KEYS", TOKEN), ("KEEL_HOME", home)],
    );
    s.wait_ready().await;
    let started = Instant::now();
    let mut child = Command::new(&node)
        .arg(repo().join("tools/browser/dashboard_check.mjs"))
        .args([s.base.as_str(), TOKEN])
        .arg(&shots)
        .env("KEEL_CHROMIUM", &chromium)
        .env("KEEL_MONITOR_TABLE", "demo_payload")
        .env("KEEL_MONITOR_LATEST_ROWS", DEMO_ROWS[1].to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node starts");
    // The script has its own timeouts; this only guards against a hung browser.
    let limit = Duration::from_secs(240);
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break Some(st);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(status.is_some(), "the browser script ran past {limit:?}");
    assert!(status.is_some_and(|s| s.success()), "the browser checks failed:\n{stdout}\n{stderr}");
    eprintln!("dashboard checks passed in {:.1}s: {stdout}", started.elapsed().as_secs_f64());
    for name in ["token", "endpoints", "playground", "metrics", "monitoring"] {
        let p = shots.join(format!("dashboard-{name}.png"));
        let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        assert!(len > 1000, "screenshot {} written", p.display());
    }
}
