//! keel's HTTP server (axum): OpenAI-compatible routes, the MLflow scoring protocol,
//! Databricks-style serving endpoints (traffic split, scale to zero, management REST),
//! auth, rate limits and Prometheus metrics. See ../shared/SPEC.md §2.

pub mod auth;
pub mod metrics;
pub mod rate_limit;
pub mod scoring;
