//! Vectorized `e^x` for softmax and SiLU.
//!
//! Cody–Waite reduction `x = n·ln2 + r` (|r| ≤ ln2/2), Cephes' polynomial for `e^r`,
//! and `vscalefps` for `2^n` (which also handles overflow to +inf and underflow to 0).
//! Error ≤ 2 ulp over the f32 range (tested against f64). Every SIMD level and the scalar
//! path evaluate the same function on each lane the same way (`exp_scalar` is the
//! reference), so softmax results do not depend on which lanes a value lands in.

/// Scalar reference with the same reduction and polynomial.
pub fn exp_scalar(x: f32) -> f32 {
    // As `vmaxps`/`vminps` do: a NaN input takes the lower clamp bound (so NaN maps to 0).
    let x = if x.is_nan() { LO } else { x.clamp(LO, 89.0) };
    let n = (x * std::f32::consts::LOG2_E).round_ties_even();
    let r = n.mul_add(-LN2_HI, x);
    let r = n.mul_add(-LN2_LO, r);
    // p · 2^n rounded once, as `vscalefps` does (exact in f64, then one rounding).
    (poly(r) as f64 * 2f64.powi(n as i32)) as f32
}

/// Below this, e^x rounds to 0 in f32 (so masked scores contribute exactly nothing).
const LO: f32 = -110.0;
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// Cephes `expf` coefficients: `e^r ≈ 1 + r + r²·P(r)`.
const C: [f32; 6] = [1.987_569_2e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 5e-1];

#[inline(always)]
fn poly(r: f32) -> f32 {
    let mut p = C[0];
    for c in &C[1..] {
        p = p.mul_add(r, *c);
    }
    p.mul_add(r * r, r) + 1.0
}

/// `out[i] = e^x[i]` at the process's SIMD level.
pub fn exp_slice(x: &mut [f32]) {
    match crate::simd::simd_level() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the level guarantees AVX-512F.
        crate::simd::SimdLevel::Avx512 => unsafe { avx512::exp_slice(x) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the level guarantees AVX2 and FMA.
        crate::simd::SimdLevel::Avx2 => unsafe { avx2::exp_slice(x) },
        _ => x.iter_mut().for_each(|v| *v = exp_scalar(*v)),
    }
}

/// `ln Σ e^x[i]` (max-shifted), summed in 16 lanes (lane `l` takes `i ≡ l mod 16`) then
/// the fixed tree of `_mm512_reduce_add_ps`; the log in f64. NaNs are skipped.
pub fn logsumexp(x: &[f32]) -> f32 {
    let max = crate::rowmax::max_ignoring_nan(x);
    if max.is_infinite() {
        return max;
    }
    let sum = match crate::simd::simd_level() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the level guarantees AVX-512F.
        crate::simd::SimdLevel::Avx512 => unsafe { avx512::sum_exp_shifted(x, max) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the level guarantees AVX2 and FMA.
        crate::simd::SimdLevel::Avx2 => unsafe { avx2::sum_exp_shifted(x, max) },
        _ => sum_exp_shifted(x, max),
    };
    (max as f64 + (sum as f64).ln()) as f32
}

/// Σ e^(x − max) over the non-NaN entries: lane `l` sums `i ≡ l mod 16` in order, then
/// `tree_sum16` (the reference for the SIMD levels' sums).
fn sum_exp_shifted(x: &[f32], max: f32) -> f32 {
    let mut lanes = [0f32; 16];
    for (i, v) in x.iter().enumerate() {
        if !v.is_nan() {
            lanes[i % 16] += exp_scalar(v - max);
        }
    }
    tree_sum16(&lanes)
}

/// `_mm512_reduce_add_ps`'s order: halves of 8, then 4, 2, 1.
pub(crate) fn tree_sum16(l: &[f32; 16]) -> f32 {
    let a: [f32; 8] = std::array::from_fn(|i| l[i] + l[i + 8]);
    let b: [f32; 4] = std::array::from_fn(|i| a[i] + a[i + 4]);
    let c: [f32; 2] = std::array::from_fn(|i| b[i] + b[i + 2]);
    c[0] + c[1]
}

#[cfg(target_arch = "x86_64")]
pub mod avx512 {
    use super::{C, LN2_HI, LN2_LO, LO};
    use std::arch::x86_64::*;

