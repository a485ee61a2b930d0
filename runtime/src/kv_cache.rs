//! Paged KV cache storage (CPU): per layer, K and V in the block layout of
//! `keel_kernels::attention` (K transposed within a block), in f32 (exact, the default) or
//! F16 / BF16 (half the bytes per token, so twice the tokens in a budget and half attention's
//! reads; K and V are rounded when written, so not exact; F16 is llama.cpp's default).
//!
//! A token's *slot* is `block_id * block_size + offset`; which blocks a sequence owns is
//! the scheduler's business (block tables), this type only stores and hands out views.
//! Memory is one anonymous mapping, zeroed, `bytes_per_block()` per block, and committed
//! when created (`MAP_POPULATE`), as vLLM and llama.cpp commit theirs at start: committed
//! lazily instead, each page's first write faulted inside a decode step (page-fault
//! handling and the kernel's `clear_page` were ~5% of a 32-sequence `bench offline` decode
//! on the Intel Xeon VM of 2026-12-04, as the cache filled). It is deliberately *not* advised to transparent huge
//! pages (where THP is `enabled=always` the kernel may still use them; with the usual
//! `enabled=madvise` it does not): with the kernel's default `defrag=madvise`, a first
//! touch of an advised region allocates (and may compact for) a 2 MiB page synchronously,
//! inside the decode step. On the 2-vCPU VMs we measure on that ran at 0.11 GB/s against 2 GB/s for 4 KiB
//! pages (a C loop touching 1 GiB), and cost 20% of the wall time of a 32-sequence
//! `bench offline` run (20.5 s -> 16.5 s without the advice; attention's extra TLB misses
//! cost less than that).

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use keel_kernels::attention::{layer_len, paged_attention, write_kv_rows, AttnSeq, KvElem, PagedKv};
use memmap2::{MmapMut, MmapOptions};
use std::any::TypeId;

/// Tokens per block (vLLM's default; DESIGN.md fixes it).
pub const BLOCK_SIZE: usize = keel_kernels::attention::BLOCK;

/// What the cache stores K and V as (vLLM's `--kv-cache-dtype`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvCacheDtype {
    /// Exact: the values attention computed with.
    #[default]
    F32,
    /// Rounded to F16 (nearest even, saturating at ±65504): half the memory, not exact.
    F16,
    /// Rounded to BF16 (nearest even): half the memory, not exact.
    Bf16,
}

impl KvCacheDtype {
    pub fn bytes(self) -> usize {
        match self {
            KvCacheDtype::F32 => 4,
            KvCacheDtype::F16 | KvCacheDtype::Bf16 => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KvCacheDtype::F32 => "f32",
            KvCacheDtype::F16 => "f16",
            KvCacheDtype::Bf16 => "bf16",
        }
    }

    /// Whether `E` is this dtype's element type.
    fn stores<E: KvElem>(self) -> bool {
        TypeId::of::<E>()
            == match self {
                KvCacheDtype::F32 => TypeId::of::<f32>(),
                KvCacheDtype::F16 => TypeId::of::<half::f16>(),
                KvCacheDtype::Bf16 => TypeId::of::<half::bf16>(),
            }
    }
}

pub struct KvCache {
    pub block_size: usize,
    pub num_blocks: usize,
    /// Fixed at creation: the mapping's bytes are elements of this type.
    dtype: KvCacheDtype,
    num_kv_heads: usize,
    head_dim: usize,
    /// Elements of one layer's K (and of its V).
    per_layer: usize,
    /// Layer `l`'s K at elements `2l * per_layer..`, its V right after.
    mem: MmapMut,
}

impl KvCache {
    /// An f32 cache of `num_blocks` blocks.
    pub fn new(cfg: &ModelConfig, num_blocks: usize) -> Result<KvCache> {
        Self::with_dtype(cfg, num_blocks, KvCacheDtype::F32)
    }

