//! Up to 6 queries sharing each K/V load, 16 lanes: `scalar_group`'s operations, the same bits.
// The loops index several arrays and place vector elements with the same index.
#![allow(clippy::needless_range_loop)]

use super::{KvElem, PagedKv, BLOCK};
use crate::exp::avx512::exp16;
use crate::simd::prefetch_lines;
use std::arch::x86_64::*;

/// One query head of one token: its q row, how many positions it sees, its output.
#[derive(Clone, Copy)]
pub struct Query {
    pub q: *const f32,
    pub n_pos: usize,
    pub out: *mut f32,
}

/// Up to 6 queries (heads of consecutive tokens) against KV head `g`, positions
/// `0..max_pos`. A query's positions past its own `n_pos` score -inf, so they add
/// exact zeros to its softmax sums and outputs: its bits do not depend on the others.
/// Positions from `fresh` on were written in this step (still in the caches): only the
/// blocks before it are prefetched. (A 512-token prefill, all fresh, ran ~10% faster
/// without prefetches; a 32-sequence decode, its cache streamed from memory, ~35% slower:
/// `cargo bench ... attention/`.)
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
pub unsafe fn queries<E: KvElem>(
    qs: &[Query],
    table: &[u32],
    max_pos: usize,
    fresh: usize,
    kv: &PagedKv<E>,
    g: usize,
    scale: f32,
    sc: &mut [f32],
) {
    match qs.len() {
        1 => tile::<1, E>(qs, table, max_pos, fresh, kv, g, scale, sc),
        2 => tile::<2, E>(qs, table, max_pos, fresh, kv, g, scale, sc),
        3 => tile::<3, E>(qs, table, max_pos, fresh, kv, g, scale, sc),
        4 => tile::<4, E>(qs, table, max_pos, fresh, kv, g, scale, sc),
        5 => tile::<5, E>(qs, table, max_pos, fresh, kv, g, scale, sc),
        6 => tile::<6, E>(qs, table, max_pos, fresh, kv, g, scale, sc),
        n => unreachable!("{n} queries in one attention tile"),
    }
}

