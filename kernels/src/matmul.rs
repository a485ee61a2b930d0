//! `out = x · Wᵀ` for a weight matrix in its stored type: the linear layers.
//!
//! Rows of `W` are split into chunks processed in parallel on the current rayon pool.
//! With one token each row is a fused `dot_row` (the weights are read once, expanded in
//! registers). With several tokens each row is expanded once into a scratch buffer and
//! dotted with every token. Both give identical bits (see `dot`), so a token's result
//! never depends on how many other tokens share its batch.

use crate::dot::{dot_f32, dot_row};
use crate::dtype::DType;
use crate::quant::dequantize_row;
use rayon::prelude::*;

/// A borrowed `[rows, cols]` matrix stored row-major as `dtype` blocks.
#[derive(Clone, Copy, Debug)]
pub struct WeightMatrix<'a> {
    pub dtype: DType,
    pub data: &'a [u8],
    pub rows: usize,
    pub cols: usize,
    row_bytes: usize,
}

impl<'a> WeightMatrix<'a> {
    /// `None` when `cols` is not a whole number of blocks or `data` has the wrong size.
    pub fn new(dtype: DType, data: &'a [u8], rows: usize, cols: usize) -> Option<Self> {
        let row_bytes = dtype.row_bytes(cols)?;
        (data.len() == row_bytes * rows).then_some(WeightMatrix {
            dtype,
            data,
            rows,
            cols,
            row_bytes,
        })
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

/// Shared output pointer: tasks write disjoint elements (distinct rows `r`).
struct Out(*mut f32);
// SAFETY: each task writes only `out[t * rows + r]` for the rows of its own chunk.
unsafe impl Sync for Out {}

/// `out[t, r] = Σ_c x[t, c] · W[r, c]`; `x` is `[n_tokens, cols]`, `out` `[n_tokens, rows]`.
pub fn matmul(w: &WeightMatrix, x: &[f32], out: &mut [f32]) {
    let (rows, cols) = (w.rows, w.cols);
    assert!(
        cols > 0 && x.len() % cols == 0,
        "matmul: x has {} values, not a multiple of {cols}",
        x.len()
    );
    let n_tokens = x.len() / cols;
    assert_eq!(out.len(), n_tokens * rows, "matmul: out has the wrong size");
    if n_tokens == 0 || rows == 0 {
        return;
    }
    let threads = rayon::current_num_threads().max(1);
    let chunk = rows.div_ceil(threads * 8).max(4);
    let optr = Out(out.as_mut_ptr());
    let optr = &optr;
    (0..rows.div_ceil(chunk)).into_par_iter().for_each(|c| {
        let (r0, r1) = (c * chunk, ((c + 1) * chunk).min(rows));
        if n_tokens == 1 {
            for r in r0..r1 {
                let v = dot_row(w.dtype, w.row(r), x);
                // SAFETY: r < rows and this chunk owns rows r0..r1.
                unsafe { *optr.0.add(r) = v };
            }
        } else {
            let mut scratch = vec![0f32; cols];
            for r in r0..r1 {
                dequantize_row(w.dtype, w.row(r), &mut scratch);
                for (t, xt) in x.chunks_exact(cols).enumerate() {
                    let v = dot_f32(&scratch, xt);
                    // SAFETY: t < n_tokens, r < rows; this chunk owns column r.
                    unsafe { *optr.0.add(t * rows + r) = v };
                }
            }
        }
    });
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
                out[t * rows + r] = (0..cols)
                    .map(|c| wf[r * cols + c] as f64 * x[t * cols + c] as f64)
                    .sum();
            }
        }
        out
    }

    #[test]
    fn matches_reference_and_is_batch_invariant() {
        let mut rng = Lcg(7);
        for dtype in DType::ALL {
            let (rows, cols) = (37, if dtype.block_size() == 256 { 512 } else { 96 });
            let w: Vec<u8> = (0..rows)
                .flat_map(|_| random_row(dtype, cols, &mut rng))
                .collect();
            let wm = WeightMatrix::new(dtype, &w, rows, cols).expect("shape");
            let x: Vec<f32> = (0..5 * cols).map(|_| rng.normal()).collect();
            let mut out = vec![0f32; 5 * rows];
            matmul(&wm, &x, &mut out);
            let want = reference(dtype, &w, rows, cols, &x);
            let num: f64 = out
                .iter()
                .zip(&want)
                .map(|(a, b)| (*a as f64 - b).powi(2))
                .sum();
            let den: f64 = want.iter().map(|b| b * b).sum();
            // DESIGN allows NMSE 1e-7; f32 accumulation lands far below it.
            assert!(num / den <= 1e-10, "{dtype}: NMSE {}", num / den);
            // Each token alone gives the same bits as inside the batch of 5.
            for t in 0..5 {
                let mut one = vec![0f32; rows];
                matmul(&wm, &x[t * cols..(t + 1) * cols], &mut one);
                assert_eq!(one, out[t * rows..(t + 1) * rows], "{dtype}: token {t}");
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
