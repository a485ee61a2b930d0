//! End-to-end: the real `runtime` binary, on a tiny fixture model and (when pulled)
//! the default model. Checks output contracts and exit codes (SPEC §1).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_runtime"))
}

fn tiny() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny/llama_gqa_tied")
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("runtime runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The pulled default model, if this machine has it (see tools/test.sh).
fn default_model() -> Option<PathBuf> {
    let home = std::env::var_os("KEEL_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/keel"));
    let p = home.join("models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    if p.is_file() {
        return Some(p);
    }
    assert!(
        std::env::var("KEEL_REQUIRE_TEST_ASSETS").as_deref() != Ok("1"),
        "{} is missing (run `runtime pull smollm2`)",
        p.display()
    );
    eprintln!("skipping: {} not pulled", p.display());
    None
}

#[test]
fn version_names_commit_and_features() {
    let o = run(&["--version"]);
    assert!(o.status.success());
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(s.starts_with("runtime ") && s.contains("git ") && s.contains("features"), "{s}");
}

#[test]
fn generate_json_is_one_object_with_the_contract_fields() {
    let m = tiny();
    let o = run(&[
        "generate",
        "--model",
        m.to_str().expect("utf8"),
        "--prompt",
        "the cat",
        "--max-tokens",
        "7",
        "--ignore-eos",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8(o.stdout).expect("utf8");
    let v: Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {stdout}"));
    assert_eq!(v["completion_ids"].as_array().map(|a| a.len()), Some(7));
    assert!(!v["prompt_ids"].as_array().expect("prompt_ids").is_empty());
    assert_eq!(v["finish_reason"], "length");
    assert!(v["text"].is_string());
    assert!(v["prefill_tokens_per_s"].as_f64().expect("prefill rate") > 0.0);
    assert!(v["decode_tokens_per_s"].as_f64().expect("decode rate") > 0.0);
}

#[test]
fn generate_streams_the_same_text_it_reports_in_json() {
    let m = tiny();
    let args = [
        "generate",
        "--model",
        m.to_str().expect("utf8"),
        "--prompt",
        "hello there",
        "--max-tokens",
        "12",
        "--ignore-eos",
    ];
    let streamed = run(&args);
    assert!(streamed.status.success(), "{}", stderr(&streamed));
    let mut json_args = args.to_vec();
    json_args.push("--json");
    let j: Value = serde_json::from_slice(&run(&json_args).stdout).expect("json");
    let text = String::from_utf8(streamed.stdout).expect("utf8");
    assert_eq!(text.strip_suffix('\n').expect("ends with a newline"), j["text"].as_str().expect("text"));
}

#[test]
fn bad_input_exits_2_with_one_clear_line() {
    let m = tiny();
    let m = m.to_str().expect("utf8");
    let cases: &[(&[&str], &str)] = &[
        (&["generate", "--model", "/no/such/model", "--prompt", "x"], "/no/such/model"),
        (&["generate", "--model", m, "--prompt", "x", "--temperature", "NaN"], "temperature"),
        (&["generate", "--model", m, "--prompt", "x", "--top-p", "0"], "top_p"),
        (&["generate", "--model", m, "--prompt", "x", "--top-k", "-5"], "top_k"),
        (&["generate", "--model", m, "--prompt", "x", "--max-tokens", "100000"], "max_tokens"),
        (&["generate", "--model", m, "--prompt", ""], "prompt"),
        (&["generate", "--model", "models:/summarizer@champion", "--prompt", "x"], "\"summarizer\" does not exist"),
        (&["generate", "--model", m], "--prompt"),
        (&["frobnicate"], "frobnicate"),
        (&["pull", "no-such-model"], "no-such-model"),
        (&["bench", "--model", m, "-p", "100000"], "context"),
    ];
    for (args, needle) in cases {
        let o = run(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(e.contains(needle), "{args:?}: stderr does not mention {needle:?}: {e}");
        assert!(!e.contains("panicked"), "{args:?} panicked: {e}");
    }
}

#[test]
fn a_corrupt_model_file_is_an_error_not_a_panic() {
    let dir = std::env::temp_dir().join(format!("keel-cli-corrupt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let f = dir.join("broken.gguf");
    std::fs::write(&f, b"GGUF\x03\x00\x00\x00garbage").expect("write");
    let o = run(&["generate", "--model", f.to_str().expect("utf8"), "--prompt", "x"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("GGUF"), "{}", stderr(&o));
}

#[test]
fn bench_json_reports_both_rates() {
    let m = tiny();
    let o = run(&["bench", "--model", m.to_str().expect("utf8"), "-p", "32", "-n", "8", "-r", "2", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert!(v["prefill_tokens_per_s"].as_f64().expect("prefill") > 0.0);
    assert!(v["decode_tokens_per_s"].as_f64().expect("decode") > 0.0);
    assert_eq!(v["prefill_samples"].as_array().map(|a| a.len()), Some(2));
    assert_eq!(v["matmul_precision"], "highest", "the default");
    assert_eq!(v["kv_cache_dtype"], "f32", "the default");
}

#[test]
fn kv_cache_dtype_runs_and_says_so() {
    let m = tiny();
    let m = m.to_str().expect("utf8");
    let g = run(&[
        "generate",
        "--model",
        m,
        "--prompt",
        "hello",
        "--max-tokens",
        "5",
        "--ignore-eos",
        "--json",
        "--kv-cache-dtype",
        "bf16",
    ]);
    assert!(g.status.success(), "{}", stderr(&g));
    let v: Value = serde_json::from_slice(&g.stdout).expect("json");
    assert_eq!(v["completion_ids"].as_array().map(|a| a.len()), Some(5), "{v}");
    let b = run(&["bench", "--model", m, "-p", "20", "-n", "4", "-r", "1", "--json", "--kv-cache-dtype", "bf16"]);
    assert!(b.status.success(), "{}", stderr(&b));
    let v: Value = serde_json::from_slice(&b.stdout).expect("one JSON object");
    assert_eq!(v["kv_cache_dtype"], "bf16");
    // The engine gets the dtype: the same byte budget holds twice the blocks in BF16.
    let offline = |dtype: &str| {
        let o = run(&[
            "bench",
            "offline",
            "--model",
            m,
            "--num-prompts",
            "3",
            "--input-len",
            "20",
            "--output-len",
            "4",
            "--json",
            "--kv-cache-mem",
            "1MiB",
            "--kv-cache-dtype",
            dtype,
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
        assert_eq!(v["kv_cache_dtype"], dtype);
        assert!(v["output_tokens_per_s"].as_f64().expect("rate") > 0.0);
        v["kv_cache_blocks"].as_u64().expect("blocks")
    };
    let (f32_blocks, bf16_blocks) = (offline("f32"), offline("bf16"));
    assert!(f32_blocks > 0 && bf16_blocks / 2 == f32_blocks, "f32 {f32_blocks} blocks, bf16 {bf16_blocks}");
    let f = run(&["bench", "--model", m, "-p", "20", "-n", "4", "-r", "1", "--json", "--kv-cache-dtype", "f16"]);
    assert!(f.status.success(), "{}", stderr(&f));
    let v: Value = serde_json::from_slice(&f.stdout).expect("one JSON object");
    assert_eq!(v["kv_cache_dtype"], "f16");
    let bad = run(&["generate", "--model", m, "--prompt", "x", "--kv-cache-dtype", "fp8"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("kv-cache-dtype"), "{}", stderr(&bad));
}

/// A copy of the tiny fixture with every tensor stored as BF16 (rounded to nearest even).
fn tiny_bf16() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keel-cli-bf16-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    for f in std::fs::read_dir(tiny()).expect("fixture") {
        let f = f.expect("entry").path();
        if f.file_name().is_some_and(|n| n != "model.safetensors") {
            std::fs::copy(&f, dir.join(f.file_name().expect("name"))).expect("copy");
        }
    }
    let bytes = std::fs::read(tiny().join("model.safetensors")).expect("weights");
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header: serde_json::Map<String, Value> = serde_json::from_slice(&bytes[8..8 + n]).expect("header");
    let data = &bytes[8 + n..];
    let mut names: Vec<&String> = header.keys().filter(|k| *k != "__metadata__").collect();
    names.sort_by_key(|k| header[*k]["data_offsets"][0].as_u64());
    let (mut out_header, mut out_data) = (serde_json::Map::new(), Vec::new());
    for name in names {
        let t = &header[name];
        assert_eq!(t["dtype"], "F32", "{name}");
        let (b, e) =
            (t["data_offsets"][0].as_u64().expect("b") as usize, t["data_offsets"][1].as_u64().expect("e") as usize);
        let start = out_data.len();
        for c in data[b..e].chunks_exact(4) {
            let bits = u32::from_le_bytes(c.try_into().expect("4 bytes"));
            out_data.extend_from_slice(&(((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) as u16).to_le_bytes());
        }
        out_header.insert(
            name.clone(),
            serde_json::json!({"dtype": "BF16", "shape": t["shape"], "data_offsets": [start, out_data.len()]}),
        );
    }
    let h = serde_json::to_vec(&out_header).expect("json");
    let mut file = (h.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&h);
    file.extend_from_slice(&out_data);
    std::fs::write(dir.join("model.safetensors"), file).expect("write");
    dir
}

#[test]
fn matmul_precision_medium_runs_bf16_weights_and_says_so() {
    let dir = tiny_bf16();
    let m = dir.to_str().expect("utf8");
    for p in ["highest", "medium"] {
        let o = run(&[
            "generate",
            "--model",
            m,
            "--prompt",
            "hello there",
            "--max-tokens",
            "6",
            "--ignore-eos",
            "--json",
            "--matmul-precision",
            p,
        ]);
        assert!(o.status.success(), "{p}: {}", stderr(&o));
        let v: Value = serde_json::from_slice(&o.stdout).expect("json");
        assert_eq!(v["completion_ids"].as_array().map(|a| a.len()), Some(6), "{p}: {v}");
    }
    // The precision in effect: CPUs without AVX512-BF16 stay exact, and so do those where
    // BF16 dot products do not outrun f32 FMAs (measured at start; `KEEL_BF16_DOT` = 1 or 0
    // overrides the measurement, so both outcomes are checked here).
    #[cfg(target_arch = "x86_64")]
    let bf16 = std::is_x86_feature_detected!("avx512bf16");
    #[cfg(not(target_arch = "x86_64"))]
    let bf16 = false;
    for (force, medium) in [("1", bf16), ("0", false)] {
        let o = bin()
            .args(["bench", "--model", m, "-p", "40", "-n", "4", "-r", "1", "--json", "--matmul-precision", "medium"])
            .env("KEEL_BF16_DOT", force)
            .output()
            .expect("runtime runs");
        assert!(o.status.success(), "{}", stderr(&o));
        let v: Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
        assert_eq!(v["matmul_precision"], if medium { "medium" } else { "highest" }, "KEEL_BF16_DOT={force}");
        if bf16 && !medium {
            assert!(stderr(&o).contains("runs the exact kernels"), "{}", stderr(&o));
        }
    }
    let bad = run(&["generate", "--model", m, "--prompt", "x", "--matmul-precision", "low"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("matmul-precision"), "{}", stderr(&bad));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_offline_json_reports_throughput_and_latency() {
    let m = tiny();
    let o = run(&[
        "bench",
        "offline",
        "--model",
        m.to_str().expect("utf8"),
        "--num-prompts",
        "6",
        "--input-len",
        "20",
        "--output-len",
        "5",
        "--concurrency",
        "4",
        "--max-num-batched-tokens",
        "32",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    for k in [
        "output_tokens_per_s",
        "total_tokens_per_s",
        "ttft_ms_p50",
        "tpot_ms_p50",
        "prefill_tokens_per_s",
        "decode_tokens_per_s",
    ] {
        assert!(v[k].as_f64().is_some_and(|x| x > 0.0), "{k}: {}", v[k]);
    }
    assert_eq!(v["output_tokens"], 30, "6 requests x 5 tokens");
    let bad = run(&["bench", "offline", "--model", m.to_str().expect("utf8"), "--kv-cache-fraction", "3"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
}

#[test]
fn default_model_chat_answers_in_english() {
    let Some(model) = default_model() else { return };
    let o = run(&[
        "generate",
        "--model",
        model.to_str().expect("utf8"),
        "--chat",
        "--prompt",
        "What is the capital of France?",
        "--max-tokens",
        "24",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("json");
    let text = v["text"].as_str().expect("text");
    assert!(text.contains("Paris"), "SmolLM2 should know this one: {text:?}");
    assert!(!text.contains("<|im_end|>"), "special tokens are not text: {text:?}");
}
