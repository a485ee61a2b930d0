//! Weights repacked into 16-row *panels* (F32, F16, BF16 and Q8_0), and `out = x · Wᵀ`
//! over them by an outer-product micro-kernel: the exact AVX-512 path of those types (a
//! `WeightMatrix` that carries panels is computed from them, `matmul_many_with`).
//!
//! Layout: panel `p` holds rows `16p..16p + 16` (the last one padded with zero rows), in
//! blocks of columns (`Format`): one column per block for F32 and F16, two for BF16, 32
//! for Q8_0, whose block starts with the 16 rows' F16 scales. Inside a block the 16 rows'
//! elements of one column are side by side, in the matrix's own type: one 32-byte (F16),
//! 64-byte (F32) or 16-byte (Q8_0) load, widened exactly to an f32 vector (Q8_0: `q · d`,
//! exact in f32, the dequantizer's value). BF16 pairs a row's two columns in one 32-bit
//! word (first column low), so one 64-byte load holds two columns and one shift (first) or
//! one mask (second) widens a column: a BF16 is the high half of its f32. (Its 16-bit
//! elements widened one column at a time cost two vector operations per 16 rows on the
//! FMA ports; pairs cost one: decode 32 sequences +4-7% end to end.) A BF16 matrix with
//! an odd number of columns keeps its rows.
//!
//! Arithmetic: every output `(token t, row r)` is one chain of FMAs over the columns in
//! order, from zero: `acc = fma(w[r][k], x[t][k], acc)` for `k = 0..cols` — f32 operands
//! (the weights' exact values), f32 accumulation, no horizontal sums. A vector holds 16
//! rows' chains of one token; the micro-kernel runs 3 panels (48 rows) × 8 tokens (24
//! accumulators), each weight vector reused by 8 tokens, each broadcast activation by 48
//! rows; one token is the same kernel with one column of accumulators. Float panels are
//! widened inside that loop; Q8_0 panels, at 8 tokens or more, 128 columns at a time into
//! an L1 scratch first (three vector operations per column would otherwise compete with
//! the FMAs once per 8 tokens), the accumulators carried between spans. Neither changes a
//! weight's value or an output's chain: the bits do not depend on the tile, panel group,
//! token count or thread, so a token's result never depends on the rest of its batch, and
//! the scalar reference (`f32::mul_add` in the same order) gives the same bits (tested).
//!
//! Each tile size is its own function (`#[inline(never)]`): inlined into `group`, the
//! same hot loop measured up to 8% faster or slower from build to build with unrelated
//! code changes. The next group's bytes are prefetched into L2 (`T1`), not L1, which
//! the current group's re-read bytes need (+3% in `decode_layers`), a line per two columns
//! by the first steps of a tile in a loop of their own: a per-column test of whether a
//! line is left cost ~15 of the loop's ~60 instructions per column (F16, 3 × 8), and
//! dropping it gained 3-5% in 32-sequence decode end to end.
//!
//! Cost (the Intel Xeon VM of 2026-12-04, `KEEL_BENCH_THREADS=2 cargo bench -p keel-kernels
//! --bench kernels -- 'decode_layers/(Q8_0|F16|BF16)(-panels)?/T'`, the decode layers'
//! shapes, weights streamed from memory): 32 tokens F16 ~132-137 Gelem/s against ~115 for
//! the row-major 6 × 4 dot-product tiles (whose 24 horizontal sums per tile and separate
//! expansion pass this layout does without), Q8_0 ~128-139 against ~121; one token F16
//! ~12.5 against ~11.5. Memory: a second copy of each such matrix (the row-major one stays
//! for embedding lookups and the other paths). Q8_0 with its expansion fused into the loop
//! at 32 tokens too measured no faster than the row-major tiles and 12% slower in prefill.
//! The other quantized types keep their rows.

use super::{WeightMatrix, MAX_PARTS};
use crate::aligned::AlignedBuf;
use crate::dtype::DType;
use crate::parallel::SharedMut;

