//! Causal multi-head attention over a paged KV cache (CPU), and the cache's layout.
//!
//! Elements are f32 (the default: exact), or F16 / BF16 (`--kv-cache-dtype f16|bf16`: half
//! the bytes, K and V rounded to nearest even when written, widened exactly when read; the
//! arithmetic is the f32 path's on the rounded values). See `KvElem`.
//!
//! Layout per layer and block (`block_size` = 16 positions):
//! * K: `[num_blocks, n_kv_heads, head_dim, block_size]` — transposed, so the 16
//!   positions of one dimension are one AVX-512 vector and scores need no horizontal sums;
//! * V: `[num_blocks, n_kv_heads, block_size, head_dim]`.
//!
//! A sequence's position `p` is in block `block_table[p / 16]` at offset `p % 16`. Its
//! query tokens are its last `query_len` positions; query `j` attends to positions
//! `0..=context_len - query_len + j`. Query head `h` reads KV head `h / (n_heads / n_kv_heads)`.
//!
//! One task per (token, KV head) computes the query heads sharing that KV head:
//! `score = (Σ_d q[d]·k[d]) · scale` accumulated over `d` in order, softmax with the
//! shared `exp` (max, `e^(s − max)`, sum over positions in order, times `1/sum`), then
//! `out = Σ_p prob[p]·v[p]` over positions in order. The arithmetic of a query depends
//! only on its own row, the cache and its position — never on the rest of the batch.
//! The scalar reference (`scalar_group`), AVX2 (one query, 8 lanes) and AVX-512 (up to 6
//! queries sharing each K/V load, 16 lanes) run these operations lane for lane, so every
//! level gives the same bits (tested) — while no score is NaN (a NaN query or an infinite
//! f32 K): the SIMD max then drops a lane's earlier maximum, the scalar fold skips the NaN.

use crate::aligned::AlignedBuf;
use crate::exp::{exp_scalar, tree_sum16};
use crate::parallel::SharedMut;
use crate::shares::deal;
use crate::simd::{simd_level, SimdLevel};
use std::cell::{Cell, RefCell};

/// Positions per cache block (fixed: the K layout puts one block's positions in a vector).
pub const BLOCK: usize = 16;

/// What the cache stores per element. Reading widens to f32 exactly, so attention over
/// a cache of `E` gives the bits of attention over an f32 cache holding
/// `E::from_f32(x).to_f32()` (tested).
pub trait KvElem: Copy + Default + Send + Sync + 'static {
    fn from_f32(x: f32) -> Self;
    fn to_f32(self) -> f32;
    /// The 16 elements at `p`, widened to f32.
    ///
    /// # Safety
    /// AVX-512 available; 16 elements readable at `p`.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512;
    /// The 8 elements at `p`, widened to f32.
    ///
    /// # Safety
    /// AVX2 and F16C available; 8 elements readable at `p`.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256;
}

impl KvElem for f32 {
    fn from_f32(x: f32) -> f32 {
        x
    }
    fn to_f32(self) -> f32 {
        self
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    #[inline]
    unsafe fn load16(p: *const f32) -> std::arch::x86_64::__m512 {
        std::arch::x86_64::_mm512_loadu_ps(p)
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn load8(p: *const f32) -> std::arch::x86_64::__m256 {
        std::arch::x86_64::_mm256_loadu_ps(p)
    }
}

/// BF16, rounded to nearest even (`half`'s conversion; NaN stays NaN).
impl KvElem for half::bf16 {
    fn from_f32(x: f32) -> half::bf16 {
        half::bf16::from_f32(x)
    }
    fn to_f32(self) -> f32 {
        half::bf16::to_f32(self)
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    #[inline]
    unsafe fn load16(p: *const half::bf16) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        let w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(p as *const __m256i));
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(w))
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn load8(p: *const half::bf16) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        let w = _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i));
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(w))
    }
}

/// F16 (llama.cpp's default cache type), rounded to nearest even; beyond ±65504 it
/// saturates there rather than becoming infinite (an infinite K would turn scores into NaN).
impl KvElem for half::f16 {
    fn from_f32(x: f32) -> half::f16 {
        half::f16::from_f32(x.clamp(-65504.0, 65504.0))
    }
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    #[inline]
    unsafe fn load16(p: *const half::f16) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i))
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn load8(p: *const half::f16) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }
}

