//! The unpacked view of an inference table as a Parquet file: one row per request with
//! its profiled columns (`runtime monitor unpack`). It is what the profile and drift
//! metrics are computed from, for users who want the per-request values themselves, and
//! it is a valid `--baseline` (its columns are the profiled columns by name).
//!
//! Columns: `databricks_request_id`, `timestamp_ms`, `model_id`, `endpoint_name`, then
//! every column of [`super::unpack::columns`] in order (numeric ones as double, the others
//! as string). Invariant: the file is written whole and renamed into place.

use super::source::{list_parts, read_part};
use super::tables::write_parquet;
use super::unpack::{unpack, CATEGORICAL_COLUMNS, NUMERIC_COLUMNS, TEXT_COLUMNS};
use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use std::io;
use std::path::Path;
use std::sync::Arc;

/// Writes the unpacked rows of the inference table at `table` to `output`; returns the
/// number of rows.
pub fn write_unpacked(table: &Path, output: &Path) -> io::Result<usize> {
    let mut ids = Vec::new();
    let mut rows = Vec::new();
    let mut endpoints = Vec::new();
    for part in list_parts(table)? {
        for r in read_part(table, &part)? {
            ids.push(r.databricks_request_id.clone());
            endpoints.push(r.request_metadata.endpoint_name.clone());
            rows.push(unpack(&r));
        }
    }
    let mut fields = vec![
        Field::new("databricks_request_id", DataType::Utf8, false),
        Field::new("timestamp_ms", DataType::Int64, false),
        Field::new("model_id", DataType::Utf8, true),
        Field::new("endpoint_name", DataType::Utf8, false),
    ];
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(ids.iter().map(|s| Some(s.as_str())).collect::<StringArray>()),
        Arc::new(rows.iter().map(|r| Some(r.timestamp_ms)).collect::<Int64Array>()),
        Arc::new(rows.iter().map(|r| r.model_id.as_deref()).collect::<StringArray>()),
        Arc::new(endpoints.iter().map(|s| Some(s.as_str())).collect::<StringArray>()),
    ];
    for (i, name) in NUMERIC_COLUMNS.iter().enumerate() {
        fields.push(Field::new(*name, DataType::Float64, true));
        columns.push(Arc::new(rows.iter().map(|r| r.numeric[i]).collect::<Float64Array>()));
    }
    for (i, name) in CATEGORICAL_COLUMNS.iter().enumerate() {
        fields.push(Field::new(*name, DataType::Utf8, true));
        columns.push(Arc::new(rows.iter().map(|r| r.categorical[i].as_deref()).collect::<StringArray>()));
    }
    for (i, name) in TEXT_COLUMNS.iter().enumerate() {
        fields.push(Field::new(*name, DataType::Utf8, true));
        columns.push(Arc::new(rows.iter().map(|r| r.text[i].as_deref()).collect::<StringArray>()));
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(io::Error::other)?;
    write_parquet(output, &batch)?;
    Ok(rows.len())
}
