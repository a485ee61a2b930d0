//! Turning one input row into prompt token ids: the text column's value, checked, put
//! into a template and, for chat templates, wrapped in the model's chat template.
//!
//! Templates: `summarize` (the user message "Summarize the following document in a few
//! sentences.\n\n{text}"), `raw` (the text itself is a completion prompt) and
//! `--template-file F` (a minijinja template; `{{ text }}` is the `--column` value and
//! every other column is there by name; the rendered text is the user message). A user
//! message goes through the model's chat template with the generation prompt; a model
//! without one gets the message text as a plain prompt (BOS added when it wants one).
//!
//! Invariants: the prompt is a pure function of the row and the template (so resumed and
//! sharded runs build the same prompts); a bad row (null, empty, invalid UTF-8, a template
//! error) is an `Err(message)` for that row only, never a panic; a bad template file is
//! found when it is loaded (syntax, names that are neither columns nor minijinja globals).

use crate::commands::UsageError;
use anyhow::Result;
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use keel_runtime::chat_template::ChatMessage;
use keel_runtime::tokenizer::Tokenizer;
use minijinja::{Environment, UndefinedBehavior, Value};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The instruction the `summarize` template puts before the document.
pub const SUMMARIZE_INSTRUCTION: &str = "Summarize the following document in a few sentences.";

/// Built-in templates (`--template`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BuiltinTemplate {
    /// A chat user message asking for a summary of the document in a few sentences.
    Summarize,
    /// The text as it is, a completion prompt (no chat template).
    Raw,
}

const TEMPLATE_NAME: &str = "template";