/// Rows per panel: one f32 vector of AVX-512.
pub const PANEL: usize = 16;
/// Panels per micro-kernel call.
const GROUP: usize = 3;
/// Tokens per micro-kernel call.
const TOKENS: usize = 8;

/// A weight matrix repacked into panels (see the module doc).
pub struct PanelMatrix {
    pub dtype: DType,
    pub rows: usize,
    pub cols: usize,
    /// The panels' elements, `dtype.bytes()` each (f32-sized words, 64-byte aligned).
    data: AlignedBuf,
}

impl PanelMatrix {
    /// `w` repacked; `None` unless `w` is F32, F16, BF16 or Q8_0. One task per panel on the
    /// kernel pool (a model repacks its matrices at load).
    pub fn from_weights(w: &WeightMatrix) -> Option<PanelMatrix> {
        let f = Format::of(w.dtype).filter(|f| w.cols.is_multiple_of(f.cols))?;
        let panel_bytes = w.cols / f.cols * f.block_bytes();
        let len = w.rows.div_ceil(PANEL) * panel_bytes;
        let mut data = AlignedBuf::zeros(len.div_ceil(4));
        // SAFETY: `data` holds at least `len` bytes.
        let bytes = unsafe { std::slice::from_raw_parts_mut(data.as_mut_ptr() as *mut u8, len) };
        crate::parallel::for_each_chunk_mut(bytes, panel_bytes, &|range, panel| {
            let r0 = range.start / panel_bytes * PANEL;
            for r in r0..(r0 + PANEL).min(w.rows) {
                match f.size {
                    1 => f.place::<1>(w.row(r), r - r0, panel),
                    2 => f.place::<2>(w.row(r), r - r0, panel),
                    _ => f.place::<4>(w.row(r), r - r0, panel),
                }
            }
        });
        Some(PanelMatrix { dtype: w.dtype, rows: w.rows, cols: w.cols, data })
    }

    fn format(&self) -> Format {
        Format::of(self.dtype).expect("a panel format")
    }

    fn n_panels(&self) -> usize {
        self.rows.div_ceil(PANEL)
    }

    /// Bytes of one panel.
    fn panel_bytes(&self) -> usize {
        let f = self.format();
        self.cols / f.cols * f.block_bytes()
    }

    fn bytes(&self) -> *const u8 {
        self.data.as_ptr() as *const u8
    }

    /// Element `(r, k)` widened to f32 (the value the dequantizer gives).
    fn at(&self, r: usize, k: usize) -> f32 {
        let f = self.format();
        let (i, at) = (r % PANEL, r / PANEL * self.panel_bytes() + k / f.cols * f.block_bytes());
        // SAFETY: `(r, k)` is inside the matrix, so these bytes are inside the panels.
        let b = |o: usize, n: usize| unsafe { std::slice::from_raw_parts(self.bytes().add(at + o), n) };
        let e = b(PANEL * f.scale + f.element(k % f.cols, i) * f.size, f.size);
        match self.dtype {
            DType::F32 => f32::from_le_bytes([e[0], e[1], e[2], e[3]]),
            DType::F16 => half::f16::from_le_bytes([e[0], e[1]]).to_f32(),
            DType::BF16 => half::bf16::from_le_bytes([e[0], e[1]]).to_f32(),
            _ => {
                let d = b(i * 2, 2);
                (e[0] as i8) as f32 * half::f16::from_le_bytes([d[0], d[1]]).to_f32()
            }
        }
    }
}

/// How a type sits in a panel: per block of `cols` columns, 16 scales of `scale` bytes
/// (the rows' own), then the 16 rows' `size`-byte elements column by column, or, when
/// `paired`, row by row (a row's two columns side by side).
#[derive(Clone, Copy)]
struct Format {
    cols: usize,
    scale: usize,
    size: usize,
    paired: bool,
}

