//! Whether `Precision::Medium` pays on this CPU: the multiply-add rate of AVX512-BF16 dot
//! products (`vdpbf16ps`, 32 per instruction) against f32 FMAs (`vfmadd231ps`, 16), on
//! one thread, measured once per process.
//!
//! Having the instruction is not enough: on AMD Zen 4 `vdpbf16ps` issues as often as an
//! f32 FMA (twice its multiply-adds), but on the Intel Xeon VMs measured on 2026-12-03
//! (two 512-bit FMA ports) it issues once every two cycles against two FMAs per cycle: half
//! the f32 rate, so the BF16 path was both approximate and 25% slower there. `medium`
//! means the caller *allows* BF16 inputs (PyTorch's `set_float32_matmul_precision`), so
//! where they do not pay the exact kernels run instead.
//!
//! The probe: 12 independent accumulators per instruction, 2048 steps (~25k instructions,
//! tens of microseconds), best of 5 for each. The gap to detect is 2x either way, far
//! above timing noise; `KEEL_BF16_DOT=1` (or `0`) overrides the measurement.

use std::arch::x86_64::*;
use std::hint::black_box;
use std::sync::OnceLock;
use std::time::Instant;

/// Multiply-adds per second on one thread: (`vdpbf16ps`, f32 `vfmadd231ps`), both zmm.
#[derive(Clone, Copy, Debug)]
pub struct Rates {
    pub bf16: f64,
    pub f32: f64,
}

/// How much faster BF16 dot products must run to be used.
const MIN_GAIN: f64 = 1.25;

/// Whether the BF16 kernels run for `Precision::Medium`: `KEEL_BF16_DOT` if set to `0`
/// or `1`, else whether `rates()` shows a gain of at least `MIN_GAIN`. Needs
/// `bf16dot::available()` (checked by the caller).
pub fn pays() -> bool {
    static PAYS: OnceLock<bool> = OnceLock::new();
    *PAYS.get_or_init(|| match std::env::var("KEEL_BF16_DOT").as_deref() {
        Ok("1") => true,
        Ok("0") => false,
        _ => {
            let r = rates();
            r.bf16 >= MIN_GAIN * r.f32
        }
    })
}

/// The measured rates (once per process). Needs `bf16dot::available()`.
pub fn rates() -> Rates {
    static RATES: OnceLock<Rates> = OnceLock::new();
    *RATES.get_or_init(|| {
        assert!(super::bf16dot::available(), "bf16_rate::rates needs AVX-512 with AVX512-BF16");
        const STEPS: usize = 2048;
        let best = |f: &dyn Fn() -> f32| {
            (0..5)
                .map(|_| {
                    let t = Instant::now();
                    black_box(f());
                    t.elapsed().as_secs_f64()
                })
                .fold(f64::INFINITY, f64::min)
                .max(1e-9)
        };
        // SAFETY: AVX-512 with AVX512-BF16 asserted above.
        let bf16 = best(&|| unsafe { bf16_steps(STEPS) });
        let f32 = best(&|| unsafe { fma_steps(STEPS) });
        let macs = (STEPS * 12 * 16) as f64;
        Rates { bf16: 2.0 * macs / bf16, f32: macs / f32 }
    })
}

/// `STEPS` × 12 independent `vdpbf16ps`.
///
/// SAFETY: AVX-512F and AVX512-BF16 available.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn bf16_steps(steps: usize) -> f32 {
    let x: __m512bh = std::mem::transmute(_mm512_set1_epi16(black_box(0x3f80)));
    let y: __m512bh = std::mem::transmute(_mm512_set1_epi16(black_box(0x3c00)));
    let mut acc = [_mm512_setzero_ps(); 12];
    for _ in 0..steps {
        for a in acc.iter_mut() {
            *a = _mm512_dpbf16_ps(*a, x, y);
        }
    }
    sum(acc)
}

/// `STEPS` × 12 independent f32 FMAs.
///
/// SAFETY: AVX-512F available.
#[target_feature(enable = "avx512f")]
unsafe fn fma_steps(steps: usize) -> f32 {
    let x = _mm512_set1_ps(black_box(1.0));
    let y = _mm512_set1_ps(black_box(2e-3));
    let mut acc = [_mm512_setzero_ps(); 12];
    for _ in 0..steps {
        for a in acc.iter_mut() {
            *a = _mm512_fmadd_ps(x, y, *a);
        }
    }
    sum(acc)
}

#[target_feature(enable = "avx512f")]
unsafe fn sum(acc: [__m512; 12]) -> f32 {
    acc.iter().map(|a| _mm512_reduce_add_ps(*a)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both probes run their instructions and give positive, finite rates; the decision
    /// follows them (unless `KEEL_BF16_DOT` overrides it).
    #[test]
    fn rates_are_measured_and_decide() {
        if !super::super::bf16dot::available() {
            return;
        }
        let r = rates();
        assert!(r.bf16.is_finite() && r.bf16 > 1e8, "{r:?}");
        assert!(r.f32.is_finite() && r.f32 > 1e8, "{r:?}");
        // SAFETY: available() checked above.
        let (b, f) = unsafe { (bf16_steps(3), fma_steps(3)) };
        // 12 lanes-sums of 16 lanes, 3 steps: 1.0·0.0078125·2 per bf16 step, 2e-3 per FMA.
        assert_eq!(b, 12.0 * 16.0 * 3.0 * 2.0 * 0.0078125);
        assert!((f - 12.0 * 16.0 * 3.0 * 2e-3).abs() < 1e-4, "{f}");
        if std::env::var_os("KEEL_BF16_DOT").is_none() {
            assert_eq!(pays(), r.bf16 >= MIN_GAIN * r.f32);
        }
    }
}