    pub fn with_dtype(cfg: &ModelConfig, num_blocks: usize, dtype: KvCacheDtype) -> Result<KvCache> {
        if num_blocks == 0 {
            return Err(Error::OutOfCache("the KV cache needs at least one block".into()));
        }
        let bytes = num_blocks
            .checked_mul(BLOCK_SIZE * cfg.num_kv_heads * cfg.head_dim)
            .and_then(|n| n.checked_mul(2 * cfg.num_layers * dtype.bytes()))
            .ok_or_else(|| Error::OutOfCache(format!("{num_blocks} blocks overflow")))?;
        let per_layer = layer_len(num_blocks, cfg.num_kv_heads, cfg.head_dim);
        // One mapping for the whole budget, its pages committed now: a budget the machine
        // cannot back fails here, at start, rather than once the cache fills.
        let mem = MmapOptions::new().len(bytes.max(1)).populate().map_anon().map_err(|e| {
            Error::OutOfCache(format!(
                "the KV cache's {num_blocks} blocks ({:.1} GiB) cannot be mapped ({e}): give it a smaller memory budget",
                bytes as f64 / (1u64 << 30) as f64
            ))
        })?;
        Ok(KvCache {
            block_size: BLOCK_SIZE,
            num_blocks,
            dtype,
            num_kv_heads: cfg.num_kv_heads,
            head_dim: cfg.head_dim,
            per_layer,
            mem,
        })
    }

    /// The whole mapping as elements of `E`, the cache's element type.
    fn elems<E: KvElem>(&self) -> &[E] {
        assert!(self.dtype.stores::<E>(), "a {} KV cache read as another type", self.dtype.name());
        // SAFETY: the mapping is page-aligned, holds `2 * num_layers * per_layer` elements
        // of the cache's type (checked above: f32, F16 or BF16), and any bit pattern is one.
        unsafe { std::slice::from_raw_parts(self.mem.as_ptr() as *const E, self.mem.len() / size_of::<E>()) }
    }

    fn elems_mut<E: KvElem>(&mut self) -> &mut [E] {
        assert!(self.dtype.stores::<E>(), "a {} KV cache written as another type", self.dtype.name());
        // SAFETY: as `elems`, uniquely borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.mem.as_mut_ptr() as *mut E, self.mem.len() / size_of::<E>()) }
    }

    pub fn bytes_per_block(cfg: &ModelConfig, dtype: KvCacheDtype) -> usize {
        BLOCK_SIZE * 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * dtype.bytes()
    }

    pub fn dtype(&self) -> KvCacheDtype {
        self.dtype
    }

    pub fn num_slots(&self) -> usize {
        self.num_blocks * self.block_size
    }

    /// Stores the K and V rows (`[num_kv_heads * head_dim]` each) of every token of a batch
    /// in `layer`: row `t` at `slots[t]` (`keel_kernels::attention::write_kv_rows`: over the
    /// pool for larger batches).
    pub fn write_rows(&mut self, layer: usize, slots: &[u32], k: &[f32], v: &[f32]) {
        match self.dtype {
            KvCacheDtype::F32 => self.write_rows_as::<f32>(layer, slots, k, v),
            KvCacheDtype::F16 => self.write_rows_as::<half::f16>(layer, slots, k, v),
            KvCacheDtype::Bf16 => self.write_rows_as::<half::bf16>(layer, slots, k, v),
        }
    }

    fn write_rows_as<E: KvElem>(&mut self, layer: usize, slots: &[u32], k: &[f32], v: &[f32]) {
        let (n, heads, hd) = (self.per_layer, self.num_kv_heads, self.head_dim);
        let (kc, vc) = self.elems_mut::<E>()[2 * layer * n..][..2 * n].split_at_mut(n);
        write_kv_rows(kc, vc, slots, k, v, heads, hd);
    }

