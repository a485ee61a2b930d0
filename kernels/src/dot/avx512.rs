//! AVX-512 (F + BW + VL) dot products.
//!
//! Accumulation order (shared by every AVX-512 kernel that computes a dot product with a
//! weight row, see `matmul/avx512.rs`): one 16-lane accumulator; element `i` goes to lane
//! `i % 16`; elements are added in steps of 16 with one FMA each, in order; the last
//! partial step is zero-padded (no all-zero steps are added); the result is `hsum(acc)`,
//! a fixed tree: lanes `i + (i+8)`, then `+4`, `+2`, `+1`. Quantized blocks are expanded in registers with the
//! reference dequantizer's exact operations, so `dot_row(w, x)` equals
//! `dot_f32(dequantize_row(w), x)` bit for bit.
//!
//! Safety: every function requires the `avx512f`, `avx512bw`, `avx512vl` and `f16c` CPU
//! features (checked by `simd_level()` before dispatch) and equal-length, in-bounds inputs.

use crate::dtype::DType;
use crate::quant::dequantize_block;
use std::arch::x86_64::*;

/// The horizontal sum of the AVX-512 dot products: `((l_i + l_{i+8}) + (.. + l_{i+4}))`
/// down to one lane, always in this order.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
#[inline]
pub(crate) unsafe fn hsum(v: __m512) -> f32 {
    let a = _mm512_add_ps(v, _mm512_shuffle_f32x4::<0b01_00_11_10>(v, v)); // i + i+8
    let b = _mm512_add_ps(a, _mm512_shuffle_f32x4::<0b10_11_00_01>(a, a)); // + i+4
    let c = _mm512_add_ps(b, _mm512_permute_ps::<0b01_00_11_10>(b)); // + i+2
    let d = _mm512_add_ps(c, _mm512_permute_ps::<0b10_11_00_01>(c)); // + i+1
    _mm512_cvtss_f32(d)
}

/// `[hsum(a), hsum(b), hsum(c), hsum(d)]` with the same additions, 4 sums at a time.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
#[inline]
pub(crate) unsafe fn hsum4(a: __m512, b: __m512, c: __m512, d: __m512) -> [f32; 4] {
    // Level 1 (i + i+8) for a|b and c|d: 128-bit lanes [x0 x1 y0 y1] + [x2 x3 y2 y3].
    let ab = _mm512_add_ps(_mm512_shuffle_f32x4::<0b01_00_01_00>(a, b), _mm512_shuffle_f32x4::<0b11_10_11_10>(a, b));
    let cd = _mm512_add_ps(_mm512_shuffle_f32x4::<0b01_00_01_00>(c, d), _mm512_shuffle_f32x4::<0b11_10_11_10>(c, d));
    // Level 2 (+ i+4): [a b c d] lane 0 + lane 1 of each pair.
    let s = _mm512_add_ps(_mm512_shuffle_f32x4::<0b10_00_10_00>(ab, cd), _mm512_shuffle_f32x4::<0b11_01_11_01>(ab, cd));
    // Levels 3 and 4 within each 128-bit lane.
    let s = _mm512_add_ps(s, _mm512_permute_ps::<0b01_00_11_10>(s));
    let s = _mm512_add_ps(s, _mm512_permute_ps::<0b10_11_00_01>(s));
    let mut out = [0f32; 16];
    _mm512_storeu_ps(out.as_mut_ptr(), s);
    [out[0], out[4], out[8], out[12]]
}

