//! Two-sample statistics for drift metrics (SPEC.md §6.2), each matching a SciPy/numpy
//! reference to 1e-6 relative or better (`tests/scipy_reference.rs` checks them against
//! values recorded by `tools/make_monitor_reference.py`).
//!
//! Invariants shared by every function here: inputs are plain slices, validated up front
//! (non-empty, finite, and for count vectors non-negative with a positive total and equal
//! lengths); bad input is a [`StatsError`](crate::StatsError), never a panic, and a
//! p-value or distance is never NaN for valid input (one documented exception: a forced
//! asymptotic KS test on two single values, where SciPy gives NaN too).
//!
//! | drift metric | function | reference |
//! |---|---|---|
//! | `ks_test` | [`ks_2samp`] | `scipy.stats.ks_2samp(a, b)` |
//! | `chi_squared_test` | [`chi_squared_test`] | `scipy.stats.chi2_contingency([a, b], correction=False)` |
//! | `wasserstein_distance` | [`wasserstein_distance`] | `scipy.stats.wasserstein_distance(a, b)` |
//! | `js_distance` | [`js_distance`] | `scipy.spatial.distance.jensenshannon(p, q)` |
//! | `population_stability_index` | [`population_stability_index`] | Σ (a − e) ln(a/e), ε-floored |
//! | `tv_distance` | [`tv_distance`] | ½ Σ \|p − q\| |
//! | `l_infinity_distance` | [`l_infinity_distance`] | max \|p − q\| |

mod binning;
mod chi_squared;
mod distance;
mod input;
mod kolmogorov;
mod ks;
pub(crate) mod quantile;
mod special;
mod wasserstein;

pub use binning::{align_categorical_counts, numeric_bin_counts, AlignedCounts, NumericBins, DEFAULT_NUMERIC_BINS};
pub use chi_squared::{chi_squared_test, ChiSquaredResult};
pub use distance::{js_distance, l_infinity_distance, population_stability_index, tv_distance, PSI_EPSILON};
pub use kolmogorov::kstwo_sf;
pub use ks::{ks_2samp, ks_2samp_with_method, KsMethod, KsResult, KS_MAX_EXACT_N};
pub use special::{chi2_sf, gamma_q, ln_gamma};
pub use wasserstein::wasserstein_distance;

pub(crate) use input::check_finite;
