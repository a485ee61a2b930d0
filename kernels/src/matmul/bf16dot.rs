//! `Precision::Medium`: AVX512-BF16 dot products, an opt-in approximate path (PyTorch's
//! `set_float32_matmul_precision("medium")`: f32 matmuls with BF16 inputs).
//!
//! The activations are rounded to BF16 (`vcvtneps2bf16`: nearest even); so are the
//! weights, after their exact expansion, unless they are stored as BF16 (then they are
//! read in place). `vdpbf16ps` multiplies 32 weight/activation pairs per instruction and
//! adds them into 16 f32 lanes: twice the multiply-adds of an f32 FMA. Not exact: each
//! rounded value carries a relative error of up to 2^-8, so greedy output may depart from
//! the reference; the default `Precision::Highest` path never takes this one.
//!
//! Order: one 16-lane accumulator per output; step `i` hands lane `j` elements
//! `32i + 2j` and `32i + 2j + 1` (one `vdpbf16ps`); a zero-filled last partial step; then
//! `hsum`. Every tile shape and the one-token case run this same sequence, so a token's
//! result does not depend on its batch here either.
//!
//! Safety: callers guarantee AVX-512 (`avx512f`, `avx512bw`, `avx512vl`) and
//! `avx512bf16` (`available()`), and in-bounds pointers.

use super::avx512::{reduce_into, Chunked, F16s, F32s, Prefetch, Q4_0s, Q4_1s, Q5_0s, Q8_0s};
use super::tiled::{TILED_CHUNK, TOKEN_BLOCK};
use super::{with_scratch, Parts, WeightMatrix};
use crate::aligned::AlignedBuf;
use crate::dtype::DType;
use crate::parallel::{for_each_chunk_mut, SharedMut};
use crate::shares::deal;
use crate::simd::{simd_level, SimdLevel};
use std::arch::x86_64::*;
use std::cell::RefCell;
use std::sync::OnceLock;
use std::thread::LocalKey;

/// Whether this path can run: the AVX-512 level is in use and the CPU has AVX512-BF16.
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| simd_level() == SimdLevel::Avx512 && is_x86_feature_detected!("avx512bf16"))
}

thread_local! {
    /// The caller's activations as BF16, rows padded with zeros to a multiple of 32
    /// (64 bytes, so rows start on cache lines: an `AlignedBuf` holds two per f32).
    static XB: RefCell<AlignedBuf> = const { RefCell::new(AlignedBuf::new()) };
}

