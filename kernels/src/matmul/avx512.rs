//! AVX-512 matmul kernels: fused multi-row GEMV for one token, SIMD row expansion, and a
//! register-tiled micro-kernel (up to 6 rows × 4 tokens) over expanded rows.
//!
//! 4-bit formats (Q4_0, Q4_1, Q5_0, Q4_K) expand by table lookup: a block's values for
//! all 16 (32) codes are computed once with the reference dequantizer's operations, one
//! register of f32, and `vpermps` (`vpermt2ps`) picks each element's value by its code.
//! That is one shuffle per 16 elements instead of a widening, a conversion and an FMA, on
//! a GEMV bound by those instructions rather than by memory (Q4_1 single-thread GEMV
//! ~+17%), and the values are the same bits.
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

use crate::dot::avx512::{hsum, hsum16_transposed, hsum4, lanes};
use crate::dtype::DType;
use std::arch::x86_64::*;

#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
#[inline]
unsafe fn f16_scale(p: *const u8) -> __m512 {
    _mm512_cvtph_ps(_mm256_set1_epi16((p as *const i16).read_unaligned()))
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
pub(crate) struct Q5_0s;

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
        // `(q - 8)·d` for every code: exact products (4 × 11 significant bits), the
        // reference's values.
        let table = _mm512_mul_ps(_mm512_sub_ps(codes(), _mm512_set1_ps(8.0)), f16_scale(b));
        lookup_nibbles(table, b.add(2))
    }
}

impl Chunked for Q5_0s {
    const BYTES: usize = 22;
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    #[inline]
    unsafe fn load(b: *const u8) -> (__m512, __m512) {
        let d = f16_scale(b);
        // `(q - 16)·d` for the 32 codes, exact products: codes 0..15 in `low`, 16..31 in
        // `high`.
        let low = _mm512_mul_ps(_mm512_sub_ps(codes(), _mm512_set1_ps(16.0)), d);
        let high = _mm512_mul_ps(codes(), d);
        // Element i's fifth bit is bit i of `qh`; it picks the table (index bit 4).
        let qh = (b.add(2) as *const u32).read_unaligned();
        let bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128(b.add(6) as *const __m128i));
        let lo = _mm512_and_si512(bytes, _mm512_set1_epi32(0x0F));
        let hi = _mm512_srli_epi32::<4>(bytes);
        let sixteen = _mm512_set1_epi32(16);
        let lo = _mm512_mask_or_epi32(lo, qh as u16, lo, sixteen);
        let hi = _mm512_mask_or_epi32(hi, (qh >> 16) as u16, hi, sixteen);
        (_mm512_permutex2var_ps(low, lo, high), _mm512_permutex2var_ps(low, hi, high))
    }
}

impl Chunked for Q4_1s {
    const BYTES: usize = 20;
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    #[inline]
    unsafe fn load(b: *const u8) -> (__m512, __m512) {
        let (d, m) = (f16_scale(b), f16_scale(b.add(2)));
        // The block's sixteen values `q·d + m`, one per 4-bit code, in one register: one
        // FMA gives the reference's bits (q·d, 4 × 11 significant bits, is exact, so only
        // the addition rounds, as in the separate multiply and add).
        let table = _mm512_fmadd_ps(codes(), d, m);
        lookup_nibbles(table, b.add(4))
    }
}

/// The f32 values 0, 1, ..., 15: every 4-bit code.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
#[inline]
unsafe fn codes() -> __m512 {
    _mm512_setr_ps(0., 1., 2., 3., 4., 5., 6., 7., 8., 9., 10., 11., 12., 13., 14., 15.)
}

/// The 32 elements of a 16-byte nibble block (element `j` in the low nibble of byte `j`,
/// element `j + 16` in its high nibble) looked up in `table` (16 values, one per code).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
#[inline]
unsafe fn lookup_nibbles(table: __m512, p: *const u8) -> (__m512, __m512) {
    let bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128(p as *const __m128i));
    // vpermps reads only the low 4 bits of each index: the low nibble as it is, the high
    // one after a shift.
    (_mm512_permutexvar_ps(bytes, table), _mm512_permutexvar_ps(_mm512_srli_epi32::<4>(bytes), table))
}

/// A 256-element K-quant super-block expanded in registers, 32 elements ("a chunk") at a
/// time in row order, with the reference dequantizer's exact values (`quant.rs`): the
/// block's scales are decoded once (`head`), then each chunk from its packed bits.
pub(crate) trait SuperBlock {
    /// Bytes of one 256-element block.
    const BYTES: usize;
    /// The block's decoded scales.
    type Head: Copy;
    unsafe fn head(p: *const u8) -> Self::Head;
    /// Chunk `c` (0..8) of the block at `p` as two halves of 16 f32.
    unsafe fn chunk(p: *const u8, head: &Self::Head, c: usize) -> (__m512, __m512);
}

