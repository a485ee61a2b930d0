//! Reading an inference table back: its part files (`date=YYYY-MM-DD/part-*.parquet`,
//! skipping `_`- and `.`-prefixed names as every Parquet reader does) and their rows as
//! [`InferenceRecord`]s; and reading a baseline table.
//!
//! Invariants: parts are immutable once visible (the writer renames them into place
//! whole and never rewrites one), so a part's path identifies its rows — the incremental
//! profile relies on this. Part listing is sorted, so every read is deterministic.
//! Files are streamed record batch by record batch.

use super::unpack::{self, UnpackedRow, CATEGORICAL_COLUMNS, METADATA_SLICES, NUMERIC_COLUMNS, TEXT_COLUMNS};
use crate::inference_table::{InferenceRecord, RequestMetadata};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int32Type, Int64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// One part file of an inference table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Part {
    /// Path relative to the table directory, `/`-separated (`date=2026-11-22/part-1.parquet`).
    pub name: String,
    /// The partition's day (days since the epoch), from the directory name.
    pub day: i32,
}

fn hidden(name: &str) -> bool {
    name.starts_with('_') || name.starts_with('.')
}

fn err(what: impl std::fmt::Display) -> io::Error {
    io::Error::other(what.to_string())
}

/// Days since 1970-01-01 of `YYYY-MM-DD`.
pub fn parse_date(s: &str) -> Option<i32> {
    let mut it = s.splitn(3, '-');
    let (y, m, d): (i64, i64, i64) = (it.next()?.parse().ok()?, it.next()?.parse().ok()?, it.next()?.parse().ok()?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    i32::try_from(era * 146_097 + doe - 719_468).ok()
}

/// The visible part files of the table at `dir`, sorted by name. Errors when `dir` is
/// not a directory.
pub fn list_parts(dir: &Path) -> io::Result<Vec<Part>> {
    let mut parts = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| err(format!("cannot read table {}: {e}", dir.display())))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if hidden(&name) || !entry.file_type()?.is_dir() {
            continue;
        }
        let Some(day) = name.strip_prefix("date=").and_then(parse_date) else { continue };
        for file in fs::read_dir(entry.path())? {
            let file = file?;
            let f = file.file_name().to_string_lossy().into_owned();
            if !hidden(&f) && f.ends_with(".parquet") && file.file_type()?.is_file() {
                parts.push(Part { name: format!("{name}/{f}"), day });
            }
        }
    }
    parts.sort();
    Ok(parts)
}

/// Record batches of one Parquet file.
fn batches(path: &Path) -> io::Result<impl Iterator<Item = io::Result<RecordBatch>>> {
    let file = fs::File::open(path).map_err(|e| err(format!("cannot open {}: {e}", path.display())))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.with_batch_size(4096).build())
        .map_err(|e| err(format!("{} is not a readable Parquet file: {e}", path.display())))?;
    let shown = path.display().to_string();
    Ok(reader.map(move |b| b.map_err(|e| err(format!("{shown}: {e}")))))
}

fn column<'a>(b: &'a RecordBatch, name: &str, path: &Path) -> io::Result<&'a dyn Array> {
    b.column_by_name(name)
        .map(|c| c.as_ref())
        .ok_or_else(|| err(format!("{}: no column {name:?}; is this an inference table?", path.display())))
}

/// The number of rows of part `part` and its latest `timestamp_ms`, from the Parquet
/// footer alone (row counts and column statistics, which the writer always records);
/// reads the timestamp column only when a row group has no statistics for it.
pub fn part_summary(dir: &Path, part: &Part) -> io::Result<(usize, Option<i64>)> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::file::statistics::Statistics;
    let path = dir.join(&part.name);
    let file = fs::File::open(&path).map_err(|e| err(format!("cannot open {}: {e}", path.display())))?;
    let reader = SerializedFileReader::new(file)
        .map_err(|e| err(format!("{} is not a readable Parquet file: {e}", path.display())))?;
    let meta = reader.metadata();
    let rows = usize::try_from(meta.file_metadata().num_rows()).unwrap_or(0);
    let Some(ts) = meta.file_metadata().schema_descr().columns().iter().position(|c| c.name() == "timestamp_ms") else {
        return Err(err(format!("{}: no column \"timestamp_ms\"; is this an inference table?", path.display())));
    };
    let mut last: Option<i64> = None;
    for rg in meta.row_groups() {
        match rg.column(ts).statistics() {
            Some(Statistics::Int64(s)) => last = s.max_opt().copied().into_iter().chain(last).max(),
            _ if rg.num_rows() == 0 => {}
            _ => {
                let max = read_records(&path)?.iter().map(|r| r.timestamp_ms).max();
                return Ok((rows, max));
            }
        }
    }
    Ok((rows, last))
}

