//! Tokenization (placeholder; being written).
