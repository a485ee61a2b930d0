//! The official `openai` Python package against the real server: chat, completions,
//! streaming, models and a 400 (tools/openai_client_check.py does the talking).
//! Needs KEEL_OPENAI_PYTHON (a python with `openai`; tools/test.sh installs one).

mod serve_common;

use serve_common::Server;
use std::path::Path;
use std::process::Command;

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
    let server = Server::spawn_with_env(&[], &[("KEEL_API_KEYS", "sk-keel-test")]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/openai_client_check.py");
    for model in ["default", "llama_gqa_tied"] {
        let out = Command::new(&python)
            .arg(&script)
            .args([server.base.as_str(), model, "sk-keel-test"])
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
