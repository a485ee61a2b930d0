//! `out = x · Wᵀ` for a weight matrix in its stored type: the linear layers.
//!
//! Work is split over rows of `W` on the kernel thread pool (`parallel::parallel_for`);
//! `matmul_many` deals the rows of several matrices that share an input as one row space.
//! Every output element `(token t, row r)` is computed with its SIMD level's fixed
//! accumulation order, whatever the number of tokens, the tile it falls in or the thread
//! that computes it, so a token's result never depends on the rest of its batch.
//!
//! * AVX-512, exact, a matrix that carries panels (F32 / F16 / BF16 / Q8_0, repacked by the
//!   model at load): `panels`, one FMA chain per output over the columns in order, for any number
//!   of tokens. The paths below are those of row-major matrices.
//! * AVX-512, one token: each thread streams one contiguous share of the rows (then
//!   helps the others from the back of theirs, `crate::shares`) through a fused GEMV over 4
//!   (float) or 8 (quantized) rows at a time, weights expanded in registers.
//! * AVX-512, several tokens (`tiled`): 24-row chunks dealt out the same way; 6 rows at a time are
//!   expanded into a thread-local, L1-sized f32 scratch (exact values of the reference
//!   dequantizer), then a 6-row × 4-token register-tiled micro-kernel runs them against a
//!   block of up to 128 tokens (whose activations stay in L2). A thread prefetches the
//!   rows it will take next, across chunks of its own share. Rows longer than 768 go a
//!   span at a time against the whole block, the accumulators carried between spans (same
//!   FMAs per lane, same bits); tokens beyond 1 MiB go one 128-token block per deal.
//! * AVX2, one token: the same contiguous shares of 16-row blocks, one `dot_row` per row,
//!   the row 4 ahead prefetched. Several tokens: 16-row tasks, each row expanded once, then
//!   three rows at a time against each token of a 64-token block (`dot_f32_tile`).
//! * Scalar: one `dot_row` per row (one token) or expand-then-`dot_f32` per token.
//! * Opt-in `Precision::Medium` (set per process), on CPUs with AVX512-BF16: `bf16dot`
//!   (weights and activations rounded to BF16, BF16 dot products; not exact, batch
//!   invariant within itself). Other CPUs stay on the exact paths above.

use crate::aligned::AlignedBuf;
use crate::dot::{dot_f32, dot_row};
use crate::dtype::DType;
use crate::parallel::{parallel_for, SharedMut};
use crate::quant::dequantize_row;
use crate::simd::{simd_level, SimdLevel};
use panels::PanelMatrix;
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};

#[cfg(target_arch = "x86_64")]
pub mod avx512;
#[cfg(target_arch = "x86_64")]
pub mod bf16_rate;
#[cfg(target_arch = "x86_64")]
pub mod bf16dot;
pub mod panels;
#[cfg(target_arch = "x86_64")]
mod tiled;
#[cfg(target_arch = "x86_64")]
use crate::shares::deal;
#[cfg(target_arch = "x86_64")]
use crate::simd::prefetch_lines;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::_MM_HINT_T1;

/// A borrowed `[rows, cols]` matrix stored row-major as `dtype` blocks.
#[derive(Clone, Copy, Debug)]
pub struct WeightMatrix<'a> {
    pub dtype: DType,
    pub data: &'a [u8],
    pub rows: usize,
    pub cols: usize,
    row_bytes: usize,
    /// The same matrix repacked (`panels`), which the exact AVX-512 path then reads.
    pub panels: Option<&'a PanelMatrix>,
}

impl<'a> WeightMatrix<'a> {
    /// `None` when `cols` is not a whole number of blocks or `data` has the wrong size.
    pub fn new(dtype: DType, data: &'a [u8], rows: usize, cols: usize) -> Option<Self> {
        let row_bytes = dtype.row_bytes(cols)?;
        (data.len() == row_bytes * rows).then_some(WeightMatrix { dtype, data, rows, cols, row_bytes, panels: None })
    }

    /// This matrix with its panels (`PanelMatrix::from_weights` of it).
    pub fn with_panels(self, panels: Option<&'a PanelMatrix>) -> Self {
        if let Some(p) = panels {
            assert!(p.dtype == self.dtype && p.rows == self.rows && p.cols == self.cols, "panels of another matrix");
        }
        WeightMatrix { panels, ..self }
    }

    pub fn row_bytes(&self) -> usize {
        self.row_bytes
    }

