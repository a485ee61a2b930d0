//! The Parquet side of an inference table: the Arrow schema of SPEC.md §6.1, the
//! conversion of records to a `RecordBatch`, and the atomic write of one part file.
//!
//! Invariants: every part has exactly [`schema`] (column order and types are the
//! contract readers rely on); a part becomes visible only whole — it is written to a
//! hidden `.part-*.tmp` name in its partition directory, fsynced, renamed into place and
//! the directory fsynced, so readers that skip dot-files (Spark, pyarrow, DuckDB) never
//! see a partial file. Parts are Snappy-compressed Parquet with one row group.

use super::record::{format_date, InferenceRecord};
use super::wal::sync_dir;
use arrow::array::{
    ArrayRef, Date32Array, Float64Array, Int32Array, Int64Array, MapBuilder, MapFieldNames, StringArray, StringBuilder,
};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Names of the map's entry struct and its fields: Parquet's `key_value` / `key` /
/// `value` (what pyarrow and Spark write), so every reader sees a standard MAP.
fn map_names() -> MapFieldNames {
    MapFieldNames { entry: "key_value".into(), key: "key".into(), value: "value".into() }
}

/// `map<string, string>`: keys never null, values nullable (an unknown model version).
fn metadata_type() -> DataType {
    let entries =
        Fields::from(vec![Field::new("key", DataType::Utf8, false), Field::new("value", DataType::Utf8, true)]);
    DataType::Map(Arc::new(Field::new("key_value", DataType::Struct(entries), false)), false)
}

/// The table's schema, column for column as SPEC.md §6.1 lists it.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("databricks_request_id", DataType::Utf8, false),
        Field::new("client_request_id", DataType::Utf8, true),
        Field::new("date", DataType::Date32, false),
        Field::new("timestamp_ms", DataType::Int64, false),
        Field::new("status_code", DataType::Int32, false),
        Field::new("execution_time_ms", DataType::Int64, false),
        Field::new("sampling_fraction", DataType::Float64, false),
        Field::new("request", DataType::Utf8, false),
        Field::new("response", DataType::Utf8, false),
        Field::new("request_metadata", metadata_type(), false),
        Field::new("prompt_tokens", DataType::Int32, true),
        Field::new("completion_tokens", DataType::Int32, true),
        Field::new("ttft_ms", DataType::Int64, true),
    ]))
}

fn arrow_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("inference table: {e}"))
}

/// The records as one batch of [`schema`].
pub fn to_batch(records: &[&InferenceRecord]) -> io::Result<RecordBatch> {
    let strings = |f: &dyn Fn(&InferenceRecord) -> &str| -> ArrayRef {
        Arc::new(records.iter().map(|r| Some(f(r))).collect::<StringArray>())
    };
    let mut metadata = MapBuilder::new(Some(map_names()), StringBuilder::new(), StringBuilder::new())
        .with_values_field(Field::new("value", DataType::Utf8, true));
    for r in records {
        for (k, v) in r.request_metadata.entries() {
            metadata.keys().append_value(k);
            metadata.values().append_option(v.as_deref());
        }
        metadata.append(true).map_err(arrow_err)?;
    }
    let columns: Vec<ArrayRef> = vec![
        strings(&|r| &r.databricks_request_id),
        Arc::new(records.iter().map(|r| r.client_request_id.as_deref()).collect::<StringArray>()),
        Arc::new(records.iter().map(|r| Some(r.date_days())).collect::<Date32Array>()),
        Arc::new(records.iter().map(|r| Some(r.timestamp_ms)).collect::<Int64Array>()),
        Arc::new(records.iter().map(|r| Some(r.status_code)).collect::<Int32Array>()),
        Arc::new(records.iter().map(|r| Some(r.execution_time_ms)).collect::<Int64Array>()),
        Arc::new(records.iter().map(|r| Some(r.sampling_fraction)).collect::<Float64Array>()),
        strings(&|r| &r.request),
        strings(&|r| &r.response),
        Arc::new(metadata.finish()),
        Arc::new(records.iter().map(|r| r.prompt_tokens).collect::<Int32Array>()),
        Arc::new(records.iter().map(|r| r.completion_tokens).collect::<Int32Array>()),
        Arc::new(records.iter().map(|r| r.ttft_ms).collect::<Int64Array>()),
    ];
    RecordBatch::try_new(schema(), columns).map_err(arrow_err)
}

/// The partition directory of a day: `<table>/date=YYYY-MM-DD`.
pub fn partition_dir(table: &Path, days: i32) -> PathBuf {
    table.join(format!("date={}", format_date(days)))
}

/// The part file that segment `segment_id` contributes to a day's partition.
pub fn part_path(table: &Path, days: i32, segment_id: &str) -> PathBuf {
    partition_dir(table, days).join(format!("part-{segment_id}.parquet"))
}

/// The hidden name a part is written under before it is renamed to `final_path`.
pub fn temp_path(final_path: &Path) -> PathBuf {
    let name = final_path.file_name().and_then(|n| n.to_str()).unwrap_or("part.parquet");
    final_path.with_file_name(format!(".{name}.tmp"))
}