pub(crate) struct Q4Ks;
pub(crate) struct Q6Ks;

impl SuperBlock for Q4Ks {
    const BYTES: usize = 144;
    /// Per 32-element sub-block: `d · scale` and `dmin · min`.
    type Head = ([f32; 8], [f32; 8]);

    #[inline(always)]
    unsafe fn head(p: *const u8) -> Self::Head {
        crate::quant::q4k_scales(std::slice::from_raw_parts(p, Self::BYTES))
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    #[inline]
    unsafe fn chunk(p: *const u8, head: &Self::Head, c: usize) -> (__m512, __m512) {
        // Chunks 2g and 2g+1 are the low and high nibbles of bytes 32g..32g+32.
        let p = p.add(16 + 32 * (c / 2));
        let lo = _mm512_cvtepu8_epi32(_mm_loadu_si128(p as *const __m128i));
        let hi = _mm512_cvtepu8_epi32(_mm_loadu_si128(p.add(16) as *const __m128i));
        let (lo, hi) =
            if c.is_multiple_of(2) { (lo, hi) } else { (_mm512_srli_epi32::<4>(lo), _mm512_srli_epi32::<4>(hi)) };
        // `d·q - m` for every code: d·q (17 + 4 significant bits) is exact, so the fused
        // form rounds once, as the reference's multiply then subtract. vpermps reads only
        // the low 4 bits of each index.
        let table = _mm512_fmsub_ps(_mm512_set1_ps(head.0[c]), codes(), _mm512_set1_ps(head.1[c]));
        (_mm512_permutexvar_ps(lo, table), _mm512_permutexvar_ps(hi, table))
    }
}

impl SuperBlock for Q6Ks {
    const BYTES: usize = 210;
    /// `d · scale` of each 16-element group.
    type Head = [f32; 16];

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    #[inline]
    unsafe fn head(p: *const u8) -> Self::Head {
        // `quant::q6k_scales`' products, 16 at once.
        let d = crate::quant::f16_at(std::slice::from_raw_parts(p, Self::BYTES), 208);
        let sc = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p.add(192) as *const __m128i)));
        let mut out = [0f32; 16];
        _mm512_storeu_ps(out.as_mut_ptr(), _mm512_mul_ps(_mm512_set1_ps(d), sc));
        out
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    #[inline]
    unsafe fn chunk(p: *const u8, head: &Self::Head, c: usize) -> (__m512, __m512) {
        // Half `n` (128 elements): chunk j takes 4 low bits from ql (bytes 0..32 or
        // 32..64 of the half, low or high nibbles) and 2 high bits from qh at bits 2j.
        let (n, j) = (c / 4, c % 4);
        let ql = _mm256_loadu_si256(p.add(64 * n + 32 * (j % 2)) as *const __m256i);
        let qh = _mm256_loadu_si256(p.add(128 + 32 * n) as *const __m256i);
        let ql = if j < 2 { ql } else { _mm256_srli_epi16(ql, 4) };
        let low = _mm256_and_si256(ql, _mm256_set1_epi8(0x0F));
        let high = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * j as i32)), _mm256_set1_epi8(3));
        let q = _mm256_or_si256(low, _mm256_slli_epi16(high, 4));
        let thirty_two = _mm512_set1_epi32(32);
        let lo = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm256_castsi256_si128(q)), thirty_two));
        let hi = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm256_extracti128_si256(q, 1)), thirty_two));
        // (d·scale)·q: 11 + 7 + 5 significant bits at most, exact as in the reference.
        let g = 8 * n + 2 * j;
        (_mm512_mul_ps(lo, _mm512_set1_ps(head[g])), _mm512_mul_ps(hi, _mm512_set1_ps(head[g + 1])))
    }
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

/// Memory to pull into the cache while a GEMV works (the rows it will read next), into L2
/// (`_MM_HINT_T1`): on the Intel Xeon VM of 2026-12-03 asking for L1 instead ran an F16
/// decode at 72 against 89 tok/s (`runtime bench -p 0 -n 128`), and the tiles' next six rows
/// would evict the expanded rows the tiles are reading (at `k = 1536` those fill most of L1).
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
            _mm_prefetch::<_MM_HINT_T1>(self.ptr.add(64 * self.next) as *const i8);
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

