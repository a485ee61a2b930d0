//! A byte-level BPE tokenizer built from GGUF `tokenizer.ggml.*` metadata, the way
//! llama.cpp's `src/llama-vocab.cpp` reads it and HF `tokenizers` would run it.
//!
//! Only `tokenizer.ggml.model == "gpt2"` (byte-level BPE: GPT-2, Llama 3, Qwen2,
//! SmolLM, StarCoder, …) is supported; any other model type (`"llama"` SentencePiece,
//! `"bert"`, …) is an `Error::Tokenizer` naming it. The pieces:
//!
//! - vocab: `tokenizer.ggml.tokens[id]` (token text in GPT-2's byte-to-char alphabet),
//!   merges: `tokenizer.ggml.merges` (`"a b"`, rank = position; the first occurrence of
//!   a pair wins, merges naming unknown tokens are skipped, as in llama.cpp).
//! - `token_type`: control (3) and unknown (2) tokens become *special* added tokens,
//!   user-defined (4) ones plain added tokens, so their literal text in the input is
//!   matched as one token. Control, unknown and unused (5) tokens are "special": hidden
//!   by `decode(.., skip_special_tokens = true)`.
//! - pre-tokenizer: chosen by `tokenizer.ggml.pre` from the table in [`PreTokenizerSpec`]
//!   (llama.cpp's regex lists, written in the HF `tokenizer.json` spelling); each regex
//!   splits every piece further, keeping matches and gaps (HF `Split`, `Isolated`), then
//!   the bytes are mapped to GPT-2's alphabet. Unknown or missing names fall back to the
//!   GPT-2 regex with a warning.
//! - BOS/EOS: `bos_token_id`, `eos_token_id`, plus `eot_token_id`, `eom_token_id` and the
//!   control tokens llama.cpp treats as end-of-generation by their text (`<|im_end|>`,
//!   `<|eot_id|>`, `<|endoftext|>`, …) are all EOS ids; `add_bos_token` defaults to
//!   llama.cpp's per-pre-tokenizer default (true for Llama 3).
//!
//! Cost: one pass over the token and merge arrays (~150k entries for Qwen2, well under a
//! second); the regexes are compiled once.

use crate::error::{Error, Result};
use crate::gguf::GgufValue;
use std::collections::{BTreeMap, HashSet};
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior};

/// GPT-2's pre-tokenizer regex (HF `ByteLevel(use_regex=true)`).
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// Llama 3's (`tokenizer.json` of Meta-Llama-3): numbers in groups of up to three.
const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's: like Llama 3 but every digit on its own.
const QWEN2: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen3.5's: Qwen2's with combining marks (`\p{M}`) kept inside words.
const QWEN35: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Every digit its own piece (HF `Digits(individual_digits=true)`).
const DIGIT: &str = r"\p{N}";
/// Falcon: runs of punctuation first, then GPT-2, then groups of three ASCII digits.
const FALCON_PUNCT: &str = r"[\p{P}\$\+<=>\^~\|]+";
const FALCON_DIGITS: &str = r"[0-9][0-9][0-9]";

/// The texts llama.cpp marks as end-of-generation when they are control tokens.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|eom_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "<end_of_utterance>",
];

/// How text is cut into words before BPE, per `tokenizer.ggml.pre`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct PreTokenizerSpec {
    /// Applied in order, each splitting every piece further (matches and gaps kept).
    pub regexes: &'static [&'static str],
    /// A whole word found in the vocab is one token, merges or not (Llama 3).
    pub ignore_merges: bool,
    /// llama.cpp's default for `add_bos_token` when the key is absent.
    pub add_bos: bool,
}

