//! The largest value of a row of logits and where it first occurs, for greedy sampling and
//! `logsumexp`: a 49,152-entry vocabulary row is scanned twice per generated token, so the
//! scans run 16 lanes wide (the compiler vectorizes both loops) instead of one compare and
//! branch per entry.
//!
//! Invariants: NaN is never the maximum; the maximum of an empty or all-NaN row is `-inf`.
//! A maximum is exact whatever the order of comparisons (of `+0` and `-0`, which compare
//! equal, either may come back).

const LANES: usize = 16;

/// The largest non-NaN entry of `x`; `-inf` when there is none.
pub fn max_ignoring_nan(x: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (m, &v) in lanes.iter_mut().zip(c) {
            // `v > m` is false for a NaN `v`: it is skipped.
            *m = if v > *m { v } else { *m };
        }
    }
    let mut max = f32::NEG_INFINITY;
    for &v in lanes.iter().chain(tail) {
        max = if v > max { v } else { max };
    }
    max
}

/// The index of the first entry equal to `v` (`==`: `+0` and `-0` match each other, NaN
/// matches nothing).
pub fn first_index_of(x: &[f32], v: f32) -> Option<usize> {
    let chunks = x.chunks_exact(LANES);
    let tail_start = x.len() - chunks.remainder().len();
    for (ci, c) in chunks.enumerate() {
        // Any match in the chunk (branch-free over its 16 lanes), then where.
        if c.iter().fold(false, |hit, &e| hit | (e == v)) {
            return c.iter().position(|&e| e == v).map(|j| ci * LANES + j);
        }
    }
    x[tail_start..].iter().position(|&e| e == v).map(|j| tail_start + j)
}

/// The index of the largest non-NaN entry, the first on ties (`torch.argmax`); 0 when
/// every entry is NaN or `-inf`, or the row is empty.
pub fn argmax(x: &[f32]) -> usize {
    let max = max_ignoring_nan(x);
    if max == f32::NEG_INFINITY {
        return 0;
    }
    first_index_of(x, max).expect("the maximum is an entry")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::Lcg;

    /// The one-entry-at-a-time definitions these must equal.
    fn argmax_scalar(x: &[f32]) -> usize {
        let (mut best, mut best_i) = (f32::NEG_INFINITY, 0);
        for (i, &v) in x.iter().enumerate() {
            if v > best {
                best = v;
                best_i = i;
            }
        }
        best_i
    }

    #[test]
    fn agrees_with_the_scalar_scan_on_every_length_and_special_value() {
        let mut rng = Lcg(5);
        let specials = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 3.0, -3.0];
        for len in (0usize..70).chain([1000, 49_152 + 5]) {
            for trial in 0..20 {
                let mut x: Vec<f32> = (0..len).map(|_| rng.normal()).collect();
                // Sprinkle special values and ties over some rows.
                for _ in 0..(trial % 5) * len.div_ceil(8) {
                    let i = (rng.normal().abs() * 1e6) as usize % len.max(1);
                    if len > 0 {
                        x[i] = specials[(i + trial) % specials.len()];
                    }
                }
                let want = x.iter().cloned().filter(|v| !v.is_nan()).fold(f32::NEG_INFINITY, f32::max);
                let got = max_ignoring_nan(&x);
                assert!(got == want, "len {len}: max {got} != {want}");
                assert_eq!(argmax(&x), argmax_scalar(&x), "len {len}, trial {trial}: {x:?}");
            }
        }
    }

    #[test]
    fn edge_rows() {
        assert_eq!(argmax(&[]), 0);
        assert_eq!(argmax(&[f32::NAN, f32::NAN]), 0);
        assert_eq!(argmax(&[f32::NEG_INFINITY; 40]), 0);
        assert_eq!(max_ignoring_nan(&[f32::NAN; 33]), f32::NEG_INFINITY);
        // The first of several maxima, in the tail and across chunks.
        let mut x = vec![1.0f32; 40];
        x[17] = 2.0;
        x[35] = 2.0;
        assert_eq!(argmax(&x), 17);
        x[3] = f32::INFINITY;
        assert_eq!(argmax(&x), 3);
        assert_eq!(first_index_of(&x, 5.0), None);
        assert_eq!(first_index_of(&x, f32::NAN), None);
        assert_eq!(first_index_of(&[1.0, -0.0, 0.0], 0.0), Some(1));
    }
}
