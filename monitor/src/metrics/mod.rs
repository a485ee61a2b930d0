//! Profile and drift metrics over an inference table (SPEC.md §6.2, Lakehouse
//! Monitoring's InferenceLog analysis), and the alerts and report built on them.
//!
//! - [`window`]: granularities and the time windows rows fall in.
//! - [`source`]: reading the inference table's parts (and a baseline).
//! - [`unpack`]: each row's profiled columns (text metrics included);
//!   [`unpacked_table`] writes them as a Parquet file (`runtime monitor unpack`).
//! - [`compute`]: grouping by model and slice; profile and drift statistics.
//! - [`tables`]: the `<T>_profile_metrics` / `<T>_drift_metrics` Parquet tables.
//! - [`refresh`]: the incremental profile run and the drift run.
//! - [`rules`] and [`report`]: `runtime monitor check` and `runtime monitor report`.

pub mod compute;
pub mod refresh;
pub mod report;
pub mod rules;
pub mod source;
pub mod tables;
pub mod unpack;
pub mod unpacked_table;
pub mod window;

pub use refresh::{drift, metric_dirs, profile, read_tables, DriftOutcome, ProfileOutcome};
pub use window::{Granularity, Window};
