//! Unit tests on a tiny byte-level vocab written as GGUF metadata in code.

use super::gguf_vocab::byte_chars;
use super::*;
use crate::chat_template::ChatMessage;
use crate::gguf::GgufValue;
use proptest::prelude::*;
use std::collections::BTreeMap;

/// Raw bytes → the byte-level vocab spelling.
fn bl(bytes: &[u8]) -> String {
    let m = byte_chars();
    bytes.iter().map(|b| m[b]).collect()
}

const CONTROL: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
const USER_DEFINED: &str = "<tool>";
/// Merges as raw byte pairs; the merged tokens are appended to the vocab in this order.
const MERGES: &[(&[u8], &[u8])] = &[
    (b"h", b"e"),
    (b"l", b"l"),
    (b"ll", b"o"),
    (b"he", b"llo"),
    (b" ", b"w"),
    (b"o", b"r"),
    (b" w", b"or"),
    (b" wor", b"l"),
    (b" worl", b"d"),
    (b"2", b"0"),
    (b"\xE4", b"\xB8"),
    (b"\xE4\xB8", b"\xAD"),
];

/// Ids: 0..3 control, 3 user-defined, 4 + b for byte b, then one per merge.
fn byte_id(b: u8) -> u32 {
    4 + b as u32
}

fn merged_id(i: usize) -> u32 {
    260 + i as u32
}

fn metadata(pre: &str, extra: &[(&str, GgufValue)]) -> BTreeMap<String, GgufValue> {
    let mut tokens: Vec<String> = CONTROL.iter().map(|s| s.to_string()).collect();
    tokens.push(USER_DEFINED.into());
    let mut types = vec![3, 3, 3, 4];
    for b in 0..=255u8 {
        tokens.push(bl(&[b]));
        types.push(1);
    }
    let mut merges = Vec::new();
    for (a, b) in MERGES {
        merges.push(GgufValue::String(format!("{} {}", bl(a), bl(b))));
        tokens.push(bl(&[*a, *b].concat()));
        types.push(1);
    }
    let mut m = BTreeMap::new();
    let s = |v: &str| GgufValue::String(v.into());
    m.insert("tokenizer.ggml.model".into(), s("gpt2"));
    m.insert("tokenizer.ggml.pre".into(), s(pre));
    m.insert("tokenizer.ggml.tokens".into(), GgufValue::Array(tokens.into_iter().map(GgufValue::String).collect()));
    m.insert("tokenizer.ggml.token_type".into(), GgufValue::Array(types.into_iter().map(GgufValue::I32).collect()));
    m.insert("tokenizer.ggml.merges".into(), GgufValue::Array(merges));
    m.insert("tokenizer.ggml.bos_token_id".into(), GgufValue::U32(1));
    m.insert("tokenizer.ggml.eos_token_id".into(), GgufValue::U32(2));
    for (k, v) in extra {
        m.insert(k.to_string(), v.clone());
    }
    m
}

fn tiny(pre: &str) -> Tokenizer {
    Tokenizer::from_gguf_metadata(&metadata(pre, &[])).expect("tiny vocab loads")
}

fn ids_of_bytes(s: &str) -> Vec<u32> {
    s.bytes().map(byte_id).collect()
}

#[test]
fn encodes_with_merges_and_special_tokens() {
    let t = tiny("smollm");
    assert_eq!(t.vocab_size(), 260 + MERGES.len());
    let hello = merged_id(3);
    let world = merged_id(8);
    assert_eq!(t.encode("hello world", true).unwrap(), vec![hello, world]);
    let mut want = vec![1];
    want.extend(ids_of_bytes("user\n"));
    want.extend([hello, 2]);
    assert_eq!(t.encode("<|im_start|>user\nhello<|im_end|>", false).unwrap(), want);
    // A user-defined token is matched whole too, and is not special.
    assert_eq!(t.encode("<tool>", false).unwrap(), vec![3]);
    assert!(!t.is_special(3));
    assert!(t.is_special(0) && t.is_special(1) && t.is_special(2));
    assert!(!t.is_special(hello) && !t.is_special(100_000));
    assert_eq!(t.token_to_id("<|im_end|>"), Some(2));
    assert_eq!(t.id_to_token(hello).as_deref(), Some("hello"));
    assert_eq!(t.id_to_token(world).as_deref(), Some("Ġworld"));
}

#[test]
fn decode_round_trips_and_skips_special() {
    let t = tiny("smollm");
    for text in ["hello world", "中文 🦙 x", "  a\n\n\tb  ", "<tool> é", ""] {
        let ids = t.encode(text, false).unwrap();
        assert_eq!(t.decode(&ids, false).unwrap(), text, "{ids:?}");
    }
    // 中 is one merged token; 文 and 🦙 are raw bytes.
    let ids = t.encode("中", false).unwrap();
    assert_eq!(ids, vec![merged_id(11)]);
    assert_eq!(t.encode("🦙", false).unwrap(), ids_of_bytes("🦙"));

    let ids = t.encode("<|im_start|>hello<tool><|im_end|>", false).unwrap();
    assert_eq!(t.decode(&ids, true).unwrap(), "hello<tool>");
    assert_eq!(t.decode(&ids, false).unwrap(), "<|im_start|>hello<tool><|im_end|>");
}

