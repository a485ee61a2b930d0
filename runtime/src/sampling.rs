//! Sampling (placeholder; being written).
