//! AVX2 several-token matmul: one expanded f32 weight row against `C` tokens at a time.
//!
//! Every output gets the bits of `dot::avx2::dot_f32(row, token)`, the AVX2 order (four
//! 8-lane accumulators per 32-element chunk, a zero-padded last chunk, then `reduce`): the
//! tile only interleaves the independent chains of `C` tokens, so the weight vector loaded
//! for a step serves `C` FMAs and `4·C` chains hide the FMA latency (one `dot_f32` per
//! token has 4 chains and two loads per FMA).
//!
//! Safety: callers guarantee the `avx2`, `fma` and `f16c` CPU features and in-bounds
//! pointers: the row and every token hold `k` f32.

use crate::dot::avx2::{reduce, Acc};
use std::arch::x86_64::*;

/// `out[c] = dot_f32(w[..k], x[c][..k])` for `C` tokens (`4·C` accumulators: `C <= 3` fits
/// the 16 registers).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn row_x_tokens<const C: usize>(w: *const f32, x: [*const f32; C], k: usize, out: &mut [f32; C]) {
    let mut acc: [Acc; C] = [[_mm256_setzero_ps(); 4]; C];
    let full = k / 32 * 32;
    let mut i = 0;
    while i < full {
        for j in 0..4 {
            let wv = _mm256_loadu_ps(w.add(i + 8 * j));
            for c in 0..C {
                acc[c][j] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x[c].add(i + 8 * j)), acc[c][j]);
            }
        }
        i += 32;
    }
    if full < k {
        // The zero-padded last chunk, as `dot_f32`.
        let mut tw = [0f32; 32];
        tw[..k - full].copy_from_slice(std::slice::from_raw_parts(w.add(full), k - full));
        for c in 0..C {
            let mut tx = [0f32; 32];
            tx[..k - full].copy_from_slice(std::slice::from_raw_parts(x[c].add(full), k - full));
            for j in 0..4 {
                acc[c][j] = _mm256_fmadd_ps(
                    _mm256_loadu_ps(tw.as_ptr().add(8 * j)),
                    _mm256_loadu_ps(tx.as_ptr().add(8 * j)),
                    acc[c][j],
                );
            }
        }
    }
    for c in 0..C {
        out[c] = reduce(acc[c]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::{available_levels, SimdLevel};
    use crate::test_util::Lcg;

    /// Each token's output is `dot_f32`'s bits, for whole and partial last chunks.
    #[test]
    fn tile_outputs_are_dot_f32_bit_for_bit() {
        if !available_levels().contains(&SimdLevel::Avx2) {
            return;
        }
        let mut rng = Lcg(21);
        for k in [1usize, 7, 32, 33, 64, 95, 576, 1000] {
            let w: Vec<f32> = (0..k).map(|_| rng.normal()).collect();
            let xs: Vec<Vec<f32>> = (0..3).map(|_| (0..k).map(|_| rng.normal() * 10.0).collect()).collect();
            // SAFETY: AVX2 checked above; every row holds `k` values.
            unsafe {
                let want: Vec<u32> = xs.iter().map(|x| crate::dot::avx2::dot_f32(&w, x).to_bits()).collect();
                let mut three = [0f32; 3];
                row_x_tokens::<3>(w.as_ptr(), [xs[0].as_ptr(), xs[1].as_ptr(), xs[2].as_ptr()], k, &mut three);
                let mut two = [0f32; 2];
                row_x_tokens::<2>(w.as_ptr(), [xs[1].as_ptr(), xs[2].as_ptr()], k, &mut two);
                let mut one = [0f32; 1];
                row_x_tokens::<1>(w.as_ptr(), [xs[2].as_ptr()], k, &mut one);
                assert_eq!(three.map(f32::to_bits).to_vec(), want, "k={k}");
                assert_eq!(two.map(f32::to_bits).to_vec(), want[1..], "k={k}");
                assert_eq!(one[0].to_bits(), want[2], "k={k}");
            }
        }
    }
}
