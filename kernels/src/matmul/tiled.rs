//! The several-token AVX-512 path of `matmul` (`matmul_avx512` hands it every call of
//! more than one token): 24-row chunks dealt out as contiguous shares, 6 rows at a time
//! expanded into an L1-sized scratch and run against a block of up to 128 tokens by the 6 x 4
//! micro-kernel (`avx512::tile`), rows longer than `SPAN` a span at a time. Every output gets
//! the same bits however its rows, tokens and spans are cut (see `avx512::tile`).

use super::{avx512, with_scratch, Out, Parts};
use crate::shares::deal;

/// Rows per chunk of the several-token AVX-512 path, and tokens per block of it.
pub(super) const TILED_CHUNK: usize = 24;
pub(super) const TOKEN_BLOCK: usize = 128;

/// The most elements of a row one tile call runs: six rows and four tokens of 768 floats
/// (30 KiB) stay in a 48 KiB L1 from one call to the next. Longer rows go in near-equal
/// spans (`avx512::tile`), each against all tokens of the block, the accumulators
/// carried between spans in `CARRY_SLOT` floats per tile call. (On the Intel Xeon VM of
/// 2026-12-03 the whole 1536-element rows of the FFN's down projection ran ~20% slower per
/// FMA than 576-element ones: 6 rows and 4 tokens of them, 60 KiB, thrashed the L1.)
const SPAN: usize = 768;

/// Bytes of tokens (`x`) from which a several-token matmul deals out one `TOKEN_BLOCK` at a
/// time: half the 2 MiB L2 of the Intel Xeon VM of 2026-12-03, the rest left to the rows.
pub(super) const TOKENS_IN_L2: usize = 1 << 20;
const CARRY_SLOT: usize = 6 * 4 * 16;
const CARRY_LEN: usize = (TOKEN_BLOCK / 4 + 2) * CARRY_SLOT;

/// `parts` against all `n_tokens` (> 1) tokens of `x`.
pub(super) fn matmul(mut parts: Parts, x: &[f32], n_tokens: usize) {
    // A chunk is 24 rows; its thread expands 6 rows at a time into an L1-sized scratch and
    // runs them against every token of a 128-token block (rows are re-expanded once per
    // block). Chunks are dealt out as contiguous shares (`crate::shares`), so the rows a thread
    // takes next are known and already on their way when it gets there (with chunks handed
    // out one by one, the first group of every chunk came cold from memory: ~10% of a
    // 32-sequence decode went to stalls in `expand_row`).
    //
    // Tokens whose rows (all of them, `x`) outgrow half an L2 go a 128-token block at a time,
    // each block dealt out on its own: the block stays in L2 while every chunk passes by.
    // (Dealt in one go, each chunk read all of `x` from beyond L2: 512 tokens of 1536
    // elements, 3 MiB, made the FFN's down projection ~20% slower per FMA than the gate.)
    let n_chunks = parts.number(TILED_CHUNK);
    let cols = parts.parts[0].w.cols;
    let block = if n_tokens * cols * 4 > TOKENS_IN_L2 { TOKEN_BLOCK } else { n_tokens };
    for t0 in (0..n_tokens).step_by(block) {
        let tokens = t0..(t0 + block).min(n_tokens);
        deal(n_chunks, |u, own_end| tiled_chunk(&parts, u, own_end, x, tokens.clone()));
    }
}