/// Writes `records` as the Parquet file `final_path`, atomically (see the module doc).
pub fn write_part(final_path: &Path, records: &[&InferenceRecord]) -> io::Result<()> {
    let dir = final_path.parent().ok_or_else(|| arrow_err("a part path has a parent directory"))?;
    fs::create_dir_all(dir)?;
    let batch = to_batch(records)?;
    let tmp = temp_path(final_path);
    let file = fs::File::create(&tmp)?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_created_by(format!("keel-monitor {}", env!("CARGO_PKG_VERSION")))
        .build();
    let written = (|| {
        let mut w = ArrowWriter::try_new(file, schema(), Some(props)).map_err(arrow_err)?;
        w.write(&batch).map_err(arrow_err)?;
        let file = w.into_inner().map_err(arrow_err)?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, final_path)?;
    sync_dir(dir)
}

/// Removes `.part-*.tmp` files a crash left in the partition directories (never
/// visible to readers, and always rewritten from the WAL).
pub fn remove_stale_temps(table: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(table)? {
        let dir = entry?.path();
        let is_partition = dir.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("date="));
        if !is_partition || !dir.is_dir() {
            continue;
        }
        for f in fs::read_dir(&dir)? {
            let p = f?.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with(".part-") && name.ends_with(".tmp") {
                fs::remove_file(&p)?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference_table::wal::tests::record;
    use arrow::array::{Array, AsArray, MapArray};
    use arrow::datatypes::{Date32Type, Int32Type, Int64Type};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    pub(crate) fn read_part(path: &Path) -> Vec<RecordBatch> {
        let f = fs::File::open(path).unwrap();
        ParquetRecordBatchReaderBuilder::try_new(f).unwrap().build().unwrap().map(|b| b.unwrap()).collect()
    }

    #[test]
    fn parts_have_the_spec_schema_and_values() {
        let dir = std::env::temp_dir().join(format!("keel-part-{}", uuid::Uuid::new_v4().simple()));
        let recs: Vec<_> = (0..5).map(|i| record(i, 1_709_251_199_000 + i as i64 * 1000)).collect();
        let refs: Vec<&InferenceRecord> = recs.iter().collect();
        let path = part_path(&dir, recs[0].date_days(), "seg");
        assert!(path.ends_with("date=2024-02-29/part-seg.parquet"), "{}", path.display());
        write_part(&path, &refs).unwrap();
        assert!(!temp_path(&path).exists());
        let batches = read_part(&path);
        assert_eq!(batches.len(), 1);
        let b = &batches[0];
        // Schema: names, types and nullability exactly as written, parquet round trip included.
        assert_eq!(b.schema().fields(), schema().fields());
        let want = [
            ("databricks_request_id", "Utf8"),
            ("client_request_id", "Utf8"),
            ("date", "Date32"),
            ("timestamp_ms", "Int64"),
            ("status_code", "Int32"),
            ("execution_time_ms", "Int64"),
            ("sampling_fraction", "Float64"),
            ("request", "Utf8"),
            ("response", "Utf8"),
            ("request_metadata", "Map"),
            ("prompt_tokens", "Int32"),
            ("completion_tokens", "Int32"),
            ("ttft_ms", "Int64"),
        ];
        for (f, (name, ty)) in b.schema().fields().iter().zip(want) {
            assert_eq!(f.name(), name);
            assert!(format!("{:?}", f.data_type()).starts_with(ty), "{name}: {:?}", f.data_type());
        }
        assert_eq!(b.num_rows(), 5);
        let ids = b.column(0).as_string::<i32>();
        let client = b.column(1).as_string::<i32>();
        let date = b.column(2).as_primitive::<Date32Type>();
        let status = b.column(4).as_primitive::<Int32Type>();
        let ttft = b.column(12).as_primitive::<Int64Type>();
        for (i, r) in recs.iter().enumerate() {
            assert_eq!(ids.value(i), r.databricks_request_id);
            assert_eq!(client.is_null(i), r.client_request_id.is_none());
            assert_eq!(date.value(i), r.date_days());
            assert_eq!(status.value(i), r.status_code);
            assert_eq!(ttft.is_null(i), r.ttft_ms.is_none());
            assert_eq!(b.column(8).as_string::<i32>().value(i), r.response);
        }
        // The map: five keys per row, model_version null where unknown.
        let m = b.column(9).as_any().downcast_ref::<MapArray>().unwrap();
        let row0 = m.value(0);
        let keys = row0.column(0).as_string::<i32>();
        let vals = row0.column(1).as_string::<i32>();
        let got: Vec<(&str, Option<&str>)> =
            (0..keys.len()).map(|j| (keys.value(j), (!vals.is_null(j)).then(|| vals.value(j)))).collect();
        assert_eq!(
            got,
            [
                ("endpoint_name", Some("default")),
                ("model_name", Some("tiny")),
                ("model_version", Some("3")),
                ("served_entity_name", Some("tiny-3")),
                ("response_mean_logprob", Some("-0"))
            ]
        );
        assert!(m.value(1).column(1).is_null(2), "record 1 has no model version");
        // A stale temp is cleaned up; the part is not.
        fs::write(temp_path(&path), b"half").unwrap();
        assert_eq!(remove_stale_temps(&dir).unwrap(), 1);
        assert!(path.exists());
        let _ = fs::remove_dir_all(&dir);
    }
}
