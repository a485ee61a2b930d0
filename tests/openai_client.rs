//! The official `openai` Python package against the real server: chat, completions,
//! streaming, models and a 400 (tools/openai_client_check.py does the talking).
//! Needs KEEL_OPENAI_PYTHON (a python with `openai`; tools/test.sh installs one).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `runtime serve` on the tiny fixture; returns it and its base URL.
fn start(api_keys: &str) -> (Server, String) {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny/llama_gqa_tied");
    let mut child = Command::new(env!("CARGO_BIN_EXE_runtime"))
        .args(["serve", "--port", "0", "--model", model.to_str().expect("utf8")])
        .env("KEEL_API_KEYS", api_keys)
        .stderr(Stdio::piped())
        .spawn()
        .expect("runtime serve starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let url = loop {
        let line = lines.next().expect("server printed its address").expect("utf8 stderr");
        if let Some(rest) = line.strip_prefix("listening on ") {
            break rest.trim().to_string();
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (Server(child), url)
}

#[test]
fn official_openai_python_client_works() {
    let python = match std::env::var("KEEL_OPENAI_PYTHON") {
        Ok(p) => p,
        Err(_) => {
            assert!(
                std::env::var("KEEL_REQUIRE_TEST_ASSETS").as_deref() != Ok("1"),
                "KEEL_OPENAI_PYTHON is not set (tools/test.sh installs the openai package)"
            );
            eprintln!("skipping: KEEL_OPENAI_PYTHON not set");
            return;
        }
    };
    let (_server, url) = start("sk-keel-test");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/openai_client_check.py");
    for model in ["default", "llama_gqa_tied"] {
        let out = Command::new(&python)
            .arg(&script)
            .args([url.as_str(), model, "sk-keel-test"])
            .output()
            .expect("python runs");
        assert!(
            out.status.success(),
            "openai client against model {model}:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
