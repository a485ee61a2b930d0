//! Every SIMD level against the scalar reference, and the fused-vs-expanded identity.

use super::*;
use crate::quant::{dequantize_row, encode_float_row, quantize_row};
use crate::simd::available_levels;
use crate::test_util::{random_row, Lcg};
use proptest::prelude::*;

fn check_row(dtype: DType, n: usize, seed: u64) {
    let mut rng = Lcg(seed);
    let w = random_row(dtype, n, &mut rng);
    let x: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
    let mut wf = vec![0f32; n];
    dequantize_row(dtype, &w, &mut wf);
    let exact: f64 = wf.iter().zip(&x).map(|(a, b)| *a as f64 * *b as f64).sum();
    let scale: f64 = wf.iter().zip(&x).map(|(a, b)| (*a as f64 * *b as f64).abs()).sum();
    for level in available_levels() {
        let fused = dot_row_at(level, dtype, &w, &x);
        let expanded = dot_f32_at(level, &wf, &x);
        assert_eq!(
            fused.to_bits(),
            expanded.to_bits(),
            "{dtype} n={n} {}: fused {fused} != expanded {expanded}",
            level.name()
        );
        let err = (fused as f64 - exact).abs();
        assert!(
            err <= 1e-5 * scale + 1e-30,
            "{dtype} n={n} {}: {fused} vs exact {exact} (scale {scale})",
            level.name()
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn float_rows_match_reference(n in 1usize..700, seed in any::<u64>(), t in 0usize..3) {
        check_row([DType::F32, DType::F16, DType::BF16][t], n, seed);
    }

    #[test]
    fn quantized_rows_match_reference(blocks in 1usize..24, seed in any::<u64>(), t in 0usize..6) {
        let dtype = [DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q4K, DType::Q6K][t];
        let n = blocks * dtype.block_size();
        check_row(dtype, n, seed);
    }

    #[test]
    fn axpy_matches_reference(n in 0usize..300, a in -4f32..4.0, seed in any::<u64>()) {
        let mut rng = Lcg(seed);
        let x: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
        let y0: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
        for level in available_levels() {
            let mut y = y0.clone();
            axpy_at(level, a, &x, &mut y);
            for i in 0..n {
                let want = y0[i] as f64 + a as f64 * x[i] as f64;
                prop_assert!((y[i] as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()));
            }
        }
    }
}

#[test]
fn encode_and_quantize_helpers_round_trip() {
    let x: Vec<f32> = (0..64).map(|i| i as f32 * 0.25 - 8.0).collect();
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let mut y = vec![0f32; 64];
        dequantize_row(dtype, &encode_float_row(dtype, &x), &mut y);
        assert_eq!(x, y, "{dtype} represents quarter steps exactly");
    }
    let q = quantize_row(DType::Q8_0, &x);
    assert_eq!(q.len(), 68);
}

#[test]
#[should_panic(expected = "do not hold")]
fn wrong_row_length_is_caught() {
    dot_row(DType::Q4_1, &[0u8; 20], &[0f32; 64]);
}

/// A tile of rows × tokens gives each output `dot_f32`'s bits, for whole and partial
/// 16-element steps, at every tile shape `matmul` uses.
#[cfg(target_arch = "x86_64")]
#[test]
fn avx2_tiles_are_each_outputs_dot_f32() {
    if !available_levels().contains(&SimdLevel::Avx2) {
        return;
    }
    fn check<const R: usize, const C: usize>(ws: &[Vec<f32>], xs: &[Vec<f32>], k: usize) {
        let mut got = [[0f32; C]; R];
        // SAFETY: AVX2 checked by the caller; every row and token holds `k` values.
        unsafe {
            avx2::dot_f32_tile::<R, C>(
                std::array::from_fn(|r| ws[r].as_ptr()),
                std::array::from_fn(|c| xs[c].as_ptr()),
                k,
                &mut got,
            )
        };
        for r in 0..R {
            for c in 0..C {
                let want = dot_f32_at(SimdLevel::Avx2, &ws[r], &xs[c]);
                assert_eq!(got[r][c].to_bits(), want.to_bits(), "{R}x{C} tile, k={k}, output ({r}, {c})");
            }
        }
    }
    let mut rng = Lcg(21);
    for k in [1usize, 7, 8, 9, 16, 17, 32, 33, 64, 95, 576, 1000] {
        let ws: Vec<Vec<f32>> = (0..3).map(|_| (0..k).map(|_| rng.normal()).collect()).collect();
        let xs: Vec<Vec<f32>> = (0..2).map(|_| (0..k).map(|_| rng.normal() * 10.0).collect()).collect();
        check::<3, 2>(&ws, &xs, k);
        check::<3, 1>(&ws, &xs, k);
        check::<2, 2>(&ws, &xs, k);
        check::<2, 1>(&ws, &xs, k);
        check::<1, 2>(&ws, &xs, k);
    }
}

/// AVX2 keeps AVX-512's accumulation order at half the width: every dot product, float
/// rows of any length and every quantized format, has the same bits at both levels.
#[cfg(target_arch = "x86_64")]
#[test]
fn avx2_has_the_avx512_bits() {
    let levels = available_levels();
    if !levels.contains(&SimdLevel::Avx512) {
        return;
    }
    let mut rng = Lcg(23);
    for dtype in DType::ALL {
        let lengths: Vec<usize> = if dtype.block_size() == 1 {
            (1..=70).chain([95, 576, 1000]).collect()
        } else {
            (1..=6).map(|b| b * dtype.block_size()).collect()
        };
        for n in lengths {
            let w = random_row(dtype, n, &mut rng);
            // Signed zeros and large values among the activations.
            let x: Vec<f32> = (0..n).map(|i| if i % 11 == 3 { -0.0 } else { rng.normal() * 100.0 }).collect();
            let a = dot_row_at(SimdLevel::Avx2, dtype, &w, &x);
            let b = dot_row_at(SimdLevel::Avx512, dtype, &w, &x);
            assert_eq!(a.to_bits(), b.to_bits(), "{dtype} n={n}: avx2 {a} != avx512 {b}");
            let mut wf = vec![0f32; n];
            dequantize_row(dtype, &w, &mut wf);
            let a = dot_f32_at(SimdLevel::Avx2, &wf, &x);
            let b = dot_f32_at(SimdLevel::Avx512, &wf, &x);
            assert_eq!(a.to_bits(), b.to_bits(), "dot_f32 n={n}: avx2 {a} != avx512 {b}");
        }
    }
}