/// Chunk `u` of `parts` (24 rows) against tokens `tokens` of `x` (see `matmul`);
/// `own_end`: the chunk is from this thread's share, which ends at that
/// chunk, so the rows after it are this thread's next and are prefetched.
fn tiled_chunk(parts: &Parts, u: usize, own_end: Option<usize>, x: &[f32], tokens: std::ops::Range<usize>) {
    let (p, r0, r1, pf_end) = parts.dealt_rows(u, TILED_CHUNK, own_end);
    let (w, o) = (&p.w, p.out);
    let (rows, cols) = (w.rows, w.cols);
    let row_ptr = |r: usize| w.row(r).as_ptr();
    // Rows of the scratch start on cache lines when `cols` is a multiple of 16; the tiles'
    // carried accumulators follow them.
    let stride = cols.div_ceil(16) * 16;
    with_scratch(6 * stride + CARRY_LEN, |scratch| {
        // SAFETY: level checked by simd_level(); rows hold `cols` elements; scratch
        // holds 6 expanded rows; outputs of rows r0..r1 belong to this task.
        unsafe {
            let xp = x.as_ptr();
            for t0 in tokens.clone().step_by(TOKEN_BLOCK) {
                let t1 = (t0 + TOKEN_BLOCK).min(tokens.end);
                let mut r = r0;
                while r < r1 {
                    let n = if r1 - r >= 6 {
                        6
                    } else if r1 - r >= 4 {
                        4
                    } else {
                        1
                    };
                    // The next group's rows (contiguous after these) stream in while
                    // this one computes, their lines spread over its tile calls.
                    let next = if r + n < pf_end {
                        avx512::Prefetch { ptr: row_ptr(r + n), len: w.row_bytes() * 6.min(pf_end - r - n) }
                    } else {
                        avx512::Prefetch::NONE
                    };
                    for i in 0..n {
                        avx512::expand_row(w.dtype, row_ptr(r + i), cols, &mut scratch[i * stride..i * stride + cols]);
                    }
                    let sp = scratch.as_ptr();
                    let ctx = Tiles {
                        carry: scratch.as_mut_ptr().add(6 * stride),
                        w: |rr: usize| sp.add((rr - r) * stride),
                        x: |t: usize| xp.add(t * cols),
                        cols,
                        rows,
                        out: o,
                    };
                    match n {
                        6 => ctx.rows_x_tokens::<6>(r, t0, t1, next),
                        4 => ctx.rows_x_tokens::<4>(r, t0, t1, next),
                        _ => ctx.rows_x_tokens::<1>(r, t0, t1, next),
                    }
                    r += n;
                }
            }
        }
    })
}
/// The operands of one task's tiles.
struct Tiles<W: Fn(usize) -> *const f32, X: Fn(usize) -> *const f32> {
    /// `CARRY_LEN` floats for `avx512::tile`'s carried accumulators.
    carry: *mut f32,
    w: W,
    x: X,
    cols: usize,
    rows: usize,
    out: Out,
}

impl<W: Fn(usize) -> *const f32, X: Fn(usize) -> *const f32> Tiles<W, X> {
    /// Rows `r..r+R` × tokens `t0..t1`, four tokens per micro-kernel call, a span of the
    /// rows (all of them when no longer than `SPAN`) against all the tokens at a time.
    ///
    /// SAFETY: AVX-512 available; rows and tokens in range and owned by the caller;
    /// `t1 - t0 <= TOKEN_BLOCK`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    unsafe fn rows_x_tokens<const R: usize>(&self, r: usize, t0: usize, t1: usize, next: avx512::Prefetch) {
        let wr: [*const f32; R] = std::array::from_fn(|i| (self.w)(r + i));
        let spans = self.cols.div_ceil(SPAN);
        // `next`'s cache lines, a share before each 4-token call.
        let mut next = next.spread(spans * ((t1 - t0) / 4));
        // Multiples of 32 elements: the spans meet on whole steps, so each lane's sums
        // are those of one call over the whole row.
        let len = self.cols.div_ceil(spans).next_multiple_of(32);
        let mut i0 = 0;
        while i0 < self.cols {
            let span = (i0, (i0 + len).min(self.cols));
            let (mut t, mut slot) = (t0, 0);
            while t + 4 <= t1 {
                next.step();
                self.call::<R, 4>(&wr, r, t, span, slot);
                (t, slot) = (t + 4, slot + 1);
            }
            while t + 2 <= t1 {
                self.call::<R, 2>(&wr, r, t, span, slot);
                (t, slot) = (t + 2, slot + 1);
            }
            if t < t1 {
                self.call::<R, 1>(&wr, r, t, span, slot);
            }
            i0 = span.1;
        }
        next.rest();
    }

    /// SAFETY: as `rows_x_tokens`; `slot` < `CARRY_LEN / CARRY_SLOT`.
    #[inline(always)]
    unsafe fn call<const R: usize, const C: usize>(
        &self,
        wr: &[*const f32; R],
        r: usize,
        t: usize,
        (i0, i1): (usize, usize),
        slot: usize,
    ) {
        avx512::tile::<R, C>(
            *wr,
            std::array::from_fn(|c| (self.x)(t + c)),
            (i0, i1, self.cols),
            self.carry.add(slot * CARRY_SLOT),
            std::array::from_fn(|c| self.out.at((t + c) * self.rows + r)),
        );
    }
}