/// One layer of the paged cache, read-only.
#[derive(Clone, Copy)]
pub struct PagedKv<'a, E: KvElem = f32> {
    pub k: &'a [E],
    pub v: &'a [E],
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

impl<E: KvElem> PagedKv<'_, E> {
    /// Elements of one block of one KV head (K or V).
    fn head_block(&self) -> usize {
        self.head_dim * BLOCK
    }

    /// Start of block `b`, KV head `g` (same offset in K and V).
    fn offset(&self, b: u32, g: usize) -> usize {
        (b as usize * self.n_kv_heads + g) * self.head_block()
    }
}

/// Elements of one layer's K (or V) cache for `num_blocks` blocks.
pub fn layer_len(num_blocks: usize, n_kv_heads: usize, head_dim: usize) -> usize {
    num_blocks * n_kv_heads * head_dim * BLOCK
}

/// Stores one token's K and V (`[n_kv_heads * head_dim]` each) at cache `slot`.
pub fn write_kv<E: KvElem>(
    k_cache: &mut [E],
    v_cache: &mut [E],
    slot: usize,
    k: &[f32],
    v: &[f32],
    n_kv_heads: usize,
    head_dim: usize,
) {
    let (b, off) = (slot / BLOCK, slot % BLOCK);
    for g in 0..n_kv_heads {
        let base = (b * n_kv_heads + g) * head_dim * BLOCK;
        let kh = &k[g * head_dim..(g + 1) * head_dim];
        for (d, kd) in kh.iter().enumerate() {
            k_cache[base + d * BLOCK + off] = E::from_f32(*kd);
        }
        let vh = &v[g * head_dim..(g + 1) * head_dim];
        for (c, x) in v_cache[base + off * head_dim..][..head_dim].iter_mut().zip(vh) {
            *c = E::from_f32(*x);
        }
    }
}

/// Tokens per batch from which `write_kv_rows` goes over the pool.
const PARALLEL_WRITE_TOKENS: usize = 8;

/// Dimension ranges per KV head that `write_kv_rows`' tasks take.
const WRITE_PARTS: usize = 4;

/// `write_kv` for every token of a batch: row `t` of `k` and `v` (`[n, n_kv_heads *
/// head_dim]` each) goes to cache slot `slots[t]`. From `PARALLEL_WRITE_TOKENS` tokens on
/// the writes go over the pool, a task per KV head and quarter of its dimensions: a task
/// writes only those dimensions of that head, in every block, tokens in order — so the
/// tasks' elements are disjoint whatever the slots, and the cache ends as after `write_kv`
/// token by token (a repeated slot keeps its last token's values). Panics if a slot lies
/// outside the cache, as `write_kv` does.
pub fn write_kv_rows<E: KvElem>(
    k_cache: &mut [E],
    v_cache: &mut [E],
    slots: &[u32],
    k: &[f32],
    v: &[f32],
    n_kv_heads: usize,
    head_dim: usize,
) {
    let width = n_kv_heads * head_dim;
    let n = slots.len();
    assert!(k.len() == n * width && v.len() == n * width, "write_kv_rows: k/v are not {n} rows of {width}");
    if n < PARALLEL_WRITE_TOKENS {
        for (t, &slot) in slots.iter().enumerate() {
            let rows = t * width..(t + 1) * width;
            write_kv(k_cache, v_cache, slot as usize, &k[rows.clone()], &v[rows], n_kv_heads, head_dim);
        }
        return;
    }
    let slot_len = width * BLOCK;
    let blocks = k_cache.len() / slot_len;
    assert!(k_cache.len() == v_cache.len() && k_cache.len() == blocks * slot_len, "write_kv_rows: cache shapes");
    if let Some(&bad) = slots.iter().find(|&&s| s as usize >= blocks * BLOCK) {
        panic!("write_kv_rows: slot {bad} outside a cache of {} slots", blocks * BLOCK);
    }
    let (kc, vc) = (SharedMut::new(k_cache), SharedMut::new(v_cache));
    crate::parallel::parallel_for(n_kv_heads * WRITE_PARTS, &|task| {
        let (g, part) = (task / WRITE_PARTS, task % WRITE_PARTS);
        let dims = part * head_dim / WRITE_PARTS..(part + 1) * head_dim / WRITE_PARTS;
        for (t, &slot) in slots.iter().enumerate() {
            let (b, off) = (slot as usize / BLOCK, slot as usize % BLOCK);
            let base = (b * n_kv_heads + g) * head_dim * BLOCK;
            let row = t * width + g * head_dim;
            for d in dims.clone() {
                // SAFETY: slot checked above, so both indices lie in the caches; (head g,
                // dimension d) of every block belongs to this task alone (see above), and
                // the caches stay borrowed mutably until every task has returned.
                unsafe {
                    *kc.at(base + d * BLOCK + off) = E::from_f32(k[row + d]);
                    *vc.at(base + off * head_dim + d) = E::from_f32(v[row + d]);
                }
            }
        }
    });
}