    /// e^x on 16 lanes, lane for lane equal to `exp_scalar`.
    ///
    /// # Safety
    /// The CPU has AVX-512 (F, BW, VL) and F16C.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    #[inline]
    pub unsafe fn exp16(x: __m512) -> __m512 {
        let x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(LO)), _mm512_set1_ps(89.0));
        let n = _mm512_roundscale_ps(
            _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
        );
        let r = _mm512_fmadd_ps(n, _mm512_set1_ps(-LN2_HI), x);
        let r = _mm512_fmadd_ps(n, _mm512_set1_ps(-LN2_LO), r);
        let mut p = _mm512_set1_ps(C[0]);
        for c in &C[1..] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(*c));
        }
        let p = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0));
        _mm512_scalef_ps(p, n)
    }

    /// Σ e^(x − max) over the non-NaN entries.
    ///
    /// # Safety
    /// The CPU has AVX-512 (F, BW, VL) and F16C.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    pub unsafe fn sum_exp_shifted(x: &[f32], max: f32) -> f32 {
        let (n, m) = (x.len(), _mm512_set1_ps(max));
        let mut acc = _mm512_setzero_ps();
        let mut i = 0;
        while i < n {
            let k: u16 = if n - i >= 16 { 0xFFFF } else { ((1u32 << (n - i)) - 1) as u16 };
            let v = _mm512_maskz_loadu_ps(k, x.as_ptr().add(i));
            let valid = k & _mm512_cmp_ps_mask(v, v, _CMP_ORD_Q);
            acc = _mm512_mask_add_ps(acc, valid, acc, exp16(_mm512_sub_ps(v, m)));
            i += 16;
        }
        _mm512_reduce_add_ps(acc)
    }

    /// `exp16` over the slice; the tail as `exp_scalar` (the same values).
    ///
    /// # Safety
    /// The CPU has AVX-512 (F, BW, VL) and F16C.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    pub unsafe fn exp_slice(x: &mut [f32]) {
        let n = x.len();
        let mut i = 0;
        while i + 16 <= n {
            let p = x.as_mut_ptr().add(i);
            _mm512_storeu_ps(p, exp16(_mm512_loadu_ps(p)));
            i += 16;
        }
        if i < n {
            let m = ((1u32 << (n - i)) - 1) as u16;
            let p = x.as_mut_ptr().add(i);
            _mm512_mask_storeu_ps(p, m, exp16(_mm512_maskz_loadu_ps(m, p)));
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    use super::{C, LN2_HI, LN2_LO, LO};
    use std::arch::x86_64::*;

    /// e^x on 8 lanes, lane for lane equal to `exp_scalar`. AVX2 has no `vscalefps`:
    /// `p · 2^n` is `(p · 2^(n - a)) · 2^a`, the first product exact (a normal result),
    /// so only the second rounds, once, as `vscalefps` does: `a = -64` where the result
    /// is subnormal (n < -100), `a = 1` where 2^n is not a normal f32 (n = 128), else 0.
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub unsafe fn exp8(x: __m256) -> __m256 {
        let x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(LO)), _mm256_set1_ps(89.0));
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
            x,
            _mm256_set1_ps(std::f32::consts::LOG2_E),
        ));
        let r = _mm256_fmadd_ps(n, _mm256_set1_ps(-LN2_HI), x);
        let r = _mm256_fmadd_ps(n, _mm256_set1_ps(-LN2_LO), r);
        let mut p = _mm256_set1_ps(C[0]);
        for c in &C[1..] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(*c));
        }
        let p = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0));
        let ni = _mm256_cvtps_epi32(n);
        let low = _mm256_cmpgt_epi32(_mm256_set1_epi32(-100), ni);
        let high = _mm256_cmpgt_epi32(ni, _mm256_set1_epi32(127));
        let a = _mm256_or_si256(
            _mm256_and_si256(low, _mm256_set1_epi32(-64)),
            _mm256_and_si256(high, _mm256_set1_epi32(1)),
        );
        let pow2 =
            |e: __m256i| _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(e, _mm256_set1_epi32(127))));
        _mm256_mul_ps(_mm256_mul_ps(p, pow2(_mm256_sub_epi32(ni, a))), pow2(a))
    }

    /// Σ e^(x − max) over the non-NaN entries, in `logsumexp`'s 16 lanes (two vectors of
    /// 8; the tail padded with NaN, which is skipped) and its tree.
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn sum_exp_shifted(x: &[f32], max: f32) -> f32 {
        let m = _mm256_set1_ps(max);
        let mut acc = [_mm256_setzero_ps(); 2];
        let mut add16 = |p: *const f32| {
            for (h, a) in acc.iter_mut().enumerate() {
                let v = _mm256_loadu_ps(p.add(8 * h));
                let e = _mm256_and_ps(exp8(_mm256_sub_ps(v, m)), _mm256_cmp_ps::<_CMP_ORD_Q>(v, v));
                *a = _mm256_add_ps(*a, e);
            }
        };
        let full = x.len() / 16 * 16;
        for i in (0..full).step_by(16) {
            add16(x.as_ptr().add(i));
        }
        if full < x.len() {
            let mut tail = [f32::NAN; 16];
            tail[..x.len() - full].copy_from_slice(&x[full..]);
            add16(tail.as_ptr());
        }
        tree_sum16(acc[0], acc[1])
    }

    /// `super::tree_sum16` of the 16 lanes `lo` (0..8) and `hi` (8..16).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(crate) unsafe fn tree_sum16(lo: __m256, hi: __m256) -> f32 {
        let a = _mm256_add_ps(lo, hi);
        let b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
        let mut c = [0f32; 4];
        _mm_storeu_ps(c.as_mut_ptr(), b);
        (c[0] + c[2]) + (c[1] + c[3])
    }

    /// `exp8` over the slice; the tail as `exp_scalar` (the same values).
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn exp_slice(x: &mut [f32]) {
        let mut i = 0;
        while i + 8 <= x.len() {
            let p = x.as_mut_ptr().add(i);
            _mm256_storeu_ps(p, exp8(_mm256_loadu_ps(p)));
            i += 8;
        }
        for v in &mut x[i..] {
            *v = super::exp_scalar(*v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `avx2::exp8` is `exp_scalar` bit for bit, normal and subnormal results, overflow,
    /// infinities and NaN included.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_exp_is_the_scalar_bits() {
        if !crate::simd::available_levels().contains(&crate::simd::SimdLevel::Avx2) {
            return;
        }
        let mut xs: Vec<f32> = (-300_000..=240_000).map(|i| i as f32 * 0.000375).collect();
        xs.extend([0.0, -0.0, 88.7, 88.73, 89.0, 95.0, -87.3, -103.0, -104.5, -109.9, -150.0]);
        xs.extend([f32::NEG_INFINITY, f32::INFINITY, f32::NAN, f32::MIN_POSITIVE, -f32::MIN_POSITIVE]);
        xs.resize(xs.len().div_ceil(8) * 8, 1.0);
        for chunk in xs.chunks_exact(8) {
            let mut got = [0f32; 8];
            // SAFETY: AVX2 checked above.
            unsafe {
                use std::arch::x86_64::*;
                _mm256_storeu_ps(got.as_mut_ptr(), avx2::exp8(_mm256_loadu_ps(chunk.as_ptr())));
            }
            for (x, y) in chunk.iter().zip(got) {
                assert_eq!(y.to_bits(), exp_scalar(*x).to_bits(), "x={x}: avx2 {y} vs scalar {}", exp_scalar(*x));
            }
        }
    }

    /// `logsumexp`'s sum at AVX2 and AVX-512 is the scalar lanes-and-tree sum, bit for bit
    /// (NaNs skipped, a partial last group of 16).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn simd_sums_are_the_scalar_bits() {
        use crate::simd::{available_levels, SimdLevel};
        let mut rng = crate::test_util::Lcg(6);
        for n in [1usize, 15, 16, 17, 100, 49157] {
            let mut x: Vec<f32> = (0..n).map(|_| rng.normal() * 5.0).collect();
            if n > 20 {
                x[7] = f32::NAN;
            }
            let max = x.iter().cloned().filter(|v| !v.is_nan()).fold(f32::NEG_INFINITY, f32::max);
            let want = sum_exp_shifted(&x, max);
            for level in available_levels() {
                // SAFETY: each level is available on this CPU.
                let got = unsafe {
                    match level {
                        SimdLevel::Avx512 => avx512::sum_exp_shifted(&x, max),
                        SimdLevel::Avx2 => avx2::sum_exp_shifted(&x, max),
                        _ => continue,
                    }
                };
                assert_eq!(got.to_bits(), want.to_bits(), "n={n} {}", level.name());
            }
        }
    }

    fn ulps(a: f32, b: f64) -> f64 {
        let b32 = b as f32;
        if a == b32 {
            return 0.0;
        }
        ((a as f64 - b) / (f32::from_bits(b32.to_bits() + 1) as f64 - b32 as f64)).abs()
    }

    #[test]
    fn accurate_over_the_range_and_equal_on_every_path() {
        let mut xs: Vec<f32> = (-200_000..=120_000).map(|i| i as f32 * 0.00075).collect();
        xs.extend([0.0, -0.0, 88.7, -87.3, -103.0, -150.0, 100.0, f32::NEG_INFINITY, f32::INFINITY]);
        let mut v = xs.clone();
        exp_slice(&mut v);
        for (x, y) in xs.iter().zip(&v) {
            let s = exp_scalar(*x);
            assert_eq!(s.to_bits(), y.to_bits(), "x={x}: scalar {s} vs simd {y}");
            let want = (*x as f64).exp();
            if want > 1e-37 && want < 3e38 {
                assert!(ulps(s, want) <= 2.0, "x={x}: {s} vs {want} ({} ulp)", ulps(s, want));
            } else if want <= 1e-45 {
                assert!(s <= 1.5e-45, "x={x}: {s}");
            }
        }
        assert_eq!(exp_scalar(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp_scalar(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_scalar(-104.0), 0.0f32.max(exp_scalar(-104.0)));
        assert_eq!(exp_scalar(f32::NAN), 0.0);
    }

    #[test]
    fn logsumexp_matches_f64() {
        let x: Vec<f32> = (0..49157).map(|i| ((i * 7919) % 1000) as f32 * 0.01 - 3.0).collect();
        let m = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let want = m + x.iter().map(|v| (*v as f64 - m).exp()).sum::<f64>().ln();
        assert!((logsumexp(&x) as f64 - want).abs() < 1e-4, "{} vs {want}", logsumexp(&x));
        let mut y = x.clone();
        y[5] = f32::NAN;
        assert!(logsumexp(&y).is_finite());
        assert_eq!(logsumexp(&[f32::NEG_INFINITY; 3]), f32::NEG_INFINITY);
    }
}
