//! Deterministic random data for kernel tests.

use crate::dtype::DType;
use crate::quant::{encode_float_row, quantize_row};
use half::f16;

/// A small deterministic generator (Knuth's MMIX LCG); tests need reproducible
/// data, not statistical quality.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next_u32(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        self.next_u32() as f32 / (1u64 << 31) as f32
    }

    /// Roughly standard normal (sum of uniforms).
    pub fn normal(&mut self) -> f32 {
        (0..4).map(|_| self.uniform()).sum::<f32>() * 1.7 - 3.4
    }
}

/// A random row of `n` values stored as `dtype` (valid scales for the k-quants).
pub fn random_row(dtype: DType, n: usize, rng: &mut Lcg) -> Vec<u8> {
    match dtype {
        DType::F32 | DType::F16 | DType::BF16 => {
            let x: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
            encode_float_row(dtype, &x)
        }
        DType::Q8_0 | DType::Q4_0 | DType::Q4_1 | DType::Q5_0 => {
            let x: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
            quantize_row(dtype, &x)
        }
        DType::Q4K | DType::Q6K => {
            let mut out = Vec::with_capacity(n / 256 * dtype.block_bytes());
            for _ in 0..n / 256 {
                let mut b: Vec<u8> = (0..dtype.block_bytes()).map(|_| rng.next_u32() as u8).collect();
                let d = f16::from_f32(0.01 + rng.uniform() * 0.05).to_bits().to_le_bytes();
                if dtype == DType::Q4K {
                    b[0..2].copy_from_slice(&d);
                    let dmin = f16::from_f32(rng.uniform() * 0.05).to_bits().to_le_bytes();
                    b[2..4].copy_from_slice(&dmin);
                } else {
                    b[208..210].copy_from_slice(&d);
                }
                out.extend(b);
            }
            out
        }
    }
}
