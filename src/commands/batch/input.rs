//! The input of `runtime batch`: one Parquet file or a directory of them, read as one
//! sequence of rows, streamed record batch by record batch, and this shard's share of it.
//!
//! Invariants: files are taken in sorted path order (a directory's `*.parquet` files, not
//! recursing, skipping names that start with `_` or `.` such as Spark's `_SUCCESS`); every
//! file has the same columns with the same types; a row's *global index* counts rows over
//! the files in that order, and shard `K/N` owns the rows whose global index `i` has
//! `i % N == K - 1`. Its *shard index* is its position among the shard's rows. Opening
//! reads only footers; [`ShardReader`] holds one decoded record batch (≤ [`BATCH_ROWS`]
//! rows) of one file at a time, and can start at any shard index without decoding the
//! rows before it in earlier files.

use crate::commands::UsageError;
use anyhow::{Context, Result};
use arrow::array::{RecordBatch, UInt32Array};
use arrow::datatypes::SchemaRef;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::UNIX_EPOCH;

/// Rows per decoded record batch.
pub const BATCH_ROWS: usize = 1024;

/// `--shard K/N`: 1 ≤ K ≤ N.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub k: u64,
    pub n: u64,
}

impl Shard {
    pub const ALL: Shard = Shard { k: 1, n: 1 };

    pub fn owns(&self, global: u64) -> bool {
        global % self.n == self.k - 1
    }

    /// How many of `total` rows this shard owns.
    pub fn rows_of(&self, total: u64) -> u64 {
        (total + self.n - self.k) / self.n
    }

    /// The global index of this shard's `i`-th row.
    pub fn global_of(&self, i: u64) -> u64 {
        (self.k - 1) + i * self.n
    }
}

impl FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Shard, String> {
        let bad = || format!("{s:?} is not K/N with 1 <= K <= N (e.g. 2/8)");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let k: u64 = k.trim().parse().map_err(|_| bad())?;
        let n: u64 = n.trim().parse().map_err(|_| bad())?;
        if k == 0 || n == 0 || k > n {
            return Err(bad());
        }
        Ok(Shard { k, n })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.k, self.n)
    }
}

/// One input file, as the checkpoint manifest records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFile {
    pub path: PathBuf,
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: u128,
    pub rows: u64,
}

/// Every input file, their common schema and row count.
pub struct InputSet {
    pub files: Vec<InputFile>,
    pub schema: SchemaRef,
    pub total_rows: u64,
}

fn is_data_file(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    p.is_file() && name.ends_with(".parquet") && !name.starts_with('_') && !name.starts_with('.')
}

fn open_builder(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>> {
    let f = File::open(path).map_err(|e| UsageError(format!("--input: cannot open {}: {e}", path.display())))?;
    ParquetRecordBatchReaderBuilder::try_new(f)
        .map_err(|e| UsageError(format!("--input: {} is not a readable Parquet file: {e}", path.display())).into())
}

impl InputSet {
    /// Lists and checks the input: every file opens, has a Parquet footer and the same schema.
    pub fn open(input: &Path) -> Result<InputSet> {
        let meta = std::fs::metadata(input)
            .map_err(|e| UsageError(format!("--input: cannot read {}: {e}", input.display())))?;
        let mut paths = if meta.is_dir() {
            let rd = std::fs::read_dir(input)
                .map_err(|e| UsageError(format!("--input: cannot list {}: {e}", input.display())))?;
            let mut v = Vec::new();
            for entry in rd {
                let p = entry.with_context(|| format!("listing {}", input.display()))?.path();
                if is_data_file(&p) {
                    v.push(p);
                }
            }
            if v.is_empty() {
                return Err(UsageError(format!("--input: no .parquet files in directory {}", input.display())).into());
            }
            v
        } else {
            vec![input.to_path_buf()]
        };
        paths.sort();
        let mut files = Vec::with_capacity(paths.len());
        let mut schema: Option<(SchemaRef, PathBuf)> = None;
        for path in paths {
            let b = open_builder(&path)?;
            let s = b.schema().clone();
            match &schema {
                None => schema = Some((s, path.clone())),
                Some((first, first_path)) if first.fields() != s.fields() => {
                    return Err(UsageError(format!(
                        "--input: {} has columns ({}) but {} has ({}); every file of a directory input needs the same columns and types",
                        path.display(),
                        describe_columns(&s),
                        first_path.display(),
                        describe_columns(first)
                    ))
                    .into())
                }
                Some(_) => {}
            }
            let m = std::fs::metadata(&path).with_context(|| format!("reading {}", path.display()))?;
            let mtime_ns =
                m.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
            let rows = b.metadata().file_metadata().num_rows().max(0) as u64;
            files.push(InputFile { path, size: m.len(), mtime_ns, rows });
        }
        let Some((schema, _)) = schema else {
            return Err(UsageError(format!("--input: nothing to read in {}", input.display())).into());
        };
        let total_rows = files.iter().map(|f| f.rows).sum();
        Ok(InputSet { files, schema, total_rows })
    }

    /// A reader of `shard`'s rows from shard index `start` on.
    pub fn reader(&self, shard: Shard, start: u64) -> ShardReader<'_> {
        let mut global = shard.global_of(start);
        let mut file = 0;
        while file < self.files.len() && global >= self.files[file].rows {
            global -= self.files[file].rows;
            file += 1;
        }
        ShardReader {
            set: self,
            shard,
            file,
            offset_in_file: global,
            current: None,
            next_global: shard.global_of(start),
            next_shard_index: start,
        }
    }
}

