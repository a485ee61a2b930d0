//! The AVX-512 micro-kernel over panels. The layout it reads, the FMA chains it must
//! reproduce bit for bit and the tile / group / prefetch scheme: the parent module's doc.

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
