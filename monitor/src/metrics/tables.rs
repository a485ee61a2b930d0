//! The metric tables on disk: `<T>_profile_metrics` and `<T>_drift_metrics` (SPEC.md
//! §6.2), their Arrow schemas, and the atomic write and the read-back of their files.
//!
//! Layout: each table is a directory of Parquet files, `<granularity>-<window start
//! ms>.parquet` for the profile (one file per window, rewritten only when the window
//! gets new rows) and `<granularity>.parquet` for the drift, plus `_state.json` (what
//! has been profiled; readers skip `_`- and `.`-prefixed names). Columns follow
//! Lakehouse Monitoring: `window` and `window_cmp` are structs {start, end} of UTC
//! timestamps (ms), `ks_test` / `chi_squared_test` are structs {statistic, pvalue},
//! `quantiles` a list of doubles, `frequent_items` a list of {item, count}.
//!
//! Invariants: every file is written to a hidden `.name.tmp`, fsynced and renamed into
//! place, so readers only ever see whole files; every file of a table has exactly the
//! table's schema.

use super::window::Window;
use crate::profile_stats::FrequentItem;
use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Float64Builder, Int64Array, ListArray, ListBuilder, RecordBatch,
    StringArray, StructArray, TimestampMillisecondArray,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::{
    DataType, Field, Fields, Float64Type, Int64Type, Schema, SchemaRef, TimeUnit, TimestampMillisecondType,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `log_type` of rows computed from the inference table itself.
pub const LOG_TYPE_INPUT: &str = "INPUT";
/// `log_type` of rows computed from the baseline.
pub const LOG_TYPE_BASELINE: &str = "BASELINE";
/// `column_name` of the table-level rows.
pub const TABLE_COLUMN: &str = ":table";
/// `model_id` of the rows over every model together.
pub const ALL_MODELS: &str = ":all";

/// One row of `<T>_profile_metrics`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProfileRow {
    pub window: Window,
    pub granularity: String,
    pub model_id: String,
    pub slice_key: Option<String>,
    pub slice_value: Option<String>,
    pub column_name: String,
    /// `double`, `string`, or `table` for the `:table` rows.
    pub data_type: String,
    pub log_type: String,
    pub count: i64,
    pub num_nulls: Option<i64>,
    pub percent_null: Option<f64>,
    pub avg: Option<f64>,
    pub stddev: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub median: Option<f64>,
    pub quantiles: Option<Vec<f64>>,
    pub distinct_count: Option<i64>,
    pub percent_distinct: Option<f64>,
    pub frequent_items: Option<Vec<FrequentItem>>,
    pub min_length: Option<i64>,
    pub max_length: Option<i64>,
    pub avg_length: Option<f64>,
}

/// One row of `<T>_drift_metrics`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DriftRow {
    pub window: Window,
    /// The window compared against (CONSECUTIVE); `None` for BASELINE drift.
    pub window_cmp: Option<Window>,
    /// `CONSECUTIVE` or `BASELINE`.
    pub drift_type: String,
    pub granularity: String,
    pub model_id: String,
    pub slice_key: Option<String>,
    pub slice_value: Option<String>,
    pub column_name: String,
    pub data_type: String,
    pub count_delta: Option<f64>,
    pub avg_delta: Option<f64>,
    pub percent_null_delta: Option<f64>,
    /// (statistic, p-value).
    pub ks_test: Option<(f64, f64)>,
    /// (statistic, p-value).
    pub chi_squared_test: Option<(f64, f64)>,
    pub js_distance: Option<f64>,
    pub wasserstein_distance: Option<f64>,
    pub population_stability_index: Option<f64>,
    pub tv_distance: Option<f64>,
    pub l_infinity_distance: Option<f64>,
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

fn window_fields() -> Fields {
    Fields::from(vec![Field::new("start", ts_type(), false), Field::new("end", ts_type(), false)])
}

fn test_fields() -> Fields {
    Fields::from(vec![Field::new("statistic", DataType::Float64, true), Field::new("pvalue", DataType::Float64, true)])
}

fn item_fields() -> Fields {
    Fields::from(vec![Field::new("item", DataType::Utf8, true), Field::new("count", DataType::Int64, false)])
}

