//! The 1-D Wasserstein (earth mover's) distance between two empirical distributions,
//! `scipy.stats.wasserstein_distance(a, b)` without weights: W₁ = ∫ |F_a(x) − F_b(x)| dx,
//! the area between the two right-continuous ECDFs. It is in the units of the data, 0 for
//! identical samples, and for two point masses the distance between them.
//!
//! Computed as SciPy does: over the sorted pooled values x₀ ≤ ... ≤ x_{N−1},
//! Σ |F_a(xᵢ) − F_b(xᵢ)| · (x_{i+1} − xᵢ). Cost: O(N log N) for the sorts, O(N) after.

use super::input::check_sample;
use crate::error::Result;

/// `scipy.stats.wasserstein_distance(a, b)`. Errors on an empty sample or a NaN/infinite
/// value.
pub fn wasserstein_distance(a: &[f64], b: &[f64]) -> Result<f64> {
    check_sample("Wasserstein sample a", a)?;
    check_sample("Wasserstein sample b", b)?;
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (n1, n2) = (a.len() as f64, b.len() as f64);

    // Walk the pooled values in order; between consecutive pooled values both ECDFs are
    // constant, at (#a ≤ x)/n1 and (#b ≤ x)/n2.
    let (mut i, mut j) = (0usize, 0usize);
    let mut total = 0.0;
    let mut prev: Option<f64> = None;
    loop {
        let next = match (a.get(i), b.get(j)) {
            (Some(&x), Some(&y)) => x.min(y),
            (Some(&x), None) => x,
            (None, Some(&y)) => y,
            (None, None) => break,
        };
        if let Some(p) = prev {
            // F at `p` counts every value ≤ p, which i and j already do.
            total += (i as f64 / n1 - j as f64 / n2).abs() * (next - p);
        }
        while i < a.len() && a[i] <= next {
            i += 1;
        }
        while j < b.len() && b[j] <= next {
            j += 1;
        }
        prev = Some(next);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::StatsError;

    #[test]
    fn point_masses_are_their_distance_apart() {
        assert_eq!(wasserstein_distance(&[1.0], &[4.5]).unwrap(), 3.5);
        assert_eq!(wasserstein_distance(&[2.0, 2.0], &[2.0]).unwrap(), 0.0);
    }

    #[test]
    fn shift_moves_by_the_shift() {
        let a: Vec<f64> = (0..100).map(|i| (i * i % 37) as f64).collect();
        let b: Vec<f64> = a.iter().map(|x| x + 2.5).collect();
        assert!((wasserstein_distance(&a, &b).unwrap() - 2.5).abs() < 1e-12);
        assert_eq!(wasserstein_distance(&a, &a).unwrap(), 0.0);
    }

    #[test]
    fn scipy_docstring_example() {
        // scipy.stats.wasserstein_distance([0, 1, 3], [5, 6, 8]) == 5.0
        assert!((wasserstein_distance(&[0.0, 1.0, 3.0], &[5.0, 6.0, 8.0]).unwrap() - 5.0).abs() < 1e-12);
        // wasserstein_distance([3.4, 3.9, 7.5, 7.8], [4.5, 1.4]) == 2.7 (unweighted)
        let w = wasserstein_distance(&[3.4, 3.9, 7.5, 7.8], &[4.5, 1.4]).unwrap();
        assert!((w - 2.7).abs() < 1e-12, "{w}");
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(matches!(wasserstein_distance(&[], &[1.0]), Err(StatsError::Empty { .. })));
        assert!(matches!(wasserstein_distance(&[1.0], &[f64::NAN]), Err(StatsError::NonFinite { .. })));
    }
}
