//! `scalar_group`'s operations for one query, eight lanes at a time: the same bits.
// The loops index several arrays and place vector elements with the same index.
#![allow(clippy::needless_range_loop)]

use super::{KvElem, PagedKv, BLOCK};
use crate::exp::avx2::{exp8, tree_sum16};
use std::arch::x86_64::*;

/// One query head (`q`, `head_dim` values) against KV head `g`'s positions
/// `0..n_pos`; writes its output at `out`. `sc` holds at least `n_pos` rounded up to
/// a block.
///
/// SAFETY: AVX2, FMA and F16C available; `head_dim % 16 == 0`; the table covers
/// `n_pos`; `out` holds `head_dim` values owned by the caller.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn query<E: KvElem>(
    q: *const f32,
    n_pos: usize,
    table: &[u32],
    kv: &PagedKv<E>,
    g: usize,
    scale: f32,
    sc: &mut [f32],
    out: *mut f32,
) {
    let hd = kv.head_dim;
    let n_blocks = n_pos.div_ceil(BLOCK);
    let s = sc.as_mut_ptr();
    let neg_inf = _mm256_set1_ps(f32::NEG_INFINITY);
    // Scores: per position, Σ_d q[d]·K[d][p] in order over d, then × scale.
    for (bi, &b) in table[..n_blocks].iter().enumerate() {
        let kb = kv.k.as_ptr().add(kv.offset(b, g));
        let mut acc = [_mm256_setzero_ps(); 2];
        for d in 0..hd {
            let qd = _mm256_set1_ps(*q.add(d));
            for h in 0..2 {
                acc[h] = _mm256_fmadd_ps(qd, E::load8(kb.add(d * BLOCK + 8 * h)), acc[h]);
            }
        }
        for h in 0..2 {
            let first = bi * BLOCK + 8 * h;
            let valid = n_pos.saturating_sub(first).min(8) as i32;
            let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let keep = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(valid), lane));
            let v = _mm256_blendv_ps(neg_inf, _mm256_mul_ps(acc[h], _mm256_set1_ps(scale)), keep);
            _mm256_storeu_ps(s.add(first), v);
        }
    }
    // Softmax: max, e^(s - max), 16 lane sums in order (two vectors), the fixed tree, × 1/sum.
    let n_padded = n_blocks * BLOCK;
    let mut mx = neg_inf;
    for i in (0..n_padded).step_by(8) {
        mx = _mm256_max_ps(mx, _mm256_loadu_ps(s.add(i)));
    }
    let mut m = [0f32; 8];
    _mm256_storeu_ps(m.as_mut_ptr(), mx);
    let max = _mm256_set1_ps(m.iter().cloned().fold(f32::NEG_INFINITY, f32::max));
    let mut sum = [_mm256_setzero_ps(); 2];
    for bi in 0..n_blocks {
        for h in 0..2 {
            let p = s.add(bi * BLOCK + 8 * h);
            let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(p), max));
            _mm256_storeu_ps(p, e);
            sum[h] = _mm256_add_ps(sum[h], e);
        }
    }
    let inv = _mm256_set1_ps(1.0 / tree_sum16(sum[0], sum[1]));
    for i in (0..n_padded).step_by(8) {
        _mm256_storeu_ps(s.add(i), _mm256_mul_ps(_mm256_loadu_ps(s.add(i)), inv));
    }
    // Output: out[d] = Σ_p prob[p]·v[p][d] in order over p, 16 dims (two vectors) per pass.
    for d0 in (0..hd).step_by(16) {
        let mut acc = [_mm256_setzero_ps(); 2];
        for p in 0..n_pos {
            let vr = kv.v.as_ptr().add(kv.offset(table[p / BLOCK], g) + (p % BLOCK) * hd + d0);
            let w = _mm256_set1_ps(*s.add(p));
            for h in 0..2 {
                acc[h] = _mm256_fmadd_ps(w, E::load8(vr.add(8 * h)), acc[h]);
            }
        }
        for h in 0..2 {
            _mm256_storeu_ps(out.add(d0 + 8 * h), acc[h]);
        }
    }
}