/// `R` rows of K-quant format `B` (`k` elements, whole blocks) dotted with one token `x`:
/// the order of `gemv_chunked` (one FMA per 16 elements, in row order).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
unsafe fn gemv_super<B: SuperBlock, const R: usize>(
    rows: [*const u8; R],
    x: *const f32,
    k: usize,
    out: &mut [f32; R],
    prefetch: Prefetch,
) {
    let mut acc = [_mm512_setzero_ps(); R];
    let blocks = k / 256;
    let mut pf = prefetch.spread(blocks);
    for blk in 0..blocks {
        pf.step();
        for r in 0..R {
            let p = rows[r].add(blk * B::BYTES);
            let head = B::head(p);
            for c in 0..8 {
                let xp = x.add(256 * blk + 32 * c);
                let (w0, w1) = B::chunk(p, &head, c);
                fma_chunk(w0, w1, _mm512_loadu_ps(xp), _mm512_loadu_ps(xp.add(16)), &mut acc[r]);
            }
        }
    }
    reduce_into(&acc, out);
}

/// `R` rows (stored as `dtype`, `k` elements each) dotted with one token `x`.
///
/// # Safety
/// The module's: the CPU features, and `rows` and `x` hold `k` elements each.
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
        DType::Q4K => gemv_super::<Q4Ks, R>(rows, x, k, out, prefetch),
        DType::Q6K => gemv_super::<Q6Ks, R>(rows, x, k, out, prefetch),
        DType::Q5_0 => gemv_chunked::<Q5_0s, R>(dtype, rows, x, k, out, prefetch),
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

#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
unsafe fn expand_super<B: SuperBlock>(row: *const u8, k: usize, out: &mut [f32]) {
    for blk in 0..k / 256 {
        let p = row.add(blk * B::BYTES);
        let head = B::head(p);
        for c in 0..8 {
            let (w0, w1) = B::chunk(p, &head, c);
            let o = out.as_mut_ptr().add(256 * blk + 32 * c);
            _mm512_storeu_ps(o, w0);
            _mm512_storeu_ps(o.add(16), w1);
        }
    }
}

/// Expands one row (`k` elements of `dtype`) into `out` with the exact values of the
/// reference dequantizer.
///
/// # Safety
/// The module's: the CPU features, and `row` holds `k` elements of `dtype`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
pub unsafe fn expand_row(dtype: DType, row: *const u8, k: usize, out: &mut [f32]) {
    match dtype {
        DType::F32 => expand_chunked::<F32s>(dtype, row, k, out),
        DType::F16 => expand_chunked::<F16s>(dtype, row, k, out),
        DType::BF16 => expand_chunked::<BF16s>(dtype, row, k, out),
        DType::Q8_0 => expand_chunked::<Q8_0s>(dtype, row, k, out),
        DType::Q4_0 => expand_chunked::<Q4_0s>(dtype, row, k, out),
        DType::Q4_1 => expand_chunked::<Q4_1s>(dtype, row, k, out),
        DType::Q4K => expand_super::<Q4Ks>(row, k, &mut out[..k]),
        DType::Q6K => expand_super::<Q6Ks>(row, k, &mut out[..k]),
        DType::Q5_0 => expand_chunked::<Q5_0s>(dtype, row, k, out),
    }
}

/// How far ahead (in f32, 4 cache lines) `tile` asks for each token's next lines: the
/// tokens stream from L2 while the rows sit in L1. (On the Intel Xeon VM of 2026-12-03 an
/// in-cache probe of the 6 x 4 tile against 128 tokens ran ~4% faster with it, 64 and 128
/// alike, 512 no better than none; past a token's end it reaches the next token's first
/// lines, which the next tile reads.)
const PF: usize = 64;

/// `R` expanded f32 rows × `C` tokens: `dst[c][r] = w[r] · x[c]` over `k` elements,
/// 16 elements per step: each step loads `R` weight and `C` token vectors for `R·C`
/// FMAs (6 × 4 needs 10 loads for 24 FMAs). The sums leave through `store_tile`.
///
/// A call runs elements `i0..i1` (all of `k` in one call when the rows and tokens fit in L1
/// together; longer rows a span per call). `carry` holds the `R·C` accumulators (16 lanes
/// each, row-major) of elements `0..i0` (not read when `i0` is 0) and takes those of `0..i1`;
/// when `i1 == k` the sums go to `dst` instead. Each lane sees the same FMAs in the same
/// order however the row is cut, so the sums have the same bits.
///
/// # Safety
/// The module's (the CPU features; `w` and `x` hold `k` elements each), and: each `dst[c]` has room for `R` values; `i0` is a multiple
/// of 16, `i0 < i1 <= k`, and `i1` is a multiple of 16 or `k`; unless `(i0, i1) == (0, k)`,
/// `carry` has room for `16·R·C` floats.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
#[inline]
pub unsafe fn tile<const R: usize, const C: usize>(
    w: [*const f32; R],
    x: [*const f32; C],
    (i0, i1, k): (usize, usize, usize),
    carry: *mut f32,
    dst: [*mut f32; C],
) {
    let slot = |r: usize, c: usize| carry.add(16 * (r * C + c));
    let mut acc = [[_mm512_setzero_ps(); C]; R];
    if i0 > 0 {
        for (r, row) in acc.iter_mut().enumerate() {
            for (c, a) in row.iter_mut().enumerate() {
                *a = _mm512_loadu_ps(slot(r, c));
            }
        }
    }
    accumulate(w, x, i0, i1, k, &mut acc);
    if i1 == k {
        store_tile(&acc, dst);
    } else {
        for (r, row) in acc.iter().enumerate() {
            for (c, a) in row.iter().enumerate() {
                _mm512_storeu_ps(slot(r, c), *a);
            }
        }
    }
}