/// The query tokens of one sequence in a batch.
#[derive(Clone, Copy, Debug)]
pub struct AttnSeq<'a> {
    /// Index of the sequence's first query token in the batch.
    pub query_start: usize,
    pub query_len: usize,
    /// Tokens of the sequence in the cache, including this step's.
    pub context_len: usize,
    pub block_table: &'a [u32],
}

impl AttnSeq<'_> {
    /// Positions written before this step: the first query token's position.
    pub fn past_len(&self) -> usize {
        self.context_len - self.query_len
    }
}

thread_local! {
    static SCORES: RefCell<AlignedBuf> = const { RefCell::new(AlignedBuf::new()) };
    /// The caller's per-call index vectors (`Plan`), kept for their allocations.
    static PLAN: Cell<Plan> = const { Cell::new(Plan { token_seq: Vec::new(), tasks: Vec::new() }) };
}

/// Which sequence each query token belongs to, and the call's tasks.
#[derive(Default)]
struct Plan {
    /// Per token: (sequence, number of positions it sees).
    token_seq: Vec<(usize, usize)>,
    /// (first token, tokens, KV head).
    tasks: Vec<(usize, usize, usize)>,
}

/// `q`, `out`: `[n_tokens, n_heads, head_dim]`. Every token of the batch belongs to
/// exactly one of `seqs`; their K/V must already be in the cache.
pub fn paged_attention<E: KvElem>(
    q: &[f32],
    seqs: &[AttnSeq],
    kv: &PagedKv<E>,
    n_heads: usize,
    scale: f32,
    out: &mut [f32],
) {
    paged_attention_at(simd_level(), q, seqs, kv, n_heads, scale, out)
}