    #[inline]
    pub fn row(&self, r: usize) -> &'a [u8] {
        &self.data[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// Row `r` expanded to f32 (embedding lookup).
    pub fn dequantize_row_into(&self, r: usize, out: &mut [f32]) {
        dequantize_row(self.dtype, self.row(r), &mut out[..self.cols]);
    }
}

/// A matrix's output, shared by the tasks of one region: each task writes only
/// `out[t * rows + r]` for the rows of its own block or chunk.
type Out = SharedMut<f32>;

thread_local! {
    /// Per-thread expanded rows (64-byte aligned); grows to the largest tile seen.
    static SCRATCH: RefCell<AlignedBuf> = const { RefCell::new(AlignedBuf::new()) };
}

fn with_scratch<T>(len: usize, f: impl FnOnce(&mut [f32]) -> T) -> T {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < len {
            s.resize(len);
        }
        f(&mut s.as_mut_slice()[..len])
    })
}

/// How much precision `matmul` may trade for speed (the names of PyTorch's
/// `set_float32_matmul_precision`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// The exact path: weights expanded to their f32 values, f32 activations and
    /// accumulation, on every SIMD level. The default.
    #[default]
    Highest,
    /// Weights and activations rounded to BF16, products summed in f32 by AVX512-BF16 dot
    /// products (`bf16dot`), on CPUs that have them; other CPUs stay exact.
    Medium,
}

impl Precision {
    /// PyTorch's name (`--matmul-precision`).
    pub fn name(self) -> &'static str {
        match self {
            Precision::Highest => "highest",
            Precision::Medium => "medium",
        }
    }
}

static MEDIUM: AtomicBool = AtomicBool::new(false);

/// Sets the precision `matmul` and `matmul_many` use in this process (the
/// `--matmul-precision` option); `Highest` until set. `Medium` on a CPU without the BF16
/// kernels (`medium_available`), or where they do not outrun the exact ones
/// (`medium_pays`), leaves `Highest`.
pub fn set_precision(p: Precision) {
    MEDIUM.store(p == Precision::Medium && medium_pays(), Ordering::Relaxed);
}

/// Whether the BF16 kernels outrun the exact ones here (`bf16_rate::pays`; false where
/// they are not available).
pub fn medium_pays() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        medium_available() && bf16_rate::pays()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The precision in effect (see `set_precision`).
pub fn precision() -> Precision {
    if MEDIUM.load(Ordering::Relaxed) {
        Precision::Medium
    } else {
        Precision::Highest
    }
}

/// Whether this CPU has the BF16 kernels (AVX-512 with AVX512-BF16); `matmul_with`
/// runs them for `Precision::Medium` whether or not they pay (`medium_pays`).
pub fn medium_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        bf16dot::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `out[t, r] = Σ_c x[t, c] · W[r, c]`; `x` is `[n_tokens, cols]`, `out` `[n_tokens, rows]`.
pub fn matmul(w: &WeightMatrix, x: &[f32], out: &mut [f32]) {
    matmul_many_with(precision(), &[*w], x, &mut [out]);
}

/// `matmul` at precision `p` whatever `set_precision` said.
pub fn matmul_with(p: Precision, w: &WeightMatrix, x: &[f32], out: &mut [f32]) {
    matmul_many_with(p, &[*w], x, &mut [out]);
}

/// Most matrices one `matmul_many` call takes (q/k/v is the largest group).
pub const MAX_PARTS: usize = 4;

/// `matmul(ws[i], x, outs[i])` for every `i`, in one parallel region: the matrices share
/// the input `x` (q/k/v projections, gate/up), so their rows are dealt out as one row
/// space and the threads meet once instead of once per matrix. Each output gets the same
/// bits as from its own `matmul`.
pub fn matmul_many(ws: &[WeightMatrix], x: &[f32], outs: &mut [&mut [f32]]) {
    matmul_many_with(precision(), ws, x, outs)
}

