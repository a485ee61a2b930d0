//! The `/dashboard` page end to end: the real `runtime serve` (tiny model, an API key in
//! `KEEL_API_KEYS`; for the browser test one endpoint splitting traffic 80/20 between a
//! registry model served by alias and a plain path) and a real headless Chromium driven by
//! `tools/browser/dashboard_check.mjs` (playwright-core over the DevTools protocol):
//! the page asks for the token, lists the endpoint and its entity, streams playground
//! answers with token counts and timings, draws live-metrics charts with data points,
//! shows the Monitoring tab's empty state, and saves a screenshot of each tab.
//!
//! Needs node, Chromium (`/usr/bin/chromium` or `KEEL_CHROMIUM`) and
//! `tools/browser/node_modules` (`npm ci` there); tools/test.sh installs them. Without
//! them the browser test skips, unless `KEEL_REQUIRE_TEST_ASSETS=1` (then it fails).
//! Screenshots go to `KEEL_SCREENSHOT_DIR` when set (`docs/screenshots` refreshes the
//! committed ones), else under the target directory.

mod serve_common;

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
