//! keel's CPU kernels.
//!
//! Weights stay in their stored type (`DType`: f32/f16/bf16 or a GGML block format)
//! and are expanded inside the SIMD loops; activations and accumulation are f32.
//! Each kernel has a scalar reference (`dot::scalar`) and AVX2 / AVX-512 versions chosen
//! at run time (`simd::simd_level`, overridable with `KEEL_SIMD`). Parallel kernels use
//! the current rayon pool, so callers control the thread count.

pub mod activation;
pub mod attention;
pub mod dot;
pub mod dtype;
pub mod matmul;
pub mod norm;
pub mod quant;
pub mod rope;
pub mod simd;
#[doc(hidden)]
pub mod test_util;

pub use dtype::DType;
pub use matmul::{matmul, WeightMatrix};
pub use simd::{simd_level, SimdLevel};