impl Format {
    fn of(dtype: DType) -> Option<Format> {
        match dtype {
            DType::F32 => Some(Format { cols: 1, scale: 0, size: 4, paired: false }),
            DType::F16 => Some(Format { cols: 1, scale: 0, size: 2, paired: false }),
            DType::BF16 => Some(Format { cols: 2, scale: 0, size: 2, paired: true }),
            DType::Q8_0 => Some(Format { cols: 32, scale: 2, size: 1, paired: false }),
            _ => None,
        }
    }

    /// Index of element (column `j` of a block, row `i` of the panel) among the block's.
    fn element(self, j: usize, i: usize) -> usize {
        if self.paired {
            i * self.cols + j
        } else {
            j * PANEL + i
        }
    }

    fn block_bytes(self) -> usize {
        PANEL * (self.scale + self.cols * self.size)
    }

    /// Puts `row` (its stored blocks) at row `i` of `panel`; `N`: `self.size`.
    fn place<const N: usize>(self, row: &[u8], i: usize, panel: &mut [u8]) {
        if self.cols == 1 {
            // A float type: a block is one element (the loop below, without its per-block work).
            for (k, e) in row.chunks_exact(N).enumerate() {
                panel[(k * PANEL + i) * N..][..N].copy_from_slice(e);
            }
            return;
        }
        if self.paired && self.scale == 0 {
            // BF16: a block is the row's next `cols` elements, side by side as in the row
            // (the float loop above is this with one element, kept apart for its constant
            // copy length: merged, SmolLM2 F16 started in 0.36-0.40 s instead of 0.27-0.32).
            let n = self.cols * N;
            for (b, blk) in row.chunks_exact(n).enumerate() {
                panel[b * self.block_bytes() + i * n..][..n].copy_from_slice(blk);
            }
            return;
        }
        for (b, blk) in row.chunks_exact(self.scale + self.cols * N).enumerate() {
            let at = b * self.block_bytes();
            // Q8_0: the row's scale, then its 32 quants.
            let (scale, elems) = blk.split_at(self.scale);
            panel[at + i * self.scale..][..self.scale].copy_from_slice(scale);
            for (j, e) in elems.chunks_exact(N).enumerate() {
                let o = at + PANEL * self.scale + self.element(j, i) * N;
                panel[o..o + N].copy_from_slice(e);
            }
        }
    }
}

impl std::fmt::Debug for PanelMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PanelMatrix({} {}x{})", self.dtype, self.rows, self.cols)
    }
}

/// Whether this process's exact matmuls run on panels: on CPUs with AVX-512, at
/// `Precision::Highest` (a model repacks its F32 / F16 / BF16 / Q8_0 matrices at load when so).
pub fn used() -> bool {
    cfg!(target_arch = "x86_64")
        && crate::simd_level() == crate::SimdLevel::Avx512
        && super::precision() == super::Precision::Highest
}

/// `out[t * rows + r] = Σ_k w[r][k] · x[t * cols + k]`, each sum one FMA chain over `k` in
/// order (module doc); on the kernel pool. AVX-512 where the CPU has it, else the scalar
/// reference (same bits).
pub fn matmul_panels(w: &PanelMatrix, x: &[f32], out: &mut [f32]) {
    matmul_panels_many(&[w], x, &mut [out]);
}

/// `matmul_panels(ws[i], x, outs[i])` for every `i` (at most `MAX_PARTS`), in one parallel
/// region: the matrices' panel groups are dealt out as one space.
pub fn matmul_panels_many(ws: &[&PanelMatrix], x: &[f32], outs: &mut [&mut [f32]]) {
    assert!(
        !ws.is_empty() && ws.len() <= MAX_PARTS && ws.len() == outs.len(),
        "matmul_panels_many: {} parts",
        ws.len()
    );
    let cols = ws[0].cols;
    assert!(x.len().is_multiple_of(cols), "matmul_panels: x is not rows of {cols}");
    let n_tokens = x.len() / cols;
    for (w, out) in ws.iter().zip(outs.iter()) {
        assert_eq!(w.cols, cols, "matmul_panels_many: a matrix of {} columns, not {cols}", w.cols);
        assert_eq!(out.len(), n_tokens * w.rows, "matmul_panels: out is not {n_tokens} x {}", w.rows);
    }
    #[cfg(target_arch = "x86_64")]
    if crate::simd_level() == crate::SimdLevel::Avx512 {
        avx512::matmul(ws, x, n_tokens, outs);
        return;
    }
    for (w, out) in ws.iter().zip(outs.iter_mut()) {
        reference(w, x, out);
    }
}