fn f64_field(name: &str) -> Field {
    Field::new(name, DataType::Float64, true)
}

fn key_fields(drift: bool) -> Vec<Field> {
    let mut f = vec![Field::new("window", DataType::Struct(window_fields()), false)];
    if drift {
        f.push(Field::new("window_cmp", DataType::Struct(window_fields()), true));
        f.push(Field::new("drift_type", DataType::Utf8, false));
    }
    f.extend([
        Field::new("granularity", DataType::Utf8, false),
        Field::new("model_id", DataType::Utf8, false),
        Field::new("slice_key", DataType::Utf8, true),
        Field::new("slice_value", DataType::Utf8, true),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("data_type", DataType::Utf8, false),
    ]);
    f
}

/// Schema of `<T>_profile_metrics`.
pub fn profile_schema() -> SchemaRef {
    let mut f = key_fields(false);
    f.extend([
        Field::new("log_type", DataType::Utf8, false),
        Field::new("count", DataType::Int64, false),
        Field::new("num_nulls", DataType::Int64, true),
        f64_field("percent_null"),
        f64_field("avg"),
        f64_field("stddev"),
        f64_field("min"),
        f64_field("max"),
        f64_field("median"),
        Field::new("quantiles", DataType::List(Arc::new(Field::new("item", DataType::Float64, true))), true),
        Field::new("distinct_count", DataType::Int64, true),
        f64_field("percent_distinct"),
        Field::new(
            "frequent_items",
            DataType::List(Arc::new(Field::new("item", DataType::Struct(item_fields()), true))),
            true,
        ),
        Field::new("min_length", DataType::Int64, true),
        Field::new("max_length", DataType::Int64, true),
        f64_field("avg_length"),
    ]);
    Arc::new(Schema::new(f))
}

/// Schema of `<T>_drift_metrics`.
pub fn drift_schema() -> SchemaRef {
    let mut f = key_fields(true);
    f.extend([
        f64_field("count_delta"),
        f64_field("avg_delta"),
        f64_field("percent_null_delta"),
        Field::new("ks_test", DataType::Struct(test_fields()), true),
        Field::new("chi_squared_test", DataType::Struct(test_fields()), true),
        f64_field("js_distance"),
        f64_field("wasserstein_distance"),
        f64_field("population_stability_index"),
        f64_field("tv_distance"),
        f64_field("l_infinity_distance"),
    ]);
    Arc::new(Schema::new(f))
}

fn err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("metric table: {e}"))
}

fn windows(ws: &[Option<Window>]) -> ArrayRef {
    let ts = |f: fn(&Window) -> i64| -> ArrayRef {
        Arc::new(
            ws.iter()
                .map(|w| Some(w.as_ref().map_or(0, f)))
                .collect::<TimestampMillisecondArray>()
                .with_timezone("UTC"),
        )
    };
    let nulls = NullBuffer::from(ws.iter().map(Option::is_some).collect::<Vec<bool>>());
    let nulls = (nulls.null_count() > 0).then_some(nulls);
    Arc::new(StructArray::new(window_fields(), vec![ts(|w| w.start_ms), ts(|w| w.end_ms)], nulls))
}

fn strs<'a>(it: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(it.collect::<StringArray>())
}

fn f64s(it: impl Iterator<Item = Option<f64>>) -> ArrayRef {
    Arc::new(it.collect::<Float64Array>())
}

fn i64s(it: impl Iterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(it.collect::<Int64Array>())
}

fn tests(ts: &[Option<(f64, f64)>]) -> ArrayRef {
    let nulls = NullBuffer::from(ts.iter().map(Option::is_some).collect::<Vec<bool>>());
    let nulls = (nulls.null_count() > 0).then_some(nulls);
    let stat = f64s(ts.iter().map(|t| t.map(|t| t.0)));
    let p = f64s(ts.iter().map(|t| t.map(|t| t.1).filter(|p| !p.is_nan())));
    Arc::new(StructArray::new(test_fields(), vec![stat, p], nulls))
}

