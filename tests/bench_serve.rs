//! `runtime bench serve` exit codes, through the built binary (no server needed).

use std::process::Command;

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_runtime")).args(["bench", "serve"]).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn connection_refused_is_one_line_and_exit_1() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (code, err) = run(&["--url", &format!("http://127.0.0.1:{port}"), "--num-prompts", "2"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.starts_with("error: cannot connect to http://127.0.0.1:"), "{err}");
}

#[test]
fn bad_usage_is_exit_2() {
    for bad in [
        &["--url", "http://127.0.0.1:1", "--request-rate", "0"][..],
        &["--url", "127.0.0.1:1"],
        &["--url", "http://127.0.0.1:1", "--num-prompts", "0"],
        &["--url", "http://127.0.0.1:1", "--goodput", "ttft:x"],
        &["--url", "http://127.0.0.1:1", "--dataset", "/nonexistent/keel-prompts.jsonl"],
    ] {
        let (code, err) = run(bad);
        assert_eq!(code, 2, "{bad:?}: {err}");
    }
}
