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
mod avx512 {
    use super::{PanelMatrix, SharedMut, GROUP, MAX_PARTS, PANEL, TOKENS};
    use crate::dtype::DType;
    use crate::shares::deal;
    use std::arch::x86_64::*;

    /// How a panel's blocks widen: column `j` of a block (16 rows) to an f32 vector, with
    /// the block's scales (`S`) read once.
    trait Elem {
        /// Columns per block, and bytes per block of a panel (`Format`).
        const COLS: usize;
        const BLOCK_BYTES: usize;
        /// Whether widening a column costs enough to do once per span for all tokens
        /// (`expanded`) rather than once per tile.
        const EXPAND: bool = false;
        type S: Copy;
        /// SAFETY: AVX-512 available; `p` is a block of a panel.
        unsafe fn scales(p: *const u8) -> Self::S;
        /// SAFETY: as `scales`; `j < COLS`.
        unsafe fn column(p: *const u8, j: usize, s: Self::S) -> __m512;
    }
    /// A float type: a block is one column, no scales, its 16 elements widened by `load16`.
    trait Float {
        const BYTES: usize;
        /// SAFETY: AVX-512 available; `16 * BYTES` bytes readable at `p`.
        unsafe fn load16(p: *const u8) -> __m512;
    }
    impl<T: Float> Elem for T {
        const COLS: usize = 1;
        const BLOCK_BYTES: usize = PANEL * T::BYTES;
        type S = ();
        #[inline(always)]
        unsafe fn scales(_: *const u8) {}
        #[inline(always)]
        unsafe fn column(p: *const u8, _: usize, _: ()) -> __m512 {
            T::load16(p)
        }
    }
    struct F32;
    struct F16;
    struct Bf16;
    struct Q8_0;
    impl Float for F32 {
        const BYTES: usize = 4;
        #[inline(always)]
        unsafe fn load16(p: *const u8) -> __m512 {
            _mm512_loadu_ps(p as *const f32)
        }
    }
    impl Float for F16 {
        const BYTES: usize = 2;
        #[inline(always)]
        unsafe fn load16(p: *const u8) -> __m512 {
            _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i))
        }
    }
    /// Two columns of 16 rows, each row's pair in one 32-bit word (first column low): one
    /// shift or one mask widens a column (a BF16 is the high half of its f32).
    impl Elem for Bf16 {
        const COLS: usize = 2;
        const BLOCK_BYTES: usize = 64;
        type S = __m512i;
        #[inline(always)]
        unsafe fn scales(p: *const u8) -> __m512i {
            _mm512_loadu_si512(p as *const __m512i)
        }
        #[inline(always)]
        unsafe fn column(_: *const u8, j: usize, pair: __m512i) -> __m512 {
            if j == 0 {
                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(pair))
            } else {
                _mm512_castsi512_ps(_mm512_and_si512(pair, _mm512_set1_epi32(0xFFFF_0000u32 as i32)))
            }
        }
    }
    /// 16 F16 scales, then 32 columns of 16 int8: `q · d`, exact in f32.
    impl Elem for Q8_0 {
        const COLS: usize = 32;
        const BLOCK_BYTES: usize = 32 + 32 * 16;
        const EXPAND: bool = true;
        type S = __m512;
        #[inline(always)]
        unsafe fn scales(p: *const u8) -> __m512 {
            _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i))
        }
        #[inline(always)]
        unsafe fn column(p: *const u8, j: usize, d: __m512) -> __m512 {
            let q = _mm512_cvtepi8_epi32(_mm_loadu_si128(p.add(32 + 16 * j) as *const __m128i));
            _mm512_mul_ps(_mm512_cvtepi32_ps(q), d)
        }
    }

    pub(super) fn matmul(ws: &[&PanelMatrix], x: &[f32], n_tokens: usize, outs: &mut [&mut [f32]]) {
        match ws[0].dtype {
            DType::F32 => run::<F32>(ws, x, n_tokens, outs),
            DType::F16 => run::<F16>(ws, x, n_tokens, outs),
            DType::BF16 => run::<Bf16>(ws, x, n_tokens, outs),
            DType::Q8_0 => run::<Q8_0>(ws, x, n_tokens, outs),
            d => unreachable!("{} panels", d.name()),
        }
    }

    /// The parts' groups of `GROUP` panels, one space dealt out as contiguous shares
    /// (`crate::shares`); a thread prefetches the next group of its own share while it
    /// runs this one. Parts of other types than the first go one at a time.
    fn run<E: Elem>(ws: &[&PanelMatrix], x: &[f32], n_tokens: usize, outs: &mut [&mut [f32]]) {
        if ws.iter().any(|w| w.dtype != ws[0].dtype) {
            for (w, out) in ws.iter().zip(outs.iter_mut()) {
                matmul(&[w], x, n_tokens, &mut [out]);
            }
            return;
        }
        let mut first = [0usize; MAX_PARTS + 1];
        for (i, w) in ws.iter().enumerate() {
            first[i + 1] = first[i] + w.n_panels().div_ceil(GROUP);
        }
        let n_groups = first[ws.len()];
        let o: [SharedMut<f32>; MAX_PARTS] =
            std::array::from_fn(|i| if i < outs.len() { SharedMut::new(outs[i]) } else { SharedMut::null() });
        let locate = |g: usize| {
            let i = (0..ws.len()).rfind(|&i| first[i] <= g).unwrap_or(0);
            (i, g - first[i])
        };
        deal(n_groups, |g, own_end| {
            let (i, lg) = locate(g);
            let next = own_end.filter(|&end| g + 1 < end).map(|_| {
                let (ni, nlg) = locate(g + 1);
                (ws[ni], nlg)
            });
            // SAFETY: level checked by the caller; group lg's rows of part i are this task's.
            unsafe { group::<E>(ws[i], lg, next, x, n_tokens, &o[i]) };
        });
    }

    /// Panels `GROUP * g..` against every token, `TOKENS` at a time.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    unsafe fn group<E: Elem>(
        w: &PanelMatrix,
        g: usize,
        next: Option<(&PanelMatrix, usize)>,
        x: &[f32],
        n_tokens: usize,
        o: &SharedMut<f32>,
    ) {
        let p0 = g * GROUP;
        let n = GROUP.min(w.n_panels() - p0);
        // The next group's panels, a cache line every second column of each call.
        let (pf, pf_lines) = match next {
            Some((nw, ng)) => (
                nw.bytes().add(ng * GROUP * nw.panel_bytes()),
                GROUP.min(nw.n_panels() - ng * GROUP) * nw.panel_bytes() / 64,
            ),
            None => (std::ptr::null(), 0),
        };
        if E::EXPAND && n_tokens >= TOKENS {
            return match n {
                1 => expanded::<E, 1>(w, p0, x, n_tokens, o, (pf, pf_lines)),
                2 => expanded::<E, 2>(w, p0, x, n_tokens, o, (pf, pf_lines)),
                _ => expanded::<E, 3>(w, p0, x, n_tokens, o, (pf, pf_lines)),
            };
        }
        let calls = n_tokens.div_ceil(TOKENS);
        let per_call = w.cols.div_ceil(2);
        let mut t = 0;
        let mut call = 0;
        while t < n_tokens {
            let c = TOKENS.min(n_tokens - t);
            let first = (call * per_call).min(pf_lines);
            let last = if call + 1 == calls { pf_lines } else { ((call + 1) * per_call).min(pf_lines) };
            let pf = (pf.wrapping_add(first * 64), last - first);
            macro_rules! tile {
                ($p:literal) => {
                    match c {
                        1 => tile::<E, $p, 1>(w, p0, x, t, o, pf),
                        2 => tile::<E, $p, 2>(w, p0, x, t, o, pf),
                        3 => tile::<E, $p, 3>(w, p0, x, t, o, pf),
                        4 => tile::<E, $p, 4>(w, p0, x, t, o, pf),
                        5 => tile::<E, $p, 5>(w, p0, x, t, o, pf),
                        6 => tile::<E, $p, 6>(w, p0, x, t, o, pf),
                        7 => tile::<E, $p, 7>(w, p0, x, t, o, pf),
                        _ => tile::<E, $p, 8>(w, p0, x, t, o, pf),
                    }
                };
            }
            match n {
                1 => tile!(1),
                2 => tile!(2),
                _ => tile!(3),
            }
            t += c;
            call += 1;
        }
    }

    /// Columns of a quantized group expanded at a time (`expanded`): 3 panels' worth is 24
    /// KiB of f32, which stays in L1 while every token block passes.
    const SPAN: usize = 128;
    /// Tokens per pass of `expanded` (their carried accumulators: 24 KiB).
    const TOKEN_BLOCK: usize = 128;

    /// Panels `p0..p0 + P` of a block-quantized matrix against all tokens (at least
    /// `TOKENS`): `SPAN` columns at a time are expanded once into an f32 scratch (column by
    /// column, the `P` panels' vectors side by side) and run against every token, the
    /// accumulators carried from span to span. Each output's chain, and each weight's f32
    /// value, are those of `tile`: the same bits, with the expansion paid once per span
    /// rather than once per 8 tokens.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    unsafe fn expanded<E: Elem, const P: usize>(
        w: &PanelMatrix,
        p0: usize,
        x: &[f32],
        n_tokens: usize,
        o: &SharedMut<f32>,
        (pf, pf_lines): (*const u8, usize),
    ) {
        let wp: [*const u8; P] = std::array::from_fn(|p| w.bytes().add((p0 + p) * w.panel_bytes()));
        let carry_slot = P * TOKENS * PANEL;
        super::super::with_scratch(SPAN * P * PANEL + TOKEN_BLOCK / TOKENS * carry_slot, |scratch| {
            let (ws, carry) = scratch.split_at_mut(SPAN * P * PANEL);
            let (ws, carry) = (ws.as_mut_ptr(), carry.as_mut_ptr());
            let spans = w.cols.div_ceil(SPAN);
            let calls = spans * n_tokens.div_ceil(TOKENS);
            let per_call = pf_lines.div_ceil(calls);
            let mut call = 0;
            for t0 in (0..n_tokens).step_by(TOKEN_BLOCK) {
                let t1 = (t0 + TOKEN_BLOCK).min(n_tokens);
                for k0 in (0..w.cols).step_by(SPAN) {
                    let k1 = (k0 + SPAN).min(w.cols);
                    for b in k0 / E::COLS..k1 / E::COLS {
                        for (p, &wpp) in wp.iter().enumerate() {
                            let bp = wpp.add(b * E::BLOCK_BYTES);
                            let s = E::scales(bp);
                            for j in 0..E::COLS {
                                let col = b * E::COLS + j - k0;
                                _mm512_storeu_ps(ws.add((col * P + p) * PANEL), E::column(bp, j, s));
                            }
                        }
                    }
                    let (mut t, mut slot) = (t0, 0);
                    while t < t1 {
                        let c = TOKENS.min(t1 - t);
                        let first = (call * per_call).min(pf_lines);
                        let pf = (pf.wrapping_add(first * 64), per_call.min(pf_lines - first));
                        let span = Span { ws, k0, k1, carry: carry.add(slot * carry_slot), first: k0 == 0 };
                        match c {
                            1 => span_tile::<P, 1>(w, p0, x, t, o, span, pf),
                            2 => span_tile::<P, 2>(w, p0, x, t, o, span, pf),
                            3 => span_tile::<P, 3>(w, p0, x, t, o, span, pf),
                            4 => span_tile::<P, 4>(w, p0, x, t, o, span, pf),
                            5 => span_tile::<P, 5>(w, p0, x, t, o, span, pf),
                            6 => span_tile::<P, 6>(w, p0, x, t, o, span, pf),
                            7 => span_tile::<P, 7>(w, p0, x, t, o, span, pf),
                            _ => span_tile::<P, 8>(w, p0, x, t, o, span, pf),
                        }
                        (t, slot, call) = (t + c, slot + 1, call + 1);
                    }
                }
            }
        })
    }

    /// Columns `k0..k1`, expanded at `ws` (`expanded`), and where a tile's accumulators
    /// are carried between spans.
    #[derive(Clone, Copy)]
    struct Span {
        ws: *const f32,
        k0: usize,
        k1: usize,
        carry: *mut f32,
        first: bool,
    }

    /// `tile` over one span of expanded columns: the accumulators start from the carried
    /// ones (zero at the first span) and go to the outputs after the last span.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    #[inline(never)]
    unsafe fn span_tile<const P: usize, const C: usize>(
        w: &PanelMatrix,
        p0: usize,
        x: &[f32],
        t: usize,
        o: &SharedMut<f32>,
        sp: Span,
        (pf, pf_lines): (*const u8, usize),
    ) {
        let xp: [*const f32; C] = std::array::from_fn(|c| x.as_ptr().add((t + c) * w.cols));
        let slot = |p: usize, c: usize| sp.carry.add((p * C + c) * PANEL);
        let mut acc = [[_mm512_setzero_ps(); C]; P];
        if !sp.first {
            for (p, row) in acc.iter_mut().enumerate() {
                for (c, a) in row.iter_mut().enumerate() {
                    *a = _mm512_loadu_ps(slot(p, c));
                }
            }
        }
        // Two columns a step, the steps that prefetch a line in a loop of their own.
        let steps = (sp.k1 - sp.k0) / 2;
        let pf_steps = pf_lines.min(steps);
        for s in 0..pf_steps {
            _mm_prefetch::<_MM_HINT_T1>(pf.add(s * 64) as *const i8);
            span_column(&mut acc, sp, &xp, sp.k0 + 2 * s);
            span_column(&mut acc, sp, &xp, sp.k0 + 2 * s + 1);
        }
        for k in sp.k0 + 2 * pf_steps..sp.k1 {
            span_column(&mut acc, sp, &xp, k);
        }
        if sp.k1 < w.cols {
            for (p, row) in acc.iter().enumerate() {
                for (c, a) in row.iter().enumerate() {
                    _mm512_storeu_ps(slot(p, c), *a);
                }
            }
            return;
        }
        store::<P, C>(&acc, w, p0, t, o);
    }

    /// Column `k` of a span's expanded weights against tokens `xp`, into `acc`.
    #[inline(always)]
    unsafe fn span_column<const P: usize, const C: usize>(
        acc: &mut [[__m512; C]; P],
        sp: Span,
        xp: &[*const f32; C],
        k: usize,
    ) {
        let i = k - sp.k0;
        let wv: [__m512; P] = std::array::from_fn(|p| _mm512_loadu_ps(sp.ws.add((i * P + p) * PANEL)));
        fma_column(acc, &wv, xp, k);
    }

    /// Outputs of panels `p0..p0 + P` for tokens `t..t + C` (the padding rows dropped).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    #[inline]
    unsafe fn store<const P: usize, const C: usize>(
        acc: &[[__m512; C]; P],
        w: &PanelMatrix,
        p0: usize,
        t: usize,
        o: &SharedMut<f32>,
    ) {
        for (p, row) in acc.iter().enumerate() {
            let r0 = (p0 + p) * PANEL;
            let valid = (w.rows - r0).min(PANEL);
            let mask: __mmask16 = if valid == PANEL { 0xFFFF } else { ((1u32 << valid) - 1) as u16 };
            for (c, a) in row.iter().enumerate() {
                _mm512_mask_storeu_ps(o.at((t + c) * w.rows + r0), mask, *a);
            }
        }
    }

    /// Panels `p0..p0 + P` × tokens `t..t + C`: `P * C` accumulators, one FMA chain per
    /// lane over all columns; `pf`: cache lines to prefetch, one every second column.
    /// The columns go in steps of whole blocks, at least two columns a step (two F32 /
    /// F16 blocks, one BF16 or Q8_0 block), the steps that prefetch in a loop of their
    /// own: no test per column of whether a line is left to prefetch.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    #[inline(never)]
    unsafe fn tile<E: Elem, const P: usize, const C: usize>(
        w: &PanelMatrix,
        p0: usize,
        x: &[f32],
        t: usize,
        o: &SharedMut<f32>,
        (pf, pf_lines): (*const u8, usize),
    ) {
        let cols = w.cols;
        let wp: [*const u8; P] = std::array::from_fn(|p| w.bytes().add((p0 + p) * w.panel_bytes()));
        let xp: [*const f32; C] = std::array::from_fn(|c| x.as_ptr().add((t + c) * cols));
        let mut acc = [[_mm512_setzero_ps(); C]; P];
        let per_step = if E::COLS == 1 { 2 } else { 1 };
        let lines = per_step * E::COLS / 2;
        let blocks = cols / E::COLS;
        let steps = blocks / per_step;
        let pf_steps = (pf_lines / lines).min(steps);
        for s in 0..pf_steps {
            block::<E, P, C>(&mut acc, &wp, &xp, s * per_step, Some(pf.add(s * lines * 64)));
            if per_step == 2 {
                block::<E, P, C>(&mut acc, &wp, &xp, s * per_step + 1, None);
            }
        }
        for s in pf_steps..steps {
            for b in s * per_step..(s + 1) * per_step {
                block::<E, P, C>(&mut acc, &wp, &xp, b, None);
            }
        }
        if steps * per_step < blocks {
            block::<E, P, C>(&mut acc, &wp, &xp, blocks - 1, None);
        }
        store::<P, C>(&acc, w, p0, t, o);
    }

    /// Block `b` of panels `wp` against tokens `xp`, into `acc`; with `pf`, a cache line
    /// from `pf` on prefetched every second column of the block (at its first column for
    /// a one-column block).
    #[inline(always)]
    unsafe fn block<E: Elem, const P: usize, const C: usize>(
        acc: &mut [[__m512; C]; P],
        wp: &[*const u8; P],
        xp: &[*const f32; C],
        b: usize,
        pf: Option<*const u8>,
    ) {
        let bp: [*const u8; P] = std::array::from_fn(|p| wp[p].add(b * E::BLOCK_BYTES));
        let s: [E::S; P] = std::array::from_fn(|p| E::scales(bp[p]));
        for j in 0..E::COLS {
            if let Some(pf) = pf {
                if j.is_multiple_of(2) {
                    _mm_prefetch::<_MM_HINT_T1>(pf.add(j / 2 * 64) as *const i8);
                }
            }
            let k = b * E::COLS + j;
            let wv: [__m512; P] = std::array::from_fn(|p| E::column(bp[p], j, s[p]));
            fma_column(acc, &wv, xp, k);
        }
    }

    /// `acc[p][c] += wv[p] · x[c][k]`: one column's weights against `C` tokens.
    #[inline(always)]
    unsafe fn fma_column<const P: usize, const C: usize>(
        acc: &mut [[__m512; C]; P],
        wv: &[__m512; P],
        xp: &[*const f32; C],
        k: usize,
    ) {
        for c in 0..C {
            let xb = _mm512_set1_ps(*xp[c].add(k));
            for p in 0..P {
                acc[p][c] = _mm512_fmadd_ps(wv[p], xb, acc[p][c]);
            }
        }
    }
}

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