#[test]
fn out_of_range_ids_are_errors() {
    let t = tiny("smollm");
    let n = t.vocab_size() as u32;
    for bad in [n, n + 1, u32::MAX] {
        let err = t.decode(&[merged_id(3), bad], false).expect_err("bad id");
        assert!(err.to_string().contains(&bad.to_string()), "{err}");
    }
    let mut dec = IncrementalDecoder::new(&[]);
    assert!(dec.push(&t, n).is_err());
    assert_eq!(dec.push(&t, merged_id(3)).unwrap(), "hello");
}

#[test]
fn pre_tokenizer_follows_tokenizer_ggml_pre() {
    // smollm splits digits one by one, so "2 0" can never merge; GPT-2 keeps runs.
    let twenty = merged_id(9);
    assert_eq!(tiny("smollm").encode("2024", false).unwrap(), ids_of_bytes("2024"));
    let gpt2 = tiny("gpt-2").encode("2024", false).unwrap();
    assert_eq!(gpt2, vec![twenty, byte_id(b'2'), byte_id(b'4')]);
    // An unknown name falls back to GPT-2's regex.
    assert_eq!(tiny("something-new").encode("2024", false).unwrap(), gpt2);
    // Llama 3's splits digits in threes.
    assert_eq!(tiny("llama-bpe").encode("2024", false).unwrap(), vec![twenty, byte_id(b'2'), byte_id(b'4')]);
    assert_eq!(tiny("qwen2").encode("2024", false).unwrap(), ids_of_bytes("2024"));
}

#[test]
fn bos_and_eos_follow_metadata() {
    let t = tiny("smollm");
    assert_eq!(t.bos_token_id(), Some(1));
    assert!(!t.add_bos());
    assert_eq!(t.encode("hello", true).unwrap(), vec![merged_id(3)]);
    // eos_token_id first, then control tokens llama.cpp ends generation on.
    assert_eq!(t.eos_token_ids(), &[2, 0]);

    let t = Tokenizer::from_gguf_metadata(&metadata(
        "smollm",
        &[("tokenizer.ggml.add_bos_token", GgufValue::Bool(true)), ("tokenizer.ggml.eot_token_id", GgufValue::U32(3))],
    ))
    .unwrap();
    assert_eq!(t.encode("hello", true).unwrap(), vec![1, merged_id(3)]);
    assert_eq!(t.encode("hello", false).unwrap(), vec![merged_id(3)]);
    assert_eq!(t.eos_token_ids(), &[2, 3, 0]);
    // Llama 3's pre-tokenizer asks for BOS unless the file says otherwise.
    assert!(tiny("llama-bpe").add_bos());
}

#[test]
fn unsupported_or_broken_metadata_is_an_error() {
    let mut m = metadata("smollm", &[]);
    m.insert("tokenizer.ggml.model".into(), GgufValue::String("llama".into()));
    let err = Tokenizer::from_gguf_metadata(&m).expect_err("spm").to_string();
    assert!(err.contains("\"llama\"") && err.contains("not supported"), "{err}");

    let mut m = metadata("smollm", &[]);
    m.remove("tokenizer.ggml.merges");
    assert!(Tokenizer::from_gguf_metadata(&m).is_err());

    let mut m = metadata("smollm", &[]);
    m.insert("tokenizer.ggml.token_type".into(), GgufValue::Array(vec![GgufValue::I32(1)]));
    assert!(Tokenizer::from_gguf_metadata(&m).is_err());

    let mut m = metadata("smollm", &[]);
    if let Some(GgufValue::Array(t)) = m.get_mut("tokenizer.ggml.tokens") {
        t[5] = GgufValue::String("<tool>".into());
    }
    let err = Tokenizer::from_gguf_metadata(&m).expect_err("dup").to_string();
    assert!(err.contains("twice"), "{err}");

    // An out-of-range BOS id is ignored, not trusted.
    let m = metadata("smollm", &[("tokenizer.ggml.bos_token_id", GgufValue::U32(1_000_000))]);
    assert_eq!(Tokenizer::from_gguf_metadata(&m).unwrap().bos_token_id(), None);
}