/// `out = x · Wᵀ` for every part (any weight type), see the module doc.
pub(super) fn matmul(mut parts: Parts, x: &[f32], n_tokens: usize) {
    let cols = parts.parts[0].w.cols;
    let stride = cols.div_ceil(32) * 32;
    with_bf16(&XB, n_tokens * stride, |xb| {
        // Rows are independent: spread them over the pool when there are many.
        let rows_per_task =
            if n_tokens >= 64 { n_tokens.div_ceil(crate::parallel::num_threads() * 4) } else { n_tokens };
        for_each_chunk_mut(xb, rows_per_task * stride, &|range, piece| {
            let t0 = range.start / stride;
            for (i, row) in piece.chunks_exact_mut(stride).enumerate() {
                // SAFETY: `available()` (checked by the caller); both rows hold `cols`
                // (and `stride`) elements.
                unsafe { to_bf16(&x[(t0 + i) * cols..(t0 + i + 1) * cols], row) };
            }
        });
        let xb: &[u16] = xb;
        // One token: 16-row blocks dealt as contiguous shares, `gemv_rows` rows at a
        // time (a memory-bound stream, as the exact GEMV); several: 24-row chunks, 6 rows
        // at a time against 128-token blocks. BF16 weights are read in place; others are
        // expanded (exactly, as the reference dequantizer) and rounded to BF16, a group
        // at a time, into a per-thread scratch.
        let unit = if n_tokens == 1 { 16 } else { TILED_CHUNK };
        deal(parts.number(unit), |u, own_end| {
            let (p, r0, r1, pf_end) = parts.dealt_rows(u, unit, own_end);
            let w = &p.w;
            let group = if n_tokens == 1 { gemv_rows(w.dtype) } else { 6 };
            let tiles = Tiles { x: xb.as_ptr(), stride, cols, rows: w.rows, out: p.out };
            // One token of a format expanded in registers: a fused GEMV (same values and
            // order as expanding into the scratch first, without the two extra passes).
            let fused = n_tokens == 1 && cols.is_multiple_of(32) && fusable(w.dtype);
            let scratch_len = if w.dtype == DType::BF16 || fused { 0 } else { group * stride };
            with_bf16(&WB, scratch_len, |scratch| {
                for t0 in (0..n_tokens).step_by(TOKEN_BLOCK) {
                    let t1 = (t0 + TOKEN_BLOCK).min(n_tokens);
                    let mut r = r0;
                    while r < r1 {
                        let n = if r1 - r >= group {
                            group
                        } else if r1 - r >= 4 && group > 4 {
                            4
                        } else if r1 - r >= 2 {
                            2
                        } else {
                            1
                        };
                        // SAFETY: `available()`; rows r..r+n < rows and tokens t0..t1 are
                        // this unit's (`deal` hands each unit out once); the prefetched
                        // rows exist; a non-BF16 group fits the scratch (`group` rows).
                        unsafe {
                            // The next group's rows (contiguous after these) stream in
                            // while this one computes, spread over its first tile.
                            let next = if r + n < pf_end {
                                Prefetch { ptr: w.row(r + n).as_ptr(), len: group.min(pf_end - r - n) * w.row_bytes() }
                            } else {
                                Prefetch::NONE
                            };
                            if fused {
                                match n {
                                    8 => tiles.gemv_fused::<8>(w, r, next),
                                    4 => tiles.gemv_fused::<4>(w, r, next),
                                    2 => tiles.gemv_fused::<2>(w, r, next),
                                    _ => tiles.gemv_fused::<1>(w, r, next),
                                }
                                r += n;
                                continue;
                            }
                            if w.dtype != DType::BF16 {
                                for i in 0..n {
                                    expand_to_bf16(w, r + i, &mut scratch[i * stride..(i + 1) * stride]);
                                }
                            }
                            let sp = scratch.as_ptr();
                            let wr = |i: usize| -> *const u16 {
                                if w.dtype == DType::BF16 {
                                    w.row(r + i).as_ptr() as *const u16
                                } else {
                                    sp.add(i * stride)
                                }
                            };
                            match n {
                                8 => tiles.rows_x_tokens::<8>(std::array::from_fn(wr), r, t0, t1, next),
                                6 => tiles.rows_x_tokens::<6>(std::array::from_fn(wr), r, t0, t1, next),
                                4 => tiles.rows_x_tokens::<4>(std::array::from_fn(wr), r, t0, t1, next),
                                2 => tiles.rows_x_tokens::<2>(std::array::from_fn(wr), r, t0, t1, next),
                                _ => tiles.rows_x_tokens::<1>(std::array::from_fn(wr), r, t0, t1, next),
                            }
                        }
                        r += n;
                    }
                }
            })
        });
    })
}

thread_local! {
    /// Per-thread weight rows rounded to BF16 (for weights not stored as BF16).
    static WB: RefCell<AlignedBuf> = const { RefCell::new(AlignedBuf::new()) };
}

/// `f` on the first `len` (even) BF16 values of `buf`, a 64-byte-aligned per-thread
/// buffer (`XB` or `WB`; an `AlignedBuf` holds two per f32), grown as needed.
fn with_bf16<T>(buf: &'static LocalKey<RefCell<AlignedBuf>>, len: usize, f: impl FnOnce(&mut [u16]) -> T) -> T {
    buf.with(|b| {
        let mut b = b.borrow_mut();
        if b.len() < len / 2 {
            b.resize(len / 2);
        }
        // SAFETY: the buffer holds at least `len / 2` f32, that is `len` u16 (any bits
        // are a valid u16), and is borrowed mutably here.
        f(unsafe { std::slice::from_raw_parts_mut(b.as_mut_slice().as_mut_ptr() as *mut u16, len) })
    })
}

