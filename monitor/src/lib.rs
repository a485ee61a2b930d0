//! keel's monitoring (SPEC.md §6): the statistics behind Lakehouse-Monitoring-style
//! profile and drift metrics, and the per-request text metrics that are profiled.
//!
//! - [`stats`]: two-sample tests and distribution distances for drift metrics, each
//!   matching SciPy (KS, chi-squared, Wasserstein, Jensen–Shannon) or a documented
//!   formula (PSI, TV, L∞), plus the binning that turns raw columns into count vectors.
//! - [`profile_stats`]: per-column descriptive statistics of a profile window.
//! - [`text_metrics`]: readability grades (textstat-compatible), counts and perplexity.
//! - [`inference_table`]: the inference table itself — [`InferenceRecord`] and the
//!   [`CaptureWriter`] (write-ahead log, then Parquet parts renamed into place).
//! - [`metrics`]: the profile and drift metric tables computed from an inference table,
//!   alert rules and the terminal report (`runtime monitor`).
//!
//! Invariants: the statistics are pure functions of their inputs (no I/O, no global
//! state); no panics on any input — bad input is a [`StatsError`]; everything is
//! deterministic. The inference table and the metric tables are the crate's only I/O;
//! their failures are `std::io::Error`s (Parquet and Arrow errors wrapped), see their
//! module docs.

mod error;
pub mod inference_table;
pub mod metrics;
pub mod profile_stats;
pub mod stats;
pub mod text_metrics;

pub use error::{Result, StatsError};
pub use inference_table::{CaptureWriter, InferenceRecord, RequestMetadata};