#[test]
fn chat_template_gets_bos_and_eos_text() {
    let src = "{{ bos_token }}{% for m in messages %}{{ m.content }}{{ eos_token }}{% endfor %}";
    let m = metadata("smollm", &[("tokenizer.chat_template", GgufValue::String(src.into()))]);
    let t = Tokenizer::from_gguf_metadata(&m).unwrap();
    let out = t.chat_template().expect("template").render(&[ChatMessage::new("user", "hi")], true).unwrap();
    assert_eq!(out, "<|im_start|>hi<|im_end|>");
    assert!(tiny("smollm").chat_template().is_none());
    // A template minijinja cannot compile disables chat but not the tokenizer.
    let m = metadata("smollm", &[("tokenizer.chat_template", GgufValue::String("{% if %}".into()))]);
    assert!(Tokenizer::from_gguf_metadata(&m).unwrap().chat_template().is_none());
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("keel-tok-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

#[test]
fn hf_dir_matches_gguf_and_reads_configs() {
    let g = tiny("smollm");
    let dir = temp_dir("hf");
    std::fs::write(dir.join("tokenizer.json"), g.inner.to_string(false).expect("serialize")).unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"bos_token": {"content": "<|im_start|>", "special": true}, "eos_token": "<|im_end|>",
            "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D{{ bos_token }}"}]}"#,
    )
    .unwrap();
    std::fs::write(dir.join("generation_config.json"), r#"{"eos_token_id": [2, 0], "bos_token_id": 1}"#).unwrap();
    let h = Tokenizer::from_hf_dir(&dir).expect("loads");
    for text in ["hello world", "<|im_start|>user\n中文 2024<|im_end|>", "🦙<tool>"] {
        assert_eq!(h.encode(text, true).unwrap(), g.encode(text, true).unwrap());
    }
    assert_eq!(h.vocab_size(), g.vocab_size());
    assert_eq!(h.bos_token_id(), Some(1));
    assert_eq!(h.eos_token_ids(), &[2, 0]);
    assert!(!h.add_bos());
    assert!(h.is_special(1) && !h.is_special(3));
    let rendered = h.chat_template().expect("default").render(&[], false).unwrap();
    assert_eq!(rendered, "D<|im_start|>");

    // add_bos_token, a single eos id, a string template.
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"bos_token": "<|im_start|>", "eos_token": {"content": "<|im_end|>"}, "add_bos_token": true, "chat_template": "S"}"#,
    )
    .unwrap();
    std::fs::write(dir.join("generation_config.json"), r#"{"eos_token_id": 2}"#).unwrap();
    let h = Tokenizer::from_hf_dir(&dir).expect("loads");
    assert!(h.add_bos());
    assert_eq!(h.encode("hello", true).unwrap(), vec![1, merged_id(3)]);
    assert_eq!(h.eos_token_ids(), &[2]);
    assert_eq!(h.chat_template().expect("string").source(), "S");

    // No tokenizer.json: an I/O error naming the file.
    let empty = temp_dir("empty");
    let err = Tokenizer::from_hf_dir(&empty).expect_err("missing").to_string();
    assert!(err.contains("tokenizer.json"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&empty);
}

#[test]
fn streaming_holds_back_partial_characters() {
    let t = tiny("smollm");
    let prompt = t.encode("<|im_start|>assistant\n", false).unwrap();
    let mut dec = IncrementalDecoder::new(&prompt);
    let mut deltas = Vec::new();
    let mut ids = ids_of_bytes("🦙");
    ids.push(2); // <|im_end|>: special, no text
    ids.extend(ids_of_bytes("文"));
    ids.push(merged_id(3));
    for &id in &ids {
        deltas.push(dec.push(&t, id).unwrap());
    }
    assert_eq!(deltas, ["", "", "", "🦙", "", "", "", "文", "hello"]);
    assert_eq!(dec.finish(&t).unwrap(), "");

    // A stream that stops inside a character is flushed as decode would show it.
    let mut dec = IncrementalDecoder::new(&[]);
    let bytes = ids_of_bytes("é");
    assert_eq!(dec.push(&t, bytes[0]).unwrap(), "");
    assert_eq!(dec.finish(&t).unwrap(), "\u{FFFD}");
}

proptest! {
    #[test]
    fn encode_decode_round_trip(text in any::<String>()) {
        let t = tiny("smollm");
        let ids = t.encode(&text, false).unwrap();
        prop_assert_eq!(t.decode(&ids, false).unwrap(), text);
    }

    /// Concatenated deltas equal a one-shot decode, for any id sequence: specials, byte
    /// tokens cutting characters anywhere, invalid sequences.
    #[test]
    fn streaming_equals_decode(
        prompt in "[a-z <|>]{0,12}",
        ids in prop::collection::vec(prop_oneof![
            0u32..4,
            4u32..260,
            260u32..272,
            Just(byte_id(0xF0)), Just(byte_id(0x9F)), Just(byte_id(0xA6)), Just(byte_id(0x99)),
            Just(byte_id(0xE4)), Just(byte_id(0xB8)), Just(byte_id(0xAD)),
        ], 0..40),
    ) {
        let t = tiny("smollm");
        let prompt_ids = t.encode(&prompt, true).unwrap();
        let mut dec = IncrementalDecoder::new(&prompt_ids);
        let mut streamed = String::new();
        for &id in &ids {
            streamed.push_str(&dec.push(&t, id).unwrap());
        }
        streamed.push_str(&dec.finish(&t).unwrap());
        prop_assert_eq!(streamed, t.decode(&ids, true).unwrap());
    }
}