/// The key columns shared by both tables (`window` .. `data_type`).
macro_rules! key_columns {
    ($rows:expr, $drift:expr) => {{
        let rows = $rows;
        let mut c: Vec<ArrayRef> = vec![windows(&rows.iter().map(|r| Some(r.window)).collect::<Vec<_>>())];
        if let Some((cmp, types)) = $drift {
            c.push(windows(cmp));
            c.push(types);
        }
        c.push(strs(rows.iter().map(|r| Some(r.granularity.as_str()))));
        c.push(strs(rows.iter().map(|r| Some(r.model_id.as_str()))));
        c.push(strs(rows.iter().map(|r| r.slice_key.as_deref())));
        c.push(strs(rows.iter().map(|r| r.slice_value.as_deref())));
        c.push(strs(rows.iter().map(|r| Some(r.column_name.as_str()))));
        c.push(strs(rows.iter().map(|r| Some(r.data_type.as_str()))));
        c
    }};
}

/// Profile rows as a batch of [`profile_schema`].
pub fn profile_batch(rows: &[ProfileRow]) -> io::Result<RecordBatch> {
    let mut c = key_columns!(rows, None::<(&[Option<Window>], ArrayRef)>);
    c.push(strs(rows.iter().map(|r| Some(r.log_type.as_str()))));
    c.push(i64s(rows.iter().map(|r| Some(r.count))));
    c.push(i64s(rows.iter().map(|r| r.num_nulls)));
    for f in [
        |r: &ProfileRow| r.percent_null,
        |r: &ProfileRow| r.avg,
        |r: &ProfileRow| r.stddev,
        |r: &ProfileRow| r.min,
        |r: &ProfileRow| r.max,
        |r: &ProfileRow| r.median,
    ] {
        c.push(f64s(rows.iter().map(f)));
    }
    let mut q = ListBuilder::new(Float64Builder::new());
    for r in rows {
        match &r.quantiles {
            Some(v) => q.append_value(v.iter().map(|&x| Some(x))),
            None => q.append_null(),
        }
    }
    c.push(Arc::new(q.finish()));
    c.push(i64s(rows.iter().map(|r| r.distinct_count)));
    c.push(f64s(rows.iter().map(|r| r.percent_distinct)));
    // frequent_items: list<struct<item, count>>.
    let items: Vec<&FrequentItem> = rows.iter().flat_map(|r| r.frequent_items.iter().flatten()).collect();
    let values = StructArray::new(
        item_fields(),
        vec![
            strs(items.iter().map(|i| Some(i.item.as_str()))),
            i64s(items.iter().map(|i| Some(i64::try_from(i.count).unwrap_or(i64::MAX)))),
        ],
        None,
    );
    let lengths = rows.iter().map(|r| r.frequent_items.as_ref().map_or(0, Vec::len));
    let nulls = NullBuffer::from(rows.iter().map(|r| r.frequent_items.is_some()).collect::<Vec<bool>>());
    let field = Arc::new(Field::new("item", DataType::Struct(item_fields()), true));
    c.push(Arc::new(ListArray::new(field, OffsetBuffer::from_lengths(lengths), Arc::new(values), Some(nulls))));
    c.push(i64s(rows.iter().map(|r| r.min_length)));
    c.push(i64s(rows.iter().map(|r| r.max_length)));
    c.push(f64s(rows.iter().map(|r| r.avg_length)));
    RecordBatch::try_new(profile_schema(), c).map_err(err)
}