/// `paged_attention` at a given SIMD level (at most the detected one).
pub fn paged_attention_at<E: KvElem>(
    level: SimdLevel,
    q: &[f32],
    seqs: &[AttnSeq],
    kv: &PagedKv<E>,
    n_heads: usize,
    scale: f32,
    out: &mut [f32],
) {
    assert!(level <= SimdLevel::detect(), "SIMD level {} is not available", level.name());
    let (hd, nkv) = (kv.head_dim, kv.n_kv_heads);
    assert!(n_heads.is_multiple_of(nkv), "n_heads must be a multiple of n_kv_heads");
    assert!(q.len() == out.len() && q.len().is_multiple_of(n_heads * hd), "q/out shape mismatch");
    let n_tokens = q.len() / (n_heads * hd);
    // The vectors of the last call on this thread, refilled: a warm decode step allocates
    // nothing (a nested call would find them taken and allocate its own).
    let mut plan = PLAN.take();
    let token_seq = &mut plan.token_seq;
    token_seq.clear();
    token_seq.resize(n_tokens, (usize::MAX, 0));
    for (s, seq) in seqs.iter().enumerate() {
        assert!(seq.query_len <= seq.context_len, "query longer than context");
        assert!(seq.block_table.len() * BLOCK >= seq.context_len, "block table too short");
        let max_block = seq.block_table.iter().map(|b| *b as usize + 1).max().unwrap_or(0);
        assert!(kv.offset(max_block as u32, 0) <= kv.k.len(), "block id out of range");
        for j in 0..seq.query_len {
            token_seq[seq.query_start + j] = (s, seq.past_len() + j + 1);
        }
    }
    assert!(token_seq.iter().all(|(s, _)| *s != usize::MAX), "a token belongs to no sequence");
    let group = n_heads / nkv;
    // Task (t, g) writes only the heads of KV group g of token t.
    let optr = SharedMut::new(out);
    let simd = matches!(level, SimdLevel::Avx512) && cfg!(target_arch = "x86_64") && hd % 16 == 0 && hd <= 512;
    // AVX2: the scalar reference's operations eight lanes at a time (same bits).
    let avx2 = matches!(level, SimdLevel::Avx2) && cfg!(target_arch = "x86_64") && hd % 16 == 0;
    // A task: one KV head of `tokens` consecutive query tokens of one sequence (the SIMD
    // tile takes up to 6 queries, so several tokens share each K/V load).
    let per_task = if simd || avx2 { (6 / group).max(1) } else { 1 };
    let tasks = &mut plan.tasks;
    tasks.clear();
    for seq in seqs {
        for t0 in (seq.query_start..seq.query_start + seq.query_len).step_by(per_task) {
            let n = per_task.min(seq.query_start + seq.query_len - t0);
            for g in 0..nkv {
                tasks.push((t0, n, g));
            }
        }
    }
    let (token_seq, tasks) = (&plan.token_seq, &plan.tasks);
    let run_task = |task: usize| {
        let (t0, nt, g) = tasks[task];
        let table = seqs[token_seq[t0].0].block_table;
        let max_pos = token_seq[t0 + nt - 1].1;
        let n_padded = max_pos.div_ceil(BLOCK) * BLOCK;
        SCORES.with(|sc| {
            let mut sc = sc.borrow_mut();
            sc.resize(nt * group * n_padded);
            if simd {
                #[cfg(target_arch = "x86_64")]
                {
                    let mut qs = [avx512::Query { q: std::ptr::null(), n_pos: 0, out: std::ptr::null_mut() }; 6];
                    for i in 0..nt {
                        for j in 0..group {
                            let row = (t0 + i) * n_heads + g * group + j;
                            // SAFETY: this task owns these heads of these tokens.
                            qs[i * group + j] = avx512::Query {
                                q: q[row * hd..].as_ptr(),
                                n_pos: token_seq[t0 + i].1,
                                out: optr.at(row * hd),
                            };
                        }
                    }
                    let fresh = seqs[token_seq[t0].0].past_len();
                    // SAFETY: the level guarantees AVX-512; shapes checked above.
                    unsafe { avx512::queries(&qs[..nt * group], table, max_pos, fresh, kv, g, scale, &mut sc) };
                }
            } else if avx2 {
                #[cfg(target_arch = "x86_64")]
                for i in 0..nt {
                    let (t, n_pos) = (t0 + i, token_seq[t0 + i].1);
                    for j in 0..group {
                        let row = t * n_heads + g * group + j;
                        // SAFETY: the level guarantees AVX2; this task owns these heads.
                        unsafe {
                            avx2::query(q[row * hd..].as_ptr(), n_pos, table, kv, g, scale, &mut sc, optr.at(row * hd))
                        };
                    }
                }
            } else {
                let (t, n_pos) = (t0, token_seq[t0].1);
                let q_rows = &q[(t * n_heads + g * group) * hd..(t * n_heads + (g + 1) * group) * hd];
                // SAFETY: this task owns heads g*group..(g+1)*group of token t.
                let o = unsafe { std::slice::from_raw_parts_mut(optr.at((t * n_heads + g * group) * hd), group * hd) };
                scalar_group(q_rows, table, n_pos, kv, g, group, scale, &mut sc, o);
            }
        });
    };
    // Tasks go out as contiguous shares (`crate::shares`), so a thread knows its next task
    // and asks for that task's first K blocks (cold, on scattered pages) while it works on
    // this one.
    deal(tasks.len(), |task, own_end| {
        if simd && own_end.is_some_and(|end| task + 1 < end) {
            let (t0, nt, g) = tasks[task + 1];
            let n_blocks = token_seq[t0 + nt - 1].1.div_ceil(BLOCK);
            // Only blocks written before this step (`avx512::queries`).
            let seq = &seqs[token_seq[t0].0];
            let old = seq.past_len().div_ceil(BLOCK);
            prefetch_k_start(&seq.block_table[..n_blocks.min(4).min(old)], kv, g);
        }
        run_task(task);
    });
    PLAN.set(plan);
}

