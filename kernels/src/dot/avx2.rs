//! AVX2 + FMA + F16C kernels.
//!
//! Accumulation order: the AVX-512 kernels' (see `dot/avx512.rs`), at half the width.
//! AVX-512 keeps one 16-lane accumulator (element `i` to lane `i % 16`), adds 16
//! elements per step with one FMA, zero-pads the last partial step (no all-zero steps)
//! and sums the lanes `i + (i+8)`, then `+4`, `+2`, `+1`. Here the 16 lanes are two
//! 8-lane accumulators, `acc[0]` lanes 0..8 and `acc[1]` lanes 8..16, each step one FMA
//! into each, and the sum starts with `acc[0] + acc[1]` (= `i + (i+8)`) then follows the
//! same tree. Every lane sees the same operations in the same order, so each dot product
//! has the AVX-512 kernels' bits: a model's matmuls give the same values on AVX2-only and
//! AVX-512 CPUs (`dot::tests::avx2_has_the_avx512_bits`). Quantized blocks are expanded
//! in registers with the reference dequantizer's exact operations, so `dot_row(w, x)`
//! equals `dot_f32(dequantize_row(w), x)` bit for bit.
//!
//! Safety: every function requires the `avx2`, `fma` and `f16c` CPU features (checked
//! by `simd_level()` before dispatch) and equal-length, in-bounds inputs.
// The loops index several arrays and place vector elements with the same index.
#![allow(clippy::needless_range_loop)]

use crate::dtype::DType;
use crate::quant::{f16_at, f32_at};
use std::arch::x86_64::*;

/// One 16-element step's two halves: lanes 0..8 and 8..16.
pub(crate) type Acc = [__m256; 2];

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn zero() -> Acc {
    [_mm256_setzero_ps(); 2]
}

/// One step: `acc[h] += w[h] · x[8h..8h+8]`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn fma16(w: [__m256; 2], x: *const f32, acc: &mut Acc) {
    acc[0] = _mm256_fmadd_ps(w[0], _mm256_loadu_ps(x), acc[0]);
    acc[1] = _mm256_fmadd_ps(w[1], _mm256_loadu_ps(x.add(8)), acc[1]);
}

/// Two steps over 32 elements (a 32-element block): `w[0..2]` then `w[2..4]`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn fma32(w: [__m256; 4], x: *const f32, acc: &mut Acc) {
    fma16([w[0], w[1]], x, acc);
    fma16([w[2], w[3]], x.add(16), acc);
}

/// The AVX-512 horizontal sum of the 16 lanes `acc[0] | acc[1]`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) unsafe fn reduce(acc: Acc) -> f32 {
    let v = _mm256_add_ps(acc[0], acc[1]); // i + i+8
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1)); // + i+4
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s)); // + i+2
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1)); // + i+1
    _mm_cvtss_f32(s)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut out = [[0f32]];
    dot_f32_tile::<1, 1>([a.as_ptr()], [b.as_ptr()], a.len(), &mut out);
    out[0][0]
}

/// `out[r][c] = dot_f32(w[r][..k], x[c][..k])` for `R` rows × `C` tokens, `R·C <= 6` (the
/// `2·R·C` accumulators, the `C` token vectors and one row vector fill the 16
/// registers): each step loads `R + C` vectors per half for `R·C` FMAs (3 × 2: 10 loads
/// for 12 FMAs). The chains only interleave: each output has `dot_f32`'s order and bits.
///
/// SAFETY: AVX2, FMA and F16C available; every `w[r]` and `x[c]` holds `k` f32.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_f32_tile<const R: usize, const C: usize>(
    w: [*const f32; R],
    x: [*const f32; C],
    k: usize,
    out: &mut [[f32; C]; R],
) {
    let mut acc = [[zero(); C]; R];
    let full = k / 16 * 16;
    let mut i = 0;
    while i < full {
        step(w.map(|p| p.add(i)), x.map(|p| p.add(i)), &mut acc);
        i += 16;
    }
    if full < k {
        // The last step zero-padded.
        let mut tw = [[0f32; 16]; R];
        let mut tx = [[0f32; 16]; C];
        for (t, p) in tw.iter_mut().zip(w) {
            t[..k - full].copy_from_slice(std::slice::from_raw_parts(p.add(full), k - full));
        }
        for (t, p) in tx.iter_mut().zip(x) {
            t[..k - full].copy_from_slice(std::slice::from_raw_parts(p.add(full), k - full));
        }
        let mut tws = [std::ptr::null(); R];
        let mut txs = [std::ptr::null(); C];
        for r in 0..R {
            tws[r] = tw[r].as_ptr();
        }
        for c in 0..C {
            txs[c] = tx[c].as_ptr();
        }
        step(tws, txs, &mut acc);
    }
    for r in 0..R {
        for c in 0..C {
            out[r][c] = reduce(acc[r][c]);
        }
    }
}

