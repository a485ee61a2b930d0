//! The `/dashboard` page end to end: the real `runtime serve` (tiny model, an API key in
//! `KEEL_API_KEYS`) and a real headless Chromium driven by
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

use serve_common::Server;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "sk-keel-dashboard-test";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
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
    let s = Server::spawn_with_env(&[], &[("KEEL_API_KEYS", TOKEN)]);
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