/// Every row of part `part` of the table at `dir`.
pub fn read_part(dir: &Path, part: &Part) -> io::Result<Vec<InferenceRecord>> {
    read_records(&dir.join(&part.name))
}

/// The rows of one inference-table Parquet file.
pub fn read_records(path: &Path) -> io::Result<Vec<InferenceRecord>> {
    let mut out = Vec::new();
    for b in batches(path)? {
        let b = b?;
        let s = |name: &str| -> io::Result<arrow::array::StringArray> {
            let c = cast(column(&b, name, path)?, &DataType::Utf8).map_err(err)?;
            Ok(c.as_string::<i32>().clone())
        };
        let i64s = |name: &str| -> io::Result<arrow::array::Int64Array> {
            let c = cast(column(&b, name, path)?, &DataType::Int64).map_err(err)?;
            Ok(c.as_primitive::<Int64Type>().clone())
        };
        let (id, client, request, response) =
            (s("databricks_request_id")?, s("client_request_id")?, s("request")?, s("response")?);
        let (ts, exec, ttft) = (i64s("timestamp_ms")?, i64s("execution_time_ms")?, i64s("ttft_ms")?);
        let status = cast(column(&b, "status_code", path)?, &DataType::Int32).map_err(err)?;
        let status = status.as_primitive::<Int32Type>();
        let prompt = cast(column(&b, "prompt_tokens", path)?, &DataType::Int32).map_err(err)?;
        let prompt = prompt.as_primitive::<Int32Type>();
        let completion = cast(column(&b, "completion_tokens", path)?, &DataType::Int32).map_err(err)?;
        let completion = completion.as_primitive::<Int32Type>();
        let fraction = cast(column(&b, "sampling_fraction", path)?, &DataType::Float64).map_err(err)?;
        let fraction = fraction.as_primitive::<Float64Type>();
        let md = column(&b, "request_metadata", path)?
            .as_map_opt()
            .ok_or_else(|| err(format!("{}: request_metadata is not a map", path.display())))?;
        let opt_i32 = |a: &arrow::array::Int32Array, i: usize| a.is_valid(i).then(|| a.value(i));
        let opt_i64 = |a: &arrow::array::Int64Array, i: usize| a.is_valid(i).then(|| a.value(i));
        let opt_s = |a: &arrow::array::StringArray, i: usize| a.is_valid(i).then(|| a.value(i).to_string());
        for i in 0..b.num_rows() {
            let mut meta = RequestMetadata::default();
            if md.is_valid(i) {
                let entries = md.value(i);
                let keys = cast(entries.column(0), &DataType::Utf8).map_err(err)?;
                let values = cast(entries.column(1), &DataType::Utf8).map_err(err)?;
                let (keys, values) = (keys.as_string::<i32>(), values.as_string::<i32>());
                for j in 0..keys.len() {
                    let v = values.is_valid(j).then(|| values.value(j).to_string());
                    meta.set(keys.value(j), v);
                }
            }
            out.push(InferenceRecord {
                databricks_request_id: opt_s(&id, i).unwrap_or_default(),
                client_request_id: opt_s(&client, i),
                timestamp_ms: opt_i64(&ts, i).unwrap_or(0),
                status_code: opt_i32(status, i).unwrap_or(0),
                execution_time_ms: opt_i64(&exec, i).unwrap_or(0),
                sampling_fraction: if fraction.is_valid(i) { fraction.value(i) } else { 1.0 },
                request: opt_s(&request, i).unwrap_or_default(),
                response: opt_s(&response, i).unwrap_or_default(),
                request_metadata: meta,
                prompt_tokens: opt_i32(prompt, i),
                completion_tokens: opt_i32(completion, i),
                ttft_ms: opt_i64(&ttft, i),
            });
        }
    }
    Ok(out)
}