/// `matmul_many` at precision `p` whatever `set_precision` said.
pub fn matmul_many_with(p: Precision, ws: &[WeightMatrix], x: &[f32], outs: &mut [&mut [f32]]) {
    assert!(
        !ws.is_empty() && ws.len() <= MAX_PARTS && ws.len() == outs.len(),
        "matmul_many: {} matrices, {} outputs (1..={MAX_PARTS})",
        ws.len(),
        outs.len()
    );
    let cols = ws[0].cols;
    assert!(cols > 0 && x.len().is_multiple_of(cols), "matmul: x has {} values, not a multiple of {cols}", x.len());
    let n_tokens = x.len() / cols;
    if p == Precision::Highest && simd_level() == SimdLevel::Avx512 && ws.iter().any(|w| w.panels.is_some()) {
        return on_panels(ws, x, outs);
    }
    let mut parts = [Part { w: ws[0], out: Out::null(), first: 0 }; MAX_PARTS];
    for (i, (w, out)) in ws.iter().zip(outs.iter_mut()).enumerate() {
        assert_eq!(w.cols, cols, "matmul_many: matrix {i} has {} columns, not {cols}", w.cols);
        assert_eq!(out.len(), n_tokens * w.rows, "matmul: out has the wrong size");
        parts[i] = Part { w: *w, out: Out::new(out), first: 0 };
    }
    if n_tokens == 0 {
        return;
    }
    let parts = Parts { parts, n: ws.len() };
    #[cfg(target_arch = "x86_64")]
    if p == Precision::Medium && medium_available() {
        return bf16dot::matmul(parts, x, n_tokens);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
    match simd_level() {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => matmul_avx512(parts, x, n_tokens),
        _ => matmul_generic(parts, x, n_tokens),
    }
}

/// The exact AVX-512 path of matrices that have panels: those go through
/// `panels::matmul_panels_many` (a matrix that has panels is always computed from them,
/// whatever its partners, so its bits never depend on the call), the others through
/// `matmul_many_with` on their own.
fn on_panels(ws: &[WeightMatrix], x: &[f32], outs: &mut [&mut [f32]]) {
    let first = ws.iter().find_map(|w| w.panels).expect("a matrix with panels");
    let (mut pw, mut po) = ([first; MAX_PARTS], [(); MAX_PARTS].map(|_| &mut [][..]));
    let (mut rw, mut ro) = ([ws[0]; MAX_PARTS], [(); MAX_PARTS].map(|_| &mut [][..]));
    let (mut np, mut nr) = (0, 0);
    for (w, out) in ws.iter().zip(outs.iter_mut()) {
        match w.panels {
            Some(p) => {
                (pw[np], po[np]) = (p, &mut **out);
                np += 1;
            }
            None => {
                (rw[nr], ro[nr]) = (*w, &mut **out);
                nr += 1;
            }
        }
    }
    panels::matmul_panels_many(&pw[..np], x, &mut po[..np]);
    if nr > 0 {
        matmul_many_with(Precision::Highest, &rw[..nr], x, &mut ro[..nr]);
    }
}

/// One matrix of a `matmul_many` call, its output, and its first unit (block or task)
/// in the call's concatenated unit space.
#[derive(Clone, Copy)]
struct Part<'a> {
    w: WeightMatrix<'a>,
    out: Out,
    first: usize,
}

/// The matrices of one call, their rows cut into units of `unit` rows, numbered one
/// matrix after the other.
struct Parts<'a> {
    parts: [Part<'a>; MAX_PARTS],
    n: usize,
}

impl<'a> Parts<'a> {
    /// Numbers the units of `unit` rows; returns the total.
    fn number(&mut self, unit: usize) -> usize {
        let mut first = 0;
        for p in &mut self.parts[..self.n] {
            p.first = first;
            first += p.w.rows.div_ceil(unit);
        }
        first
    }

    /// The part unit `u` lies in, and `u`'s index inside it.
    fn find(&self, u: usize) -> (&Part<'a>, usize) {
        let p = self.parts[..self.n].iter().rev().find(|p| p.first <= u).expect("unit 0 is in part 0");
        (p, u - p.first)
    }

    /// Unit `u` of `unit` rows, handed out by `deal` with `own_end`: its part, its rows
    /// `r0..r1`, and `pf_end`, where the running thread's stream of rows in that part
    /// ends (the rows up to it are that thread's next, worth prefetching; `r1` when the
    /// unit came from another thread's share).
    #[cfg(target_arch = "x86_64")]
    fn dealt_rows(&self, u: usize, unit: usize, own_end: Option<usize>) -> (&Part<'a>, usize, usize, usize) {
        let (p, i) = self.find(u);
        let rows = p.w.rows;
        let (r0, r1) = (i * unit, ((i + 1) * unit).min(rows));
        let pf_end = own_end.map_or(r1, |end| ((end - p.first) * unit).min(rows));
        (p, r0, r1, pf_end)
    }
}

