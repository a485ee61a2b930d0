//! keel's CPU kernels.
//!
//! Weights stay in their stored type (`DType`: f32/f16/bf16 or a GGML block format)
//! and are expanded inside the SIMD loops; activations and accumulation are f32.
//! Each kernel has a scalar reference (`dot::scalar`) and AVX2 / AVX-512 versions chosen
//! at run time (`simd::simd_level`, overridable with `KEEL_SIMD`). Parallel kernels run
//! on the crate's own fork-join pool (`parallel`), sized by `parallel::set_num_threads`.

pub mod activation;
pub mod aligned;
pub mod attention;
pub mod dot;
pub mod dtype;
pub mod exp;
pub mod matmul;
pub mod norm;
pub mod parallel;
pub mod quant;
pub mod rope;
pub mod rowmax;
pub(crate) mod shares;
pub mod simd;
#[doc(hidden)]
pub mod test_util;

pub use dtype::DType;
pub use matmul::{matmul, WeightMatrix};
pub use simd::{simd_level, SimdLevel};