/// Checks, from its listing or Parquet footer alone, that `path` can be a baseline (see
/// [`read_baseline`]); the error says why not.
pub fn check_baseline(path: &Path) -> Result<(), String> {
    if path.is_dir() {
        return match list_parts(path) {
            Ok(parts) if parts.is_empty() => Err(format!("{} has no date=*/part-*.parquet files", path.display())),
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        };
    }
    let file = fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| format!("{} is not a readable Parquet file: {e}", path.display()))?;
    let schema = builder.schema();
    let has = |c: &str| schema.field_with_name(c).is_ok();
    if (has("request") && has("response")) || unpack::columns().any(|(c, _)| has(c)) {
        Ok(())
    } else {
        Err(not_a_baseline(path))
    }
}

/// Why the Parquet file at `path` cannot be a baseline.
fn not_a_baseline(path: &Path) -> String {
    format!(
        "{}: none of its columns is a profiled column ({}) and it is not an inference table",
        path.display(),
        unpack::columns().map(|(c, _)| c).collect::<Vec<_>>().join(", ")
    )
}

/// A baseline's rows, and the profiled columns its file does not have.
#[derive(Debug, Default)]
pub struct Baseline {
    pub rows: Vec<UnpackedRow>,
    /// Profiled columns absent from a baseline file: they have no values there, which is
    /// not the same as 100 % nulls, so drift leaves their deltas null and the baseline
    /// profile leaves them out. Always empty for an inference-table baseline.
    pub absent: BTreeSet<&'static str>,
}