/// `name: type, ...` for error messages.
pub fn describe_columns(schema: &SchemaRef) -> String {
    schema.fields().iter().map(|f| format!("{}: {}", f.name(), f.data_type())).collect::<Vec<_>>().join(", ")
}

/// Streams one shard's rows as record batches holding only that shard's rows.
pub struct ShardReader<'a> {
    set: &'a InputSet,
    shard: Shard,
    /// The file `current` reads (or will read next).
    file: usize,
    /// Rows of `file` to skip when it is opened.
    offset_in_file: u64,
    current: Option<ParquetRecordBatchReader>,
    /// Global index of the next row `current` yields.
    next_global: u64,
    next_shard_index: u64,
}

impl ShardReader<'_> {
    /// The next non-empty batch of this shard's rows and the shard index of its first row;
    /// None at the end.
    pub fn next_batch(&mut self) -> Result<Option<(u64, RecordBatch)>> {
        loop {
            if self.current.is_none() {
                let Some(f) = self.set.files.get(self.file) else { return Ok(None) };
                let reader = open_builder(&f.path)?
                    .with_batch_size(BATCH_ROWS)
                    .with_offset(self.offset_in_file as usize)
                    .build()
                    .map_err(|e| UsageError(format!("--input: reading {}: {e}", f.path.display())))?;
                self.current = Some(reader);
            }
            let Some(reader) = self.current.as_mut() else { continue };
            match reader.next() {
                None => {
                    self.current = None;
                    self.file += 1;
                    self.offset_in_file = 0;
                }
                Some(Err(e)) => {
                    let path = self.set.files[self.file].path.display();
                    return Err(UsageError(format!("--input: reading {path}: {e}")).into());
                }
                Some(Ok(batch)) => {
                    let g0 = self.next_global;
                    self.next_global += batch.num_rows() as u64;
                    let batch = if self.shard.n == 1 {
                        batch
                    } else {
                        let idx: Vec<u32> =
                            (0..batch.num_rows() as u32).filter(|&i| self.shard.owns(g0 + i as u64)).collect();
                        if idx.is_empty() {
                            continue;
                        }
                        arrow::compute::take_record_batch(&batch, &UInt32Array::from(idx))?
                    };
                    if batch.num_rows() == 0 {
                        continue;
                    }
                    let first = self.next_shard_index;
                    self.next_shard_index += batch.num_rows() as u64;
                    return Ok(Some((first, batch)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Shard;

    #[test]
    fn shards_partition_the_rows() {
        for total in 0..20u64 {
            for n in 1..5u64 {
                let mut seen = vec![0; total as usize];
                for k in 1..=n {
                    let s = Shard { k, n };
                    let rows = s.rows_of(total);
                    assert_eq!(rows, (0..total).filter(|&i| s.owns(i)).count() as u64);
                    for i in 0..rows {
                        let g = s.global_of(i);
                        assert!(s.owns(g));
                        seen[g as usize] += 1;
                    }
                }
                assert!(seen.iter().all(|&c| c == 1));
            }
        }
    }

    #[test]
    fn shard_parses_k_of_n() {
        assert_eq!("2/8".parse::<Shard>(), Ok(Shard { k: 2, n: 8 }));
        for bad in ["0/3", "4/3", "3", "a/b", "1/0"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }
}
