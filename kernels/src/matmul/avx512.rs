//! AVX-512 matmul kernels: fused multi-row GEMV for one token, SIMD row expansion, and a
//! register-tiled micro-kernel (up to 4 rows × 2 tokens) over expanded rows.
//!
//! Every output `(row r, token t)` is computed with the accumulation order defined in
//! `dot/avx512.rs`: one 16-lane accumulator, one FMA per 16 elements in order, a
//! zero-filled (masked) last partial step, then `hsum`. Tiles only interleave
//! independent chains, so a token gets the same bits from the GEMV, from any tile shape,
//! and from `dot::dot_row`.
//!
//! Safety: callers guarantee the `avx512f`, `avx512bw`, `avx512vl` and `f16c` CPU
//! features and in-bounds pointers: every weight row holds `k` elements of its dtype,
//! every activation row `k` f32.

use crate::dot::avx512::{hsum, hsum4, lanes};
use crate::dtype::DType;
use crate::quant::dequantize_block;
use std::arch::x86_64::*;

#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
#[inline]
unsafe fn f16_scale(p: *const u8) -> __m512 {
    let bits = u16::from_le_bytes([*p, *p.add(1)]);
    _mm512_set1_ps(_mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32))))
}

/// The two 16-element steps of a 32-element chunk, in order, on one accumulator.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
#[inline]
unsafe fn fma_chunk(w0: __m512, w1: __m512, x0: __m512, x1: __m512, acc: &mut __m512) {
    *acc = _mm512_fmadd_ps(w1, x1, _mm512_fmadd_ps(w0, x0, *acc));
}

/// A weight format whose rows are expanded in registers, 32 elements ("a chunk") at a
/// time, with the reference dequantizer's exact operations.
pub(crate) trait Chunked {
    /// Bytes one 32-element chunk takes in a row.
    const BYTES: usize;
    /// The chunk at `p` as two halves of 16 f32.
    unsafe fn load(p: *const u8) -> (__m512, __m512);
}

pub(crate) struct F32s;
pub(crate) struct F16s;
pub(crate) struct BF16s;
pub(crate) struct Q8_0s;
pub(crate) struct Q4_0s;
pub(crate) struct Q4_1s;

impl Chunked for F32s {
    const BYTES: usize = 128;
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    #[inline]
    unsafe fn load(p: *const u8) -> (__m512, __m512) {
        let p = p as *const f32;
        (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16)))
    }
}

impl Chunked for F16s {
    const BYTES: usize = 64;
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    #[inline]
    unsafe fn load(p: *const u8) -> (__m512, __m512) {
        (
            _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i)),
            _mm512_cvtph_ps(_mm256_loadu_si256(p.add(32) as *const __m256i)),
        )
    }
}

impl Chunked for BF16s {
    const BYTES: usize = 64;
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    #[inline]
    unsafe fn load(p: *const u8) -> (__m512, __m512) {
        let lo = _mm512_cvtepu16_epi32(_mm256_loadu_si256(p as *const __m256i));
        let hi = _mm512_cvtepu16_epi32(_mm256_loadu_si256(p.add(32) as *const __m256i));
        (_mm512_castsi512_ps(_mm512_slli_epi32(lo, 16)), _mm512_castsi512_ps(_mm512_slli_epi32(hi, 16)))
    }
}

impl Chunked for Q8_0s {
    const BYTES: usize = 34;
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    #[inline]
    unsafe fn load(b: *const u8) -> (__m512, __m512) {
        let d = f16_scale(b);
        let q0 = _mm512_cvtepi8_epi32(_mm_loadu_si128(b.add(2) as *const __m128i));
        let q1 = _mm512_cvtepi8_epi32(_mm_loadu_si128(b.add(18) as *const __m128i));
        (_mm512_mul_ps(_mm512_cvtepi32_ps(q0), d), _mm512_mul_ps(_mm512_cvtepi32_ps(q1), d))
    }
}

