//! Test assets shared by the integration tests: where they live and the skip rule.
//!
//! Assets that are fetched rather than committed (the pulled SmolLM2 GGUF, llama.cpp's
//! vocab files) are skipped with a message when missing, unless
//! `KEEL_REQUIRE_TEST_ASSETS=1` (set by tools/test.sh and CI), which makes them failures.

#![allow(dead_code)]

use keel_runtime::engine::{Completion, Engine, EngineConfig, GenerationRequest};
use keel_runtime::loader::LoadedModel;
use keel_runtime::sampling::SamplingParams;
use std::path::PathBuf;
use std::sync::Arc;

pub fn keel_home() -> PathBuf {
    if let Some(h) = std::env::var_os("KEEL_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    home.join(".cache").join("keel")
}

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

pub const MODEL_HINT: &str = "run `runtime pull smollm2`, or set KEEL_SMOLLM2_GGUF / KEEL_HOME";

/// The pulled SmolLM2-135M-Instruct GGUF.
pub fn smollm2_path() -> PathBuf {
    match std::env::var_os("KEEL_SMOLLM2_GGUF") {
        Some(p) => PathBuf::from(p),
        None => keel_home().join("models").join("smollm2").join("SmolLM2-135M-Instruct.Q4_1.gguf"),
    }
}

/// `Some(path)` when present; otherwise a skip message, or a failure when assets are required.
pub fn asset(path: PathBuf, what: &str, hint: &str) -> Option<PathBuf> {
    if path.exists() {
        return Some(path);
    }
    let msg = format!("{what}: {} not found ({hint})", path.display());
    if std::env::var("KEEL_REQUIRE_TEST_ASSETS").as_deref() == Ok("1") {
        panic!("{msg}; KEEL_REQUIRE_TEST_ASSETS=1");
    }
    eprintln!("SKIP {msg}");
    None
}

/// Greedy params producing exactly `n` tokens (EOS ignored), as the references do.
pub fn greedy(n: usize) -> SamplingParams {
    SamplingParams { temperature: 0.0, max_tokens: n, ignore_eos: true, ..SamplingParams::default() }
}

/// Starts an engine on `loaded`.
pub fn engine(loaded: LoadedModel, cfg: EngineConfig) -> Engine {
    Engine::start(loaded.model, Arc::new(loaded.tokenizer), cfg).expect("engine starts")
}

/// Submits every request at once and waits for all of them, in order.
pub fn run_all(engine: &Engine, reqs: Vec<GenerationRequest>) -> Vec<Completion> {
    let streams: Vec<_> = reqs.into_iter().map(|r| engine.handle.submit(r).expect("submit")).collect();
    streams.into_iter().map(|s| s.collect_blocking(&mut |_| {}).expect("completion")).collect()
}
