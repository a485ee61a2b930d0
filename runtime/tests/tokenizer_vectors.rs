//! keel's GGUF tokenizer against llama.cpp's.
//!
//! 1. llama.cpp's own vectors (`models/ggml-vocab-<name>.gguf{,.inp,.out}`, fetched by
//!    `tools/fetch-test-assets.sh`), read and run as `tests/test-tokenizer-0.cpp` does
//!    (inputs split on `"\n__ggml_vocab_test__\n"`, one line of ids per input, no BOS),
//!    plus `tests/test-tokenizer-1-bpe.cpp`'s round trips: every token's text and every
//!    code point re-tokenize to the same text.
//! 2. The real SmolLM2-135M-Instruct GGUF (`tokenizer.ggml.pre = smollm`, no llama.cpp
//!    vocab file): ids from `llama-tokenize` committed in
//!    `tests/fixtures/tokenizer/smollm2_llamacpp.json` by
//!    `tools/make-smollm-tokenizer-vectors.py`, and its chat template.
//!
//! Missing files are skipped with a message, unless `KEEL_REQUIRE_TEST_ASSETS=1`.

use keel_runtime::chat_template::ChatMessage;
use keel_runtime::gguf::GgufFile;
use keel_runtime::tokenizer::Tokenizer;
use std::path::{Path, PathBuf};

mod common;
use common::{asset, keel_home, smollm2_path, MODEL_HINT};

/// The `tokenizer.ggml.pre` types keel supports that llama.cpp ships vectors for.
const VOCABS: &[&str] = &["gpt-2", "llama-bpe", "qwen2", "qwen35", "starcoder", "refact", "command-r", "mpt", "falcon"];

fn vocab_dir() -> PathBuf {
    match std::env::var_os("KEEL_VOCAB_DIR") {
        Some(d) => PathBuf::from(d),
        None => keel_home().join("test-assets").join("llama-vocab"),
    }
}

const VOCAB_HINT: &str = "run tools/fetch-test-assets.sh, or set KEEL_VOCAB_DIR / KEEL_HOME";
/// `.inp`/`.out` pairs, parsed like `read_tests` in llama.cpp's test-tokenizer-0.cpp.
fn read_vectors(gguf: &Path) -> Vec<(String, Vec<u32>)> {
    let inp_path = PathBuf::from(format!("{}.inp", gguf.display()));
    let out_path = PathBuf::from(format!("{}.out", gguf.display()));
    let raw = std::fs::read_to_string(&inp_path).expect("read .inp");
    let out = std::fs::read_to_string(&out_path).expect("read .out");
    const SEP: &str = "\n__ggml_vocab_test__\n";
    let mut inputs = Vec::new();
    let mut pos = 0;
    while pos < raw.len() {
        match raw[pos..].find(SEP) {
            Some(i) => {
                inputs.push(raw[pos..pos + i].to_string());
                pos += i + SEP.len();
            }
            None => {
                inputs.push(raw[pos..].to_string());
                break;
            }
        }
    }
    let outputs: Vec<Vec<u32>> =
        out.lines().map(|l| l.split_whitespace().map(|t| t.parse().expect("token id")).collect()).collect();
    assert_eq!(inputs.len(), outputs.len(), "{}: input and output counts differ", gguf.display());
    assert!(!inputs.is_empty(), "{}: no tests", gguf.display());
    inputs.into_iter().zip(outputs).collect()
}

fn load(path: &Path) -> Tokenizer {
    let g = GgufFile::open(path).expect("open GGUF");
    Tokenizer::from_gguf(&g).expect("tokenizer")
}