/// Brings KV head `g`'s K blocks `table` into L2 (AVX-512 builds; elsewhere nothing).
fn prefetch_k_start<E: KvElem>(table: &[u32], kv: &PagedKv<E>, g: usize) {
    #[cfg(target_arch = "x86_64")]
    for &b in table {
        // SAFETY: block ids were checked by the caller, so the offset lies in the cache.
        unsafe {
            crate::simd::prefetch_lines::<{ std::arch::x86_64::_MM_HINT_T1 }, E>(
                kv.k.as_ptr().add(kv.offset(b, g)),
                BLOCK * kv.head_dim,
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (table, kv, g);
}

/// Reference: the same operations, one lane at a time.
#[allow(clippy::too_many_arguments)]
fn scalar_group<E: KvElem>(
    q: &[f32],
    table: &[u32],
    n_pos: usize,
    kv: &PagedKv<E>,
    g: usize,
    group: usize,
    scale: f32,
    sc: &mut [f32],
    o: &mut [f32],
) {
    let hd = kv.head_dim;
    let n_padded = n_pos.div_ceil(BLOCK) * BLOCK;
    for j in 0..group {
        let qj = &q[j * hd..(j + 1) * hd];
        let s = &mut sc[j * n_padded..(j + 1) * n_padded];
        for (bi, &b) in table[..n_padded / BLOCK].iter().enumerate() {
            let kb = &kv.k[kv.offset(b, g)..][..hd * BLOCK];
            for l in 0..BLOCK {
                let mut acc = 0f32;
                for d in 0..hd {
                    acc = qj[d].mul_add(kb[d * BLOCK + l].to_f32(), acc);
                }
                s[bi * BLOCK + l] = if bi * BLOCK + l < n_pos { acc * scale } else { f32::NEG_INFINITY };
            }
        }
        softmax_scalar(s, n_pos);
        let oj = &mut o[j * hd..(j + 1) * hd];
        oj.fill(0.0);
        for (p, &pw) in s[..n_pos].iter().enumerate() {
            let vb = &kv.v[kv.offset(table[p / BLOCK], g)..][..hd * BLOCK];
            let vr = &vb[(p % BLOCK) * hd..(p % BLOCK + 1) * hd];
            for d in 0..hd {
                oj[d] = pw.mul_add(vr[d].to_f32(), oj[d]);
            }
        }
    }
}

/// In place over `s[..n_padded]` (entries past `n_pos` are -inf): max, e^(s − max), the
/// sum in 16-lane order (lane `l` sums positions ≡ l mod 16, then a fixed tree), × 1/sum.
fn softmax_scalar(s: &mut [f32], n_pos: usize) {
    let max = s[..n_pos].iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let mut lanes = [0f32; BLOCK];
    for chunk in s.chunks_exact_mut(BLOCK) {
        for (l, v) in chunk.iter_mut().enumerate() {
            *v = exp_scalar(*v - max);
            lanes[l] += *v;
        }
    }
    let inv = 1.0 / tree_sum16(&lanes);
    for v in s.iter_mut() {
        *v *= inv;
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2;

#[cfg(target_arch = "x86_64")]
mod avx512;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::available_levels;
    use crate::test_util::Lcg;

    /// `write_kv_rows` leaves the caches as `write_kv` token after token, below and above
    /// the batch size where it goes over the pool, for every element type, with a slot
    /// written twice in one batch (the later token's values stay) and head dimensions that
    /// are not a multiple of the four parts.
    #[test]
    fn write_kv_rows_is_write_kv_token_by_token() {
        fn case<E: KvElem + PartialEq + std::fmt::Debug>(n: usize, nkv: usize, hd: usize, rng: &mut Lcg) {
            let num_blocks = 6;
            let slots: Vec<u32> =
                (0..n).map(|t| if t == n - 1 { 3 } else { ((t * 37 + 5) % (num_blocks * BLOCK)) as u32 }).collect();
            let k: Vec<f32> = (0..n * nkv * hd).map(|_| rng.normal()).collect();
            let v: Vec<f32> = (0..n * nkv * hd).map(|_| rng.normal()).collect();
            let len = layer_len(num_blocks, nkv, hd);
            let (mut kw, mut vw) = (vec![E::default(); len], vec![E::default(); len]);
            let w = nkv * hd;
            for (t, &slot) in slots.iter().enumerate() {
                write_kv(&mut kw, &mut vw, slot as usize, &k[t * w..(t + 1) * w], &v[t * w..(t + 1) * w], nkv, hd);
            }
            let (mut kr, mut vr) = (vec![E::default(); len], vec![E::default(); len]);
            write_kv_rows(&mut kr, &mut vr, &slots, &k, &v, nkv, hd);
            assert_eq!(kr, kw, "K, {n} tokens, {nkv} x {hd}");
            assert_eq!(vr, vw, "V, {n} tokens, {nkv} x {hd}");
        }
        let mut rng = Lcg(29);
        for (n, nkv, hd) in [(1, 3, 64), (7, 2, 8), (8, 3, 64), (40, 3, 64), (33, 2, 6), (20, 1, 2)] {
            case::<f32>(n, nkv, hd, &mut rng);
            case::<half::f16>(n, nkv, hd, &mut rng);
            case::<half::bf16>(n, nkv, hd, &mut rng);
        }
    }

    #[test]
    #[should_panic(expected = "outside a cache")]
    fn write_kv_rows_rejects_a_slot_past_the_cache() {
        let (nkv, hd, n) = (1, 4, PARALLEL_WRITE_TOKENS);
        let len = layer_len(2, nkv, hd);
        let (mut kc, mut vc) = (vec![0f32; len], vec![0f32; len]);
        let mut slots = vec![0u32; n];
        slots[n - 1] = (2 * BLOCK) as u32;
        write_kv_rows(&mut kc, &mut vc, &slots, &vec![1.0; n * hd], &vec![1.0; n * hd], nkv, hd);
    }

    /// Dense causal attention in f64 over contiguous K/V: `[ctx, n_kv_heads, hd]`.
    #[allow(clippy::too_many_arguments)]
    fn dense(q: &[f32], k: &[f32], v: &[f32], ctx: usize, q_len: usize, nh: usize, nkv: usize, hd: usize) -> Vec<f64> {
        let mut out = vec![0f64; q_len * nh * hd];
        for j in 0..q_len {
            let n_pos = ctx - q_len + j + 1;
            for h in 0..nh {
                let kvh = h / (nh / nkv);
                let qh = &q[(j * nh + h) * hd..][..hd];
                let s: Vec<f64> = (0..n_pos)
                    .map(|p| {
                        (0..hd).map(|d| qh[d] as f64 * k[(p * nkv + kvh) * hd + d] as f64).sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for p in 0..n_pos {
                    for d in 0..hd {
                        out[(j * nh + h) * hd + d] += e[p] / z * v[(p * nkv + kvh) * hd + d] as f64;
                    }
                }
            }
        }
        out
    }

    fn check(nh: usize, nkv: usize, hd: usize) {
        let mut rng = Lcg(3 + hd as u64);
        // Two sequences: a prefill chunk of 5 new tokens over 37 cached, and one decode over 6.
        let specs = [(42usize, 5usize, vec![7u32, 2, 9]), (6, 1, vec![4u32])];
        let num_blocks = 10;
        let mut kc = vec![0f32; layer_len(num_blocks, nkv, hd)];
        let mut vc = kc.clone();
        let mut dense_kv = Vec::new();
        for (ctx, _, table) in &specs {
            let k: Vec<f32> = (0..ctx * nkv * hd).map(|_| rng.normal()).collect();
            let v: Vec<f32> = (0..ctx * nkv * hd).map(|_| rng.normal()).collect();
            for p in 0..*ctx {
                let slot = table[p / BLOCK] as usize * BLOCK + p % BLOCK;
                write_kv(
                    &mut kc,
                    &mut vc,
                    slot,
                    &k[p * nkv * hd..(p + 1) * nkv * hd],
                    &v[p * nkv * hd..(p + 1) * nkv * hd],
                    nkv,
                    hd,
                );
            }
            dense_kv.push((k, v));
        }
        let n_tokens: usize = specs.iter().map(|s| s.1).sum();
        let q: Vec<f32> = (0..n_tokens * nh * hd).map(|_| rng.normal()).collect();
        let seqs = [
            AttnSeq { query_start: 0, query_len: 5, context_len: 42, block_table: &specs[0].2 },
            AttnSeq { query_start: 5, query_len: 1, context_len: 6, block_table: &specs[1].2 },
        ];
        for level in available_levels() {
            let out = attend(level, &q, &seqs, &kc, &vc, nh, nkv, hd);
            let mut start = 0;
            for ((ctx, ql, _), (k, v)) in specs.iter().zip(&dense_kv) {
                let want = dense(&q[start * nh * hd..(start + ql) * nh * hd], k, v, *ctx, *ql, nh, nkv, hd);
                for (a, b) in out[start * nh * hd..(start + ql) * nh * hd].iter().zip(&want) {
                    assert!((*a as f64 - b).abs() < 1e-5, "{} hd={hd}: {a} vs {b}", level.name());
                }
                start += ql;
            }
            // Each token alone gives the same bits as inside the batch (where the SIMD
            // path tiles it together with its neighbours).
            for j in 0..5 {
                let one =
                    AttnSeq { query_start: 0, query_len: 1, context_len: 42 - 5 + j + 1, block_table: &specs[0].2 };
                let alone = attend(level, &q[j * nh * hd..(j + 1) * nh * hd], &[one], &kc, &vc, nh, nkv, hd);
                assert_eq!(
                    alone,
                    out[j * nh * hd..(j + 1) * nh * hd],
                    "{}: batch changed token {j}'s bits",
                    level.name()
                );
            }
        }
    }

    /// `paged_attention_at` over one layer's `k` and `v`, scaled by `1/sqrt(hd)`.
    #[allow(clippy::too_many_arguments)]
    fn attend<E: KvElem>(
        level: SimdLevel,
        q: &[f32],
        seqs: &[AttnSeq],
        k: &[E],
        v: &[E],
        nh: usize,
        nkv: usize,
        hd: usize,
    ) -> Vec<f32> {
        let mut out = vec![0f32; q.len()];
        let kv = PagedKv { k, v, n_kv_heads: nkv, head_dim: hd };
        paged_attention_at(level, q, seqs, &kv, nh, 1.0 / (hd as f32).sqrt(), &mut out);
        out
    }

    /// A half-width cache (F16, BF16) gives, at every level, the bits of an f32 cache
    /// holding the rounded K and V, so what `check` shows for f32 (paged = dense, batch
    /// invariance) carries over; and it stays within its rounding of the exact result.
    fn half_cache_is_the_f32_path_on_rounded_values<E: KvElem>(bound: f32) {
        for (nh, nkv, hd) in [(6, 2, 16), (9, 3, 64), (4, 4, 8)] {
            let mut rng = Lcg(5 + hd as u64);
            let (table, ctx, ql, nb) = ([3u32, 0, 5], 40usize, 4usize, 6usize);
            let (mut kh, mut vh) =
                (vec![E::default(); layer_len(nb, nkv, hd)], vec![E::default(); layer_len(nb, nkv, hd)]);
            let (mut kr, mut vr) = (vec![0f32; kh.len()], vec![0f32; kh.len()]);
            let (mut ke, mut ve) = (vec![0f32; kh.len()], vec![0f32; kh.len()]);
            let round = |x: &[f32]| x.iter().map(|x| E::from_f32(*x).to_f32()).collect::<Vec<_>>();
            for p in 0..ctx {
                let k: Vec<f32> = (0..nkv * hd).map(|_| rng.normal()).collect();
                let v: Vec<f32> = (0..nkv * hd).map(|_| rng.normal()).collect();
                let slot = table[p / BLOCK] as usize * BLOCK + p % BLOCK;
                write_kv(&mut kh, &mut vh, slot, &k, &v, nkv, hd);
                write_kv(&mut kr, &mut vr, slot, &round(&k), &round(&v), nkv, hd);
                write_kv(&mut ke, &mut ve, slot, &k, &v, nkv, hd);
            }
            let q: Vec<f32> = (0..ql * nh * hd).map(|_| rng.normal()).collect();
            let seqs = [AttnSeq { query_start: 0, query_len: ql, context_len: ctx, block_table: &table }];
            for level in available_levels() {
                let h = attend(level, &q, &seqs, &kh, &vh, nh, nkv, hd);
                let r = attend(level, &q, &seqs, &kr, &vr, nh, nkv, hd);
                let e = attend(level, &q, &seqs, &ke, &ve, nh, nkv, hd);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&h), bits(&r), "{} hd={hd}: half cache != f32 cache of rounded values", level.name());
                assert_ne!(bits(&h), bits(&e), "{} hd={hd}: the half cache did not round", level.name());
                let worst = h.iter().zip(&e).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
                assert!(worst < bound, "{} hd={hd}: the half cache moved an output by {worst}", level.name());
            }
        }
    }

    /// Outputs are convex mixes of unit-normal V rows: BF16's 2^-8 relative rounding of K
    /// (through the scores) and V moves them by well under 0.05, F16's 2^-11 by under 0.01.
    #[test]
    fn bf16_cache_is_the_f32_path_on_rounded_values() {
        half_cache_is_the_f32_path_on_rounded_values::<half::bf16>(0.05);
    }

    #[test]
    fn f16_cache_is_the_f32_path_on_rounded_values() {
        half_cache_is_the_f32_path_on_rounded_values::<half::f16>(0.01);
    }

    #[test]
    fn f16_saturates_instead_of_overflowing() {
        for (x, want) in [(1e6f32, 65504f32), (-7e4, -65504.0), (65504.0, 65504.0), (1.5, 1.5)] {
            assert_eq!(<half::f16 as KvElem>::from_f32(x).to_f32(), want, "{x}");
        }
        assert!(<half::f16 as KvElem>::from_f32(f32::NAN).to_f32().is_nan());
    }

    /// The SIMD levels run the scalar reference's operations lane by lane: the same bits,
    /// for every cache type, prefill chunks and single decode tokens alike.
    fn simd_levels_are_the_scalar_bits<E: KvElem>() {
        for (nh, nkv, hd) in [(6, 2, 16), (9, 3, 64), (8, 2, 32)] {
            let mut rng = Lcg(17 + hd as u64);
            let (table, nb) = ([4u32, 1, 6, 2], 7usize);
            let (mut kc, mut vc) =
                (vec![E::default(); layer_len(nb, nkv, hd)], vec![E::default(); layer_len(nb, nkv, hd)]);
            for p in 0..60 {
                let k: Vec<f32> = (0..nkv * hd).map(|_| rng.normal() * 2.0).collect();
                let v: Vec<f32> = (0..nkv * hd).map(|_| rng.normal()).collect();
                write_kv(&mut kc, &mut vc, table[p / BLOCK] as usize * BLOCK + p % BLOCK, &k, &v, nkv, hd);
            }
            for (ctx, ql) in [(60usize, 7usize), (33, 1), (16, 16), (1, 1)] {
                let q: Vec<f32> = (0..ql * nh * hd).map(|_| rng.normal()).collect();
                let seqs = [AttnSeq { query_start: 0, query_len: ql, context_len: ctx, block_table: &table }];
                let want = attend(SimdLevel::Scalar, &q, &seqs, &kc, &vc, nh, nkv, hd);
                for level in available_levels() {
                    let got = attend(level, &q, &seqs, &kc, &vc, nh, nkv, hd);
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&got), bits(&want), "{} hd={hd} ctx={ctx} q_len={ql}", level.name());
                }
            }
        }
    }

    #[test]
    fn simd_levels_are_the_scalar_bits_f32_f16_bf16() {
        simd_levels_are_the_scalar_bits::<f32>();
        simd_levels_are_the_scalar_bits::<half::f16>();
        simd_levels_are_the_scalar_bits::<half::bf16>();
    }

    #[test]
    fn paged_equals_dense_with_scattered_blocks() {
        check(6, 2, 16);
        check(9, 3, 64);
        check(4, 4, 8); // head_dim not a multiple of 16: the portable path
    }
}