impl PreTokenizerSpec {
    /// The spec for a `tokenizer.ggml.pre` name, or `None` when keel does not know it.
    pub(crate) fn for_name(name: &str) -> Option<PreTokenizerSpec> {
        let spec = |regexes, ignore_merges, add_bos| PreTokenizerSpec { regexes, ignore_merges, add_bos };
        Some(match name {
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" => spec(&[LLAMA3], true, true),
            "dbrx" | "smaug-bpe" => spec(&[LLAMA3], false, false),
            "qwen2" | "deepseek-r1-qwen" | "stablelm2" => spec(&[QWEN2], false, false),
            "qwen35" => spec(&[QWEN35], false, false),
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" => {
                spec(&[DIGIT, GPT2], false, false)
            }
            "gpt-2" | "phi-2" | "mpt" | "olmo" | "jais" => spec(&[GPT2], false, false),
            "falcon" => spec(&[FALCON_PUNCT, GPT2, FALCON_DIGITS], false, false),
            _ => return None,
        })
    }

    fn build(&self) -> Result<PreTokenizerWrapper> {
        let mut steps = Vec::with_capacity(self.regexes.len() + 1);
        for re in self.regexes {
            let split = Split::new(SplitPattern::Regex((*re).to_string()), SplitDelimiterBehavior::Isolated, false)
                .map_err(|e| Error::Tokenizer(format!("pre-tokenizer regex {re:?}: {e}")))?;
            steps.push(PreTokenizerWrapper::Split(split));
        }
        // The regexes above already cut the words; this only maps bytes to GPT-2's alphabet.
        steps.push(PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, false, false)));
        Ok(PreTokenizerWrapper::Sequence(Sequence::new(steps)))
    }
}

/// What [`super::Tokenizer`] needs from a GGUF file.
pub(crate) struct GgufVocab {
    pub inner: tokenizers::Tokenizer,
    /// `special[id]`: hidden by `skip_special_tokens`.
    pub special: Vec<bool>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub add_bos: bool,
    pub chat_template: Option<String>,
}

const TYPE_NORMAL: i64 = 1;
const TYPE_UNKNOWN: i64 = 2;
const TYPE_CONTROL: i64 = 3;
const TYPE_USER_DEFINED: i64 = 4;
const TYPE_UNUSED: i64 = 5;

fn tok_err(msg: impl Into<String>) -> Error {
    Error::Tokenizer(msg.into())
}

fn string_array<'a>(meta: &'a BTreeMap<String, GgufValue>, key: &str) -> Result<Vec<&'a str>> {
    let arr = meta
        .get(key)
        .ok_or_else(|| tok_err(format!("GGUF metadata has no {key}")))?
        .as_array()
        .ok_or_else(|| tok_err(format!("{key} is not an array")))?;
    arr.iter()
        .enumerate()
        .map(|(i, v)| v.as_str().ok_or_else(|| tok_err(format!("{key}[{i}] is not a string"))))
        .collect()
}

/// Reads `key` as a token id; out-of-range ids are ignored with a warning (llama.cpp
/// does the same), a wrongly typed value is an error.
fn token_id(meta: &BTreeMap<String, GgufValue>, key: &str, n_tokens: usize) -> Result<Option<u32>> {
    let Some(v) = meta.get(key) else {
        return Ok(None);
    };
    let id = v.as_u64().ok_or_else(|| tok_err(format!("{key} is not a non-negative integer")))?;
    if id >= n_tokens as u64 {
        tracing::warn!("{key} = {id} is outside the vocabulary ({n_tokens} tokens); ignored");
        return Ok(None);
    }
    Ok(Some(id as u32))
}