/// The rows of a baseline: either an inference table (a directory, or one Parquet file
/// with the inference table's `request`/`response` columns), unpacked like the table
/// itself; or a Parquet file whose columns are profiled columns by name (any subset;
/// numbers for numeric columns, strings for the others), e.g. an export of a period the
/// user trusts or the output of `runtime monitor unpack`. In a file, `timestamp_ms` is
/// optional; `model_id` puts a row in that model's groups; `endpoint_name`,
/// `model_name`, `model_version`, `served_entity_name` and the categorical columns are
/// its slice values.
pub fn read_baseline(path: &Path) -> io::Result<Baseline> {
    if path.is_dir() {
        let mut rows = Vec::new();
        for part in list_parts(path)? {
            rows.extend(read_part(path, &part)?.iter().map(unpack::unpack));
        }
        if rows.is_empty() {
            return Err(err(format!("baseline {} has no rows", path.display())));
        }
        return Ok(Baseline { rows, absent: BTreeSet::new() });
    }
    let mut rows = Vec::new();
    let mut absent = BTreeSet::new();
    let mut inference_shaped = None;
    for b in batches(path)? {
        let b = b?;
        let shaped = *inference_shaped
            .get_or_insert_with(|| b.column_by_name("request").is_some() && b.column_by_name("response").is_some());
        if shaped {
            break;
        }
        let known = |name: &str| b.column_by_name(name);
        if !unpack::columns().any(|(c, _)| known(c).is_some()) {
            return Err(err(format!("baseline {}", not_a_baseline(path))));
        }
        let mut batch_rows = vec![UnpackedRow::default(); b.num_rows()];
        for (name, _) in unpack::columns() {
            if known(name).is_none() {
                absent.insert(name);
            }
        }
        if let Some(ts) = known("timestamp_ms") {
            let ts = cast(ts, &DataType::Int64).map_err(err)?;
            let ts = ts.as_primitive::<Int64Type>();
            for (i, r) in batch_rows.iter_mut().enumerate() {
                r.timestamp_ms = if ts.is_valid(i) { ts.value(i) } else { 0 };
            }
        }
        for (k, name) in NUMERIC_COLUMNS.iter().enumerate() {
            let Some(c) = known(name) else { continue };
            let c = cast(c, &DataType::Float64)
                .map_err(|e| err(format!("baseline column {name}: {e} (a numeric column is expected)")))?;
            let c = c.as_primitive::<Float64Type>();
            for (i, r) in batch_rows.iter_mut().enumerate() {
                r.numeric[k] = (c.is_valid(i) && c.value(i).is_finite()).then(|| c.value(i));
            }
        }
        let strings = |name: &str| -> io::Result<Option<arrow::array::StringArray>> {
            let Some(c) = known(name) else { return Ok(None) };
            let c = cast(c, &DataType::Utf8).map_err(|e| err(format!("baseline column {name}: {e}")))?;
            Ok(Some(c.as_string::<i32>().clone()))
        };
        if let Some(c) = strings("model_id")? {
            for (i, r) in batch_rows.iter_mut().enumerate() {
                r.model_id = c.is_valid(i).then(|| c.value(i).to_string());
            }
        }
        for name in METADATA_SLICES {
            let Some(c) = strings(name)? else { continue };
            for (i, r) in batch_rows.iter_mut().enumerate().filter(|(i, _)| c.is_valid(*i)) {
                r.slices.insert(name.to_string(), c.value(i).to_string());
            }
        }
        for (k, name) in CATEGORICAL_COLUMNS.iter().enumerate() {
            let Some(c) = strings(name)? else { continue };
            for (i, r) in batch_rows.iter_mut().enumerate() {
                r.categorical[k] = c.is_valid(i).then(|| c.value(i).to_string());
                if let Some(v) = &r.categorical[k] {
                    r.slices.insert(name.to_string(), v.clone());
                }
            }
        }
        for (k, name) in TEXT_COLUMNS.iter().enumerate() {
            let Some(c) = strings(name)? else { continue };
            for (i, r) in batch_rows.iter_mut().enumerate() {
                r.text[k] = c.is_valid(i).then(|| c.value(i).to_string());
            }
        }
        rows.extend(batch_rows);
    }
    if inference_shaped == Some(true) {
        rows = read_records(path)?.iter().map(unpack::unpack).collect();
        absent.clear();
    }
    if rows.is_empty() {
        return Err(err(format!("baseline {} has no rows", path.display())));
    }
    Ok(Baseline { rows, absent })
}

/// The table directory a `--table` argument names: a path (absolute, or containing a
/// separator) as is, else `<tables_dir>/<name>`.
pub fn table_dir(tables_dir: &Path, table: &str) -> PathBuf {
    if table.contains('/') || table.contains(std::path::MAIN_SEPARATOR) {
        PathBuf::from(table)
    } else {
        tables_dir.join(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_summary_matches_the_rows() {
        use crate::inference_table::parquet_part::{part_path, write_part};
        use crate::inference_table::wal::tests::record;
        let dir = std::env::temp_dir().join(format!("keel-source-{}", uuid::Uuid::new_v4().simple()));
        let ts = 1_763_800_000_000;
        let recs: Vec<_> = [5, 1, 9, 3].iter().map(|&i| record(i, ts + 1000 * i as i64)).collect();
        let refs: Vec<&InferenceRecord> = recs.iter().collect();
        write_part(&part_path(&dir, recs[0].date_days(), "s1"), &refs).unwrap();
        let parts = list_parts(&dir).unwrap();
        assert_eq!(parts.len(), 1);
        let rows = read_part(&dir, &parts[0]).unwrap();
        let expected = (rows.len(), rows.iter().map(|r| r.timestamp_ms).max());
        assert_eq!(part_summary(&dir, &parts[0]).unwrap(), expected);
        assert_eq!(expected, (4, Some(ts + 9000)));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn dates_round_trip() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2026-11-23"), Some(20_780));
        assert_eq!(parse_date("2000-02-29"), Some(11_016));
        for d in [-1000, 0, 11_016, 20_780, 40_000] {
            assert_eq!(parse_date(&crate::inference_table::format_date(d)), Some(d));
        }
        assert_eq!(parse_date("2026-13-01"), None);
        assert_eq!(parse_date("x"), None);
    }
}
