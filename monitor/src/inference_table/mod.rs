//! Inference tables (SPEC.md §6.1): every request to an endpoint with capture enabled
//! becomes one row of `<data_dir>/tables/<prefix>_payload/`, a Parquet table partitioned
//! `date=YYYY-MM-DD` that pyarrow, DuckDB and Spark read as it is.
//!
//! - [`record`]: [`InferenceRecord`], one row.
//! - [`wal`]: the write-ahead log (`_wal/`): CRC-framed records, torn tails ignored.
//! - [`parquet_part`]: the schema and the atomic write of one part file.
//! - [`compaction`]: WAL segment → parts, exactly once, also the crash replay.
//! - [`writer`]: [`CaptureWriter`], the bounded channel and the threads behind it.
//!
//! Durability: a record acknowledged by the writer is in the WAL file, so it survives
//! `kill -9` and reaches the table at the next start; the WAL is fdatasync'ed at most
//! 50 ms after a write, which bounds what a power loss can take. Layout:
//!
//! ```text
//! <prefix>_payload/
//!   _wal/<ms>-<uuid>.open | .wal      write-ahead log segments (readers skip `_` dirs)
//!   date=2025-01-31/part-<segment id>.parquet
//! ```

pub mod compaction;
pub mod parquet_part;
pub mod record;
pub mod wal;
pub mod writer;

pub use record::{format_date, InferenceRecord, RequestMetadata};
pub use writer::{Ack, CaptureOptions, CaptureWriter, Dropped};
