//! SwiGLU gating: `silu(gate) · up`, with `silu(x) = x / (1 + e^(−x))` (torch's form) and
//! the shared `exp` (`crate::exp`), so every SIMD level computes the same values.

use crate::exp::exp_scalar;
use crate::simd::{simd_level, SimdLevel};

/// Elements per pool task; shorter inputs stay on the calling thread.
const PARALLEL_LEN: usize = 16 * 1024;

/// `gate[i] = silu(gate[i]) * up[i]`, in place (elementwise: spread over the pool from
/// `2 * PARALLEL_LEN` elements on, with the same values).
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "silu_mul: length mismatch");
    if gate.len() < 2 * PARALLEL_LEN {
        silu_mul_serial(gate, up);
    } else {
        crate::parallel::for_each_chunk_mut(gate, PARALLEL_LEN, &|range, g| silu_mul_serial(g, &up[range]));
    }
}

fn silu_mul_serial(gate: &mut [f32], up: &[f32]) {
    match simd_level() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the level guarantees AVX-512; lengths checked.
        SimdLevel::Avx512 => unsafe { avx512(gate, up) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the level guarantees AVX2 and FMA; lengths checked.
        SimdLevel::Avx2 => unsafe { avx2(gate, up) },
        _ => {
            for (g, u) in gate.iter_mut().zip(up) {
                *g = *g / (1.0 + exp_scalar(-*g)) * u;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
unsafe fn avx512(gate: &mut [f32], up: &[f32]) {
    use crate::exp::avx512::exp16;
    use std::arch::x86_64::*;
    let n = gate.len();
    let one = _mm512_set1_ps(1.0);
    let mut i = 0;
    while i < n {
        let m: u16 = if n - i >= 16 { 0xFFFF } else { ((1u32 << (n - i)) - 1) as u16 };
        let g = _mm512_maskz_loadu_ps(m, gate.as_ptr().add(i));
        let u = _mm512_maskz_loadu_ps(m, up.as_ptr().add(i));
        let e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), g));
        let r = _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(one, e)), u);
        _mm512_mask_storeu_ps(gate.as_mut_ptr().add(i), m, r);
        i += 16;
    }
}

/// Eight lanes at a time (`exp8` is `exp_scalar` lane for lane); the tail as the scalar path.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn avx2(gate: &mut [f32], up: &[f32]) {
    use crate::exp::avx2::exp8;
    use std::arch::x86_64::*;
    let n = gate.len();
    let one = _mm256_set1_ps(1.0);
    let mut i = 0;
    while i + 8 <= n {
        let g = _mm256_loadu_ps(gate.as_ptr().add(i));
        let u = _mm256_loadu_ps(up.as_ptr().add(i));
        let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), g));
        _mm256_storeu_ps(gate.as_mut_ptr().add(i), _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)), u));
        i += 8;
    }
    for (g, u) in gate[i..].iter_mut().zip(&up[i..]) {
        *g = *g / (1.0 + exp_scalar(-*g)) * u;
    }
}

#[cfg(test)]
mod tests {
    /// The SIMD levels give the scalar path's bits.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn simd_levels_are_the_scalar_bits() {
        use crate::simd::{available_levels, SimdLevel};
        let mut rng = crate::test_util::Lcg(8);
        let n = 16 * 40 + 13;
        let g: Vec<f32> = (0..n).map(|_| rng.normal() * 8.0).collect();
        let up: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
        let want: Vec<u32> =
            g.iter().zip(&up).map(|(g, u)| (*g / (1.0 + crate::exp::exp_scalar(-*g)) * u).to_bits()).collect();
        for level in available_levels() {
            let mut got = g.clone();
            // SAFETY: each call's level is available on this CPU.
            unsafe {
                match level {
                    SimdLevel::Avx512 => super::avx512(&mut got, &up),
                    SimdLevel::Avx2 => super::avx2(&mut got, &up),
                    _ => continue,
                }
            }
            assert_eq!(got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want, "{}", level.name());
        }
    }

    #[test]
    fn silu_values() {
        let mut g: Vec<f32> = (0..37).map(|i| i as f32 * 0.5 - 9.0).collect();
        let up: Vec<f32> = (0..37).map(|i| 1.0 + i as f32 * 0.01).collect();
        let want: Vec<f64> =
            g.iter().zip(&up).map(|(g, u)| *g as f64 / (1.0 + (-*g as f64).exp()) * *u as f64).collect();
        super::silu_mul(&mut g, &up);
        for (a, b) in g.iter().zip(&want) {
            assert!((*a as f64 - b).abs() <= 1e-6 * b.abs().max(1e-3), "{a} vs {b}");
        }
        let mut z = [0.0f32, -30.0];
        super::silu_mul(&mut z, &[1.0, 1.0]);
        assert_eq!(z[0], 0.0);
        assert!(z[1].abs() < 1e-11);
    }

    /// Over the pool (with a short last piece) every element gets the serial bits.
    #[test]
    fn pooled_silu_is_the_serial_silu() {
        let mut rng = crate::test_util::Lcg(4);
        let n = 2 * super::PARALLEL_LEN + 16 * 3 + 5;
        let g: Vec<f32> = (0..n).map(|_| rng.normal() * 4.0).collect();
        let up: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
        let (mut pooled, mut serial) = (g.clone(), g);
        super::silu_mul(&mut pooled, &up);
        super::silu_mul_serial(&mut serial, &up);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&pooled), bits(&serial));
    }
}