    /// Layer `layer`'s K and V as `E` (panics unless `E` is the cache's element type).
    pub fn layer<E: KvElem>(&self, layer: usize) -> PagedKv<'_, E> {
        let (k, v) = self.elems::<E>()[2 * layer * self.per_layer..][..2 * self.per_layer].split_at(self.per_layer);
        PagedKv { k, v, n_kv_heads: self.num_kv_heads, head_dim: self.head_dim }
    }

    /// `keel_kernels::attention::paged_attention` over layer `layer`, whatever the dtype.
    pub fn attention(&self, layer: usize, q: &[f32], seqs: &[AttnSeq], n_heads: usize, scale: f32, out: &mut [f32]) {
        match self.dtype {
            KvCacheDtype::F32 => paged_attention(q, seqs, &self.layer::<f32>(layer), n_heads, scale, out),
            KvCacheDtype::F16 => paged_attention(q, seqs, &self.layer::<half::f16>(layer), n_heads, scale, out),
            KvCacheDtype::Bf16 => paged_attention(q, seqs, &self.layer::<half::bf16>(layer), n_heads, scale, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Architecture, RopeScaling};
    use keel_kernels::rope::RopeStyle;

    fn cfg() -> ModelConfig {
        ModelConfig {
            architecture: Architecture::Llama,
            vocab_size: 32,
            hidden_size: 64,
            intermediate_size: 128,
            num_layers: 3,
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: 16,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            rope_scaling: RopeScaling::None,
            rope_style: RopeStyle::NeoX,
            max_position_embeddings: 128,
            tie_word_embeddings: true,
            qkv_bias: false,
        }
    }

    #[test]
    fn layers_keep_their_own_k_and_v() {
        let c = cfg();
        let mut kv = KvCache::new(&c, 4).unwrap();
        let w = c.num_kv_heads * c.head_dim;
        // Every (layer, slot) gets distinct K and V values.
        let val = |l: usize, s: usize, i: usize, v: bool| (l * 10_000 + s * 100 + i) as f32 + if v { 0.5 } else { 0.0 };
        let slots: Vec<u32> = (0..kv.num_slots() as u32).collect();
        for l in 0..c.num_layers {
            let k: Vec<f32> = (0..kv.num_slots()).flat_map(|s| (0..w).map(move |i| val(l, s, i, false))).collect();
            let v: Vec<f32> = (0..kv.num_slots()).flat_map(|s| (0..w).map(move |i| val(l, s, i, true))).collect();
            kv.write_rows(l, &slots, &k, &v);
        }
        for l in 0..c.num_layers {
            let p = kv.layer::<f32>(l);
            let mut k_seen: Vec<f32> = p.k.to_vec();
            let mut v_seen: Vec<f32> = p.v.to_vec();
            let mut k_want: Vec<f32> =
                (0..kv.num_slots()).flat_map(|s| (0..w).map(move |i| val(l, s, i, false))).collect();
            let mut v_want: Vec<f32> =
                (0..kv.num_slots()).flat_map(|s| (0..w).map(move |i| val(l, s, i, true))).collect();
            for x in [&mut k_seen, &mut v_seen, &mut k_want, &mut v_want] {
                x.sort_by(f32::total_cmp);
            }
            assert_eq!(k_seen, k_want, "layer {l} K");
            assert_eq!(v_seen, v_want, "layer {l} V");
        }
    }

    /// Resident bytes of the mapping that starts at `start` (`/proc/self/smaps`).
    #[cfg(target_os = "linux")]
    fn resident_bytes(start: *const u8) -> usize {
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        let head = format!("{:x}-", start as usize);
        let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&head));
        assert!(lines.next().is_some(), "no mapping at {start:?}");
        let rss = lines.find(|l| l.starts_with("Rss:")).expect("Rss line");
        let kib: usize = rss.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("Rss value");
        kib * 1024
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn the_cache_is_committed_when_created() {
        // 512 blocks of 2 KiB x 3 layers x (K, V): 6 MiB, every page resident before any
        // write (a lazily committed mapping has none).
        let kv = KvCache::new(&cfg(), 512).unwrap();
        let bytes = kv.mem.len();
        assert_eq!(resident_bytes(kv.mem.as_ptr()), bytes, "of {bytes} bytes");
    }

    #[test]
    fn a_budget_beyond_the_address_space_is_a_clear_error() {
        // 2^44 blocks of 2 KiB x 3 layers x (K, V): over 2^57 bytes, more than any address space.
        match KvCache::new(&cfg(), 1 << 44) {
            Err(Error::OutOfCache(m)) => assert!(m.contains("smaller memory budget"), "{m}"),
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("a 2^57-byte KV cache was mapped"),
        }
    }
}
