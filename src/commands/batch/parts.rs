//! Checkpoints of a batch job: `<output>.parts/` holds a `manifest.json` recording the
//! arguments that decide the output, and part files `part-<start>-<end>.parquet`, each
//! the finished output of this shard's rows `start..end` (shard indices, in input order).
//!
//! Invariants: a part file appears only complete (written to `*.tmp`, fsynced, renamed,
//! directory fsynced), so a job killed at any instant leaves whole parts and at most some
//! `*.tmp` debris, which the next run deletes. Parts are written in order, so they chain
//! `0..a, a..b, ...` with no gap or overlap; a rerun with the same manifest continues at
//! the chain's end, and a rerun whose manifest differs is refused (exit 2) naming what
//! changed rather than mixing outputs of two configurations (while no part exists yet,
//! the new manifest simply replaces the old one). Combining streams the parts,
//! one record batch at a time, into `<output>.tmp`, renames it onto `<output>` and only
//! then removes the parts directory: a crash while combining leaves the parts, and the
//! rerun combines again.

use super::input::{InputFile, BATCH_ROWS};
use crate::commands::UsageError;
use anyhow::{Context, Result};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::path::{Path, PathBuf};

const MANIFEST: &str = "manifest.json";
const FORMAT: u32 = 1;

/// The arguments that decide a job's output; two runs may share parts only if equal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub inputs: Vec<InputFile>,
    pub column: String,
    pub template: serde_json::Value,
    pub model: serde_json::Value,
    pub shard: String,
    pub max_tokens: usize,
    pub temperature: f32,
    /// The job seed; only sampled runs (temperature > 0) depend on it.
    pub seed: Option<u64>,
}

impl Manifest {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        inputs: Vec<InputFile>,
        column: &str,
        template: serde_json::Value,
        model: serde_json::Value,
        shard: String,
        max_tokens: usize,
        temperature: f32,
        seed: u64,
    ) -> Manifest {
        let seed = (temperature > 0.0).then_some(seed);
        Manifest {
            format: FORMAT,
            inputs,
            column: column.into(),
            template,
            model,
            shard,
            max_tokens,
            temperature,
            seed,
        }
    }

    /// `field: parts have X, this run has Y` for each field that differs.
    fn differences(&self, other: &Manifest) -> Vec<String> {
        let (a, b) = (serde_json::to_value(self).unwrap_or_default(), serde_json::to_value(other).unwrap_or_default());
        let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else { return vec!["manifest".into()] };
        let short = |v: Option<&serde_json::Value>| {
            let s = v.map_or("nothing".to_string(), |v| v.to_string());
            if s.chars().count() > 160 {
                format!("{}…", s.chars().take(160).collect::<String>())
            } else {
                s
            }
        };
        let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .filter(|k| a.get(*k) != b.get(*k))
            .map(|k| format!("{k}: the parts have {}, this run has {}", short(a.get(k)), short(b.get(k))))
            .collect()
    }
}

/// One finished part.
#[derive(Clone, Debug)]
struct Part {
    start: u64,
    end: u64,
    path: PathBuf,
}

/// The checkpoint directory of one job.
pub struct Parts {
    dir: PathBuf,
    parts: Vec<Part>,
}

/// `<output>.parts`
pub fn parts_dir(output: &Path) -> PathBuf {
    let mut name = output.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".parts");
    output.with_file_name(name)
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut name = p.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(suffix);
    p.with_file_name(name)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("syncing directory {}", dir.display()))
}

/// Writer settings for parts and the final file: zstd, row groups small enough that
/// the writer's buffer stays small.
fn writer_props() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_size(8 * BATCH_ROWS)
        .build()
}

