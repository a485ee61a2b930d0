//! Load: many concurrent connections against the real server for a while; only
//! 2xx / 429 / 503 may come back, `/health/ready` keeps answering 200, and the
//! server's resident memory stays bounded.
//!
//! Ignored by default (it runs for 30 s); run it with
//! `cargo test --release --test serve_load -- --ignored --nocapture`
//! (KEEL_LOAD_CONNECTIONS, default 1000; KEEL_LOAD_SECS, default 30; KEEL_LOAD_MODEL,
//! default the tiny fixture). It prints the figures the closing note reports.

mod serve_common;

use serve_common::Server;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn rss_bytes(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap_or_default();
    s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()).unwrap_or(0) * 4096
}

#[test]
#[ignore = "30 s load run; see the module doc"]
fn thousand_connections_stay_bounded() {
    let conns = env_or("KEEL_LOAD_CONNECTIONS", 1000) as usize;
    let secs = env_or("KEEL_LOAD_SECS", 30);
    let model = std::env::var("KEEL_LOAD_MODEL").unwrap_or_else(|_| serve_common::tiny_str());
    // The server's default thread count (one per CPU), as a user would run it.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).to_string();
    let server = Server::spawn(&["--model", &model, "--threads", &threads]);
    let (pid, url) = (server.pid(), server.base.clone());

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async move {
        server.wait_ready().await;
        let probe = reqwest::Client::new();
        let rss_start = rss_bytes(pid);
        let counts: Arc<[AtomicU64; 6]> = Arc::new(Default::default()); // 2xx, 429, 503, other, errors, tokens
        let deadline = Instant::now() + Duration::from_secs(secs);
        let client = reqwest::Client::builder().pool_max_idle_per_host(conns).build().expect("client");
        let mut tasks = Vec::new();
        for i in 0..conns {
            let (client, counts, url) = (client.clone(), counts.clone(), url.clone());
            tasks.push(tokio::spawn(async move {
                let body = serde_json::json!({
                    "messages": [{"role": "user", "content": format!("hello number {i}")}],
                    "max_tokens": 8, "temperature": 0.7, "seed": i,
                });
                while Instant::now() < deadline {
                    match client.post(format!("{url}/v1/chat/completions")).json(&body).send().await {
                        Ok(r) => {
                            let slot = match r.status().as_u16() {
                                200..=299 => 0,
                                429 => 1,
                                503 => 2,
                                _ => 3,
                            };
                            counts[slot].fetch_add(1, Ordering::Relaxed);
                            if let Ok(v) = r.json::<serde_json::Value>().await {
                                let n = v["usage"]["completion_tokens"].as_u64().unwrap_or(0);
                                counts[5].fetch_add(n, Ordering::Relaxed);
                            }
                            if slot != 0 {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                        Err(_) => {
                            counts[4].fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            }));
        }
        // Readiness and memory while the load runs.
        let (mut ready_ok, mut ready_bad, mut worst_ready, mut rss_max) = (0u64, 0u64, Duration::ZERO, rss_start);
        while Instant::now() < deadline {
            let t = Instant::now();
            let s = probe.get(format!("{url}/health/ready")).send().await.map(|r| r.status().as_u16());
            worst_ready = worst_ready.max(t.elapsed());
            if s.ok() == Some(200) {
                ready_ok += 1;
            } else {
                ready_bad += 1;
            }
            rss_max = rss_max.max(rss_bytes(pid));
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        for t in tasks {
            let _ = t.await;
        }
        let c: Vec<u64> = counts.iter().map(|a| a.load(Ordering::Relaxed)).collect();
        let total = c[0] + c[1] + c[2] + c[3];
        println!(
            "load: {conns} connections for {secs}s: {total} responses ({:.0}/s): 2xx {} (completion tokens {}), 429 {}, 503 {}, other {}, transport errors {}",
            total as f64 / secs as f64,
            c[0],
            c[5],
            c[1],
            c[2],
            c[3],
            c[4]
        );
        println!(
            "load: /health/ready 200 {ready_ok} times, not 200 {ready_bad} times, slowest {:.1} ms; server RSS {:.0} MiB at start, max {:.0} MiB",
            worst_ready.as_secs_f64() * 1e3,
            rss_start as f64 / 1048576.0,
            rss_max as f64 / 1048576.0
        );
        assert_eq!(c[3], 0, "only 2xx, 429 and 503 may come back");
        assert_eq!(ready_bad, 0, "/health/ready must keep answering 200 under load");
        assert!(c[0] > 0, "no request succeeded");
        assert!(rss_max < rss_start + 1024 * 1048576, "RSS grew by more than 1 GiB");
    });
}