fn matmul_generic(mut parts: Parts, x: &[f32], n_tokens: usize) {
    #[cfg(target_arch = "x86_64")]
    if n_tokens == 1 && simd_level() == SimdLevel::Avx2 {
        return gemv_avx2(parts, x);
    }
    const CHUNK: usize = 16;
    let n_tasks = parts.number(CHUNK);
    parallel_for(n_tasks, &|u| {
        let (p, c) = parts.find(u);
        let (w, o) = (&p.w, p.out);
        let (rows, cols) = (w.rows, w.cols);
        let (r0, r1) = (c * CHUNK, ((c + 1) * CHUNK).min(rows));
        if n_tokens == 1 {
            for r in r0..r1 {
                // SAFETY: r < rows, owned by this task.
                unsafe { *o.at(r) = dot_row(w.dtype, w.row(r), x) };
            }
        } else {
            #[cfg(target_arch = "x86_64")]
            if simd_level() == SimdLevel::Avx2 {
                return avx2_rows(w, x, r0, r1, n_tokens, o);
            }
            with_scratch(cols, |scratch| {
                for r in r0..r1 {
                    dequantize_row(w.dtype, w.row(r), scratch);
                    for (t, xt) in x.chunks_exact(cols).enumerate() {
                        // SAFETY: t < n_tokens, r < rows; this task owns row r.
                        unsafe { *o.at(t * rows + r) = dot_f32(scratch, xt) };
                    }
                }
            })
        }
    });
}

/// One token on AVX2: as on AVX-512, each thread streams one contiguous share of the rows
/// (`crate::shares`), 16-row blocks at a time, and asks for the row `AHEAD` rows on in its
/// own stream before each row it computes, into L2 (into L1, an F16 decode ran at 61 against
/// 68 tok/s with `KEEL_SIMD=avx2` on the Intel Xeon VM of 2026-12-03); each row is one
/// `dot::avx2::dot_row`. (With
/// 16-row tasks claimed in turn and no prefetch, a decode step's matrices streamed from
/// memory at half the AVX-512 path's rate, though in cache the two compute alike.)
#[cfg(target_arch = "x86_64")]
fn gemv_avx2(mut parts: Parts, x: &[f32]) {
    const BLOCK: usize = 16;
    const AHEAD: usize = 4;
    deal(parts.number(BLOCK), |b, own_end| {
        let (p, r0, r1, pf_end) = parts.dealt_rows(b, BLOCK, own_end);
        let (w, o) = (&p.w, p.out);
        for r in r0..r1 {
            if r + AHEAD < pf_end {
                let next = w.row(r + AHEAD);
                prefetch_lines::<_MM_HINT_T1, u8>(next.as_ptr(), next.len());
            }
            // SAFETY: the level is AVX2 (checked by the caller); the row holds `cols`
            // elements of its dtype, as many as `x`; row r's output is this block's.
            unsafe { *o.at(r) = crate::dot::avx2::dot_row(w.dtype, w.row(r), x) };
        }
    });
}

/// Rows `r0..r1` of `w` against all `n_tokens` tokens of `x` on AVX2: the rows are
/// expanded once into the scratch (the reference dequantizer's values), then each block
/// of 64 tokens (whose activations stay in L2) meets the rows in tiles of three rows (in
/// L1) by two tokens, `dot::avx2::dot_f32_tile` (smaller at the edges). Each output has
/// `dot_f32`'s bits, as in the one-token path.
#[cfg(target_arch = "x86_64")]
fn avx2_rows(w: &WeightMatrix, x: &[f32], r0: usize, r1: usize, n_tokens: usize, o: Out) {
    const TOKENS: usize = 64;
    let (rows, cols) = (w.rows, w.cols);
    with_scratch((r1 - r0) * cols, |scratch| {
        for r in r0..r1 {
            dequantize_row(w.dtype, w.row(r), &mut scratch[(r - r0) * cols..(r - r0 + 1) * cols]);
        }
        for t0 in (0..n_tokens).step_by(TOKENS) {
            let t1 = (t0 + TOKENS).min(n_tokens);
            let mut r = r0;
            while r < r1 {
                // Threes, but two twos rather than a three and a one.
                let n = match r1 - r {
                    1 => 1,
                    2 | 4 => 2,
                    _ => 3,
                };
                let mut t = t0;
                while t < t1 {
                    let m = (t1 - t).min(2);
                    // SAFETY: the level is AVX2 (checked by the caller); rows r..r+n and
                    // tokens t..t+m hold `cols` values; this task owns those rows' outputs.
                    unsafe {
                        match (n, m) {
                            (3, 2) => avx2_tile::<3, 2>(scratch, r - r0, x, t, cols, rows, r, o),
                            (3, _) => avx2_tile::<3, 1>(scratch, r - r0, x, t, cols, rows, r, o),
                            (2, 2) => avx2_tile::<2, 2>(scratch, r - r0, x, t, cols, rows, r, o),
                            (2, _) => avx2_tile::<2, 1>(scratch, r - r0, x, t, cols, rows, r, o),
                            (_, 2) => avx2_tile::<1, 2>(scratch, r - r0, x, t, cols, rows, r, o),
                            _ => avx2_tile::<1, 1>(scratch, r - r0, x, t, cols, rows, r, o),
                        }
                    }
                    t += m;
                }
                r += n;
            }
        }
    })
}

