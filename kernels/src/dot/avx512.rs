//! AVX-512 (F + BW) kernels.
//!
//! Accumulation: two 16-lane accumulators per 32-element chunk (elements 0..16 go to
//! `acc0`, 16..32 to `acc1`), the last chunk zero-padded, reduced as
//! `reduce_add(acc0 + acc1)`. Quantized blocks are expanded in registers with the
//! reference dequantizer's exact operations, so `dot_row(w, x)` equals
//! `dot_f32(dequantize_row(w), x)` bit for bit.
//!
//! Safety: every function requires the `avx512f` and `avx512bw` CPU features
//! (checked by `simd_level()` before dispatch) and equal-length, in-bounds inputs.

use crate::dtype::DType;
use crate::quant::{dequantize_block, f16_at};
use std::arch::x86_64::*;

#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
unsafe fn fma2(w0: __m512, w1: __m512, x: *const f32, acc: &mut (__m512, __m512)) {
    acc.0 = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x), acc.0);
    acc.1 = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x.add(16)), acc.1);
}

#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
unsafe fn reduce(acc: (__m512, __m512)) -> f32 {
    _mm512_reduce_add_ps(_mm512_add_ps(acc.0, acc.1))
}

#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
unsafe fn zero() -> (__m512, __m512) {
    (_mm512_setzero_ps(), _mm512_setzero_ps())
}

#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len();
    let mut acc = zero();
    let full = n / 32 * 32;
    let mut i = 0;
    while i < full {
        let (pa, pb) = (a.as_ptr().add(i), b.as_ptr().add(i));
        fma2(
            _mm512_loadu_ps(pa),
            _mm512_loadu_ps(pa.add(16)),
            pb,
            &mut acc,
        );
        i += 32;
    }
    if full < n {
        let (mut ta, mut tb) = ([0f32; 32], [0f32; 32]);
        ta[..n - full].copy_from_slice(&a[full..]);
        tb[..n - full].copy_from_slice(&b[full..n]);
        fma2(
            _mm512_loadu_ps(ta.as_ptr()),
            _mm512_loadu_ps(ta.as_ptr().add(16)),
            tb.as_ptr(),
            &mut acc,
        );
    }
    reduce(acc)
}

/// 16 halves at `p` as f32.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
unsafe fn load_f16x16(p: *const u8) -> __m512 {
    _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i))
}

/// 16 bf16 at `p` as f32 (exact: bf16 is the top half of an f32).
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
unsafe fn load_bf16x16(p: *const u8) -> __m512 {
    let h = _mm512_cvtepu16_epi32(_mm256_loadu_si256(p as *const __m256i));
    _mm512_castsi512_ps(_mm512_slli_epi32(h, 16))
}

#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
unsafe fn load_half<const BF16: bool>(p: *const u8) -> __m512 {
    if BF16 {
        load_bf16x16(p)
    } else {
        load_f16x16(p)
    }
}

#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn dot_half<const BF16: bool>(w: &[u8], x: &[f32]) -> f32 {
    let n = x.len();
    let mut acc = zero();
    let full = n / 32 * 32;
    let mut i = 0;
    while i < full {
        let p = w.as_ptr().add(2 * i);
        fma2(
            load_half::<BF16>(p),
            load_half::<BF16>(p.add(32)),
            x.as_ptr().add(i),
            &mut acc,
        );
        i += 32;
    }
    if full < n {
        let (mut tw, mut tx) = ([0u8; 64], [0f32; 32]);
        tw[..2 * (n - full)].copy_from_slice(&w[2 * full..2 * n]);
        tx[..n - full].copy_from_slice(&x[full..]);
        fma2(
            load_half::<BF16>(tw.as_ptr()),
            load_half::<BF16>(tw.as_ptr().add(32)),
            tx.as_ptr(),
            &mut acc,
        );
    }
    reduce(acc)
}

/// The 16 low nibbles and 16 high nibbles of 16 bytes, as i32 lanes.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
unsafe fn nibbles(p: *const u8) -> (__m512i, __m512i) {
    let v = _mm_loadu_si128(p as *const __m128i);
    let m = _mm_set1_epi8(0x0F);
    let lo = _mm_and_si128(v, m);
    let hi = _mm_and_si128(_mm_srli_epi16(v, 4), m);
    (_mm512_cvtepu8_epi32(lo), _mm512_cvtepu8_epi32(hi))
}