enum Kind {
    Summarize,
    Raw,
    File { path: PathBuf, source: String, env: Box<Environment<'static>>, columns: Vec<(String, usize)> },
}

/// Builds the prompts of one job.
pub struct PromptBuilder {
    kind: Kind,
    text_column: String,
    text_index: usize,
}

/// True for the types a text column may have.
fn is_text_type(dt: &DataType) -> bool {
    match dt {
        DataType::Utf8
        | DataType::LargeUtf8
        | DataType::Utf8View
        | DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => true,
        DataType::Dictionary(_, v) => is_text_type(v) && !matches!(**v, DataType::Dictionary(..)),
        _ => false,
    }
}

/// The text column of a batch in a form [`cell`] reads (dictionaries expanded).
pub fn normalize_text(col: &ArrayRef) -> Result<ArrayRef> {
    match col.data_type() {
        DataType::Dictionary(_, v) => Ok(arrow::compute::cast(col, v)?),
        _ => Ok(col.clone()),
    }
}

/// One text cell.
enum Cell<'a> {
    Null,
    Str(&'a str),
    Bytes(&'a [u8]),
}

fn cell(col: &dyn Array, row: usize) -> Cell<'_> {
    if col.is_null(row) {
        return Cell::Null;
    }
    match col.data_type() {
        DataType::Utf8 => Cell::Str(col.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => Cell::Str(col.as_string::<i64>().value(row)),
        DataType::Utf8View => Cell::Str(col.as_string_view().value(row)),
        DataType::Binary => Cell::Bytes(col.as_binary::<i32>().value(row)),
        DataType::LargeBinary => Cell::Bytes(col.as_binary::<i64>().value(row)),
        DataType::BinaryView => Cell::Bytes(col.as_binary_view().value(row)),
        DataType::FixedSizeBinary(_) => Cell::Bytes(col.as_fixed_size_binary().value(row)),
        _ => Cell::Null,
    }
}

/// A column's value as a template value: strings, numbers and booleans as themselves,
/// null as `none`, anything else as Arrow's display text.
pub fn value_at(col: &ArrayRef, row: usize) -> Value {
    if col.is_null(row) {
        return Value::from(());
    }
    match col.data_type() {
        DataType::Boolean => return Value::from(col.as_boolean().value(row)),
        DataType::Int8 => return Value::from(col.as_primitive::<arrow::datatypes::Int8Type>().value(row)),
        DataType::Int16 => return Value::from(col.as_primitive::<arrow::datatypes::Int16Type>().value(row)),
        DataType::Int32 => return Value::from(col.as_primitive::<arrow::datatypes::Int32Type>().value(row)),
        DataType::Int64 => return Value::from(col.as_primitive::<arrow::datatypes::Int64Type>().value(row)),
        DataType::UInt8 => return Value::from(col.as_primitive::<arrow::datatypes::UInt8Type>().value(row)),
        DataType::UInt16 => return Value::from(col.as_primitive::<arrow::datatypes::UInt16Type>().value(row)),
        DataType::UInt32 => return Value::from(col.as_primitive::<arrow::datatypes::UInt32Type>().value(row)),
        DataType::UInt64 => return Value::from(col.as_primitive::<arrow::datatypes::UInt64Type>().value(row)),
        DataType::Float32 => return Value::from(col.as_primitive::<arrow::datatypes::Float32Type>().value(row)),
        DataType::Float64 => return Value::from(col.as_primitive::<arrow::datatypes::Float64Type>().value(row)),
        _ => {}
    }
    match cell(col.as_ref(), row) {
        Cell::Str(s) => return Value::from(s),
        Cell::Bytes(b) => {
            return match std::str::from_utf8(b) {
                Ok(s) => Value::from(s),
                Err(_) => Value::from_bytes(b.to_vec()),
            }
        }
        Cell::Null => {}
    }
    match ArrayFormatter::try_new(col.as_ref(), &FormatOptions::default()) {
        Ok(f) => Value::from(f.value(row).to_string()),
        Err(_) => Value::from(()),
    }
}

impl PromptBuilder {
    /// Checks the text column and compiles the template against `schema`.
    pub fn new(
        builtin: BuiltinTemplate,
        template_file: Option<&Path>,
        schema: &SchemaRef,
        text_column: &str,
    ) -> Result<PromptBuilder> {
        let (text_index, field) = schema.column_with_name(text_column).ok_or_else(|| {
            UsageError(format!(
                "--column {text_column}: the input has no such column (columns: {})",
                super::input::describe_columns(schema)
            ))
        })?;
        if !is_text_type(field.data_type()) {
            return Err(UsageError(format!(
                "--column {text_column}: the column has type {}; it must be a string or binary column",
                field.data_type()
            ))
            .into());
        }
        let kind = match template_file {
            None => match builtin {
                BuiltinTemplate::Summarize => Kind::Summarize,
                BuiltinTemplate::Raw => Kind::Raw,
            },
            Some(path) => Self::file_kind(path, schema)?,
        };
        Ok(PromptBuilder { kind, text_column: text_column.to_string(), text_index })
    }

    fn file_kind(path: &Path, schema: &SchemaRef) -> Result<Kind> {
        let source = std::fs::read_to_string(path)
            .map_err(|e| UsageError(format!("--template-file {}: {e}", path.display())))?;
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.add_template_owned(TEMPLATE_NAME, source.clone())
            .map_err(|e| UsageError(format!("--template-file {}: {e}", path.display())))?;
        let tmpl = env.get_template(TEMPLATE_NAME).map_err(|e| UsageError(format!("--template-file: {e}")))?;
        let globals: Vec<String> = env.globals().map(|(k, _)| k.to_string()).collect();
        let mut columns = Vec::new();
        let mut unknown = Vec::new();
        let mut names: Vec<String> = tmpl.undeclared_variables(false).into_iter().collect();
        names.sort();
        for name in names {
            if name == "text" {
                continue;
            }
            match schema.index_of(&name) {
                Ok(i) => columns.push((name, i)),
                Err(_) if globals.contains(&name) => {}
                Err(_) => unknown.push(name),
            }
        }
        if !unknown.is_empty() {
            return Err(UsageError(format!(
                "--template-file {}: {} {} neither `text` nor a column of the input (columns: {})",
                path.display(),
                unknown.join(", "),
                if unknown.len() == 1 { "is" } else { "are" },
                super::input::describe_columns(schema)
            ))
            .into());
        }
        Ok(Kind::File { path: path.to_path_buf(), source, env: Box::new(env), columns })
    }

    /// What the checkpoint manifest records of the template.
    pub fn identity(&self) -> serde_json::Value {
        match &self.kind {
            Kind::Summarize => json!("summarize"),
            Kind::Raw => json!("raw"),
            Kind::File { path, source, .. } => json!({ "file": path, "source": source }),
        }
    }

    /// The text column's index in the input schema.
    pub fn text_index(&self) -> usize {
        self.text_index
    }

    /// The prompt of row `row` of `batch`, whose text column is `text` (normalized).
    pub fn build(&self, tok: &Tokenizer, batch: &RecordBatch, text: &ArrayRef, row: usize) -> Result<Vec<u32>, String> {
        let col = &self.text_column;
        let doc: &str = match cell(text.as_ref(), row) {
            Cell::Null => return Err(format!("column {col} is null")),
            Cell::Str(s) => s,
            Cell::Bytes(b) => std::str::from_utf8(b).map_err(|e| {
                format!("column {col} is not valid UTF-8 (invalid bytes at offset {})", e.valid_up_to())
            })?,
        };
        if doc.trim().is_empty() {
            return Err(format!("column {col} is empty"));
        }
        let content = match &self.kind {
            Kind::Raw => {
                return tok.encode(doc, true).map_err(|e| format!("tokenizing: {e}"));
            }
            Kind::Summarize => format!("{SUMMARIZE_INSTRUCTION}\n\n{doc}"),
            Kind::File { env, columns, .. } => {
                let mut ctx = BTreeMap::new();
                for (name, i) in columns {
                    ctx.insert(name.as_str(), value_at(batch.column(*i), row));
                }
                ctx.insert("text", Value::from(doc));
                let rendered = env
                    .get_template(TEMPLATE_NAME)
                    .and_then(|t| t.render(Value::from(ctx)))
                    .map_err(|e| format!("template: {e}"))?;
                if rendered.trim().is_empty() {
                    return Err("the template rendered an empty prompt".into());
                }
                rendered
            }
        };
        match tok.chat_template() {
            Some(t) => {
                let text =
                    t.render(&[ChatMessage::new("user", content)], true).map_err(|e| format!("chat template: {e}"))?;
                tok.encode(&text, false)
            }
            None => tok.encode(&content, true),
        }
        .map_err(|e| format!("tokenizing: {e}"))
    }
}