/// One `R` × `C` tile of `avx2_rows`: expanded rows `s0..s0 + R` of `scratch` (output
/// rows `r..r + R`) against tokens `t..t + C`.
///
/// SAFETY: AVX2, FMA and F16C available; those rows and tokens exist; the caller owns
/// their outputs.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn avx2_tile<const R: usize, const C: usize>(
    scratch: &[f32],
    s0: usize,
    x: &[f32],
    t: usize,
    cols: usize,
    rows: usize,
    r: usize,
    o: Out,
) {
    let mut v = [[0f32; C]; R];
    let wp = std::array::from_fn(|i| scratch[(s0 + i) * cols..].as_ptr());
    let xp = std::array::from_fn(|c| x[(t + c) * cols..].as_ptr());
    crate::dot::avx2::dot_f32_tile::<R, C>(wp, xp, cols, &mut v);
    for (i, vi) in v.iter().enumerate() {
        for (c, vc) in vi.iter().enumerate() {
            *o.at((t + c) * rows + r + i) = *vc;
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn matmul_avx512(mut parts: Parts, x: &[f32], n_tokens: usize) {
    if n_tokens == 1 {
        // Each thread streams one contiguous share of the rows (what the hardware
        // prefetchers follow best; interleaved 32-row tasks ran ~20% slower on a
        // memory-bound decode), 16-row blocks at a time, and then helps the others from
        // the back of their shares (`crate::shares`). Rows go 4 at a time (float formats) or
        // 8 (quantized: more independent chains to hide the expansion; float rows with 8
        // streams ran at ~60% of the 4-row bandwidth on AMD Zen 4).
        const BLOCK: usize = 16;
        deal(parts.number(BLOCK), |b, own_end| {
            // The own stream goes on after this block (up to the end of the share or of
            // this matrix): prefetch across into it.
            let (p, r0, r1, pf_end) = parts.dealt_rows(b, BLOCK, own_end);
            let (w, o) = (&p.w, p.out);
            // SAFETY: level checked by simd_level(); rows hold `cols` elements; the block's
            // outputs belong to this call (`deal` hands it out once).
            unsafe {
                let r = if w.dtype.is_quantized() {
                    gemv_groups::<8>(w, x, r0, r1, pf_end, o)
                } else {
                    gemv_groups::<4>(w, x, r0, r1, pf_end, o)
                };
                gemv_groups::<1>(w, x, r, r1, r1, o);
            }
        });
        return;
    }
    tiled::matmul(parts, x, n_tokens)
}

/// Rows `r0..` of `w` dotted with one token, `G` rows per fused GEMV while `G` rows are
/// left before `r1`; the next `G` rows (contiguous after these, cut at `pf_end`) are
/// prefetched meanwhile. Returns the first row not done.
///
/// SAFETY: AVX-512 available; `r0 <= r1 <= pf_end <= w.rows`; outputs of rows `r0..r1`
/// are the caller's.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn gemv_groups<const G: usize>(
    w: &WeightMatrix,
    x: &[f32],
    r0: usize,
    r1: usize,
    pf_end: usize,
    o: Out,
) -> usize {
    let row_ptr = |r: usize| w.row(r).as_ptr();
    let mut r = r0;
    while r + G <= r1 {
        let mut v = [0f32; G];
        let next = r + G;
        let pf = if next < pf_end {
            avx512::Prefetch { ptr: row_ptr(next), len: w.row_bytes() * G.min(pf_end - next) }
        } else {
            avx512::Prefetch::NONE
        };
        avx512::gemv::<G>(w.dtype, std::array::from_fn(|i| row_ptr(r + i)), x.as_ptr(), w.cols, &mut v, pf);
        for (i, vi) in v.iter().enumerate() {
            *o.at(r + i) = *vi;
        }
        r += G;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{random_row, Lcg};

    fn reference(dtype: DType, w: &[u8], rows: usize, cols: usize, x: &[f32]) -> Vec<f64> {
        let mut wf = vec![0f32; rows * cols];
        dequantize_row(dtype, w, &mut wf);
        let n = x.len() / cols;
        let mut out = vec![0f64; n * rows];
        for t in 0..n {
            for r in 0..rows {
                out[t * rows + r] = (0..cols).map(|c| wf[r * cols + c] as f64 * x[t * cols + c] as f64).sum();
            }
        }
        out
    }

    /// Each token of `x` alone through `matmul` gives its row of `out` (the batch's result),
    /// equal as values and bit for bit; `case` names the case in a failure.
    fn assert_each_token_alone_gives(wm: &WeightMatrix, x: &[f32], out: &[f32], case: &str) {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for (t, xt) in x.chunks_exact(wm.cols).enumerate() {
            let mut one = vec![0f32; wm.rows];
            matmul(wm, xt, &mut one);
            let batch = &out[t * wm.rows..(t + 1) * wm.rows];
            assert_eq!(one, batch, "{case}: token {t}");
            assert_eq!(bits(&one), bits(batch), "{case}: token {t}");
        }
    }

    #[test]
    fn matches_reference_and_is_batch_invariant() {
        let mut rng = Lcg(7);
        for dtype in DType::ALL {
            let (rows, cols) = (37, if dtype.block_size() == 256 { 512 } else { 96 });
            let w: Vec<u8> = (0..rows).flat_map(|_| random_row(dtype, cols, &mut rng)).collect();
            let wm = WeightMatrix::new(dtype, &w, rows, cols).expect("shape");
            let x: Vec<f32> = (0..5 * cols).map(|_| rng.normal()).collect();
            let mut out = vec![0f32; 5 * rows];
            matmul(&wm, &x, &mut out);
            let want = reference(dtype, &w, rows, cols, &x);
            let num: f64 = out.iter().zip(&want).map(|(a, b)| (*a as f64 - b).powi(2)).sum();
            let den: f64 = want.iter().map(|b| b * b).sum();
            // DESIGN allows NMSE 1e-7; f32 accumulation lands far below it.
            assert!(num / den <= 1e-10, "{dtype}: NMSE {}", num / den);
            // Each token alone gives the same bits as inside the batch of 5.
            assert_each_token_alone_gives(&wm, &x, &out, &format!("{dtype}"));
        }
    }

    /// Float rows whose length is not a whole number of 32-element chunks (the tiles'
    /// zero-padded last chunk), row counts off every tile and task size, and a batch that
    /// crosses the 64- and 128-token blocks: each token alone gives the batch's bits.
    #[test]
    fn partial_chunks_and_token_blocks_are_batch_invariant() {
        let mut rng = Lcg(13);
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            for (rows, cols) in [(19, 100), (4, 33), (1, 7)] {
                let w: Vec<u8> = (0..rows).flat_map(|_| random_row(dtype, cols, &mut rng)).collect();
                let wm = WeightMatrix::new(dtype, &w, rows, cols).expect("shape");
                let n = 130;
                let x: Vec<f32> = (0..n * cols).map(|_| rng.normal()).collect();
                let mut out = vec![0f32; n * rows];
                matmul(&wm, &x, &mut out);
                assert_each_token_alone_gives(&wm, &x, &out, &format!("{dtype} {rows}x{cols}"));
            }
        }
    }

    /// Rows longer than `SPAN` (the AVX-512 tiles run them a span at a time, carrying
    /// their accumulators between spans; float rows with a masked last step) against
    /// enough tokens to go a token block per deal: each token alone gives the batch's bits.
    #[test]
    fn long_rows_and_many_tokens_are_batch_invariant() {
        let mut rng = Lcg(19);
        for dtype in [DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_1, DType::Q4K, DType::Q6K] {
            let cols = match dtype.block_size() {
                256 => 1792,
                32 => 1568,
                _ => 1607,
            };
            let rows = 29;
            let w: Vec<u8> = (0..rows).flat_map(|_| random_row(dtype, cols, &mut rng)).collect();
            let wm = WeightMatrix::new(dtype, &w, rows, cols).expect("shape");
            let n = 170;
            #[cfg(target_arch = "x86_64")]
            assert!(n * cols * 4 > tiled::TOKENS_IN_L2, "the batch must take the block-per-deal path");
            let x: Vec<f32> = (0..n * cols).map(|_| rng.normal()).collect();
            let mut out = vec![0f32; n * rows];
            matmul(&wm, &x, &mut out);
            assert_each_token_alone_gives(&wm, &x, &out, &format!("{dtype} {rows}x{cols}"));
        }
    }

    /// At AVX2 (`KEEL_SIMD=avx2`, as `tools/test.sh` runs these tests too) and AVX-512,
    /// every output of `matmul` has the AVX-512 dot product's bits, one token or many:
    /// the two levels give a model the same matmul values.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_and_avx512_matmuls_have_the_same_bits() {
        use crate::dot::dot_row_at;
        use crate::simd::{available_levels, simd_level, SimdLevel};
        if simd_level() < SimdLevel::Avx2 || !available_levels().contains(&SimdLevel::Avx512) {
            return;
        }
        let mut rng = Lcg(17);
        for dtype in DType::ALL {
            let (rows, cols) = (29, if dtype.block_size() == 256 { 512 } else { 96 + dtype.block_size() % 32 * 5 });
            let w: Vec<u8> = (0..rows).flat_map(|_| random_row(dtype, cols, &mut rng)).collect();
            let wm = WeightMatrix::new(dtype, &w, rows, cols).expect("shape");
            for n in [1usize, 2, 7, 130] {
                let x: Vec<f32> = (0..n * cols).map(|_| rng.normal()).collect();
                let mut out = vec![0f32; n * rows];
                matmul(&wm, &x, &mut out);
                let row_bytes = w.len() / rows;
                for t in 0..n {
                    for r in 0..rows {
                        let want = dot_row_at(
                            SimdLevel::Avx512,
                            dtype,
                            &w[r * row_bytes..(r + 1) * row_bytes],
                            &x[t * cols..(t + 1) * cols],
                        );
                        let got = out[t * rows + r];
                        assert_eq!(got.to_bits(), want.to_bits(), "{dtype}, {n} tokens: token {t} row {r}");
                    }
                }
            }
        }
    }

    #[test]
    fn matmul_many_gives_each_matrix_its_own_matmul_bits() {
        let mut rng = Lcg(11);
        for dtype in [DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_1, DType::Q4K] {
            let cols = if dtype.block_size() == 256 { 256 } else { 64 };
            // Row counts off the 16- and 24-row units, and an empty matrix in the middle.
            let shapes = [45usize, 0, 17, 100];
            let data: Vec<Vec<u8>> =
                shapes.iter().map(|&r| (0..r).flat_map(|_| random_row(dtype, cols, &mut rng)).collect()).collect();
            let ws: Vec<WeightMatrix> =
                shapes.iter().zip(&data).map(|(&r, d)| WeightMatrix::new(dtype, d, r, cols).expect("shape")).collect();
            for n_tokens in [1usize, 3, 9] {
                let x: Vec<f32> = (0..n_tokens * cols).map(|_| rng.normal()).collect();
                let mut outs: Vec<Vec<f32>> = shapes.iter().map(|&r| vec![f32::NAN; n_tokens * r]).collect();
                let mut views: Vec<&mut [f32]> = outs.iter_mut().map(|o| o.as_mut_slice()).collect();
                matmul_many(&ws, &x, &mut views);
                for (i, w) in ws.iter().enumerate() {
                    let mut alone = vec![0f32; n_tokens * w.rows];
                    matmul(w, &x, &mut alone);
                    assert_eq!(outs[i], alone, "{dtype}: matrix {i}, {n_tokens} tokens");
                }
            }
        }
    }

    #[test]
    fn rejects_inconsistent_shapes() {
        assert!(WeightMatrix::new(DType::Q8_0, &[0u8; 34], 1, 31).is_none());
        assert!(WeightMatrix::new(DType::F32, &[0u8; 8], 1, 3).is_none());
        assert!(WeightMatrix::new(DType::F32, &[0u8; 12], 1, 3).is_some());
    }
}
