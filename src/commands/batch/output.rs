//! The output rows of `runtime batch`: every input column, unchanged, then the columns
//! batch mode adds (SPEC §5), and how one row's result becomes them.
//!
//! Added columns: `generated_text` (Utf8; null when the row failed), `prompt_tokens`,
//! `completion_tokens` (Int32; null when unknown), `finish_reason` (Utf8: `stop` or
//! `length`; null on error), `error` (Utf8, null when fine), `model_name` (Utf8) and
//! `model_version` (Utf8, the registry version number; null for a model that is not from
//! the registry). Invariant: an output batch has exactly the rows of its input batch, in
//! the same order.

use crate::commands::UsageError;
use anyhow::Result;
use arrow::array::{ArrayRef, Int32Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use std::sync::Arc;

/// The names of the added columns, in order.
pub const ADDED_COLUMNS: [&str; 7] =
    ["generated_text", "prompt_tokens", "completion_tokens", "finish_reason", "error", "model_name", "model_version"];

/// What one row produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RowResult {
    pub generated_text: Option<String>,
    pub prompt_tokens: Option<i32>,
    pub completion_tokens: Option<i32>,
    pub finish_reason: Option<&'static str>,
    pub error: Option<String>,
}

impl RowResult {
    /// A row that failed before or during generation.
    pub fn failed(error: impl Into<String>, prompt_tokens: Option<usize>) -> RowResult {
        RowResult { error: Some(error.into()), prompt_tokens: prompt_tokens.map(to_i32), ..RowResult::default() }
    }
}

pub fn to_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The model columns' values.
#[derive(Clone, Debug)]
pub struct ModelIdentity {
    pub name: String,
    pub version: Option<String>,
}

/// The output schema for `input`: its fields (and metadata), then the added columns.
/// An input that already has one of the added names is a usage error.
pub fn output_schema(input: &SchemaRef) -> Result<SchemaRef> {
    for name in ADDED_COLUMNS {
        if input.column_with_name(name).is_some() {
            return Err(UsageError(format!(
                "--input already has a column named {name}, which batch mode adds; rename or drop it first"
            ))
            .into());
        }
    }
    let mut fields: Vec<Arc<Field>> = input.fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new("generated_text", DataType::Utf8, true)));
    fields.push(Arc::new(Field::new("prompt_tokens", DataType::Int32, true)));
    fields.push(Arc::new(Field::new("completion_tokens", DataType::Int32, true)));
    fields.push(Arc::new(Field::new("finish_reason", DataType::Utf8, true)));
    fields.push(Arc::new(Field::new("error", DataType::Utf8, true)));
    fields.push(Arc::new(Field::new("model_name", DataType::Utf8, true)));
    fields.push(Arc::new(Field::new("model_version", DataType::Utf8, true)));
    Ok(Arc::new(Schema::new_with_metadata(fields, input.metadata().clone())))
}

/// `input` (this range's input rows) with the added columns from `results` (one per row).
pub fn build_batch(
    schema: &SchemaRef,
    input: &RecordBatch,
    results: &[RowResult],
    model: &ModelIdentity,
) -> Result<RecordBatch> {
    anyhow::ensure!(
        input.num_rows() == results.len(),
        "internal: {} input rows but {} results",
        input.num_rows(),
        results.len()
    );
    let n = results.len();
    let mut cols: Vec<ArrayRef> = input.columns().to_vec();
    cols.push(Arc::new(results.iter().map(|r| r.generated_text.as_deref()).collect::<StringArray>()));
    cols.push(Arc::new(results.iter().map(|r| r.prompt_tokens).collect::<Int32Array>()));
    cols.push(Arc::new(results.iter().map(|r| r.completion_tokens).collect::<Int32Array>()));
    cols.push(Arc::new(results.iter().map(|r| r.finish_reason).collect::<StringArray>()));
    cols.push(Arc::new(results.iter().map(|r| r.error.as_deref()).collect::<StringArray>()));
    cols.push(Arc::new(StringArray::from(vec![Some(model.name.as_str()); n])));
    cols.push(Arc::new(StringArray::from(vec![model.version.as_deref(); n])));
    Ok(RecordBatch::try_new(schema.clone(), cols)?)
}