/// Writes `manifest.json` atomically.
fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<()> {
    let path = dir.join(MANIFEST);
    let tmp = with_suffix(&path, ".tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(manifest)?).with_context(|| format!("writing {}", tmp.display()))?;
    File::open(&tmp).and_then(|f| f.sync_all()).with_context(|| format!("syncing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    sync_dir(dir)
}

fn parse_part_name(name: &str) -> Option<(u64, u64)> {
    let rest = name.strip_prefix("part-")?.strip_suffix(".parquet")?;
    let (s, e) = rest.split_once('-')?;
    Some((s.parse().ok()?, e.parse().ok()?))
}

impl Parts {
    /// Opens `<output>.parts/` for `manifest`: creates it, or checks that it was made by the
    /// same arguments and finds the finished parts.
    pub fn open(output: &Path, manifest: &Manifest) -> Result<Parts> {
        let dir = parts_dir(output);
        let mpath = dir.join(MANIFEST);
        if !dir.exists() {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            write_manifest(&dir, manifest)?;
            return Ok(Parts { dir, parts: Vec::new() });
        }
        let delete_hint = format!("delete {} to start over", dir.display());
        let mut parts = Vec::new();
        for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("").to_string();
            if name.ends_with(".tmp") {
                std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            } else if let Some((start, end)) = parse_part_name(&name) {
                parts.push(Part { start, end, path });
            }
        }
        if parts.is_empty() {
            // Nothing finished yet (e.g. the model failed to load): nothing to mix up.
            write_manifest(&dir, manifest)?;
            return Ok(Parts { dir, parts });
        }
        let old: Manifest = std::fs::read(&mpath)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| UsageError(format!("{} has no readable {MANIFEST}; {delete_hint}", dir.display())))?;
        let diffs = old.differences(manifest);
        if !diffs.is_empty() {
            return Err(UsageError(format!(
                "{} holds the partial output of a run with other arguments ({}); rerun with that run's arguments to resume it, or {delete_hint}",
                dir.display(),
                diffs.join("; ")
            ))
            .into());
        }
        parts.sort_by_key(|p| p.start);
        let mut next = 0;
        for p in &parts {
            if p.start != next || p.end <= p.start {
                return Err(UsageError(format!(
                    "{}: part {} does not continue the parts before it (rows from {next}); {delete_hint}",
                    dir.display(),
                    p.path.display()
                ))
                .into());
            }
            let rows = File::open(&p.path)
                .ok()
                .and_then(|f| ParquetRecordBatchReaderBuilder::try_new(f).ok())
                .map(|b| b.metadata().file_metadata().num_rows());
            if rows != Some((p.end - p.start) as i64) {
                return Err(UsageError(format!(
                    "{}: part {} is unreadable or does not hold rows {}..{}; {delete_hint}",
                    dir.display(),
                    p.path.display(),
                    p.start,
                    p.end
                ))
                .into());
            }
            next = p.end;
        }
        Ok(Parts { dir, parts })
    }

    /// Rows of this shard already finished (the shard index to continue from).
    pub fn done(&self) -> u64 {
        self.parts.last().map_or(0, |p| p.end)
    }

    /// Writes `batch`, the output of shard rows `done()..done() + batch.num_rows()`.
    pub fn write(&mut self, schema: &SchemaRef, batch: &RecordBatch) -> Result<()> {
        let start = self.done();
        let end = start + batch.num_rows() as u64;
        let path = self.dir.join(format!("part-{start:012}-{end:012}.parquet"));
        let tmp = with_suffix(&path, ".tmp");
        let f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let mut w = ArrowWriter::try_new(f, schema.clone(), Some(writer_props()))?;
        w.write(batch)?;
        let f = w.into_inner().with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all().with_context(|| format!("syncing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("renaming {}", tmp.display()))?;
        sync_dir(&self.dir)?;
        self.parts.push(Part { start, end, path });
        Ok(())
    }

    /// Streams every part, in order, into `output` (atomically) and removes the parts
    /// directory. Returns the number of rows written and how many of them have an error.
    pub fn combine(self, output: &Path, schema: &SchemaRef) -> Result<(u64, u64)> {
        let error_col = schema.index_of("error")?;
        let tmp = with_suffix(output, ".tmp");
        let f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let mut w = ArrowWriter::try_new(f, schema.clone(), Some(writer_props()))?;
        let (mut rows, mut errors) = (0u64, 0u64);
        for p in &self.parts {
            let f = File::open(&p.path).with_context(|| format!("opening {}", p.path.display()))?;
            let reader = ParquetRecordBatchReaderBuilder::try_new(f)
                .and_then(|b| b.with_batch_size(BATCH_ROWS).build())
                .with_context(|| format!("reading {}", p.path.display()))?;
            for batch in reader {
                let batch = batch.with_context(|| format!("reading {}", p.path.display()))?;
                // The part's own schema object may differ in metadata only.
                let batch = RecordBatch::try_new(schema.clone(), batch.columns().to_vec())?;
                rows += batch.num_rows() as u64;
                let e = batch.column(error_col);
                errors += (e.len() - e.null_count()) as u64;
                w.write(&batch)?;
            }
        }
        let f = w.into_inner().with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all().with_context(|| format!("syncing {}", tmp.display()))?;
        std::fs::rename(&tmp, output).with_context(|| format!("renaming {} to {}", tmp.display(), output.display()))?;
        if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        std::fs::remove_dir_all(&self.dir).with_context(|| format!("removing {}", self.dir.display()))?;
        Ok((rows, errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(max_tokens: usize) -> Manifest {
        Manifest::new(
            vec![],
            "text",
            serde_json::json!("summarize"),
            serde_json::json!({"name": "m"}),
            "1/1".into(),
            max_tokens,
            0.0,
            0,
        )
    }

    #[test]
    fn differences_name_the_changed_argument() {
        let d = manifest(64).differences(&manifest(128));
        assert_eq!(d.len(), 1);
        assert!(d[0].starts_with("max_tokens: the parts have 64, this run has 128"), "{d:?}");
        assert!(manifest(3).differences(&manifest(3)).is_empty());
    }

    #[test]
    fn part_names_round_trip() {
        assert_eq!(parse_part_name("part-000000000010-000000000020.parquet"), Some((10, 20)));
        assert_eq!(parse_part_name("part-1.parquet"), None);
        assert_eq!(parse_part_name("manifest.json"), None);
    }
}
