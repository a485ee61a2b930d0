//! Sample quantiles with linear interpolation, numpy's default (`np.quantile(x, q)`,
//! `method='linear'`, Hyndman & Fan type 7): the q-quantile of n sorted values sits at
//! virtual index (n − 1)·q, interpolated between its two neighbours. The arithmetic
//! follows numpy's `_lerp` step for step (from the lower neighbour when the weight is
//! below ½, from the upper one otherwise) so that results are bit-identical, which
//! matters when quantiles become bin edges and values equal to an edge must fall on the
//! same side as in numpy. Cost: O(1) per quantile on sorted input.

/// The q-quantile of `sorted` (ascending, finite, non-empty — callers guarantee it),
/// for q ∈ [0, 1].
pub(crate) fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    let virtual_index = (n - 1) as f64 * q;
    if virtual_index >= (n - 1) as f64 {
        return sorted[n - 1];
    }
    if virtual_index <= 0.0 {
        return sorted[0];
    }
    let prev = virtual_index.floor();
    let gamma = virtual_index - prev;
    let lo = prev as usize;
    let (a, b) = (sorted[lo], sorted[(lo + 1).min(n - 1)]);
    let diff = b - a;
    if gamma >= 0.5 {
        b - diff * (1.0 - gamma)
    } else {
        a + diff * gamma
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolates_like_numpy() {
        let x = [1.0, 2.0, 4.0, 8.0];
        assert_eq!(quantile_sorted(&x, 0.0), 1.0);
        assert_eq!(quantile_sorted(&x, 1.0), 8.0);
        assert_eq!(quantile_sorted(&x, 0.5), 3.0); // np.quantile([1,2,4,8], .5)
        assert_eq!(quantile_sorted(&x, 0.25), 1.75);
        assert_eq!(quantile_sorted(&x, 0.9), 6.800_000_000_000_001); // numpy: 6.800000000000001
        assert_eq!(quantile_sorted(&[5.0], 0.3), 5.0);
    }
}