/// Adds elements `i0..i1` (of `k`) of each row-token product to `acc`, two 16-element steps
/// per loop trip; a last partial step (when `i1 == k` is not a multiple of 16) is masked.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
#[inline]
unsafe fn accumulate<const R: usize, const C: usize>(
    w: [*const f32; R],
    x: [*const f32; C],
    i0: usize,
    i1: usize,
    k: usize,
    acc: &mut [[__m512; C]; R],
) {
    let mut i = i0;
    let step = |i: usize, acc: &mut [[__m512; C]; R]| {
        let mut xv = [_mm512_setzero_ps(); C];
        for c in 0..C {
            xv[c] = _mm512_loadu_ps(x[c].add(i));
            _mm_prefetch::<_MM_HINT_T0>(x[c].add(i + PF) as *const i8);
        }
        for r in 0..R {
            let wv = _mm512_loadu_ps(w[r].add(i));
            for c in 0..C {
                acc[r][c] = _mm512_fmadd_ps(wv, xv[c], acc[r][c]);
            }
        }
    };
    while i + 32 <= i1 {
        step(i, acc);
        step(i + 16, acc);
        i += 32;
    }
    if i + 16 <= i1 {
        step(i, acc);
        i += 16;
    }
    if i < i1 {
        debug_assert_eq!(i1, k);
        let m = lanes(k - i);
        for r in 0..R {
            let wv = _mm512_maskz_loadu_ps(m, w[r].add(i));
            for c in 0..C {
                acc[r][c] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(m, x[c].add(i)), acc[r][c]);
            }
        }
    }
}

/// `dst[c][r] = hsum(acc[r][c])`. Four tokens' sums leave sixteen (four rows) or eight (two
/// rows, the same sixteen-sum tree with each accumulator twice, whose repeats the compiler
/// drops) per `hsum16_transposed`, each token's rows as one vector store; other rows (all
/// of them for other token counts) one row at a time through `reduce_into`.
///
/// SAFETY: as `tile`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
#[inline]
unsafe fn store_tile<const R: usize, const C: usize>(acc: &[[__m512; C]; R], dst: [*mut f32; C]) {
    let mut r = 0;
    if C == 4 {
        // 128-bit lane `c` of a `hsum16_transposed` of rows `r..r + 4` (accumulator `4p + c`
        // is row `r + p`, token `c`) holds token `c`'s four sums in row order.
        while r + 4 <= R {
            let s = hsum16_transposed(&std::array::from_fn(|j| acc[r + j / 4][j % 4]));
            _mm_storeu_ps(dst[0].add(r), _mm512_castps512_ps128(s));
            _mm_storeu_ps(dst[1].add(r), _mm512_extractf32x4_ps::<1>(s));
            _mm_storeu_ps(dst[2].add(r), _mm512_extractf32x4_ps::<2>(s));
            _mm_storeu_ps(dst[3].add(r), _mm512_extractf32x4_ps::<3>(s));
            r += 4;
        }
        if r + 2 <= R {
            // Rows r, r + 1 twice: lane `c` is [row r, row r + 1, row r, row r + 1] of token `c`.
            let s = hsum16_transposed(&std::array::from_fn(|j| acc[r + (j % 8) / 4][j % 4]));
            let two = |v: __m128| _mm_castps_si128(v);
            _mm_storel_epi64(dst[0].add(r) as *mut __m128i, two(_mm512_castps512_ps128(s)));
            _mm_storel_epi64(dst[1].add(r) as *mut __m128i, two(_mm512_extractf32x4_ps::<1>(s)));
            _mm_storel_epi64(dst[2].add(r) as *mut __m128i, two(_mm512_extractf32x4_ps::<2>(s)));
            _mm_storel_epi64(dst[3].add(r) as *mut __m128i, two(_mm512_extractf32x4_ps::<3>(s)));
            r += 2;
        }
    }
    while r < R {
        let mut one = [0f32; C];
        reduce_into(&acc[r], &mut one);
        for (c, v) in one.iter().enumerate() {
            *dst[c].add(r) = *v;
        }
        r += 1;
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