/// `hsum` of 16 vectors with the same additions, 16 sums per instruction (15 additions and
/// 30 shuffles for 16 sums; four `hsum4` take 20 and 32, plus moving the sums out). Returns
/// the sums transposed: element `4j + p` is `hsum(v[4p + j])`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
#[inline]
pub(crate) unsafe fn hsum16_transposed(v: &[__m512; 16]) -> __m512 {
    // Level 1 (i + i+8), pairs (v[2p], v[2p+1]): 128-bit lanes [a0 a1 b0 b1] + [a2 a3 b2 b3].
    let l1: [__m512; 8] = std::array::from_fn(|p| {
        let (a, b) = (v[2 * p], v[2 * p + 1]);
        _mm512_add_ps(_mm512_shuffle_f32x4::<0b01_00_01_00>(a, b), _mm512_shuffle_f32x4::<0b11_10_11_10>(a, b))
    });
    // Level 2 (+ i+4): 128-bit lane L of l2[q] holds v[4q + L]'s four partial sums.
    let l2: [__m512; 4] = std::array::from_fn(|q| {
        let (ab, cd) = (l1[2 * q], l1[2 * q + 1]);
        _mm512_add_ps(_mm512_shuffle_f32x4::<0b10_00_10_00>(ab, cd), _mm512_shuffle_f32x4::<0b11_01_11_01>(ab, cd))
    });
    // Level 3 (+ i+2), pairs (l2[2r], l2[2r+1]): within each 128-bit lane [u0 u1 w0 w1] +
    // [u2 u3 w2 w3], so lane L holds v[8r + L]'s two sums, then v[8r + 4 + L]'s.
    let l3: [__m512; 2] = std::array::from_fn(|r| {
        let (u, w) = (l2[2 * r], l2[2 * r + 1]);
        _mm512_add_ps(_mm512_shuffle_ps::<0b01_00_01_00>(u, w), _mm512_shuffle_ps::<0b11_10_11_10>(u, w))
    });
    // Level 4 (+ i+1): [m0 m2 n0 n2] + [m1 m3 n1 n3]: lane L = v[L], v[4 + L], v[8 + L], v[12 + L].
    let (m, n) = (l3[0], l3[1]);
    _mm512_add_ps(_mm512_shuffle_ps::<0b10_00_10_00>(m, n), _mm512_shuffle_ps::<0b11_01_11_01>(m, n))
}

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
    hsum(acc)
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
    hsum(acc)
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
    hsum(acc)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hsum4_is_four_hsums() {
        if !crate::simd::available_levels().contains(&crate::simd::SimdLevel::Avx512) {
            return;
        }
        let mut rng = crate::test_util::Lcg(9);
        for _ in 0..200 {
            let v: Vec<f32> = (0..64).map(|_| rng.normal() * 1e3).collect();
            // SAFETY: AVX-512 checked above.
            unsafe {
                let z: [__m512; 4] = std::array::from_fn(|i| _mm512_loadu_ps(v.as_ptr().add(16 * i)));
                let four = hsum4(z[0], z[1], z[2], z[3]);
                for i in 0..4 {
                    let l = &v[16 * i..16 * i + 16];
                    let tree = {
                        let a: Vec<f32> = (0..8).map(|j| l[j] + l[j + 8]).collect();
                        let b: Vec<f32> = (0..4).map(|j| a[j] + a[j + 4]).collect();
                        let c: Vec<f32> = (0..2).map(|j| b[j] + b[j + 2]).collect();
                        c[0] + c[1]
                    };
                    assert_eq!(four[i].to_bits(), hsum(z[i]).to_bits());
                    assert_eq!(four[i].to_bits(), tree.to_bits());
                }
            }
        }
    }

    #[test]
    fn hsum16_is_sixteen_hsums() {
        if !crate::simd::available_levels().contains(&crate::simd::SimdLevel::Avx512) {
            return;
        }
        let mut rng = crate::test_util::Lcg(10);
        for _ in 0..200 {
            let v: Vec<f32> = (0..256).map(|_| rng.normal() * 1e3).collect();
            // SAFETY: AVX-512 checked above.
            unsafe {
                let z: [__m512; 16] = std::array::from_fn(|i| _mm512_loadu_ps(v.as_ptr().add(16 * i)));
                let mut got = [0f32; 16];
                _mm512_storeu_ps(got.as_mut_ptr(), hsum16_transposed(&z));
                for j in 0..4 {
                    for p in 0..4 {
                        assert_eq!(got[4 * j + p].to_bits(), hsum(z[4 * p + j]).to_bits(), "sum of v[{}]", 4 * p + j);
                    }
                }
            }
        }
    }
}
