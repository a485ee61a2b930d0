//! RMSNorm (HF `LlamaRMSNorm`): `w · (x / sqrt(mean(x²) + eps))`, per token.
//!
//! The mean of squares is accumulated in f64 (as ggml does), element by element in order;
//! the scaling follows HF's operation order, `weight * (x * rsqrt(var + eps))`, in f32. A
//! row's bits depend only on that row: rows go 4 at a time (four independent f64 chains
//! instead of one, whose add latency bounded the loop) and, from `2 * PARALLEL_ROWS` rows
//! on, over the thread pool, neither of which changes any row's operations.

use crate::parallel::for_each_chunk_mut;

/// Rows per pool task; fewer than twice this many rows stay on the calling thread.
const PARALLEL_ROWS: usize = 16;

/// Normalises each `hidden`-sized row of `x` into `out`.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let hidden = weight.len();
    assert!(x.len() == out.len() && x.len().is_multiple_of(hidden.max(1)), "rms_norm: shape mismatch");
    if hidden == 0 {
        return;
    }
    if x.len() < 2 * PARALLEL_ROWS * hidden {
        norm_rows(x, weight, eps, out);
        return;
    }
    for_each_chunk_mut(out, PARALLEL_ROWS * hidden, &|range, out| norm_rows(&x[range], weight, eps, out));
}

fn norm_rows(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let hidden = weight.len();
    let mut xs = x.chunks_exact(4 * hidden);
    let mut os = out.chunks_exact_mut(4 * hidden);
    for (x4, o4) in (&mut xs).zip(&mut os) {
        norm_group::<4>(x4, weight, eps, o4);
    }
    for (xr, or) in xs.remainder().chunks_exact(hidden).zip(os.into_remainder().chunks_exact_mut(hidden)) {
        norm_group::<1>(xr, weight, eps, or);
    }
}

/// `R` rows: their sums of squares side by side (each in its own order), then their scaling.
fn norm_group<const R: usize>(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let hidden = weight.len();
    let mut ss = [0f64; R];
    for i in 0..hidden {
        for (r, s) in ss.iter_mut().enumerate() {
            let v = x[r * hidden + i] as f64;
            *s += v * v;
        }
    }
    for (r, s) in ss.iter().enumerate() {
        scale_row(&x[r * hidden..(r + 1) * hidden], weight, eps, *s, &mut out[r * hidden..(r + 1) * hidden]);
    }
}

fn scale_row(xr: &[f32], weight: &[f32], eps: f32, ss: f64, or: &mut [f32]) {
    let var = (ss / weight.len() as f64) as f32;
    let scale = 1.0 / (var + eps).sqrt();
    for ((o, v), w) in or.iter_mut().zip(xr).zip(weight) {
        *o = w * (v * scale);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_rows_stay_unit() {
        let x = [1.0f32, -1.0, 1.0, -1.0, 2.0, 2.0, 2.0, 2.0];
        let w = [1.0f32, 2.0, 1.0, 1.0];
        let mut out = [0f32; 8];
        rms_norm(&x, &w, 0.0, &mut out);
        assert_eq!(out, [1.0, -2.0, 1.0, -1.0, 1.0, 2.0, 1.0, 1.0]);
    }

    /// The operations as first written: one row at a time, `Iterator::sum` in f64.
    fn one_row_at_a_time(x: &[f32], weight: &[f32], eps: f32) -> Vec<f32> {
        let mut out = vec![0f32; x.len()];
        for (xr, or) in x.chunks_exact(weight.len()).zip(out.chunks_exact_mut(weight.len())) {
            let ss: f64 = xr.iter().map(|v| (*v as f64) * (*v as f64)).sum();
            let var = (ss / weight.len() as f64) as f32;
            let scale = 1.0 / (var + eps).sqrt();
            for ((o, v), w) in or.iter_mut().zip(xr).zip(weight) {
                *o = w * (v * scale);
            }
        }
        out
    }

    /// Every row of every group size and of every pool task gets its own scale (rows of
    /// very different magnitudes, so a row normalised with another's sum would show).
    #[test]
    fn grouped_and_pooled_rows_keep_every_row_bit_for_bit() {
        let mut rng = crate::test_util::Lcg(21);
        for hidden in [1usize, 5, 64, 576] {
            let w: Vec<f32> = (0..hidden).map(|_| rng.normal()).collect();
            for rows in [1usize, 3, 4, 5, 31, 32, 33, 100, 512] {
                let x: Vec<f32> =
                    (0..rows * hidden).map(|i| rng.normal() * (1u32 << ((i / hidden) % 17)) as f32).collect();
                let mut out = vec![f32::NAN; x.len()];
                rms_norm(&x, &w, 1e-5, &mut out);
                let want = one_row_at_a_time(&x, &w, 1e-5);
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&out), bits(&want), "hidden {hidden}, {rows} rows");
            }
        }
    }
}