#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
unsafe fn tile<const Q: usize, E: KvElem>(
    qs: &[Query],
    table: &[u32],
    max_pos: usize,
    fresh: usize,
    kv: &PagedKv<E>,
    g: usize,
    scale: f32,
    sc: &mut [f32],
) {
    let hd = kv.head_dim;
    let n_blocks = max_pos.div_ceil(BLOCK);
    let n_padded = n_blocks * BLOCK;
    let vscale = _mm512_set1_ps(scale);
    let neg_inf = _mm512_set1_ps(f32::NEG_INFINITY);
    let base = sc.as_mut_ptr();
    let srow = |i: usize| base.add(i * n_padded);
    // Block `b` was written before this step (worth prefetching).
    let old = |b: usize| b * BLOCK < fresh;
    // Scores, 4 blocks (64 positions) × Q queries per pass: acc[i][p] = Σ_d q_i[d]·K[d][p].
    let mut b0 = 0;
    while b0 < n_blocks {
        let nb = (n_blocks - b0).min(4);
        let kp: [*const E; 4] = std::array::from_fn(|p| kv.k.as_ptr().add(kv.offset(table[b0 + p.min(nb - 1)], g)));
        // The next pass's K blocks (scattered pages: no hardware stream to follow)
        // come into L2 meanwhile, one cache line of each per step over `d` (into L2
        // rather than L1: with the V lines below, L1 would evict what this pass reads;
        // `attention/streamed_*` ran ~7% faster).
        let next: [*const E; 4] = std::array::from_fn(|p| {
            let nb = b0 + 4 + p;
            if nb < n_blocks && old(nb) {
                kv.k.as_ptr().add(kv.offset(table[nb], g))
            } else {
                std::ptr::null()
            }
        });
        // These blocks' V (needed right after the softmax) comes into L2 alongside:
        // a V block is as long as a K block, one line of each per step over `d`.
        // (Prefetched one block ahead in the output pass only, V came from memory
        // there at half the bandwidth: `attention/streamed_*` 14 -> 10.7 ms.)
        let vp: [*const E; 4] = std::array::from_fn(|p| {
            if p < nb && old(b0 + p) {
                kv.v.as_ptr().add(kv.offset(table[b0 + p], g))
            } else {
                std::ptr::null()
            }
        });
        // (Tested once per pass, so the loop is compiled with and without the prefetches.)
        let pf = next.iter().chain(&vp).any(|p| !p.is_null());
        let mut acc = [[_mm512_setzero_ps(); 4]; Q];
        for d in 0..hd {
            // One line per step over `d` (a BF16 row of a block is half a line).
            if pf && (d * BLOCK * size_of::<E>()).is_multiple_of(64) {
                for np in next {
                    if !np.is_null() {
                        _mm_prefetch::<_MM_HINT_T1>(np.add(d * BLOCK) as *const i8);
                    }
                }
                for vq in vp {
                    if !vq.is_null() {
                        _mm_prefetch::<_MM_HINT_T1>(vq.add(d * BLOCK) as *const i8);
                    }
                }
            }
            let kd: [__m512; 4] = std::array::from_fn(|p| E::load16(kp[p].add(d * BLOCK)));
            for i in 0..Q {
                let b = _mm512_set1_ps(*qs[i].q.add(d));
                for p in 0..4 {
                    acc[i][p] = _mm512_fmadd_ps(b, kd[p], acc[i][p]);
                }
            }
        }
        for i in 0..Q {
            for p in 0..nb {
                let first = (b0 + p) * BLOCK;
                let valid = qs[i].n_pos.saturating_sub(first).min(BLOCK);
                let mask: u16 = if valid >= BLOCK { 0xFFFF } else { ((1u32 << valid) - 1) as u16 };
                let s = _mm512_mask_blend_ps(mask, neg_inf, _mm512_mul_ps(acc[i][p], vscale));
                _mm512_storeu_ps(srow(i).add(first), s);
            }
        }
        b0 += nb;
    }
    // The first V block comes in during the softmax.
    prefetch_lines::<_MM_HINT_T0, E>(kv.v.as_ptr().add(kv.offset(table[0], g)), BLOCK * hd);
    // Softmax per query: max, e^(s - max) (exactly 0 where masked), lane sums in order, × 1/sum.
    for i in 0..Q {
        let s = srow(i);
        let mut mx = neg_inf;
        for bi in 0..n_blocks {
            mx = _mm512_max_ps(mx, _mm512_loadu_ps(s.add(bi * BLOCK)));
        }
        let max = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
        let mut sum = _mm512_setzero_ps();
        for bi in 0..n_blocks {
            let e = exp16(_mm512_sub_ps(_mm512_loadu_ps(s.add(bi * BLOCK)), max));
            _mm512_storeu_ps(s.add(bi * BLOCK), e);
            sum = _mm512_add_ps(sum, e);
        }
        let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(sum));
        for bi in 0..n_blocks {
            _mm512_storeu_ps(s.add(bi * BLOCK), _mm512_mul_ps(_mm512_loadu_ps(s.add(bi * BLOCK)), inv));
        }
    }
    // Output: out_i = Σ_p prob_i[p]·v[p], 64 dims (4 vectors) × Q queries per pass.
    for d0 in (0..hd).step_by(64) {
        let nv = ((hd - d0) / 16).min(4);
        let mut acc = [[_mm512_setzero_ps(); 4]; Q];
        for (bi, &b) in table[..n_blocks].iter().enumerate() {
            let vb = kv.v.as_ptr().add(kv.offset(b, g));
            // The next V block, a row's lines per position.
            let vn = table
                .get(bi + 1)
                .filter(|_| bi + 1 < n_blocks && old(bi + 1))
                .map(|&nb| kv.v.as_ptr().add(kv.offset(nb, g)));
            let valid = (max_pos - bi * BLOCK).min(BLOCK);
            for l in 0..valid {
                if let Some(vn) = vn {
                    prefetch_lines::<_MM_HINT_T0, E>(vn.add(l * hd + d0), 64.min(hd - d0));
                }
                let vr = vb.add(l * hd + d0);
                let v: [__m512; 4] = std::array::from_fn(|j| E::load16(vr.add(16 * j.min(nv - 1))));
                for i in 0..Q {
                    let p = _mm512_set1_ps(*srow(i).add(bi * BLOCK + l));
                    for j in 0..4 {
                        acc[i][j] = _mm512_fmadd_ps(p, v[j], acc[i][j]);
                    }
                }
            }
        }
        for i in 0..Q {
            for j in 0..nv {
                _mm512_storeu_ps(qs[i].out.add(d0 + 16 * j), acc[i][j]);
            }
        }
    }
}
