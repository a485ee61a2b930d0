//! Tokenization: text ↔ token ids for the served model, and what a generation loop
//! needs around it — BOS/EOS ids, which ids are special, the chat template, and
//! streaming detokenization ([`IncrementalDecoder`]).
//!
//! Two sources, one engine (HF `tokenizers`): an HF model folder (`tokenizer.json`,
//! `tokenizer_config.json`, optional `generation_config.json`) or GGUF metadata
//! (byte-level BPE only, see [`gguf_vocab`]).
//!
//! Invariants:
//! - `encode(text, true)` = BOS (iff the model asks for one: `add_bos_token`) followed by
//!   the text's tokens. The HF post-processor never runs, so BOS has exactly one origin
//!   and no EOS is ever appended. `encode(text, false)` never adds anything.
//! - Special/added tokens written literally in the text (`<|im_start|>`) are matched as
//!   single tokens, as HF tokenizers and llama.cpp with `parse_special` do; rendered chat
//!   templates rely on it.
//! - `decode` checks every id first: an id outside the vocabulary is an
//!   `Error::Tokenizer`, never a panic and never silently dropped. It does no
//!   "clean-up of tokenization spaces": for byte-level BPE it is the exact inverse of
//!   `encode` on valid UTF-8 (invalid byte sequences come out as U+FFFD).
//! - `skip_special_tokens` hides exactly the ids for which [`Tokenizer::is_special`] is true.
//!
//! Cost: `encode` is linear in the text (regex pre-split + BPE merges per word, words
//! cached by `tokenizers`); `decode` is linear in the ids. Loading a 150k-token vocab
//! takes a few hundred milliseconds.

pub(crate) mod gguf_vocab;
mod incremental;

pub use incremental::IncrementalDecoder;

use crate::chat_template::ChatTemplate;
use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use serde_json::Value as Json;
use std::fmt;
use std::path::Path;

/// A model's tokenizer.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// `special[id]`: hidden by `skip_special_tokens`; `len()` is the vocab size.
    special: Vec<bool>,
    bos_token_id: Option<u32>,
    eos_token_ids: Vec<u32>,
    add_bos: bool,
    chat_template: Option<ChatTemplate>,
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos_token_id", &self.bos_token_id)
            .field("eos_token_ids", &self.eos_token_ids)
            .field("add_bos", &self.add_bos)
            .field("chat_template", &self.chat_template.is_some())
            .finish()
    }
}

fn tok_err(msg: impl Into<String>) -> Error {
    Error::Tokenizer(msg.into())
}