/// Row `r` of `w` expanded to its exact f32 values, then rounded to BF16 into `out`
/// (zero-padded to `out.len()`): in registers, 32 elements at a time, for formats with a
/// `Chunked` expansion and whole chunks; through an f32 row otherwise (same bits).
///
/// SAFETY: `available()`; `r < w.rows`; `out.len() >= w.cols`, a multiple of 16.
unsafe fn expand_to_bf16(w: &WeightMatrix, r: usize, out: &mut [u16]) {
    let row = w.row(r).as_ptr();
    if w.cols.is_multiple_of(32) {
        match w.dtype {
            DType::F32 => return expand_chunked_bf16::<F32s>(row, w.cols, out),
            DType::F16 => return expand_chunked_bf16::<F16s>(row, w.cols, out),
            DType::Q8_0 => return expand_chunked_bf16::<Q8_0s>(row, w.cols, out),
            DType::Q4_0 => return expand_chunked_bf16::<Q4_0s>(row, w.cols, out),
            DType::Q4_1 => return expand_chunked_bf16::<Q4_1s>(row, w.cols, out),
            DType::Q5_0 => return expand_chunked_bf16::<Q5_0s>(row, w.cols, out),
            _ => {}
        }
    }
    with_scratch(w.cols, |f| {
        super::avx512::expand_row(w.dtype, row, w.cols, f);
        to_bf16(f, out)
    })
}

/// `k` (a multiple of 32) elements of format `W` at `row`, expanded and rounded to BF16
/// (`vcvtne2ps2bf16`, as `to_bf16`) into `out`, zero-padded.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c,avx512bf16")]
unsafe fn expand_chunked_bf16<W: Chunked>(row: *const u8, k: usize, out: &mut [u16]) {
    for c in 0..k / 32 {
        let (w0, w1) = W::load(row.add(c * W::BYTES));
        _mm512_storeu_si512(
            out.as_mut_ptr().add(32 * c) as *mut _,
            std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(w1, w0)),
        );
    }
    out[k..].fill(0);
}

/// Rows per one-token group: float rows stream best 2 at a time (4 ran 10-40% slower
/// on AMD Zen 4, where one `vdpbf16ps` takes 32 elements); quantized rows need more
/// independent chains to hide their expansion (8, as the exact GEMV).
fn gemv_rows(dtype: DType) -> usize {
    match dtype {
        DType::BF16 | DType::F32 | DType::F16 => 2,
        _ => 8,
    }
}

/// Formats `Tiles::gemv_fused` expands in registers (`avx512::Chunked`).
fn fusable(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F16 | DType::Q8_0 | DType::Q4_0 | DType::Q4_1 | DType::Q5_0)
}

/// `out[..x.len()]` = `x` rounded to BF16 (nearest even), the rest of `out` zero.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c,avx512bf16")]
unsafe fn to_bf16(x: &[f32], out: &mut [u16]) {
    let mut i = 0;
    while i < out.len() {
        let m = crate::dot::avx512::lanes(x.len().saturating_sub(i));
        let v = _mm512_maskz_loadu_ps(m, x.as_ptr().add(i.min(x.len())));
        let b: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(v));
        _mm256_storeu_si256(out.as_mut_ptr().add(i) as *mut __m256i, b);
        i += 16;
    }
}

/// The operands of one unit's tiles.
struct Tiles {
    x: *const u16,
    stride: usize,
    cols: usize,
    rows: usize,
    out: SharedMut<f32>,
}

impl Tiles {
    /// Rows `r..r+R` (their BF16 values at `wr`) × tokens `t0..t1`, four tokens per
    /// micro-kernel call.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c,avx512bf16")]
    unsafe fn rows_x_tokens<const R: usize>(
        &self,
        wr: [*const u16; R],
        r: usize,
        t0: usize,
        t1: usize,
        next: Prefetch,
    ) {
        let mut next = Some(next);
        let mut t = t0;
        while t + 4 <= t1 {
            self.call::<R, 4>(&wr, r, t, next.take().unwrap_or(Prefetch::NONE));
            t += 4;
        }
        while t + 2 <= t1 {
            self.call::<R, 2>(&wr, r, t, next.take().unwrap_or(Prefetch::NONE));
            t += 2;
        }
        if t < t1 {
            self.call::<R, 1>(&wr, r, t, next.take().unwrap_or(Prefetch::NONE));
        }
    }