/// Builds the tokenizer from GGUF metadata (see the module docs).
pub(crate) fn load(meta: &BTreeMap<String, GgufValue>) -> Result<GgufVocab> {
    let model = meta
        .get("tokenizer.ggml.model")
        .and_then(GgufValue::as_str)
        .ok_or_else(|| tok_err("GGUF metadata has no tokenizer.ggml.model"))?;
    if model != "gpt2" {
        return Err(tok_err(format!(
            "tokenizer.ggml.model {model:?} is not supported yet (keel reads byte-level BPE \
             vocabularies, tokenizer.ggml.model = \"gpt2\")"
        )));
    }
    let pre = meta.get("tokenizer.ggml.pre").and_then(GgufValue::as_str);
    let spec = match pre.and_then(PreTokenizerSpec::for_name) {
        Some(spec) => spec,
        None => {
            tracing::warn!(
                "tokenizer.ggml.pre {:?} is not known to keel; using the GPT-2 pre-tokenizer \
                 (tokenization may differ from the model's own)",
                pre.unwrap_or("<missing>")
            );
            PreTokenizerSpec { regexes: &[GPT2], ignore_merges: false, add_bos: false }
        }
    };

    let tokens = string_array(meta, "tokenizer.ggml.tokens")?;
    let n = tokens.len();
    if n == 0 || n > u32::MAX as usize {
        return Err(tok_err(format!("tokenizer.ggml.tokens has {n} entries")));
    }
    let types: Vec<i64> = match meta.get("tokenizer.ggml.token_type") {
        None => vec![TYPE_NORMAL; n],
        Some(v) => {
            let arr = v.as_array().ok_or_else(|| tok_err("tokenizer.ggml.token_type is not an array"))?;
            if arr.len() < n {
                return Err(tok_err(format!("tokenizer.ggml.token_type has {} entries for {n} tokens", arr.len())));
            }
            arr[..n]
                .iter()
                .map(|t| t.as_i64().ok_or_else(|| tok_err("tokenizer.ggml.token_type holds a non-integer")))
                .collect::<Result<_>>()?
        }
    };

    // Token texts; llama.cpp renames empty ones so that every id keeps a distinct text.
    let texts: Vec<String> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| if t.is_empty() { format!("[EMPTY_{i}]") } else { (*t).to_string() })
        .collect();
    let mut vocab: Vocab = Vocab::default();
    vocab.reserve(n);
    for (id, text) in texts.iter().enumerate() {
        if vocab.insert(text.clone(), id as u32).is_some() {
            return Err(tok_err(format!("tokenizer.ggml.tokens: token {text:?} appears twice (second at id {id})")));
        }
    }

    let merges = parse_merges(&string_array(meta, "tokenizer.ggml.merges")?, &vocab);

    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(spec.ignore_merges)
        .build()
        .map_err(|e| tok_err(format!("building the BPE model: {e}")))?;
    let mut inner = tokenizers::Tokenizer::new(bpe);
    inner.with_pre_tokenizer(Some(spec.build()?));
    inner.with_decoder(Some(ByteLevel::new(false, false, false)));

    let mut special = vec![false; n];
    let mut added_special = Vec::new();
    let mut added_plain = Vec::new();
    for (id, (&ty, text)) in types.iter().zip(&texts).enumerate() {
        match ty {
            TYPE_CONTROL | TYPE_UNKNOWN => {
                special[id] = true;
                added_special.push(AddedToken::from(text.clone(), true).normalized(false));
            }
            TYPE_USER_DEFINED => {
                added_plain.push(AddedToken::from(text.clone(), false).normalized(false));
            }
            TYPE_UNUSED => special[id] = true,
            _ => {}
        }
    }
    inner.add_special_tokens(added_special).map_err(|e| tok_err(format!("adding control tokens: {e}")))?;
    inner.add_tokens(added_plain).map_err(|e| tok_err(format!("adding user-defined tokens: {e}")))?;

    let bos_token_id = token_id(meta, "tokenizer.ggml.bos_token_id", n)?;
    let mut eos_token_ids = Vec::new();
    for key in ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
        if let Some(id) = token_id(meta, key, n)? {
            if !eos_token_ids.contains(&id) {
                eos_token_ids.push(id);
            }
        }
    }
    for (id, text) in texts.iter().enumerate() {
        if types[id] == TYPE_CONTROL && EOG_TEXTS.contains(&text.as_str()) && !eos_token_ids.contains(&(id as u32)) {
            eos_token_ids.push(id as u32);
        }
    }

    let mut add_bos = match meta.get("tokenizer.ggml.add_bos_token") {
        None => spec.add_bos,
        Some(v) => v.as_bool().ok_or_else(|| tok_err("tokenizer.ggml.add_bos_token is not a bool"))?,
    };
    if add_bos && bos_token_id.is_none() {
        tracing::warn!("the model asks for a BOS token but names none; not adding one");
        add_bos = false;
    }
    let chat_template = match meta.get("tokenizer.chat_template") {
        None => None,
        Some(v) => Some(v.as_str().ok_or_else(|| tok_err("tokenizer.chat_template is not a string"))?.to_string()),
    };

    Ok(GgufVocab { inner, special, bos_token_id, eos_token_ids, add_bos, chat_template })
}