/// One 16-element step of `dot_f32_tile`: `acc[r][c][h] += w[r][8h..] · x[c][8h..]`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn step<const R: usize, const C: usize>(w: [*const f32; R], x: [*const f32; C], acc: &mut [[Acc; C]; R]) {
    for h in 0..2 {
        let xv: [__m256; C] = std::array::from_fn(|c| _mm256_loadu_ps(x[c].add(8 * h)));
        for r in 0..R {
            let wv = _mm256_loadu_ps(w[r].add(8 * h));
            for c in 0..C {
                acc[r][c][h] = _mm256_fmadd_ps(wv, xv[c], acc[r][c][h]);
            }
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn load_f32x16(p: *const f32) -> [__m256; 2] {
    [_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))]
}

/// 16 halves (f16 or bf16) at `p` as f32.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn load_half16<const BF16: bool>(p: *const u8) -> [__m256; 2] {
    let mut w = [_mm256_setzero_ps(); 2];
    for (k, wk) in w.iter_mut().enumerate() {
        let h = _mm_loadu_si128(p.add(16 * k) as *const __m128i);
        *wk = if BF16 {
            _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
        } else {
            _mm256_cvtph_ps(h)
        };
    }
    w
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_half<const BF16: bool>(w: &[u8], x: &[f32]) -> f32 {
    let n = x.len();
    let mut acc = zero();
    let full = n / 16 * 16;
    let mut i = 0;
    while i < full {
        fma16(load_half16::<BF16>(w.as_ptr().add(2 * i)), x.as_ptr().add(i), &mut acc);
        i += 16;
    }
    if full < n {
        let (mut tw, mut tx) = ([0u8; 32], [0f32; 16]);
        tw[..2 * (n - full)].copy_from_slice(&w[2 * full..2 * n]);
        tx[..n - full].copy_from_slice(&x[full..]);
        fma16(load_half16::<BF16>(tw.as_ptr()), tx.as_ptr(), &mut acc);
    }
    reduce(acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f32_bytes(w: &[u8], x: &[f32]) -> f32 {
    let n = x.len();
    let mut acc = zero();
    let full = n / 16 * 16;
    let mut i = 0;
    while i < full {
        fma16(load_f32x16(w.as_ptr().add(4 * i) as *const f32), x.as_ptr().add(i), &mut acc);
        i += 16;
    }
    if full < n {
        let (mut tw, mut tx) = ([0f32; 16], [0f32; 16]);
        for (k, t) in tw[..n - full].iter_mut().enumerate() {
            *t = f32_at(w, 4 * (full + k));
        }
        tx[..n - full].copy_from_slice(&x[full..]);
        fma16(load_f32x16(tw.as_ptr()), tx.as_ptr(), &mut acc);
    }
    reduce(acc)
}

/// 8 consecutive bytes of a 16-byte vector (`HALF` 0 or 1) as i32 lanes.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn widen_u8<const HALF: i32>(v: __m128i) -> __m256i {
    if HALF == 0 {
        _mm256_cvtepu8_epi32(v)
    } else {
        _mm256_cvtepu8_epi32(_mm_srli_si128(v, 8))
    }
}

/// The 32 nibbles of 16 bytes in element order (low nibbles 0..16, high 16..32).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn nibbles(p: *const u8) -> [__m256i; 4] {
    let v = _mm_loadu_si128(p as *const __m128i);
    let m = _mm_set1_epi8(0x0F);
    let lo = _mm_and_si128(v, m);
    let hi = _mm_and_si128(_mm_srli_epi16(v, 4), m);
    [widen_u8::<0>(lo), widen_u8::<1>(lo), widen_u8::<0>(hi), widen_u8::<1>(hi)]
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q8_0(w: &[u8], x: &[f32]) -> f32 {
    let mut acc = zero();
    for (b, xb) in w.chunks_exact(34).zip(x.chunks_exact(32)) {
        let d = _mm256_set1_ps(f16_at(b, 0));
        let mut wv = [_mm256_setzero_ps(); 4];
        for (k, wk) in wv.iter_mut().enumerate() {
            let q = _mm256_cvtepi8_epi32(_mm_loadl_epi64(b.as_ptr().add(2 + 8 * k) as *const __m128i));
            *wk = _mm256_mul_ps(_mm256_cvtepi32_ps(q), d);
        }
        fma32(wv, xb.as_ptr(), &mut acc);
    }
    reduce(acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q4_0(w: &[u8], x: &[f32]) -> f32 {
    let mut acc = zero();
    let eight = _mm256_set1_epi32(8);
    for (b, xb) in w.chunks_exact(18).zip(x.chunks_exact(32)) {
        let d = _mm256_set1_ps(f16_at(b, 0));
        let q = nibbles(b.as_ptr().add(2));
        let mut wv = [_mm256_setzero_ps(); 4];
        for k in 0..4 {
            wv[k] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(q[k], eight)), d);
        }
        fma32(wv, xb.as_ptr(), &mut acc);
    }
    reduce(acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q4_1(w: &[u8], x: &[f32]) -> f32 {
    let mut acc = zero();
    for (b, xb) in w.chunks_exact(20).zip(x.chunks_exact(32)) {
        let d = _mm256_set1_ps(f16_at(b, 0));
        let m = _mm256_set1_ps(f16_at(b, 2));
        let q = nibbles(b.as_ptr().add(4));
        let mut wv = [_mm256_setzero_ps(); 4];
        for k in 0..4 {
            wv[k] = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(q[k]), d), m);
        }
        fma32(wv, xb.as_ptr(), &mut acc);
    }
    reduce(acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q5_0(w: &[u8], x: &[f32]) -> f32 {
    let mut acc = zero();
    let sixteen = _mm256_set1_epi32(16);
    let lane_bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    for (b, xb) in w.chunks_exact(22).zip(x.chunks_exact(32)) {
        let d = _mm256_set1_ps(f16_at(b, 0));
        // Element i's fifth bit is bit i of `qh`.
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        let q = nibbles(b.as_ptr().add(6));
        let mut wv = [_mm256_setzero_ps(); 4];
        for k in 0..4 {
            let bits = _mm256_and_si256(_mm256_set1_epi32((qh >> (8 * k)) as i32), lane_bit);
            let fifth = _mm256_and_si256(_mm256_cmpeq_epi32(bits, lane_bit), sixteen);
            let v = _mm256_sub_epi32(_mm256_or_si256(q[k], fifth), sixteen);
            wv[k] = _mm256_mul_ps(_mm256_cvtepi32_ps(v), d);
        }
        fma32(wv, xb.as_ptr(), &mut acc);
    }
    reduce(acc)
}

/// The 16 bytes of `v` as two vectors of 8 i32 lanes, in order.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn widen16(v: __m128i) -> [__m256i; 2] {
    [widen_u8::<0>(v), widen_u8::<1>(v)]
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q4k(w: &[u8], x: &[f32]) -> f32 {
    let mut acc = zero();
    let low = _mm_set1_epi8(0x0F);
    for (b, xb) in w.chunks_exact(144).zip(x.chunks_exact(256)) {
        let (scales, mins) = crate::quant::q4k_scales(b);
        for c in 0..8 {
            // Chunks 2g and 2g+1: low and high nibbles of bytes 32g..32g+32.
            let p = b.as_ptr().add(16 + 32 * (c / 2));
            let (v0, v1) = (_mm_loadu_si128(p as *const __m128i), _mm_loadu_si128(p.add(16) as *const __m128i));
            let (v0, v1) = if c % 2 == 0 { (v0, v1) } else { (_mm_srli_epi16(v0, 4), _mm_srli_epi16(v1, 4)) };
            let ([q0, q1], [q2, q3]) = (widen16(_mm_and_si128(v0, low)), widen16(_mm_and_si128(v1, low)));
            let (d, m) = (_mm256_set1_ps(scales[c]), _mm256_set1_ps(mins[c]));
            // d·q is exact (17 + 4 significant bits): one rounding, as the reference's.
            let wv = [q0, q1, q2, q3].map(|q| _mm256_fmsub_ps(d, _mm256_cvtepi32_ps(q), m));
            fma32(wv, xb.as_ptr().add(32 * c), &mut acc);
        }
    }
    reduce(acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q6k(w: &[u8], x: &[f32]) -> f32 {
    let mut acc = zero();
    let (low, two_bits, thirty_two) = (_mm_set1_epi8(0x0F), _mm_set1_epi8(3), _mm256_set1_epi32(32));
    for (b, xb) in w.chunks_exact(210).zip(x.chunks_exact(256)) {
        let scales = crate::quant::q6k_scales(b);
        for c in 0..8 {
            // Half `n` (128 elements): chunk j takes 4 low bits from ql (bytes 0..32 or
            // 32..64 of the half, low or high nibbles) and 2 high bits from qh at bits 2j.
            let (n, j) = (c / 4, c % 4);
            let mut wv = [_mm256_setzero_ps(); 4];
            for h in 0..2 {
                let l = _mm_loadu_si128(b.as_ptr().add(64 * n + 32 * (j % 2) + 16 * h) as *const __m128i);
                let l = _mm_and_si128(if j < 2 { l } else { _mm_srli_epi16(l, 4) }, low);
                let qh = _mm_loadu_si128(b.as_ptr().add(128 + 32 * n + 16 * h) as *const __m128i);
                let hi = _mm_and_si128(_mm_srl_epi16(qh, _mm_cvtsi32_si128(2 * j as i32)), two_bits);
                let q = _mm_or_si128(l, _mm_slli_epi16(hi, 4));
                let s = _mm256_set1_ps(scales[8 * n + 2 * j + h]);
                let [q0, q1] = widen16(q);
                wv[2 * h] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(q0, thirty_two)), s);
                wv[2 * h + 1] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(q1, thirty_two)), s);
            }
            fma32(wv, xb.as_ptr().add(32 * c), &mut acc);
        }
    }
    reduce(acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_row(dtype: DType, w: &[u8], x: &[f32]) -> f32 {
    match dtype {
        DType::F32 => dot_f32_bytes(w, x),
        DType::F16 => dot_half::<false>(w, x),
        DType::BF16 => dot_half::<true>(w, x),
        DType::Q8_0 => dot_q8_0(w, x),
        DType::Q4_0 => dot_q4_0(w, x),
        DType::Q4_1 => dot_q4_1(w, x),
        DType::Q5_0 => dot_q5_0(w, x),
        DType::Q4K => dot_q4k(w, x),
        DType::Q6K => dot_q6k(w, x),
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    let n = y.len();
    let va = _mm256_set1_ps(a);
    let mut i = 0;
    while i + 8 <= n {
        let py = y.as_mut_ptr().add(i);
        _mm256_storeu_ps(py, _mm256_fmadd_ps(va, _mm256_loadu_ps(x.as_ptr().add(i)), _mm256_loadu_ps(py)));
        i += 8;
    }
    while i < n {
        y[i] = a.mul_add(x[i], y[i]);
        i += 1;
    }
}