impl Chunked for Q4_0s {
    const BYTES: usize = 18;
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    #[inline]
    unsafe fn load(b: *const u8) -> (__m512, __m512) {
        let d = f16_scale(b);
        let (lo, hi) = nibbles(b.add(2));
        let eight = _mm512_set1_epi32(8);
        (
            _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(lo, eight)), d),
            _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(hi, eight)), d),
        )
    }
}

impl Chunked for Q4_1s {
    const BYTES: usize = 20;
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    #[inline]
    unsafe fn load(b: *const u8) -> (__m512, __m512) {
        let d = f16_scale(b);
        let m = f16_scale(b.add(2));
        let (lo, hi) = nibbles(b.add(4));
        // One FMA gives the reference's `q·d + m` bits: q·d (4 × 11 significant bits) is
        // exact, so only the addition rounds, as in the separate multiply and add.
        (_mm512_fmadd_ps(_mm512_cvtepi32_ps(lo), d, m), _mm512_fmadd_ps(_mm512_cvtepi32_ps(hi), d, m))
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
#[inline]
unsafe fn nibbles(p: *const u8) -> (__m512i, __m512i) {
    let v = _mm_loadu_si128(p as *const __m128i);
    let m = _mm_set1_epi8(0x0F);
    (_mm512_cvtepu8_epi32(_mm_and_si128(v, m)), _mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(v, 4), m)))
}

/// `out[i] = hsum(acc[i])`, four at a time.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
#[inline]
pub(super) unsafe fn reduce_into<const N: usize>(acc: &[__m512; N], out: &mut [f32; N]) {
    let mut i = 0;
    while i + 4 <= N {
        out[i..i + 4].copy_from_slice(&hsum4(acc[i], acc[i + 1], acc[i + 2], acc[i + 3]));
        i += 4;
    }
    while i < N {
        out[i] = hsum(acc[i]);
        i += 1;
    }
}

/// Asks for `len` bytes at `p` to be brought into the cache.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
#[inline]
pub unsafe fn prefetch(p: *const u8, len: usize) {
    for l in (0..len).step_by(64) {
        _mm_prefetch::<_MM_HINT_T0>(p.add(l) as *const i8);
    }
}

/// Memory to pull into the cache while a GEMV works (the rows it will read next).
#[derive(Clone, Copy)]
pub struct Prefetch {
    pub ptr: *const u8,
    pub len: usize,
}

impl Prefetch {
    pub const NONE: Prefetch = Prefetch { ptr: std::ptr::null(), len: 0 };

    /// This memory's cache lines in `steps` equal shares (the last ones may be short or
    /// empty), to issue one share per step of a loop (`Spread::step`).
    #[inline(always)]
    pub(crate) fn spread(self, steps: usize) -> Spread {
        let lines = self.len.div_ceil(64);
        Spread { ptr: self.ptr, lines, per_step: lines.div_ceil(steps.max(1)), next: 0 }
    }
}

/// A `Prefetch` issued a share at a time (see `Prefetch::spread`).
pub(crate) struct Spread {
    ptr: *const u8,
    lines: usize,
    per_step: usize,
    next: usize,
}

impl Spread {
    /// Prefetches the next share of lines (none once all are issued).
    ///
    /// SAFETY: as `_mm_prefetch` (never faults; the lines are the `Prefetch`'s).
    #[inline(always)]
    pub(crate) unsafe fn step(&mut self) {
        let end = (self.next + self.per_step).min(self.lines);
        while self.next < end {
            _mm_prefetch::<_MM_HINT_T0>(self.ptr.add(64 * self.next) as *const i8);
            self.next += 1;
        }
    }

    /// Prefetches every line not issued yet.
    ///
    /// SAFETY: as `step`.
    #[inline(always)]
    pub(crate) unsafe fn rest(&mut self) {
        self.per_step = self.lines;
        self.step();
    }
}

