//! Paged KV cache storage (CPU): per layer, K and V in the block layout of
//! `keel_kernels::attention` (K transposed within a block), f32.
//!
//! A token's *slot* is `block_id * block_size + offset`; which blocks a sequence owns is
//! the scheduler's business (block tables), this type only stores and hands out views.
//! Memory is one anonymous mapping, zeroed and lazily committed by the OS,
//! `bytes_per_block()` per block, asked to be backed by transparent huge pages: attention
//! reads a sequence's blocks from all over the pool, and with 4 KiB pages every block was a
//! TLB miss, and every newly used page a page fault in the decode step (2.2% of a
//! 32-sequence decode profile went to the kernel zeroing pages one at a time).

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use keel_kernels::attention::{layer_len, write_kv, PagedKv};
use memmap2::MmapMut;

/// Tokens per block (vLLM's default; DESIGN.md fixes it).
pub const BLOCK_SIZE: usize = keel_kernels::attention::BLOCK;

pub struct KvCache {
    pub block_size: usize,
    pub num_blocks: usize,
    num_kv_heads: usize,
    head_dim: usize,
    /// f32 elements of one layer's K (and of its V).
    per_layer: usize,
    /// Layer `l`'s K at elements `2l * per_layer..`, its V right after.
    mem: MmapMut,
}

impl KvCache {
    pub fn new(cfg: &ModelConfig, num_blocks: usize) -> Result<KvCache> {
        if num_blocks == 0 {
            return Err(Error::OutOfCache("the KV cache needs at least one block".into()));
        }
        let bytes = num_blocks
            .checked_mul(BLOCK_SIZE * cfg.num_kv_heads * cfg.head_dim)
            .and_then(|n| n.checked_mul(2 * cfg.num_layers * std::mem::size_of::<f32>()))
            .ok_or_else(|| Error::OutOfCache(format!("{num_blocks} blocks overflow")))?;
        let per_layer = layer_len(num_blocks, cfg.num_kv_heads, cfg.head_dim);
        let mem = MmapMut::map_anon(bytes.max(1))
            .map_err(|e| Error::OutOfCache(format!("cannot map {bytes} bytes for the KV cache: {e}")))?;
        // Only a hint: without transparent huge pages the cache works as before.
        #[cfg(target_os = "linux")]
        let _ = mem.advise(memmap2::Advice::HugePage);
        Ok(KvCache {
            block_size: BLOCK_SIZE,
            num_blocks,
            num_kv_heads: cfg.num_kv_heads,
            head_dim: cfg.head_dim,
            per_layer,
            mem,
        })
    }

    /// Layer `layer`'s K and V.
    fn kv(&self, layer: usize) -> (&[f32], &[f32]) {
        let (k, v) = self.floats()[2 * layer * self.per_layer..][..2 * self.per_layer].split_at(self.per_layer);
        (k, v)
    }

    fn floats(&self) -> &[f32] {
        // SAFETY: the mapping is page-aligned, holds `2 * num_layers * per_layer` f32 and
        // any bit pattern is an f32.
        unsafe { std::slice::from_raw_parts(self.mem.as_ptr() as *const f32, self.mem.len() / 4) }
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
        let n = self.per_layer;
        // SAFETY: as `floats`, uniquely borrowed.
        let all = unsafe { std::slice::from_raw_parts_mut(self.mem.as_mut_ptr() as *mut f32, self.mem.len() / 4) };
        let (kc, vc) = all[2 * layer * n..][..2 * n].split_at_mut(n);
        write_kv(kc, vc, slot, k, v, self.num_kv_heads, self.head_dim);
    }

    pub fn layer(&self, layer: usize) -> PagedKv<'_> {
        let (k, v) = self.kv(layer);
        PagedKv { k, v, n_kv_heads: self.num_kv_heads, head_dim: self.head_dim }
    }
}