#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn dot_q8_0(w: &[u8], x: &[f32]) -> f32 {
    let mut acc = zero();
    for (b, xb) in w.chunks_exact(34).zip(x.chunks_exact(32)) {
        let d = _mm512_set1_ps(f16_at(b, 0));
        let q0 = _mm512_cvtepi8_epi32(_mm_loadu_si128(b.as_ptr().add(2) as *const __m128i));
        let q1 = _mm512_cvtepi8_epi32(_mm_loadu_si128(b.as_ptr().add(18) as *const __m128i));
        let w0 = _mm512_mul_ps(_mm512_cvtepi32_ps(q0), d);
        let w1 = _mm512_mul_ps(_mm512_cvtepi32_ps(q1), d);
        fma2(w0, w1, xb.as_ptr(), &mut acc);
    }
    reduce(acc)
}

#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn dot_q4_0(w: &[u8], x: &[f32]) -> f32 {
    let mut acc = zero();
    let eight = _mm512_set1_epi32(8);
    for (b, xb) in w.chunks_exact(18).zip(x.chunks_exact(32)) {
        let d = _mm512_set1_ps(f16_at(b, 0));
        let (lo, hi) = nibbles(b.as_ptr().add(2));
        let w0 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(lo, eight)), d);
        let w1 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(hi, eight)), d);
        fma2(w0, w1, xb.as_ptr(), &mut acc);
    }
    reduce(acc)
}

#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn dot_q4_1(w: &[u8], x: &[f32]) -> f32 {
    let mut acc = zero();
    for (b, xb) in w.chunks_exact(20).zip(x.chunks_exact(32)) {
        let d = _mm512_set1_ps(f16_at(b, 0));
        let m = _mm512_set1_ps(f16_at(b, 2));
        let (lo, hi) = nibbles(b.as_ptr().add(4));
        let w0 = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(lo), d), m);
        let w1 = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(hi), d), m);
        fma2(w0, w1, xb.as_ptr(), &mut acc);
    }
    reduce(acc)
}

/// Any block format: expand a block with the reference dequantizer, then accumulate.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn dot_blocks(dtype: DType, w: &[u8], x: &[f32]) -> f32 {
    let (bs, bb) = (dtype.block_size(), dtype.block_bytes());
    let mut buf = [0f32; 256];
    let mut acc = zero();
    for (b, xb) in w.chunks_exact(bb).zip(x.chunks_exact(bs)) {
        dequantize_block(dtype, b, &mut buf[..bs]);
        for j in (0..bs).step_by(32) {
            let p = buf.as_ptr().add(j);
            fma2(
                _mm512_loadu_ps(p),
                _mm512_loadu_ps(p.add(16)),
                xb.as_ptr().add(j),
                &mut acc,
            );
        }
    }
    reduce(acc)
}

#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn dot_row(dtype: DType, w: &[u8], x: &[f32]) -> f32 {
    match dtype {
        DType::F32 => {
            // Weights may be unaligned in the file: read them as bytes.
            let n = x.len();
            let mut acc = zero();
            let full = n / 32 * 32;
            let mut i = 0;
            while i < full {
                let p = w.as_ptr().add(4 * i) as *const f32;
                fma2(
                    _mm512_loadu_ps(p),
                    _mm512_loadu_ps(p.add(16)),
                    x.as_ptr().add(i),
                    &mut acc,
                );
                i += 32;
            }
            if full < n {
                let (mut tw, mut tx) = ([0f32; 32], [0f32; 32]);
                for (k, t) in tw[..n - full].iter_mut().enumerate() {
                    *t = crate::quant::f32_at(w, 4 * (full + k));
                }
                tx[..n - full].copy_from_slice(&x[full..]);
                fma2(
                    _mm512_loadu_ps(tw.as_ptr()),
                    _mm512_loadu_ps(tw.as_ptr().add(16)),
                    tx.as_ptr(),
                    &mut acc,
                );
            }
            reduce(acc)
        }
        DType::F16 => dot_half::<false>(w, x),
        DType::BF16 => dot_half::<true>(w, x),
        DType::Q8_0 => dot_q8_0(w, x),
        DType::Q4_0 => dot_q4_0(w, x),
        DType::Q4_1 => dot_q4_1(w, x),
        DType::Q5_0 | DType::Q4K | DType::Q6K => dot_blocks(dtype, w, x),
    }
}

#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    let n = y.len();
    let va = _mm512_set1_ps(a);
    let mut i = 0;
    while i + 16 <= n {
        let py = y.as_mut_ptr().add(i);
        _mm512_storeu_ps(
            py,
            _mm512_fmadd_ps(va, _mm512_loadu_ps(x.as_ptr().add(i)), _mm512_loadu_ps(py)),
        );
        i += 16;
    }
    while i < n {
        y[i] = a.mul_add(x[i], y[i]);
        i += 1;
    }
}