/// `R` rows of format `W` (`k` elements each) dotted with one token `x`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
unsafe fn gemv_chunked<W: Chunked, const R: usize>(
    dtype: DType,
    rows: [*const u8; R],
    x: *const f32,
    k: usize,
    out: &mut [f32; R],
    prefetch: Prefetch,
) {
    let mut acc = [_mm512_setzero_ps(); R];
    let full = k / 32;
    // Spread the prefetches of the next rows evenly over this group's chunks.
    let mut pf = prefetch.spread(full);
    for c in 0..full {
        pf.step();
        let x0 = _mm512_loadu_ps(x.add(32 * c));
        let x1 = _mm512_loadu_ps(x.add(32 * c + 16));
        for r in 0..R {
            let (w0, w1) = W::load(rows[r].add(c * W::BYTES));
            fma_chunk(w0, w1, x0, x1, &mut acc[r]);
        }
    }
    // Only float rows have partial chunks: expand the rest through a zero-padded copy,
    // in 16-element steps.
    let mut i = 32 * full;
    if i < k {
        let eb = dtype.block_bytes();
        let mut bufs = [[0f32; 32]; R];
        for r in 0..R {
            crate::quant::dequantize_row(
                dtype,
                std::slice::from_raw_parts(rows[r].add(i * eb), (k - i) * eb),
                &mut bufs[r][..k - i],
            );
        }
        let mut j = 0;
        while i < k {
            let m = lanes(k - i);
            let xv = _mm512_maskz_loadu_ps(m, x.add(i));
            for r in 0..R {
                acc[r] = _mm512_fmadd_ps(_mm512_loadu_ps(bufs[r].as_ptr().add(j)), xv, acc[r]);
            }
            i += 16;
            j += 16;
        }
    }
    reduce_into(&acc, out);
}

/// Block formats without a chunk loader: each block through the reference dequantizer.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
unsafe fn gemv_blocks<const R: usize>(dtype: DType, rows: [*const u8; R], x: *const f32, k: usize, out: &mut [f32; R]) {
    let mut acc = [_mm512_setzero_ps(); R];
    let (bs, bb) = (dtype.block_size(), dtype.block_bytes());
    let mut buf = [0f32; 256];
    for blk in 0..k / bs {
        for r in 0..R {
            dequantize_block(dtype, std::slice::from_raw_parts(rows[r].add(blk * bb), bb), &mut buf[..bs]);
            for j in (0..bs).step_by(32) {
                let xp = x.add(blk * bs + j);
                fma_chunk(
                    _mm512_loadu_ps(buf.as_ptr().add(j)),
                    _mm512_loadu_ps(buf.as_ptr().add(j + 16)),
                    _mm512_loadu_ps(xp),
                    _mm512_loadu_ps(xp.add(16)),
                    &mut acc[r],
                );
            }
        }
    }
    reduce_into(&acc, out);
}

