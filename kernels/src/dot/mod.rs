//! Dot products between a weight row in its stored type and f32 activations.
//!
//! `dot_row(dtype, w, x)` never materialises the expanded row: blocks are expanded in
//! registers. Every SIMD level defines its own accumulation order, and within a level
//! `dot_row(dtype, w, x) == dot_f32(&dequantize_row(w), x)` exactly; matmul relies on
//! this to give a token the same bits whether its batch has 1 token or 512.
//!
//! Preconditions (checked here, cheaply, so the unsafe SIMD code can rely on them):
//! `x.len()` is a whole number of blocks and `w` holds exactly that many blocks.

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;
pub mod scalar;

use crate::dtype::DType;
use crate::simd::{simd_level, SimdLevel};

/// `Σ a[i]·b[i]` at the process's SIMD level.
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    dot_f32_at(simd_level(), a, b)
}

/// `Σ w[i]·x[i]` with `w` a row stored as `dtype`.
#[inline]
pub fn dot_row(dtype: DType, w: &[u8], x: &[f32]) -> f32 {
    dot_row_at(simd_level(), dtype, w, x)
}

/// `y += a·x`.
#[inline]
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    axpy_at(simd_level(), a, x, y)
}

pub fn dot_f32_at(level: SimdLevel, a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot_f32: length mismatch");
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `level` never exceeds what `SimdLevel::detect` found on this CPU.
        SimdLevel::Avx512 => unsafe { avx512::dot_f32(a, b) },
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => unsafe { avx2::dot_f32(a, b) },
        _ => scalar::dot_f32(a, b),
    }
}

pub fn dot_row_at(level: SimdLevel, dtype: DType, w: &[u8], x: &[f32]) -> f32 {
    assert_eq!(
        dtype.row_bytes(x.len()),
        Some(w.len()),
        "dot_row: {} bytes of {dtype} do not hold {} values",
        w.len(),
        x.len()
    );
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: CPU features as above; lengths checked just now.
        SimdLevel::Avx512 => unsafe { avx512::dot_row(dtype, w, x) },
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => unsafe { avx2::dot_row(dtype, w, x) },
        _ => scalar::dot_row(dtype, w, x),
    }
}

pub fn axpy_at(level: SimdLevel, a: f32, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "axpy: length mismatch");
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: CPU features as above; lengths checked just now.
        SimdLevel::Avx512 => unsafe { avx512::axpy(a, x, y) },
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => unsafe { avx2::axpy(a, x, y) },
        _ => scalar::axpy(a, x, y),
    }
}

#[cfg(test)]
mod tests;
