//! `ForwardBatch`: the tokens of one engine step, from any number of sequences, each
//! with its block table — what `Model::forward` consumes.
//!
//! Invariants (checked by `validate`): the tokens of sequence `s` are the contiguous
//! range `query_start .. query_start + query_len`, sequences tile the batch in order,
//! `slot_mapping[t]` is the cache slot of token `t` and lies in its sequence's blocks,
//! and `logits_indices` name tokens of the batch.

use crate::error::{Error, Result};

#[derive(Clone, Debug, Default, PartialEq)]
pub struct SeqInfo {
    /// Index of this sequence's first token in the batch.
    pub query_start: usize,
    /// Tokens of this sequence computed in this step (a prefill chunk, or 1 to decode).
    pub query_len: usize,
    /// Tokens of the sequence in the cache after this step (computed before + query_len).
    pub context_len: usize,
    /// Block ids holding positions `0..context_len`, in order.
    pub block_table: Vec<u32>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ForwardBatch {
    /// `[n_tokens]`
    pub token_ids: Vec<u32>,
    /// `[n_tokens]` position of each token in its sequence.
    pub positions: Vec<u32>,
    /// `[n_tokens]` cache slot (`block * block_size + offset`) each token's K/V goes to.
    pub slot_mapping: Vec<u32>,
    pub seqs: Vec<SeqInfo>,
    /// Tokens whose logits are returned, in this order (typically each sequence's last
    /// token, when that sequence will sample).
    pub logits_indices: Vec<usize>,
}

impl ForwardBatch {
    pub fn num_tokens(&self) -> usize {
        self.token_ids.len()
    }

    /// Appends `tokens` of one sequence whose first `computed` tokens are already cached.
    pub fn push_seq(
        &mut self,
        tokens: &[u32],
        computed: usize,
        block_table: &[u32],
        block_size: usize,
        want_logits: bool,
    ) {
        let query_start = self.token_ids.len();
        for (j, &t) in tokens.iter().enumerate() {
            let pos = computed + j;
            self.token_ids.push(t);
            self.positions.push(pos as u32);
            self.slot_mapping.push(block_table[pos / block_size] * block_size as u32 + (pos % block_size) as u32);
        }
        if want_logits && !tokens.is_empty() {
            self.logits_indices.push(query_start + tokens.len() - 1);
        }
        self.seqs.push(SeqInfo {
            query_start,
            query_len: tokens.len(),
            context_len: computed + tokens.len(),
            block_table: block_table.to_vec(),
        });
    }

    pub fn validate(&self, vocab_size: usize, num_slots: usize, block_size: usize) -> Result<()> {
        let bad = |m: String| Err(Error::Model(format!("invalid forward batch: {m}")));
        let n = self.token_ids.len();
        if self.positions.len() != n || self.slot_mapping.len() != n {
            return bad("token_ids, positions and slot_mapping differ in length".into());
        }
        if let Some(t) = self.token_ids.iter().find(|t| **t as usize >= vocab_size) {
            return bad(format!("token id {t} is outside the vocabulary ({vocab_size})"));
        }
        let mut next = 0;
        for (i, s) in self.seqs.iter().enumerate() {
            if s.query_start != next || s.query_len > s.context_len {
                return bad(format!("sequence {i} does not tile the batch"));
            }
            if s.block_table.len() * block_size < s.context_len {
                return bad(format!("sequence {i}: block table too short for {} tokens", s.context_len));
            }
            if s.block_table.iter().any(|b| (*b as usize + 1) * block_size > num_slots) {
                return bad(format!("sequence {i}: block id out of range"));
            }
            for j in 0..s.query_len {
                let t = s.query_start + j;
                let pos = s.context_len - s.query_len + j;
                let slot = s.block_table[pos / block_size] as usize * block_size + pos % block_size;
                if self.positions[t] as usize != pos || self.slot_mapping[t] as usize != slot {
                    return bad(format!("token {t}: position/slot disagree with its block table"));
                }
            }
            next += s.query_len;
        }
        if next != n {
            return bad("sequences do not cover every token".into());
        }
        if self.logits_indices.iter().any(|i| *i >= n) {
            return bad("logits index out of range".into());
        }
        Ok(())
    }
}