/// The scalar reference: the same chains, one output at a time.
pub fn reference(w: &PanelMatrix, x: &[f32], out: &mut [f32]) {
    let n_tokens = x.len() / w.cols;
    for t in 0..n_tokens {
        let xt = &x[t * w.cols..(t + 1) * w.cols];
        for r in 0..w.rows {
            out[t * w.rows + r] = xt.iter().enumerate().fold(0f32, |acc, (k, xk)| w.at(r, k).mul_add(*xk, acc));
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{random_row, Lcg};

    fn matrix(dtype: DType, rows: usize, cols: usize, rng: &mut Lcg) -> Vec<u8> {
        (0..rows).flat_map(|_| random_row(dtype, cols, rng)).collect()
    }

    #[test]
    fn panels_hold_the_rows() {
        let mut rng = Lcg(7);
        for dtype in [DType::F32, DType::F16, DType::BF16, DType::Q8_0] {
            let (rows, cols) = (37, 64);
            let bytes = matrix(dtype, rows, cols, &mut rng);
            let w = WeightMatrix::new(dtype, &bytes, rows, cols).unwrap();
            let p = PanelMatrix::from_weights(&w).unwrap();
            let mut row = vec![0f32; cols];
            for r in 0..rows {
                w.dequantize_row_into(r, &mut row);
                for (k, v) in row.iter().enumerate() {
                    assert_eq!(p.at(r, k).to_bits(), v.to_bits(), "{} ({r}, {k})", dtype.name());
                }
            }
        }
        let q = matrix(DType::Q4_1, 4, 32, &mut rng);
        assert!(PanelMatrix::from_weights(&WeightMatrix::new(DType::Q4_1, &q, 4, 32).unwrap()).is_none());
        // BF16 pairs columns: an odd number of them keeps its rows (the others take any).
        for (dtype, paneled) in [(DType::BF16, false), (DType::F16, true), (DType::F32, true)] {
            let b = matrix(dtype, 3, 33, &mut rng);
            let w = WeightMatrix::new(dtype, &b, 3, 33).unwrap();
            assert_eq!(PanelMatrix::from_weights(&w).is_some(), paneled, "{} x 33", dtype.name());
        }
    }

    /// Every shape edge: rows short of a panel and of a group, token counts around 8.
    #[test]
    fn every_output_is_the_reference_chain_and_alone_gives_the_same_bits() {
        let mut rng = Lcg(11);
        for dtype in [DType::F32, DType::F16, DType::BF16, DType::Q8_0] {
            for (rows, cols) in
                [(1, 32), (16, 64), (37, 96), (48, 96), (100, 64), (161, 32), (20, 40), (24, 320), (19, 33)]
            {
                if dtype.row_bytes(cols).is_none() || (dtype == DType::BF16 && cols % 2 == 1) {
                    continue;
                }
                let bytes = matrix(dtype, rows, cols, &mut rng);
                let w = PanelMatrix::from_weights(&WeightMatrix::new(dtype, &bytes, rows, cols).unwrap()).unwrap();
                for n in [1, 3, 8, 9, 19, 133] {
                    let x: Vec<f32> = (0..n * cols).map(|_| rng.normal()).collect();
                    let mut got = vec![f32::NAN; n * rows];
                    matmul_panels(&w, &x, &mut got);
                    let mut want = vec![0f32; n * rows];
                    reference(&w, &x, &mut want);
                    for (i, (g, r)) in got.iter().zip(&want).enumerate() {
                        assert_eq!(g.to_bits(), r.to_bits(), "{} {rows}x{cols} n={n} at {i}: {g} vs {r}", dtype.name());
                    }
                    for t in 0..n {
                        let mut alone = vec![0f32; rows];
                        matmul_panels(&w, &x[t * cols..(t + 1) * cols], &mut alone);
                        assert!(
                            alone.iter().zip(&got[t * rows..(t + 1) * rows]).all(|(a, b)| a.to_bits() == b.to_bits()),
                            "{} {rows}x{cols}: token {t} of {n} alone",
                            dtype.name()
                        );
                    }
                }
            }
        }
    }

    /// Through `matmul_many`: a matrix with panels gets its panels' bits whatever its
    /// partners (another type, none), one without them its own path's.
    #[test]
    fn matmul_many_takes_the_panels_of_the_matrices_that_have_them() {
        let mut rng = Lcg(13);
        let cols = 64;
        let shapes = [(DType::F16, 40), (DType::Q4_1, 24), (DType::F32, 17), (DType::Q8_0, 50)];
        let bytes: Vec<Vec<u8>> = shapes.iter().map(|&(d, rows)| matrix(d, rows, cols, &mut rng)).collect();
        let plain: Vec<WeightMatrix> =
            shapes.iter().zip(&bytes).map(|(&(d, rows), b)| WeightMatrix::new(d, b, rows, cols).unwrap()).collect();
        let panels: Vec<Option<PanelMatrix>> = plain.iter().map(PanelMatrix::from_weights).collect();
        let ws: Vec<WeightMatrix> = plain.iter().zip(&panels).map(|(w, p)| w.with_panels(p.as_ref())).collect();
        for n in [1, 5] {
            let x: Vec<f32> = (0..n * cols).map(|_| rng.normal()).collect();
            let mut outs: Vec<Vec<f32>> = shapes.iter().map(|&(_, rows)| vec![f32::NAN; n * rows]).collect();
            let mut views: Vec<&mut [f32]> = outs.iter_mut().map(|o| o.as_mut_slice()).collect();
            super::super::matmul_many_with(super::super::Precision::Highest, &ws, &x, &mut views);
            for (i, w) in plain.iter().enumerate() {
                let mut want = vec![0f32; n * w.rows];
                match (&panels[i], crate::simd_level() == crate::SimdLevel::Avx512) {
                    (Some(p), true) => matmul_panels(p, &x, &mut want),
                    _ => super::super::matmul_with(super::super::Precision::Highest, w, &x, &mut want),
                }
                assert!(outs[i].iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "part {i}, {n} tokens");
            }
        }
    }

    #[test]
    fn sums_are_the_matrix_product() {
        let mut rng = Lcg(5);
        let (rows, cols, n) = (50, 80, 5);
        let bytes = matrix(DType::F32, rows, cols, &mut rng);
        let wm = WeightMatrix::new(DType::F32, &bytes, rows, cols).unwrap();
        let w = PanelMatrix::from_weights(&wm).unwrap();
        let x: Vec<f32> = (0..n * cols).map(|_| rng.normal()).collect();
        let mut got = vec![0f32; n * rows];
        matmul_panels(&w, &x, &mut got);
        let mut row = vec![0f32; cols];
        for r in 0..rows {
            wm.dequantize_row_into(r, &mut row);
            for t in 0..n {
                let exact: f64 = row.iter().zip(&x[t * cols..]).map(|(a, b)| *a as f64 * *b as f64).sum();
                let bound: f64 = row.iter().zip(&x[t * cols..]).map(|(a, b)| (*a as f64 * *b as f64).abs()).sum();
                let g = got[t * rows + r] as f64;
                assert!((g - exact).abs() <= 1e-5 * bound, "({t}, {r}): {g} vs {exact}");
            }
        }
    }
}