    /// Rows `r..r+R` of `w` (a `fusable` format, `cols` a multiple of 32) × token 0:
    /// each 32-element chunk is expanded in registers (`Chunked::load`, the reference
    /// dequantizer's values), rounded to BF16 (`vcvtne2ps2bf16`, as `to_bf16`) and fed to
    /// one `vdpbf16ps`: the bits of expanding into the scratch and running the tile.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c,avx512bf16")]
    unsafe fn gemv_fused<const R: usize>(&self, w: &WeightMatrix, r: usize, pf: Prefetch) {
        let rows: [*const u8; R] = std::array::from_fn(|i| w.row(r + i).as_ptr());
        let mut v = [0f32; R];
        match w.dtype {
            DType::F32 => gemv_chunked::<F32s, R>(rows, self.x, self.cols, &mut v, pf),
            DType::F16 => gemv_chunked::<F16s, R>(rows, self.x, self.cols, &mut v, pf),
            DType::Q8_0 => gemv_chunked::<Q8_0s, R>(rows, self.x, self.cols, &mut v, pf),
            DType::Q4_0 => gemv_chunked::<Q4_0s, R>(rows, self.x, self.cols, &mut v, pf),
            DType::Q4_1 => gemv_chunked::<Q4_1s, R>(rows, self.x, self.cols, &mut v, pf),
            DType::Q5_0 => gemv_chunked::<Q5_0s, R>(rows, self.x, self.cols, &mut v, pf),
            other => unreachable!("{other} is not fusable"),
        }
        for (i, vi) in v.iter().enumerate() {
            *self.out.at(r + i) = *vi;
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c,avx512bf16")]
    #[inline]
    unsafe fn call<const R: usize, const C: usize>(&self, wr: &[*const u16; R], r: usize, t: usize, pf: Prefetch) {
        let mut v = [[0f32; C]; R];
        tile::<R, C>(*wr, std::array::from_fn(|c| self.x.add((t + c) * self.stride)), self.cols, &mut v, pf);
        for (i, vi) in v.iter().enumerate() {
            for (c, vc) in vi.iter().enumerate() {
                *self.out.at((t + c) * self.rows + r + i) = *vc;
            }
        }
    }
}

/// `R` rows of format `W` (`k` elements, a multiple of 32) × one BF16 token row `x`, the
/// weights expanded and rounded to BF16 in registers; lines of `pf` prefetched on the way.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c,avx512bf16")]
#[inline]
unsafe fn gemv_chunked<W: Chunked, const R: usize>(
    rows: [*const u8; R],
    x: *const u16,
    k: usize,
    out: &mut [f32; R],
    pf: Prefetch,
) {
    let mut acc = [_mm512_setzero_ps(); R];
    let steps = k / 32;
    let mut pf = pf.spread(steps);
    for c in 0..steps {
        pf.step();
        let xv: __m512bh = std::mem::transmute(_mm512_loadu_si512(x.add(32 * c) as *const _));
        for r in 0..R {
            let (w0, w1) = W::load(rows[r].add(c * W::BYTES));
            // Elements 0..16 from w0 in the low half, 16..32 from w1: the row's order.
            acc[r] = _mm512_dpbf16_ps(acc[r], _mm512_cvtne2ps_pbh(w1, w0), xv);
        }
    }
    reduce_into(&acc, out);
}

/// `R` BF16 weight rows × `C` BF16 token rows over `k` elements, 32 per step (see the
/// module doc for the order). Token rows are zero-padded to a multiple of 32. The lines
/// of `pf` are prefetched, spread over the steps.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c,avx512bf16")]
#[inline]
unsafe fn tile<const R: usize, const C: usize>(
    w: [*const u16; R],
    x: [*const u16; C],
    k: usize,
    out: &mut [[f32; C]; R],
    pf: Prefetch,
) {
    let mut acc = [[_mm512_setzero_ps(); C]; R];
    let mut pf = pf.spread(k.div_ceil(32));
    let mut i = 0;
    let mut step = |i: usize, m: u32| {
        pf.step();
        let xv: [__m512bh; C] =
            std::array::from_fn(|c| std::mem::transmute(_mm512_loadu_si512(x[c].add(i) as *const _)));
        for r in 0..R {
            let wv: __m512bh = if m == u32::MAX {
                std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(w[r].add(i) as *const _))
            } else {
                std::mem::transmute::<__m512i, __m512bh>(_mm512_maskz_loadu_epi16(m, w[r].add(i) as *const i16))
            };
            for c in 0..C {
                acc[r][c] = _mm512_dpbf16_ps(acc[r][c], wv, xv[c]);
            }
        }
    };
    while i + 32 <= k {
        step(i, u32::MAX);
        i += 32;
    }
    if i < k {
        // The token rows' padding is zero; the weights past `k` are masked off.
        step(i, (1u32 << (k - i)) - 1);
    }
    for r in 0..R {
        reduce_into(&acc[r], &mut out[r]);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{matmul_many_with, matmul_with, Precision, WeightMatrix};
    use crate::dtype::DType;
    use crate::quant::dequantize_row;
    use crate::test_util::{random_row, Lcg};

    /// Round to nearest even, as `vcvtneps2bf16` does for normal numbers.
    fn bf16_bits(v: f32) -> u16 {
        let b = v.to_bits();
        ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) as u16
    }

    #[test]
    fn activations_round_to_nearest_even() {
        if !super::available() {
            return;
        }
        let mut rng = Lcg(3);
        let mut x: Vec<f32> = (0..77).map(|_| rng.normal() * 100.0).collect();
        // Ties: exactly halfway between two BF16 values, both parities.
        x[0] = f32::from_bits(0x3F80_8000);
        x[1] = f32::from_bits(0x3F81_8000);
        let mut out = vec![0xFFFFu16; 96];
        // SAFETY: available() checked above; `out` is longer than `x`.
        unsafe { super::to_bf16(&x, &mut out) };
        for (i, v) in x.iter().enumerate() {
            assert_eq!(out[i], bf16_bits(*v), "element {i} ({v})");
        }
        assert_eq!((out[0], out[1]), (0x3F80, 0x3F82), "ties go to even");
        assert!(out[77..].iter().all(|&b| b == 0), "the padding is zero");
    }

    /// Weights and activations rounded to BF16: within their rounding (2^-8 relative
    /// each; weights stored as BF16 are not rounded) of the exact sum, batch invariant,
    /// and not the exact path's bits (so this path did run), for every weight type.
    #[test]
    fn medium_is_close_batch_invariant_and_not_the_exact_path() {
        if !super::available() {
            return;
        }
        let mut rng = Lcg(21);
        for dtype in DType::ALL {
            // Columns off the 32-element step where the format allows (tail masks), row
            // counts off the 4-, 6-, 16- and 24-row units, token counts across the
            // 4-token tiles and the 128-token blocks.
            let wide = if dtype.block_size() == 256 { 512 } else { 1024 };
            let narrow = if dtype.block_size() == 1 { 80 } else { dtype.block_size().max(64) };
            for (rows, cols) in [(37usize, narrow), (7, wide)] {
                let w: Vec<u8> = (0..rows).flat_map(|_| random_row(dtype, cols, &mut rng)).collect();
                let wm = WeightMatrix::new(dtype, &w, rows, cols).expect("shape");
                let mut wf = vec![0f32; rows * cols];
                dequantize_row(dtype, &w, &mut wf);
                let n = 131;
                let x: Vec<f32> = (0..n * cols).map(|_| rng.normal()).collect();
                let mut out = vec![f32::NAN; n * rows];
                matmul_with(Precision::Medium, &wm, &x, &mut out);
                let mut exact = vec![0f32; n * rows];
                matmul_with(Precision::Highest, &wm, &x, &mut exact);
                assert_ne!(out, exact, "{dtype} {rows}x{cols}: medium gave the exact bits");
                let rel = if dtype == DType::BF16 { 2f64.powi(-8) } else { 2f64.powi(-7) };
                for t in 0..n {
                    for r in 0..rows {
                        let (wr, xt) = (&wf[r * cols..(r + 1) * cols], &x[t * cols..(t + 1) * cols]);
                        let want: f64 = wr.iter().zip(xt).map(|(a, b)| *a as f64 * *b as f64).sum();
                        let mag: f64 = wr.iter().zip(xt).map(|(a, b)| (*a as f64 * *b as f64).abs()).sum();
                        let got = out[t * rows + r] as f64;
                        assert!((got - want).abs() <= mag * rel, "{dtype} {rows}x{cols} t{t} r{r}: {got} vs {want}");
                    }
                }
                for t in [0, 1, 63, 127, 128, 130] {
                    let mut one = vec![0f32; rows];
                    matmul_with(Precision::Medium, &wm, &x[t * cols..(t + 1) * cols], &mut one);
                    assert_eq!(one, out[t * rows..(t + 1) * rows], "{dtype} {rows}x{cols}: token {t} alone");
                }
                let mut three = vec![0f32; 3 * rows];
                matmul_with(Precision::Medium, &wm, &x[5 * cols..8 * cols], &mut three);
                assert_eq!(three, out[5 * rows..8 * rows], "{dtype} {rows}x{cols}: tokens 5..8 as a batch of 3");
            }
        }
    }

    /// Expanding to BF16 in registers gives the bits of expanding to f32 and rounding.
    #[test]
    fn one_pass_expansion_is_the_two_pass_bits() {
        if !super::available() {
            return;
        }
        let mut rng = Lcg(13);
        for dtype in [DType::F32, DType::F16, DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0] {
            let cols = 128;
            let w = random_row(dtype, cols, &mut rng);
            let wm = WeightMatrix::new(dtype, &w, 1, cols).expect("shape");
            let (mut one, mut two, mut f) = (vec![7u16; 160], vec![9u16; 160], vec![0f32; cols]);
            dequantize_row(dtype, &w, &mut f);
            // SAFETY: available() checked above; both outputs hold more than `cols`.
            unsafe {
                super::expand_to_bf16(&wm, 0, &mut one);
                super::to_bf16(&f, &mut two);
            }
            assert_eq!(one, two, "{dtype}");
        }
    }

    #[test]
    fn medium_matmul_many_gives_each_matrix_its_own_bits() {
        if !super::available() {
            return;
        }
        let mut rng = Lcg(5);
        let (cols, shapes) = (96, [45usize, 0, 17, 100]);
        for dtype in [DType::BF16, DType::Q8_0] {
            let data: Vec<Vec<u8>> =
                shapes.iter().map(|&r| (0..r).flat_map(|_| random_row(dtype, cols, &mut rng)).collect()).collect();
            let ws: Vec<WeightMatrix> =
                shapes.iter().zip(&data).map(|(&r, d)| WeightMatrix::new(dtype, d, r, cols).expect("shape")).collect();
            for n in [1usize, 9] {
                let x: Vec<f32> = (0..n * cols).map(|_| rng.normal()).collect();
                let mut outs: Vec<Vec<f32>> = shapes.iter().map(|&r| vec![f32::NAN; n * r]).collect();
                let mut views: Vec<&mut [f32]> = outs.iter_mut().map(|o| o.as_mut_slice()).collect();
                matmul_many_with(Precision::Medium, &ws, &x, &mut views);
                for (i, w) in ws.iter().enumerate() {
                    let mut alone = vec![0f32; n * w.rows];
                    matmul_with(Precision::Medium, w, &x, &mut alone);
                    assert_eq!(outs[i], alone, "{dtype}: matrix {i}, {n} tokens");
                }
            }
        }
    }
}