/// Drift rows as a batch of [`drift_schema`].
pub fn drift_batch(rows: &[DriftRow]) -> io::Result<RecordBatch> {
    let cmp: Vec<Option<Window>> = rows.iter().map(|r| r.window_cmp).collect();
    let types = strs(rows.iter().map(|r| Some(r.drift_type.as_str())));
    let mut c = key_columns!(rows, Some((&cmp[..], types)));
    c.push(f64s(rows.iter().map(|r| r.count_delta)));
    c.push(f64s(rows.iter().map(|r| r.avg_delta)));
    c.push(f64s(rows.iter().map(|r| r.percent_null_delta)));
    c.push(tests(&rows.iter().map(|r| r.ks_test).collect::<Vec<_>>()));
    c.push(tests(&rows.iter().map(|r| r.chi_squared_test).collect::<Vec<_>>()));
    for f in [
        |r: &DriftRow| r.js_distance,
        |r: &DriftRow| r.wasserstein_distance,
        |r: &DriftRow| r.population_stability_index,
        |r: &DriftRow| r.tv_distance,
        |r: &DriftRow| r.l_infinity_distance,
    ] {
        c.push(f64s(rows.iter().map(f)));
    }
    RecordBatch::try_new(drift_schema(), c).map_err(err)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Writes `bytes` to `path` atomically: a hidden temp file in the same directory (named
/// per process and call, so concurrent writers never share one), fsynced, renamed into
/// place, directory fsynced.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.{}.{seq}.tmp", std::process::id()));
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// Holds an exclusive lock on `dir/_lock` (created if needed) until dropped: one
/// metric-table writer at a time per directory, so a read-modify-write of its state is
/// never interleaved with another run's. Blocks while another run holds it.
pub fn lock_dir(dir: &Path) -> io::Result<fs::File> {
    fs::create_dir_all(dir)?;
    let f = fs::OpenOptions::new().create(true).truncate(false).write(true).open(dir.join("_lock"))?;
    f.lock()?;
    Ok(f)
}

/// Writes `batch` as the Parquet file `path`, atomically.
pub fn write_parquet(path: &Path, batch: &RecordBatch) -> io::Result<()> {
    let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, batch.schema(), Some(props)).map_err(err)?;
    w.write(batch).map_err(err)?;
    w.close().map_err(err)?;
    write_atomic(path, &buf)
}

/// The visible Parquet files of a metric table, sorted.
pub fn table_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            !n.starts_with('_') && !n.starts_with('.') && n.ends_with(".parquet")
        })
        .map(|e| e.path())
        .collect();
    files.sort();
    Ok(files)
}

fn read_batches(dir: &Path) -> io::Result<Vec<RecordBatch>> {
    if !dir.is_dir() {
        return Err(io::Error::new(io::ErrorKind::NotFound, format!("no metric table at {}", dir.display())));
    }
    let mut out = Vec::new();
    for path in table_files(dir)? {
        let f = fs::File::open(&path)?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(f)
            .and_then(|b| b.build())
            .map_err(|e| err(format!("{}: {e}", path.display())))?;
        for b in reader {
            out.push(b.map_err(|e| err(format!("{}: {e}", path.display())))?);
        }
    }
    Ok(out)
}

/// Column access by name with a clear error when a file lacks it.
struct Cols<'a>(&'a RecordBatch);

impl<'a> Cols<'a> {
    fn get(&self, name: &str) -> io::Result<&'a ArrayRef> {
        self.0.column_by_name(name).ok_or_else(|| err(format!("a file has no column {name:?}")))
    }
    fn s(&self, name: &str, i: usize) -> io::Result<Option<String>> {
        let a = self.get(name)?.as_string_opt::<i32>().ok_or_else(|| err(format!("{name} is not a string")))?;
        Ok(a.is_valid(i).then(|| a.value(i).to_string()))
    }
    fn f(&self, name: &str, i: usize) -> io::Result<Option<f64>> {
        let a =
            self.get(name)?.as_primitive_opt::<Float64Type>().ok_or_else(|| err(format!("{name} is not a double")))?;
        Ok(a.is_valid(i).then(|| a.value(i)))
    }
    fn i(&self, name: &str, i: usize) -> io::Result<Option<i64>> {
        let a =
            self.get(name)?.as_primitive_opt::<Int64Type>().ok_or_else(|| err(format!("{name} is not a bigint")))?;
        Ok(a.is_valid(i).then(|| a.value(i)))
    }
    fn window(&self, name: &str, i: usize) -> io::Result<Option<Window>> {
        let s = self.get(name)?.as_struct_opt().ok_or_else(|| err(format!("{name} is not a struct")))?;
        if !s.is_valid(i) {
            return Ok(None);
        }
        let ts = |k: usize| s.column(k).as_primitive::<TimestampMillisecondType>().value(i);
        Ok(Some(Window { start_ms: ts(0), end_ms: ts(1) }))
    }
    fn test(&self, name: &str, i: usize) -> io::Result<Option<(f64, f64)>> {
        let s = self.get(name)?.as_struct_opt().ok_or_else(|| err(format!("{name} is not a struct")))?;
        if !s.is_valid(i) {
            return Ok(None);
        }
        let v = |k: usize| {
            let a = s.column(k).as_primitive::<Float64Type>();
            if a.is_valid(i) {
                a.value(i)
            } else {
                f64::NAN
            }
        };
        Ok(Some((v(0), v(1))))
    }
    fn s_req(&self, name: &str, i: usize) -> io::Result<String> {
        Ok(self.s(name, i)?.unwrap_or_default())
    }
}