/// Reads a JSON file that may be absent.
fn read_json_opt(path: &Path) -> Result<Option<Json>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| tok_err(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// `"<s>"` or `{"content": "<s>", ...}` (an AddedToken), as tokenizer_config.json has them.
fn token_content(v: Option<&Json>) -> Option<String> {
    match v? {
        Json::String(s) => Some(s.clone()),
        Json::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// An id or a list of ids (`eos_token_id` in generation_config.json).
fn json_ids(v: Option<&Json>) -> Vec<u64> {
    match v {
        Some(Json::Number(n)) => n.as_u64().into_iter().collect(),
        Some(Json::Array(a)) => a.iter().filter_map(Json::as_u64).collect(),
        _ => vec![],
    }
}

impl Tokenizer {
    /// Loads an HF model folder: `tokenizer.json` (required), `tokenizer_config.json`
    /// (BOS/EOS tokens, `add_bos_token`, `chat_template`; a list of named templates
    /// gives its `"default"`), `chat_template.jinja` when the config has no template,
    /// and `generation_config.json` (every `eos_token_id` is an EOS id).
    pub fn from_hf_dir(dir: &Path) -> Result<Tokenizer> {
        let path = dir.join("tokenizer.json");
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let mut inner =
            tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| tok_err(format!("{}: {e}", path.display())))?;
        // keel never truncates or pads behind the caller's back.
        inner.with_truncation(None).map_err(|e| tok_err(format!("{}: {e}", path.display())))?;
        inner.with_padding(None);

        let config = read_json_opt(&dir.join("tokenizer_config.json"))?.unwrap_or(Json::Null);
        let gen = read_json_opt(&dir.join("generation_config.json"))?.unwrap_or(Json::Null);

        let vocab_size = inner.get_vocab(true).values().map(|&id| id as usize + 1).max().unwrap_or(0);
        let mut special = vec![false; vocab_size];
        for (id, tok) in inner.get_added_tokens_decoder() {
            if tok.special {
                if let Some(s) = special.get_mut(id as usize) {
                    *s = true;
                }
            }
        }
        let in_vocab = |id: u64| (id < vocab_size as u64).then_some(id as u32);

        let bos_text = token_content(config.get("bos_token"));
        let eos_text = token_content(config.get("eos_token"));
        let bos_token_id = bos_text
            .as_deref()
            .and_then(|t| inner.token_to_id(t))
            .or_else(|| json_ids(gen.get("bos_token_id")).into_iter().find_map(in_vocab));
        let mut eos_token_ids = Vec::new();
        if let Some(t) = &eos_text {
            match inner.token_to_id(t) {
                Some(id) => eos_token_ids.push(id),
                None => tracing::warn!("{}: eos_token {t:?} is not in the vocabulary", dir.display()),
            }
        }
        for id in json_ids(gen.get("eos_token_id")) {
            match in_vocab(id) {
                Some(id) if !eos_token_ids.contains(&id) => eos_token_ids.push(id),
                Some(_) => {}
                None => tracing::warn!("generation_config.json: eos_token_id {id} is outside the vocabulary"),
            }
        }

        let add_bos = match config.get("add_bos_token").and_then(Json::as_bool) {
            Some(b) => b,
            // No explicit setting: the model wants BOS iff its post-processor adds it.
            None => match bos_token_id {
                Some(bos) => inner.encode_fast("", true).map(|e| e.get_ids().first() == Some(&bos)).unwrap_or(false),
                None => false,
            },
        };

        let template = match config.get("chat_template") {
            Some(Json::String(s)) => Some(s.clone()),
            Some(Json::Array(list)) => {
                let default = list.iter().find_map(|t| {
                    (t.get("name")?.as_str()? == "default")
                        .then(|| t.get("template")?.as_str().map(str::to_string))
                        .flatten()
                });
                if default.is_none() {
                    tracing::warn!("{}: chat_template list has no \"default\" entry", dir.display());
                }
                default
            }
            _ => {
                let p = dir.join("chat_template.jinja");
                match std::fs::read_to_string(&p) {
                    Ok(s) => Some(s),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => return Err(Error::io(p, e)),
                }
            }
        };
        let bos_text = bos_text.or_else(|| bos_token_id.and_then(|id| inner.id_to_token(id)));
        let eos_text = eos_text.or_else(|| eos_token_ids.first().and_then(|&id| inner.id_to_token(id)));
        let chat_template = template.and_then(|t| compile_template(t, bos_text, eos_text));

        Ok(Tokenizer {
            inner,
            special,
            bos_token_id,
            eos_token_ids,
            add_bos: add_bos && bos_token_id.is_some(),
            chat_template,
        })
    }

    /// Builds the tokenizer stored in a GGUF file's metadata (see [`gguf_vocab`]).
    pub fn from_gguf(g: &GgufFile) -> Result<Tokenizer> {
        Self::from_gguf_metadata(&g.metadata).map_err(|e| match e {
            Error::Tokenizer(m) => tok_err(format!("{}: {m}", g.path.display())),
            other => other,
        })
    }

    pub(crate) fn from_gguf_metadata(
        meta: &std::collections::BTreeMap<String, crate::gguf::GgufValue>,
    ) -> Result<Tokenizer> {
        let v = gguf_vocab::load(meta)?;
        let text = |id: Option<u32>| id.and_then(|id| v.inner.id_to_token(id));
        let chat_template = v
            .chat_template
            .and_then(|t| compile_template(t, text(v.bos_token_id), text(v.eos_token_ids.first().copied())));
        Ok(Tokenizer {
            inner: v.inner,
            special: v.special,
            bos_token_id: v.bos_token_id,
            eos_token_ids: v.eos_token_ids,
            add_bos: v.add_bos,
            chat_template,
        })
    }

    /// Token ids for `text`; with `add_special_tokens`, BOS first when the model wants it.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self.inner.encode_fast(text, false).map_err(|e| tok_err(format!("encoding: {e}")))?;
        let ids = enc.get_ids();
        let mut out = Vec::with_capacity(ids.len() + 1);
        if add_special_tokens && self.add_bos {
            out.extend(self.bos_token_id);
        }
        out.extend_from_slice(ids);
        Ok(out)
    }

    /// The text of `ids`; with `skip_special_tokens`, special ids contribute nothing.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.check_ids(ids)?;
        let res = if skip_special_tokens && ids.iter().any(|&id| self.is_special(id)) {
            let kept: Vec<u32> = ids.iter().copied().filter(|&id| !self.is_special(id)).collect();
            self.inner.decode(&kept, false)
        } else {
            self.inner.decode(ids, false)
        };
        res.map_err(|e| tok_err(format!("decoding: {e}")))
    }

    /// Errors on the first id the vocabulary does not know.
    pub fn check_ids(&self, ids: &[u32]) -> Result<()> {
        for &id in ids {
            if id as usize >= self.vocab_size() || self.inner.id_to_token(id).is_none() {
                return Err(tok_err(format!("token id {id} is not in the vocabulary ({} ids)", self.vocab_size())));
            }
        }
        Ok(())
    }

    /// One past the largest id the tokenizer knows (base vocab and added tokens).
    pub fn vocab_size(&self) -> usize {
        self.special.len()
    }

    pub fn bos_token_id(&self) -> Option<u32> {
        self.bos_token_id
    }

    /// Every id that ends generation; the model's primary EOS first.
    pub fn eos_token_ids(&self) -> &[u32] {
        &self.eos_token_ids
    }

    pub fn is_eos(&self, id: u32) -> bool {
        self.eos_token_ids.contains(&id)
    }

    /// Whether `encode(_, true)` prepends BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Control/special ids (hidden by `skip_special_tokens`); false for unknown ids.
    pub fn is_special(&self, id: u32) -> bool {
        self.special.get(id as usize).copied().unwrap_or(false)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The token's vocabulary entry (for byte-level BPE, in GPT-2's byte alphabet).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat_template.as_ref()
    }
}

/// A template minijinja cannot compile leaves the model usable for plain completions:
/// it is reported once here and the model has no chat template.
fn compile_template(source: String, bos: Option<String>, eos: Option<String>) -> Option<ChatTemplate> {
    match ChatTemplate::new(source, bos, eos) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!("the model's chat template is unusable, chat is disabled: {e}");
            None
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
