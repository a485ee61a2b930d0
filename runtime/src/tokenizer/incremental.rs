//! Streaming detokenization: turns generated ids, one at a time, into text deltas that
//! never split a character.
//!
//! Method (vLLM's / TGI's prefix and read offsets): keep a window of ids starting at
//! `prefix_offset`; `read_offset` marks where the text already emitted ends. After each
//! id, decode `ids[prefix_offset..read_offset]` and `ids[prefix_offset..]`; if the
//! second is longer and does not end in U+FFFD (an unfinished UTF-8 sequence from byte
//! tokens), the difference is the delta and both offsets move forward. Decoding a small
//! window with a little left context, rather than each id alone, keeps decoders that
//! look at neighbours (SentencePiece's leading-space rule) right. The window starts with
//! the last few prompt ids for the same reason.
//!
//! Invariants: every delta is valid UTF-8 ending on a character boundary; special ids
//! contribute no text; for byte-level BPE, when the prompt ends on a character boundary,
//! `deltas + finish()` concatenated equals `decode(generated ids, skip_special = true)`.
//! `finish` flushes a trailing unfinished sequence as U+FFFD, as `decode` does.
//!
//! Cost: two decodes of the window per id; the window is reset whenever text is emitted,
//! so it stays a few ids long and memory is bounded by the longest run of ids that
//! produce no text.

use super::Tokenizer;
use crate::error::Result;

/// Prompt ids kept as left context (vLLM's `INITIAL_INCREMENTAL_DETOKENIZATION_OFFSET`).
const PROMPT_CONTEXT: usize = 5;

/// Per-request streaming detokenizer state.
#[derive(Clone, Debug, Default)]
pub struct IncrementalDecoder {
    /// Context: ids before `prefix_offset` are dropped once emitted.
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
}

impl IncrementalDecoder {
    /// A decoder for text generated after `prompt_ids`.
    pub fn new(prompt_ids: &[u32]) -> IncrementalDecoder {
        let tail = &prompt_ids[prompt_ids.len().saturating_sub(PROMPT_CONTEXT)..];
        IncrementalDecoder { ids: tail.to_vec(), prefix_offset: 0, read_offset: tail.len() }
    }

    /// Adds one generated id and returns the text it completes (often empty while a
    /// multi-byte character is still arriving). An unknown id is an error and leaves the
    /// state unchanged.
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<String> {
        tok.check_ids(&[id])?;
        self.ids.push(id);
        let prefix = tok.decode(&self.ids[self.prefix_offset..self.read_offset], true)?;
        let text = tok.decode(&self.ids[self.prefix_offset..], true)?;
        if text.len() > prefix.len() && !text.ends_with('\u{FFFD}') {
            let delta = suffix_after(&prefix, &text).to_string();
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
            // Ids before the new prefix are never decoded again.
            self.ids.drain(..self.prefix_offset);
            self.read_offset -= self.prefix_offset;
            self.prefix_offset = 0;
            Ok(delta)
        } else {
            Ok(String::new())
        }
    }

    /// The text still held back (an unfinished character, written as U+FFFD); call once
    /// when generation ends.
    pub fn finish(&mut self, tok: &Tokenizer) -> Result<String> {
        let prefix = tok.decode(&self.ids[self.prefix_offset..self.read_offset], true)?;
        let text = tok.decode(&self.ids[self.prefix_offset..], true)?;
        let delta = if text.len() > prefix.len() { suffix_after(&prefix, &text).to_string() } else { String::new() };
        self.ids.clear();
        self.prefix_offset = 0;
        self.read_offset = 0;
        Ok(delta)
    }
}

/// `text` minus its leading `prefix`. When `prefix` is not a prefix (a prompt that ended
/// inside a character, now completed), everything after the common part is returned.
fn suffix_after<'a>(prefix: &str, text: &'a str) -> &'a str {
    if let Some(rest) = text.strip_prefix(prefix) {
        return rest;
    }
    let common: usize = prefix.chars().zip(text.chars()).take_while(|(a, b)| a == b).map(|(a, _)| a.len_utf8()).sum();
    text.get(common..).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffix_after_handles_non_prefix() {
        assert_eq!(suffix_after("ab", "abc"), "c");
        assert_eq!(suffix_after("a\u{FFFD}", "aé!"), "é!");
        assert_eq!(suffix_after("", "x"), "x");
    }
}