/// `R` rows (stored as `dtype`, `k` elements each) dotted with one token `x`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
pub unsafe fn gemv<const R: usize>(
    dtype: DType,
    rows: [*const u8; R],
    x: *const f32,
    k: usize,
    out: &mut [f32; R],
    prefetch: Prefetch,
) {
    match dtype {
        DType::F32 => gemv_chunked::<F32s, R>(dtype, rows, x, k, out, prefetch),
        DType::F16 => gemv_chunked::<F16s, R>(dtype, rows, x, k, out, prefetch),
        DType::BF16 => gemv_chunked::<BF16s, R>(dtype, rows, x, k, out, prefetch),
        DType::Q8_0 => gemv_chunked::<Q8_0s, R>(dtype, rows, x, k, out, prefetch),
        DType::Q4_0 => gemv_chunked::<Q4_0s, R>(dtype, rows, x, k, out, prefetch),
        DType::Q4_1 => gemv_chunked::<Q4_1s, R>(dtype, rows, x, k, out, prefetch),
        DType::Q5_0 | DType::Q4K | DType::Q6K => gemv_blocks::<R>(dtype, rows, x, k, out),
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
unsafe fn expand_chunked<W: Chunked>(dtype: DType, row: *const u8, k: usize, out: &mut [f32]) {
    let full = k / 32;
    for c in 0..full {
        let (w0, w1) = W::load(row.add(c * W::BYTES));
        _mm512_storeu_ps(out.as_mut_ptr().add(32 * c), w0);
        _mm512_storeu_ps(out.as_mut_ptr().add(32 * c + 16), w1);
    }
    if k > 32 * full {
        let eb = dtype.block_bytes();
        crate::quant::dequantize_row(
            dtype,
            std::slice::from_raw_parts(row.add(32 * full * eb), (k - 32 * full) * eb),
            &mut out[32 * full..k],
        );
    }
}

/// Expands one row (`k` elements of `dtype`) into `out` with the exact values of the
/// reference dequantizer.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
pub unsafe fn expand_row(dtype: DType, row: *const u8, k: usize, out: &mut [f32]) {
    match dtype {
        DType::F32 => expand_chunked::<F32s>(dtype, row, k, out),
        DType::F16 => expand_chunked::<F16s>(dtype, row, k, out),
        DType::BF16 => expand_chunked::<BF16s>(dtype, row, k, out),
        DType::Q8_0 => expand_chunked::<Q8_0s>(dtype, row, k, out),
        DType::Q4_0 => expand_chunked::<Q4_0s>(dtype, row, k, out),
        DType::Q4_1 => expand_chunked::<Q4_1s>(dtype, row, k, out),
        DType::Q5_0 | DType::Q4K | DType::Q6K => {
            let bytes = dtype.row_bytes(k).expect("whole blocks");
            crate::quant::dequantize_row(dtype, std::slice::from_raw_parts(row, bytes), &mut out[..k]);
        }
    }
}

/// `R` expanded f32 rows × `C` tokens: `out[r][c] = w[r] · x[c]` over `k` elements,
/// 16 elements per step: each step loads `R` weight and `C` token vectors for `R·C`
/// FMAs (6 × 4 needs 10 loads for 24 FMAs).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
#[inline]
pub unsafe fn tile<const R: usize, const C: usize>(
    w: [*const f32; R],
    x: [*const f32; C],
    k: usize,
    out: &mut [[f32; C]; R],
) {
    let mut acc = [[_mm512_setzero_ps(); C]; R];
    let mut i = 0;
    while i + 16 <= k {
        let mut xv = [_mm512_setzero_ps(); C];
        for c in 0..C {
            xv[c] = _mm512_loadu_ps(x[c].add(i));
        }
        for r in 0..R {
            let wv = _mm512_loadu_ps(w[r].add(i));
            for c in 0..C {
                acc[r][c] = _mm512_fmadd_ps(wv, xv[c], acc[r][c]);
            }
        }
        i += 16;
    }
    if i < k {
        let m = lanes(k - i);
        for r in 0..R {
            let wv = _mm512_maskz_loadu_ps(m, w[r].add(i));
            for c in 0..C {
                acc[r][c] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(m, x[c].add(i)), acc[r][c]);
            }
        }
    }
    for r in 0..R {
        reduce_into(&acc[r], &mut out[r]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{random_row, Lcg};

    /// Expanding in registers gives the reference dequantizer's bits, for every format.
    #[test]
    fn expand_row_is_the_reference_bit_for_bit() {
        if crate::simd::SimdLevel::detect() < crate::simd::SimdLevel::Avx512 {
            return;
        }
        let mut rng = Lcg(11);
        for dtype in DType::ALL {
            let k = if dtype.block_size() == 256 { 512 } else { 96 };
            for _ in 0..20 {
                let row = random_row(dtype, k, &mut rng);
                let mut want = vec![0f32; k];
                crate::quant::dequantize_row(dtype, &row, &mut want);
                let mut got = vec![0f32; k];
                // SAFETY: AVX-512 checked above; the row holds `k` elements.
                unsafe { expand_row(dtype, row.as_ptr(), k, &mut got) };
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "{dtype}");
            }
        }
    }
}
