//! Run-time choice of the SIMD instruction set.
//!
//! The level is detected once per process. `KEEL_SIMD=scalar|avx2|avx512` forces a
//! lower level (tests use it to exercise every path on one machine); asking for a
//! level the CPU lacks falls back to the best one it has, with a warning on stderr.
//! Every level computes the same function; only the scalar level is the reference.

use std::sync::OnceLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SimdLevel {
    /// Portable Rust; the reference every other level is tested against.
    Scalar,
    /// AVX2 + FMA + F16C.
    Avx2,
    /// AVX-512 F + BW + VL (+ the AVX2 set).
    Avx512,
}

impl SimdLevel {
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Scalar => "scalar",
            SimdLevel::Avx2 => "avx2",
            SimdLevel::Avx512 => "avx512",
        }
    }

    fn parse(s: &str) -> Option<SimdLevel> {
        match s.trim().to_ascii_lowercase().as_str() {
            "scalar" | "none" => Some(SimdLevel::Scalar),
            "avx2" => Some(SimdLevel::Avx2),
            "avx512" | "avx-512" => Some(SimdLevel::Avx512),
            _ => None,
        }
    }

    /// The best level this CPU supports.
    pub fn detect() -> SimdLevel {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 =
                is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c");
            // The AVX-512 kernels are compiled with avx512f, avx512bw and avx512vl.
            if avx2
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
            {
                return SimdLevel::Avx512;
            }
            if avx2 {
                return SimdLevel::Avx2;
            }
        }
        SimdLevel::Scalar
    }
}

/// The level every kernel of this process uses.
pub fn simd_level() -> SimdLevel {
    static LEVEL: OnceLock<SimdLevel> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let best = SimdLevel::detect();
        match std::env::var("KEEL_SIMD") {
            Ok(s) if !s.is_empty() => match SimdLevel::parse(&s) {
                Some(want) if want <= best => want,
                Some(want) => {
                    eprintln!("warning: KEEL_SIMD={} is not supported by this CPU; using {}", want.name(), best.name());
                    best
                }
                None => {
                    eprintln!("warning: KEEL_SIMD={s:?} is not one of scalar, avx2, avx512; using {}", best.name());
                    best
                }
            },
            _ => best,
        }
    })
}

/// Levels this CPU can run, lowest first (for tests that compare them).
pub fn available_levels() -> Vec<SimdLevel> {
    let best = SimdLevel::detect();
    [SimdLevel::Scalar, SimdLevel::Avx2, SimdLevel::Avx512].into_iter().filter(|l| *l <= best).collect()
}

/// Asks for the cache lines holding the `n` elements at `p` to be brought into the cache
/// level `HINT` names (`_MM_HINT_T0`: L1; `_MM_HINT_T1`: L2 only, for data needed after
/// the current task), from the line `p` is in: a row may start mid-line. A hint only
/// (`prefetcht*` never faults), so any pointer will do; SSE, which every x86-64 has.
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn prefetch_lines<const HINT: i32, E>(p: *const E, n: usize) {
    let (b, skew) = (p.cast::<i8>(), p as usize % 64);
    for i in (0..skew + n * size_of::<E>()).step_by(64) {
        // SAFETY: a prefetch reads nothing the program sees and never faults.
        unsafe { std::arch::x86_64::_mm_prefetch::<HINT>(b.wrapping_sub(skew).wrapping_add(i)) };
    }
}
