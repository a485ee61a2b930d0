//! Stop strings (placeholder; being written).
