//! The official MLflow Python client (`mlflow-skinny`'s `MlflowClient`) against the
//! server's registry REST API: create, versions, aliases, tags, search, delete, errors
//! (tools/mlflow_client_check.py does the talking, with a bearer token as
//! `MLFLOW_TRACKING_TOKEN`). Needs KEEL_MLFLOW_PYTHON (a python with mlflow-skinny;
//! tools/test.sh installs one).

mod serve_common;

use serve_common::{scratch, tiny_str, Server};
use std::path::Path;
use std::process::Command;

#[test]
fn official_mlflow_python_client_works() {
    let python = match std::env::var("KEEL_MLFLOW_PYTHON") {
        Ok(p) => p,
        Err(_) => {
            assert!(
                std::env::var("KEEL_REQUIRE_TEST_ASSETS").as_deref() != Ok("1"),
                "KEEL_MLFLOW_PYTHON is not set (tools/test.sh installs mlflow-skinny)"
            );
            eprintln!("skipping: KEEL_MLFLOW_PYTHON not set");
            return;
        }
    };
    let home = scratch("mlflow-home");
    std::fs::create_dir_all(&home).unwrap();
    let home_s = home.to_str().unwrap().to_string();
    let server = Server::spawn_with_env(&[], &[("KEEL_API_KEYS", "sk-keel-test"), ("KEEL_HOME", home_s.as_str())]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/mlflow_client_check.py");
    let second = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny/llama_gguf_q");
    let out = Command::new(&python)
        .arg(&script)
        .args([server.base.as_str(), &tiny_str(), second.to_str().unwrap()])
        .env("MLFLOW_TRACKING_TOKEN", "sk-keel-test")
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "mlflow client:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
}
