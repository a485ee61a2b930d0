//! Paged KV cache storage (CPU): per layer, K and V in the block layout of
//! `keel_kernels::attention` (K transposed within a block), f32.
//!
//! A token's *slot* is `block_id * block_size + offset`; which blocks a sequence owns is
//! the scheduler's business (block tables), this type only stores and hands out views.
//! Memory is allocated zeroed (lazily committed by the OS), `bytes_per_block()` each.

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use keel_kernels::attention::{layer_len, write_kv, PagedKv};

/// Tokens per block (vLLM's default; DESIGN.md fixes it).
pub const BLOCK_SIZE: usize = keel_kernels::attention::BLOCK;

pub struct KvCache {
    pub block_size: usize,
    pub num_blocks: usize,
    num_kv_heads: usize,
    head_dim: usize,
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

impl KvCache {
    pub fn new(cfg: &ModelConfig, num_blocks: usize) -> Result<KvCache> {
        if num_blocks == 0 {
            return Err(Error::OutOfCache("the KV cache needs at least one block".into()));
        }
        num_blocks
            .checked_mul(BLOCK_SIZE * cfg.num_kv_heads * cfg.head_dim)
            .ok_or_else(|| Error::OutOfCache(format!("{num_blocks} blocks overflow")))?;
        let per_layer = layer_len(num_blocks, cfg.num_kv_heads, cfg.head_dim);
        let mut k = Vec::with_capacity(cfg.num_layers);
        let mut v = Vec::with_capacity(cfg.num_layers);
        for _ in 0..cfg.num_layers {
            k.push(vec![0f32; per_layer]);
            v.push(vec![0f32; per_layer]);
        }
        Ok(KvCache { block_size: BLOCK_SIZE, num_blocks, num_kv_heads: cfg.num_kv_heads, head_dim: cfg.head_dim, k, v })
    }

    /// As many blocks as fit in `bytes` (at least one).
    pub fn with_memory_budget(cfg: &ModelConfig, bytes: usize) -> Result<KvCache> {
        Self::new(cfg, (bytes / Self::bytes_per_block(cfg)).max(1))
    }

    pub fn bytes_per_block(cfg: &ModelConfig) -> usize {
        BLOCK_SIZE * cfg.kv_bytes_per_token()
    }

    pub fn num_slots(&self) -> usize {
        self.num_blocks * self.block_size
    }

    /// Stores one token's K and V (`[num_kv_heads * head_dim]` each) of `layer` at `slot`.
    pub fn write(&mut self, layer: usize, slot: usize, k: &[f32], v: &[f32]) {
        write_kv(&mut self.k[layer], &mut self.v[layer], slot, k, v, self.num_kv_heads, self.head_dim);
    }

    pub fn layer(&self, layer: usize) -> PagedKv<'_> {
        PagedKv { k: &self.k[layer], v: &self.v[layer], n_kv_heads: self.num_kv_heads, head_dim: self.head_dim }
    }
}