/// Every row of the profile table at `dir` (quantiles and frequent items included).
pub fn read_profile(dir: &Path) -> io::Result<Vec<ProfileRow>> {
    let mut out = Vec::new();
    for b in read_batches(dir)? {
        let c = Cols(&b);
        let q = c.get("quantiles")?.as_list_opt::<i32>().ok_or_else(|| err("quantiles is not a list"))?;
        let fi = c.get("frequent_items")?.as_list_opt::<i32>().ok_or_else(|| err("frequent_items is not a list"))?;
        for i in 0..b.num_rows() {
            let quantiles = q.is_valid(i).then(|| {
                let v = q.value(i);
                v.as_primitive::<Float64Type>().iter().flatten().collect::<Vec<f64>>()
            });
            let frequent_items = if fi.is_valid(i) {
                let v = fi.value(i);
                let s = v.as_struct();
                let (items, counts) = (s.column(0).as_string::<i32>(), s.column(1).as_primitive::<Int64Type>());
                Some(
                    (0..s.len())
                        .map(|k| FrequentItem {
                            item: items.value(k).to_string(),
                            count: counts.value(k).max(0) as u64,
                        })
                        .collect(),
                )
            } else {
                None
            };
            out.push(ProfileRow {
                window: c.window("window", i)?.unwrap_or_default(),
                granularity: c.s_req("granularity", i)?,
                model_id: c.s_req("model_id", i)?,
                slice_key: c.s("slice_key", i)?,
                slice_value: c.s("slice_value", i)?,
                column_name: c.s_req("column_name", i)?,
                data_type: c.s_req("data_type", i)?,
                log_type: c.s_req("log_type", i)?,
                count: c.i("count", i)?.unwrap_or(0),
                num_nulls: c.i("num_nulls", i)?,
                percent_null: c.f("percent_null", i)?,
                avg: c.f("avg", i)?,
                stddev: c.f("stddev", i)?,
                min: c.f("min", i)?,
                max: c.f("max", i)?,
                median: c.f("median", i)?,
                quantiles,
                distinct_count: c.i("distinct_count", i)?,
                percent_distinct: c.f("percent_distinct", i)?,
                frequent_items,
                min_length: c.i("min_length", i)?,
                max_length: c.i("max_length", i)?,
                avg_length: c.f("avg_length", i)?,
            });
        }
    }
    Ok(out)
}

/// Every row of the drift table at `dir`.
pub fn read_drift(dir: &Path) -> io::Result<Vec<DriftRow>> {
    let mut out = Vec::new();
    for b in read_batches(dir)? {
        let c = Cols(&b);
        for i in 0..b.num_rows() {
            out.push(DriftRow {
                window: c.window("window", i)?.unwrap_or_default(),
                window_cmp: c.window("window_cmp", i)?,
                drift_type: c.s_req("drift_type", i)?,
                granularity: c.s_req("granularity", i)?,
                model_id: c.s_req("model_id", i)?,
                slice_key: c.s("slice_key", i)?,
                slice_value: c.s("slice_value", i)?,
                column_name: c.s_req("column_name", i)?,
                data_type: c.s_req("data_type", i)?,
                count_delta: c.f("count_delta", i)?,
                avg_delta: c.f("avg_delta", i)?,
                percent_null_delta: c.f("percent_null_delta", i)?,
                ks_test: c.test("ks_test", i)?,
                chi_squared_test: c.test("chi_squared_test", i)?,
                js_distance: c.f("js_distance", i)?,
                wasserstein_distance: c.f("wasserstein_distance", i)?,
                population_stability_index: c.f("population_stability_index", i)?,
                tv_distance: c.f("tv_distance", i)?,
                l_infinity_distance: c.f("l_infinity_distance", i)?,
            });
        }
    }
    Ok(out)
}
