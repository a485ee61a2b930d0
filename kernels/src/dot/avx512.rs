//! AVX-512 (F + BW + VL) dot products.
//!
//! Accumulation order (shared by every AVX-512 kernel that computes a dot product with a
//! weight row, see `matmul/avx512.rs`): one 16-lane accumulator; element `i` goes to lane
//! `i % 16`; elements are added in steps of 16 with one FMA each, in order; the last
//! partial step is zero-padded (no all-zero steps are added); the result is
//! `_mm512_reduce_add_ps(acc)`. Quantized blocks are expanded in registers with the
//! reference dequantizer's exact operations, so `dot_row(w, x)` equals
//! `dot_f32(dequantize_row(w), x)` bit for bit.
//!
//! Safety: every function requires the `avx512f`, `avx512bw`, `avx512vl` and `f16c` CPU
//! features (checked by `simd_level()` before dispatch) and equal-length, in-bounds inputs.

use crate::dtype::DType;
use crate::quant::dequantize_block;
use std::arch::x86_64::*;

/// Mask of the first `n` (≤ 16) lanes.
#[inline]
pub(crate) fn lanes(n: usize) -> u16 {
    if n >= 16 {
        0xFFFF
    } else {
        ((1u32 << n) - 1) as u16
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
pub unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len();
    let mut acc = _mm512_setzero_ps();
    let mut i = 0;
    while i + 16 <= n {
        acc = _mm512_fmadd_ps(_mm512_loadu_ps(a.as_ptr().add(i)), _mm512_loadu_ps(b.as_ptr().add(i)), acc);
        i += 16;
    }
    if i < n {
        let m = lanes(n - i);
        acc = _mm512_fmadd_ps(
            _mm512_maskz_loadu_ps(m, a.as_ptr().add(i)),
            _mm512_maskz_loadu_ps(m, b.as_ptr().add(i)),
            acc,
        );
    }
    _mm512_reduce_add_ps(acc)
}

/// 16 (or fewer, masked) weights of a float row at element `i`, as f32.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
#[inline]
unsafe fn load_float(dtype: DType, w: *const u8, i: usize, m: u16) -> __m512 {
    match dtype {
        DType::F32 => _mm512_maskz_loadu_ps(m, w.add(4 * i) as *const f32),
        DType::F16 => _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, w.add(2 * i) as *const i16)),
        _ => {
            let h = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, w.add(2 * i) as *const i16));
            _mm512_castsi512_ps(_mm512_slli_epi32(h, 16))
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
unsafe fn dot_float(dtype: DType, w: &[u8], x: &[f32]) -> f32 {
    let n = x.len();
    let mut acc = _mm512_setzero_ps();
    let mut i = 0;
    while i < n {
        let m = lanes(n - i);
        acc = _mm512_fmadd_ps(load_float(dtype, w.as_ptr(), i, m), _mm512_maskz_loadu_ps(m, x.as_ptr().add(i)), acc);
        i += 16;
    }
    _mm512_reduce_add_ps(acc)
}

/// Block formats: each block through the reference dequantizer, then 16 at a time.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
unsafe fn dot_blocks(dtype: DType, w: &[u8], x: &[f32]) -> f32 {
    let (bs, bb) = (dtype.block_size(), dtype.block_bytes());
    let mut buf = [0f32; 256];
    let mut acc = _mm512_setzero_ps();
    for (b, xb) in w.chunks_exact(bb).zip(x.chunks_exact(bs)) {
        dequantize_block(dtype, b, &mut buf[..bs]);
        for j in (0..bs).step_by(16) {
            acc = _mm512_fmadd_ps(_mm512_loadu_ps(buf.as_ptr().add(j)), _mm512_loadu_ps(xb.as_ptr().add(j)), acc);
        }
    }
    _mm512_reduce_add_ps(acc)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
pub unsafe fn dot_row(dtype: DType, w: &[u8], x: &[f32]) -> f32 {
    match dtype {
        DType::F32 | DType::F16 | DType::BF16 => dot_float(dtype, w, x),
        DType::Q8_0 | DType::Q4_0 | DType::Q4_1 => {
            // The same chunk loaders as the matmul kernels.
            let mut out = [0f32; 1];
            crate::matmul::avx512::gemv::<1>(
                dtype,
                [w.as_ptr()],
                x.as_ptr(),
                x.len(),
                &mut out,
                crate::matmul::avx512::Prefetch::NONE,
            );
            out[0]
        }
        DType::Q5_0 | DType::Q4K | DType::Q6K => dot_blocks(dtype, w, x),
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
pub unsafe fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    let n = y.len();
    let va = _mm512_set1_ps(a);
    let mut i = 0;
    while i + 16 <= n {
        let py = y.as_mut_ptr().add(i);
        _mm512_storeu_ps(py, _mm512_fmadd_ps(va, _mm512_loadu_ps(x.as_ptr().add(i)), _mm512_loadu_ps(py)));
        i += 16;
    }
    while i < n {
        y[i] = a.mul_add(x[i], y[i]);
        i += 1;
    }
}