#[test]
fn llama_cpp_vocab_vectors() {
    let dir = vocab_dir();
    let mut failures = Vec::new();
    let mut checked = 0;
    for name in VOCABS {
        let Some(path) = asset(dir.join(format!("ggml-vocab-{name}.gguf")), name, VOCAB_HINT) else {
            continue;
        };
        let tok = load(&path);
        for (text, want) in read_vectors(&path) {
            let got = tok.encode(&text, false).expect("encode");
            if got != want {
                failures.push(format!("{name}: {text:?}\n   want {want:?}\n    got {got:?}"));
            }
            let back = tok.decode(&got, false).expect("decode");
            if back != text {
                failures.push(format!("{name}: decode(encode({text:?})) = {back:?}"));
            }
            checked += 1;
        }
    }
    eprintln!("checked {checked} llama.cpp vectors");
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

/// test-tokenizer-1-bpe.cpp: each token's text (when valid UTF-8) re-tokenizes to the
/// same text — to that one token where merges are ignored — and every code point
/// round-trips.
#[test]
fn llama_cpp_round_trips() {
    let dir = vocab_dir();
    for name in ["gpt-2", "llama-bpe", "qwen2"] {
        let Some(path) = asset(dir.join(format!("ggml-vocab-{name}.gguf")), name, VOCAB_HINT) else {
            continue;
        };
        let tok = load(&path);
        let ignore_merges = *name == *"llama-bpe";
        let mut failures = Vec::new();
        for id in 0..tok.vocab_size() as u32 {
            let text = tok.decode(&[id], false).expect("decode");
            if text.contains('\u{FFFD}') {
                continue; // a partial UTF-8 sequence; llama.cpp skips these too
            }
            let ids = tok.encode(&text, false).expect("encode");
            if ignore_merges && ids.len() > 1 {
                failures.push(format!("{id} {text:?} -> {ids:?}"));
            }
            let back = tok.decode(&ids, false).expect("decode");
            if back != text {
                failures.push(format!("{id} {text:?} -> {ids:?} -> {back:?}"));
            }
        }
        for cp in (0u32..0x11_0000).filter(|cp| !(0xD800..=0xDFFF).contains(cp)) {
            if (0x4_0000..=0xE_0000).contains(&cp) {
                continue;
            }
            let Some(c) = char::from_u32(cp) else {
                continue;
            };
            let s = c.to_string();
            let ids = tok.encode(&s, false).expect("encode");
            if tok.decode(&ids, false).expect("decode") != s {
                failures.push(format!("code point {cp:#x}"));
            }
        }
        assert!(
            failures.is_empty(),
            "{name}: {} round-trip failures, first: {:?}",
            failures.len(),
            &failures[..failures.len().min(10)]
        );
    }
}

#[derive(serde::Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    text: String,
    add_special: bool,
    ids: Vec<u32>,
}

#[test]
fn smollm2_matches_llama_tokenize() {
    let Some(path) = asset(smollm2_path(), "SmolLM2 GGUF", MODEL_HINT) else {
        return;
    };
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tokenizer/smollm2_llamacpp.json");
    let fx: Fixture = serde_json::from_slice(&std::fs::read(&fixture).expect("fixture")).expect("fixture JSON");
    assert!(fx.cases.len() >= 10);
    let tok = load(&path);
    let mut failures = Vec::new();
    for c in &fx.cases {
        let got = tok.encode(&c.text, c.add_special).expect("encode");
        if got != c.ids {
            failures.push(format!("{:?}\n   want {:?}\n    got {got:?}", c.text, c.ids));
        }
        assert_eq!(tok.decode(&got, false).expect("decode"), c.text);
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!(tok.bos_token_id(), Some(1));
    assert_eq!(tok.eos_token_ids()[0], 2);
}

#[test]
fn smollm2_chat_template() {
    let Some(path) = asset(smollm2_path(), "SmolLM2 GGUF", MODEL_HINT) else {
        return;
    };
    let tok = load(&path);
    let t = tok.chat_template().expect("SmolLM2 ships a chat template");
    let out = t.render(&[ChatMessage::new("user", "What is 2+2?")], true).expect("render");
    assert_eq!(
        out,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    );
    // The prompt tokenizes with its markers as single special tokens.
    let ids = tok.encode(&out, true).expect("encode");
    assert_eq!(ids[0], 1, "<|im_start|>");
    assert_eq!(ids.iter().filter(|&&id| id == 2).count(), 2, "<|im_end|> x2");
    assert_eq!(
        tok.decode(&ids, true).expect("decode"),
        "system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face\n\
         user\nWhat is 2+2?\nassistant\n"
    );
}