/// `"a b"` merge strings → pairs, in rank order. Like llama.cpp, the separator is the
/// first space after the first byte (so a token may start with a space), the first
/// occurrence of a pair keeps its rank, and merges whose parts or result are not in the
/// vocab are dropped (they can never produce a token).
fn parse_merges(merges: &[&str], vocab: &Vocab) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(merges.len());
    let mut seen: HashSet<(&str, &str)> = HashSet::with_capacity(merges.len());
    let mut dropped = 0usize;
    let mut joined = String::new();
    for m in merges {
        // A space is ASCII, so the byte position is a char boundary.
        let Some(pos) = m.bytes().skip(1).position(|b| b == b' ').map(|p| p + 1) else {
            dropped += 1;
            continue;
        };
        let (a, b) = (&m[..pos], &m[pos + 1..]);
        joined.clear();
        joined.push_str(a);
        joined.push_str(b);
        if !vocab.contains_key(a) || !vocab.contains_key(b) || !vocab.contains_key(&joined) {
            dropped += 1;
            continue;
        }
        if seen.insert((a, b)) {
            out.push((a.to_string(), b.to_string()));
        }
    }
    if dropped > 0 {
        tracing::warn!("tokenizer.ggml.merges: {dropped} merges name tokens outside the vocab; skipped");
    }
    out
}

/// GPT-2's byte → printable char table (`bytes_to_unicode` in HF/openai code).
#[cfg(test)]
pub(crate) fn byte_chars() -> std::collections::HashMap<u8, char> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32).collect();
    printable.extend(0xA1..=0xAC);
    printable.extend(0xAE..=0xFF);
    let mut map = std::collections::HashMap::new();
    let mut next = 0u32;
    for b in 0u32..=255 {
        let c = if printable.contains(&b) {
            b
        } else {
            next += 1;
            255 + next
        };
        map.insert(b as u8, char::from_u32(c).unwrap_or('?'));
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_matches_gpt2() {
        let m = byte_chars();
        assert_eq!(m[&b' '], 'Ġ');
        assert_eq!(m[&b'\n'], 'Ċ');
        assert_eq!(m[&b'a'], 'a');
        assert_eq!(m[&0xE9], 'é');
        let distinct: HashSet<char> = m.values().copied().collect();
        assert_eq!(distinct.len(), 256);
    }

    #[test]
    fn merges_split_after_first_byte_and_keep_first_rank() {
        let vocab: Vocab =
            ["a", "b", "ab", " ", " a", "x"].iter().enumerate().map(|(i, t)| (t.to_string(), i as u32)).collect();
        let m = parse_merges(&["a b", "  a", "a b", "a x", "nospace"], &vocab);
        assert_eq!(
            m,
            vec![("a".into(), "b".into()), (" ".into(), "a".into())],
            "duplicate, out-of-vocab and malformed merges are dropped"
        );
    }

    #[test]
    fn every_known_pre_tokenizer_compiles() {
        for name in ["llama-bpe", "dbrx", "qwen2", "qwen35", "smollm", "gpt-2", "falcon"] {
            let spec = PreTokenizerSpec::for_name(name).expect("known");
            spec.build().expect("regexes compile");
        }
        assert!(PreTokenizerSpec::for_name("no-such-pre").is_none());
    }
}
