//! MLflow scoring protocol input parsing: the body of `POST /invocations` (SPEC §2).
//!
//! Pure functions, no HTTP types. The handler calls [`body_format`] on the
//! `Content-Type` header, then either [`parse_csv`] on the raw bytes, or parses JSON,
//! checks [`is_unified_llm_body`] (those bodies are answered in OpenAI shape and never
//! reach [`parse_json`]) and calls [`parse_json`].
//!
//! Invariants of a successful parse ([`ScoringInput`]):
//! - `prompts` holds one prompt per input row, in row order, 1 to [`MAX_ROWS`] of them;
//! - a row's prompt is the value of its `prompt` column when it has one (which must then
//!   be a string), else the value of its first column holding a string. Column order is
//!   the order of the JSON text (serde_json's `preserve_order` is on), the order of
//!   `dataframe_split.columns`, or the CSV header order;
//! - `params` is the body's `params` object (empty when absent or `null`; never for CSV).
//!
//! Every error names the field at fault (`dataframe_split.data[2]`, `inputs: row 3`, ...;
//! rows are counted from 0) and maps to one HTTP answer: [`ScoringError::BadRequest`] → 400
//! `BAD_REQUEST`, [`ScoringError::InvalidParameter`] → 400 `INVALID_PARAMETER_VALUE`,
//! [`ScoringError::UnsupportedMediaType`] → 415. No input makes these functions panic.
//! Top-level keys other than the four input keys and `params` are ignored.

use serde_json::{Map, Value};

/// The most rows one request may hold.
pub const MAX_ROWS: usize = 1024;

/// The MLflow input keys; a JSON body holds exactly one of them.
const INPUT_KEYS: [&str; 4] = ["dataframe_split", "dataframe_records", "instances", "inputs"];

/// Top-level keys of the unified LLM (OpenAI-like) format.
const UNIFIED_KEYS: [&str; 3] = ["messages", "prompt", "input"];

/// The column preferred as a row's text.
const TEXT_COLUMN: &str = "prompt";

/// Longest slice of a client-supplied header echoed back in an error message.
const ECHO_MAX_CHARS: usize = 100;

/// One parsed scoring request: prompts in row order, plus optional generation params.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoringInput {
    pub prompts: Vec<String>,
    pub params: Map<String, Value>,
}

/// Why a scoring body was refused; each message names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScoringError {
    /// → HTTP 400 `BAD_REQUEST`: zero or several input keys, malformed JSON or CSV.
    #[error("{0}")]
    BadRequest(String),
    /// → HTTP 400 `INVALID_PARAMETER_VALUE`: a field of the wrong shape, a row without a
    /// usable string column, no rows or too many, `params` not an object.
    #[error("{0}")]
    InvalidParameter(String),
    /// → HTTP 415: a missing or unsupported `Content-Type`.
    #[error("{0}")]
    UnsupportedMediaType(String),
}

/// How the body is encoded, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    Csv,
}

fn invalid(msg: String) -> ScoringError {
    ScoringError::InvalidParameter(msg)
}

/// At most [`ECHO_MAX_CHARS`] characters of `s`, for error messages.
fn clip(s: &str) -> String {
    match s.char_indices().nth(ECHO_MAX_CHARS) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// Content-Type check: `application/json` or `text/csv` (media type case-insensitive),
/// whose only allowed parameter is `charset=utf-8` (case-insensitive, optionally quoted,
/// whitespace tolerant); missing or anything else → [`ScoringError::UnsupportedMediaType`]
/// naming the type and the accepted ones.
pub fn body_format(content_type: Option<&str>) -> Result<BodyFormat, ScoringError> {
    const ACCEPTED: &str = "accepted: application/json or text/csv, optionally with charset=utf-8";
    let Some(ct) = content_type else {
        return Err(ScoringError::UnsupportedMediaType(format!("missing Content-Type; {ACCEPTED}")));
    };
    let mut parts = ct.split(';');
    let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let format = match media.as_str() {
        "application/json" => BodyFormat::Json,
        "text/csv" => BodyFormat::Csv,
        _ => {
            return Err(ScoringError::UnsupportedMediaType(format!(
                "unsupported Content-Type `{}`; {ACCEPTED}",
                clip(ct.trim())
            )))
        }
    };
    for param in parts.map(str::trim).filter(|p| !p.is_empty()) {
        let utf8 = param.split_once('=').is_some_and(|(name, value)| {
            let value = value.trim();
            let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
            name.trim().eq_ignore_ascii_case("charset") && value.eq_ignore_ascii_case("utf-8")
        });
        if !utf8 {
            return Err(ScoringError::UnsupportedMediaType(format!(
                "unsupported Content-Type parameter `{}` in `{}`; {ACCEPTED}",
                clip(param),
                clip(ct.trim())
            )));
        }
    }
    Ok(format)
}

/// True when a JSON body is the "unified LLM format": an object with a top-level
/// `messages`, `prompt` or `input` and none of the four MLflow input keys. The server
/// answers those in OpenAI shape instead of `{"predictions": ...}`.
pub fn is_unified_llm_body(v: &Value) -> bool {
    let Some(obj) = v.as_object() else {
        return false;
    };
    UNIFIED_KEYS.iter().any(|k| obj.contains_key(*k)) && !INPUT_KEYS.iter().any(|k| obj.contains_key(*k))
}

/// Parses a JSON scoring body (see the module docs for the accepted shapes).
pub fn parse_json(v: &Value) -> Result<ScoringInput, ScoringError> {
    let Some(obj) = v.as_object() else {
        return Err(ScoringError::BadRequest(format!(
            "the request body must be a JSON object holding exactly one of {}",
            INPUT_KEYS.join(", ")
        )));
    };
    let present: Vec<&str> = INPUT_KEYS.iter().copied().filter(|k| obj.contains_key(*k)).collect();
    let key = match present.as_slice() {
        [key] => *key,
        [] => {
            return Err(ScoringError::BadRequest(format!(
                "the request body must hold exactly one of {}; it holds none",
                INPUT_KEYS.join(", ")
            )))
        }
        several => {
            return Err(ScoringError::BadRequest(format!(
                "the request body must hold exactly one of {}; it holds {}",
                INPUT_KEYS.join(", "),
                several.join(", ")
            )))
        }
    };
    let input = obj.get(key).unwrap_or(&Value::Null);
    let params = match obj.get("params") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err(invalid("params must be a JSON object".to_string())),
    };
    let prompts = match key {
        "dataframe_split" => dataframe_split(input)?,
        "dataframe_records" => match input {
            Value::Array(rows) => record_rows(key, rows)?,
            _ => return Err(invalid(format!("{key} must be a list of row objects"))),
        },
        _ => tensor_input(key, input)?,
    };
    if prompts.is_empty() {
        return Err(invalid(format!("{key}: no rows")));
    }
    Ok(ScoringInput { prompts, params })
}

/// Parses a CSV scoring body: a header row naming the columns, then one prompt per
/// record, taken from the `prompt` column when there is one, else the first column.
/// Quoted fields may hold commas, quotes and newlines. Invalid UTF-8 or a malformed
/// record (e.g. a different number of fields) → [`ScoringError::BadRequest`].
pub fn parse_csv(body: &[u8]) -> Result<ScoringInput, ScoringError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        ScoringError::BadRequest(format!("the CSV body is not valid UTF-8 (at byte {})", e.valid_up_to()))
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let malformed = |e: csv::Error| ScoringError::BadRequest(format!("malformed CSV body: {e}"));
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(text.as_bytes());
    let headers = reader.headers().map_err(malformed)?;
    if headers.is_empty() {
        return Err(ScoringError::BadRequest("the CSV body needs a header row naming its columns".to_string()));
    }
    let column = headers.iter().position(|h| h.trim() == TEXT_COLUMN).unwrap_or(0);
    let mut prompts = Vec::new();
    for (row, record) in reader.records().enumerate() {
        let record = record.map_err(malformed)?;
        if prompts.len() == MAX_ROWS {
            return Err(invalid(format!("CSV body: more than {MAX_ROWS} rows (the limit)")));
        }
        let text = record.get(column).ok_or_else(|| invalid(format!("CSV body: row {row} lacks the text column")))?;
        prompts.push(text.to_string());
    }
    if prompts.is_empty() {
        return Err(invalid("CSV body: no rows".to_string()));
    }
    Ok(ScoringInput { prompts, params: Map::new() })
}

fn check_row_count(field: &str, rows: usize) -> Result<(), ScoringError> {
    if rows > MAX_ROWS {
        return Err(invalid(format!("{field}: {rows} rows exceed the limit of {MAX_ROWS}")));
    }
    Ok(())
}

/// A row's prompt from its `(column name, value)` pairs in column order: the `prompt`
/// column if present (must be a string), else the first string value. Unnamed columns
/// (list rows) are passed with name `""`.
fn row_prompt<'a>(
    field: &str,
    row: usize,
    columns: impl IntoIterator<Item = (&'a str, &'a Value)>,
) -> Result<String, ScoringError> {
    let mut first_string = None;
    for (name, value) in columns {
        if name == TEXT_COLUMN {
            return match value {
                Value::String(s) => Ok(s.clone()),
                _ => Err(invalid(format!("{field}: row {row}: column `{TEXT_COLUMN}` must be a string"))),
            };
        }
        if first_string.is_none() {
            if let Value::String(s) = value {
                first_string = Some(s);
            }
        }
    }
    first_string.cloned().ok_or_else(|| invalid(format!("{field}: row {row} has no string column")))
}

/// `{"columns": [...], "data": [[...], ...], "index": [...]}`; `columns` may be absent
/// (then no column is named `prompt`), `index` is checked for length and otherwise ignored.
fn dataframe_split(v: &Value) -> Result<Vec<String>, ScoringError> {
    const F: &str = "dataframe_split";
    let Value::Object(obj) = v else {
        return Err(invalid(format!("{F} must be an object with `columns` and `data`")));
    };
    let data = match obj.get("data") {
        Some(Value::Array(rows)) => rows,
        Some(_) => return Err(invalid(format!("{F}.data must be a list of rows"))),
        None => return Err(invalid(format!("{F}.data is missing"))),
    };
    let columns: Option<Vec<&str>> = match obj.get("columns") {
        None | Some(Value::Null) => None,
        Some(Value::Array(cols)) => Some(
            cols.iter()
                .enumerate()
                .map(|(i, c)| c.as_str().ok_or_else(|| invalid(format!("{F}.columns[{i}] must be a string"))))
                .collect::<Result<_, _>>()?,
        ),
        Some(_) => return Err(invalid(format!("{F}.columns must be a list of column names"))),
    };
    match obj.get("index") {
        None | Some(Value::Null) => {}
        Some(Value::Array(index)) if index.len() == data.len() => {}
        Some(Value::Array(index)) => {
            return Err(invalid(format!("{F}.index has {} entries but {F}.data has {} rows", index.len(), data.len())))
        }
        Some(_) => return Err(invalid(format!("{F}.index must be a list"))),
    }
    check_row_count(F, data.len())?;
    data.iter()
        .enumerate()
        .map(|(r, row)| {
            let Value::Array(values) = row else {
                return Err(invalid(format!("{F}.data[{r}] must be a list of values")));
            };
            match &columns {
                Some(cols) if cols.len() != values.len() => Err(invalid(format!(
                    "{F}.data[{r}] has {} values but {F}.columns has {}",
                    values.len(),
                    cols.len()
                ))),
                Some(cols) => row_prompt(F, r, cols.iter().copied().zip(values)),
                None => row_prompt(F, r, values.iter().map(|v| ("", v))),
            }
        })
        .collect()
}

/// A list of row objects (records); column order is each object's key order.
fn record_rows(field: &str, rows: &[Value]) -> Result<Vec<String>, ScoringError> {
    check_row_count(field, rows.len())?;
    rows.iter()
        .enumerate()
        .map(|(r, row)| match row {
            Value::Object(m) => row_prompt(field, r, m.iter().map(|(k, v)| (k.as_str(), v))),
            _ => Err(invalid(format!("{field}[{r}] must be an object (a record)"))),
        })
        .collect()
}

/// `instances` / `inputs`: a single string; a list whose items are strings, record
/// objects or lists of values; or an object of columns.
fn tensor_input(field: &str, v: &Value) -> Result<Vec<String>, ScoringError> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(rows) => {
            check_row_count(field, rows.len())?;
            rows.iter()
                .enumerate()
                .map(|(r, row)| match row {
                    Value::String(s) => Ok(s.clone()),
                    Value::Object(m) => row_prompt(field, r, m.iter().map(|(k, v)| (k.as_str(), v))),
                    Value::Array(values) => row_prompt(field, r, values.iter().map(|v| ("", v))),
                    _ => Err(invalid(format!("{field}[{r}] must be a string, an object or a list"))),
                })
                .collect()
        }
        Value::Object(columns) => column_input(field, columns),
        _ => Err(invalid(format!("{field} must be a string, a list or an object of columns"))),
    }
}

/// An object of columns: either every value is a list (all of one length, one row per
/// position) or none is (a single row).
fn column_input(field: &str, columns: &Map<String, Value>) -> Result<Vec<String>, ScoringError> {
    if columns.values().all(|v| !v.is_array()) {
        if columns.is_empty() {
            return Ok(Vec::new());
        }
        let row = row_prompt(field, 0, columns.iter().map(|(k, v)| (k.as_str(), v)))?;
        return Ok(vec![row]);
    }
    let mut rows: Option<usize> = None;
    for (name, column) in columns {
        let Value::Array(values) = column else {
            return Err(invalid(format!("{field}.{name} must be a list, like the other columns")));
        };
        match rows {
            Some(n) if n != values.len() => {
                return Err(invalid(format!("{field}.{name} has {} values but other columns have {n}", values.len())))
            }
            _ => rows = Some(values.len()),
        }
    }
    let rows = rows.unwrap_or(0);
    check_row_count(field, rows)?;
    (0..rows)
        .map(|r| {
            let cells =
                columns.iter().filter_map(|(k, v)| v.as_array().and_then(|a| a.get(r)).map(|x| (k.as_str(), x)));
            row_prompt(field, r, cells)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn prompts(v: Value) -> Vec<String> {
        match parse_json(&v) {
            Ok(input) => input.prompts,
            Err(e) => panic!("{v} should parse, got {e}"),
        }
    }

    fn bad_request(v: Value) -> String {
        match parse_json(&v) {
            Err(ScoringError::BadRequest(m)) => m,
            other => panic!("{v}: expected BadRequest, got {other:?}"),
        }
    }

    fn invalid_param(v: Value) -> String {
        match parse_json(&v) {
            Err(ScoringError::InvalidParameter(m)) => m,
            other => panic!("{v}: expected InvalidParameter, got {other:?}"),
        }
    }

    fn csv_prompts(body: &str) -> Vec<String> {
        match parse_csv(body.as_bytes()) {
            Ok(input) => input.prompts,
            Err(e) => panic!("{body:?} should parse, got {e}"),
        }
    }

    fn unsupported(ct: Option<&str>) -> String {
        match body_format(ct) {
            Err(ScoringError::UnsupportedMediaType(m)) => m,
            other => panic!("{ct:?}: expected UnsupportedMediaType, got {other:?}"),
        }
    }

    #[test]
    fn content_types_accepted() {
        for (ct, want) in [
            ("application/json", BodyFormat::Json),
            ("Application/JSON", BodyFormat::Json),
            ("application/json; charset=utf-8", BodyFormat::Json),
            ("application/json;charset=UTF-8", BodyFormat::Json),
            ("  application/json ;  Charset = \"utf-8\" ", BodyFormat::Json),
            ("application/json;", BodyFormat::Json),
            ("text/csv", BodyFormat::Csv),
            ("TEXT/CSV; charset=utf-8", BodyFormat::Csv),
        ] {
            assert_eq!(body_format(Some(ct)), Ok(want), "{ct}");
        }
    }

    #[test]
    fn content_types_refused() {
        let m = unsupported(None);
        assert!(m.contains("missing") && m.contains("application/json"), "{m}");
        let m = unsupported(Some("text/plain"));
        assert!(m.contains("text/plain") && m.contains("text/csv"), "{m}");
        let m = unsupported(Some("application/json; charset=latin-1"));
        assert!(m.contains("charset=latin-1"), "{m}");
        let m = unsupported(Some("application/json; boundary=x"));
        assert!(m.contains("boundary=x"), "{m}");
        for ct in [
            "",
            "application/jsonx",
            "application/x-www-form-urlencoded",
            "application/json; charset",
            "application/json; utf-8",
            "text/csv; header=present",
        ] {
            unsupported(Some(ct));
        }
    }

    #[test]
    fn content_type_echo_is_clipped() {
        let long = format!("x/{}", "é".repeat(5000));
        let m = unsupported(Some(&long));
        assert!(m.len() < 600, "{}", m.len());
    }

    #[test]
    fn unified_llm_bodies() {
        assert!(is_unified_llm_body(&json!({"messages": []})));
        assert!(is_unified_llm_body(&json!({"prompt": "hi", "max_tokens": 3})));
        assert!(is_unified_llm_body(&json!({"input": "hi"})));
        assert!(!is_unified_llm_body(&json!({"inputs": ["hi"]})));
        assert!(!is_unified_llm_body(&json!({"prompt": "hi", "instances": ["x"]})));
        assert!(!is_unified_llm_body(&json!({"max_tokens": 3})));
        assert!(!is_unified_llm_body(&json!(["prompt"])));
        assert!(!is_unified_llm_body(&json!("prompt")));
    }

    #[test]
    fn dataframe_split_prefers_prompt_column() {
        let v = json!({"dataframe_split": {
            "columns": ["id", "note", "prompt"],
            "data": [[1, "n0", "p0"], [2, "n1", "p1"]]
        }});
        assert_eq!(prompts(v), ["p0", "p1"]);
    }

    #[test]
    fn dataframe_split_first_string_column() {
        let v = json!({"dataframe_split": {
            "index": [7, 8],
            "columns": ["id", "text", "other"],
            "data": [[1, "a", "x"], [2, "b", "y"]]
        }});
        assert_eq!(prompts(v), ["a", "b"]);
        // Without columns, the first string value of each row.
        let v = json!({"dataframe_split": {"data": [[1, "a"], ["b", 2]]}});
        assert_eq!(prompts(v), ["a", "b"]);
    }

    #[test]
    fn dataframe_split_shape_errors() {
        let m = invalid_param(json!({"dataframe_split": {
            "columns": ["a", "b"], "data": [["x", "y"], ["z"]]
        }}));
        assert!(m.contains("dataframe_split.data[1]"), "{m}");
        let m = invalid_param(json!({"dataframe_split": {"columns": ["a"]}}));
        assert!(m.contains("dataframe_split.data"), "{m}");
        let m = invalid_param(json!({"dataframe_split": {"columns": ["a"], "data": "x"}}));
        assert!(m.contains("dataframe_split.data"), "{m}");
        let m = invalid_param(json!({"dataframe_split": {"columns": [1], "data": [["x"]]}}));
        assert!(m.contains("dataframe_split.columns[0]"), "{m}");
        let m = invalid_param(json!({"dataframe_split": {"columns": "a", "data": [["x"]]}}));
        assert!(m.contains("dataframe_split.columns"), "{m}");
        let m = invalid_param(json!({"dataframe_split": {
            "columns": ["a"], "data": [["x"]], "index": [0, 1]
        }}));
        assert!(m.contains("dataframe_split.index"), "{m}");
        let m = invalid_param(json!({"dataframe_split": {"columns": ["a"], "data": ["x"]}}));
        assert!(m.contains("dataframe_split.data[0]"), "{m}");
        let m = invalid_param(json!({"dataframe_split": [["x"]]}));
        assert!(m.contains("dataframe_split"), "{m}");
        let m = invalid_param(json!({"dataframe_split": {"columns": ["a"], "data": []}}));
        assert!(m.contains("no rows"), "{m}");
    }

    #[test]
    fn prompt_column_must_be_a_string() {
        let m = invalid_param(json!({"dataframe_split": {
            "columns": ["text", "prompt"], "data": [["a", "b"], ["c", null]]
        }}));
        assert!(m.contains("row 1") && m.contains("prompt"), "{m}");
    }

    #[test]
    fn row_without_string_column_names_the_row() {
        let m = invalid_param(json!({"dataframe_records": [
            {"text": "ok"}, {"text": "ok"}, {"n": 1, "b": true}
        ]}));
        assert!(m.contains("dataframe_records") && m.contains("row 2"), "{m}");
        let m = invalid_param(json!({"inputs": [{}]}));
        assert!(m.contains("inputs") && m.contains("row 0"), "{m}");
    }

    #[test]
    fn dataframe_records_use_key_order_of_the_text() {
        // Keys deliberately not in alphabetical order: "zeta" comes first in the text.
        let v: Value = serde_json::from_str(
            r#"{"dataframe_records": [{"zeta": "z0", "alpha": "a0"}, {"id": 3, "zeta": "z1", "alpha": "a1"}]}"#,
        )
        .expect("valid JSON");
        assert_eq!(prompts(v), ["z0", "z1"]);
        let v = json!({"dataframe_records": [{"a": "x", "prompt": "p"}]});
        assert_eq!(prompts(v), ["p"]);
    }

    #[test]
    fn dataframe_records_shape_errors() {
        let m = invalid_param(json!({"dataframe_records": {"prompt": "x"}}));
        assert!(m.contains("dataframe_records"), "{m}");
        let m = invalid_param(json!({"dataframe_records": [{"prompt": "x"}, "y"]}));
        assert!(m.contains("dataframe_records[1]"), "{m}");
        let m = invalid_param(json!({"dataframe_records": []}));
        assert!(m.contains("no rows"), "{m}");
    }

    #[test]
    fn instances_and_inputs_shapes() {
        for key in ["instances", "inputs"] {
            assert_eq!(prompts(json!({key: ["a", "b", "c"]})), ["a", "b", "c"]);
            assert_eq!(prompts(json!({key: "single"})), ["single"]);
            assert_eq!(prompts(json!({key: [{"n": 1, "prompt": "p0"}, {"text": "t1"}]})), ["p0", "t1"]);
            assert_eq!(prompts(json!({key: [[1, "a"], ["b"]]})), ["a", "b"]);
            assert_eq!(prompts(json!({key: {"prompt": ["a", "b"], "n": [1, 2]}})), ["a", "b"]);
            assert_eq!(prompts(json!({key: {"n": [1, 2], "text": ["x", "y"]}})), ["x", "y"]);
            assert_eq!(prompts(json!({key: {"prompt": "one"}})), ["one"]);
        }
    }

    #[test]
    fn instances_and_inputs_errors() {
        let m = invalid_param(json!({"inputs": []}));
        assert!(m.contains("inputs") && m.contains("no rows"), "{m}");
        let m = invalid_param(json!({"instances": {}}));
        assert!(m.contains("no rows"), "{m}");
        let m = invalid_param(json!({"inputs": {"prompt": ["a", "b"], "n": [1]}}));
        assert!(m.contains("inputs.n"), "{m}");
        let m = invalid_param(json!({"inputs": {"prompt": ["a"], "n": 1}}));
        assert!(m.contains("inputs.n"), "{m}");
        let m = invalid_param(json!({"inputs": {"n": [1, 2]}}));
        assert!(m.contains("row 0"), "{m}");
        let m = invalid_param(json!({"instances": ["a", 5]}));
        assert!(m.contains("instances[1]"), "{m}");
        let m = invalid_param(json!({"inputs": 5}));
        assert!(m.contains("inputs"), "{m}");
        let m = invalid_param(json!({"inputs": null}));
        assert!(m.contains("inputs"), "{m}");
    }

    #[test]
    fn exactly_one_input_key() {
        let m = bad_request(json!({"params": {}}));
        assert!(m.contains("none") && m.contains("dataframe_split"), "{m}");
        let m = bad_request(json!({"instances": ["a"], "inputs": ["b"]}));
        assert!(m.contains("instances, inputs"), "{m}");
        let m = bad_request(json!({
            "dataframe_split": {}, "dataframe_records": [], "instances": [], "inputs": []
        }));
        assert!(m.contains("dataframe_records"), "{m}");
        bad_request(json!(["a"]));
        bad_request(json!("a"));
        bad_request(json!(null));
    }

    #[test]
    fn params_pass_through_and_must_be_an_object() {
        let v = json!({"inputs": ["a"], "params": {"max_tokens": 5, "temperature": 0.5}});
        let input = parse_json(&v).expect("parses");
        assert_eq!(input.params.get("max_tokens"), Some(&json!(5)));
        assert_eq!(input.params.len(), 2);
        let input = parse_json(&json!({"inputs": ["a"]})).expect("parses");
        assert!(input.params.is_empty());
        let input = parse_json(&json!({"inputs": ["a"], "params": null})).expect("parses");
        assert!(input.params.is_empty());
        let m = invalid_param(json!({"inputs": ["a"], "params": [1]}));
        assert!(m.contains("params"), "{m}");
        // Unknown top-level keys are ignored.
        assert_eq!(prompts(json!({"inputs": ["a"], "extra": 1})), ["a"]);
    }

    #[test]
    fn row_limit() {
        let at_limit: Vec<String> = (0..MAX_ROWS).map(|i| format!("p{i}")).collect();
        let got = prompts(json!({ "inputs": at_limit }));
        assert_eq!(got.len(), MAX_ROWS);
        assert_eq!(got[MAX_ROWS - 1], format!("p{}", MAX_ROWS - 1));
        let over: Vec<String> = (0..=MAX_ROWS).map(|i| format!("p{i}")).collect();
        for v in [
            json!({ "inputs": over.clone() }),
            json!({ "instances": { "prompt": over.clone() } }),
            json!({ "dataframe_records": over.iter().map(|p| json!({"prompt": p})).collect::<Vec<_>>() }),
            json!({ "dataframe_split": {
                "columns": ["prompt"],
                "data": over.iter().map(|p| json!([p])).collect::<Vec<_>>()
            }}),
        ] {
            let m = invalid_param(v);
            assert!(m.contains("1024"), "{m}");
        }
    }

    #[test]
    fn csv_first_column_and_prompt_column() {
        assert_eq!(csv_prompts("text,n\nhello,1\nworld,2\n"), ["hello", "world"]);
        assert_eq!(csv_prompts("n,prompt\n1,hello\n2,world"), ["hello", "world"]);
        let input = parse_csv(b"prompt\nx\n").expect("parses");
        assert!(input.params.is_empty());
    }

    #[test]
    fn csv_quoted_fields() {
        let body = "id,prompt\n1,\"a, b\"\n2,\"line1\nline2\"\n3,\"say \"\"hi\"\"\"\n4,\n";
        assert_eq!(csv_prompts(body), ["a, b", "line1\nline2", "say \"hi\"", ""]);
        assert_eq!(csv_prompts("\u{feff}prompt\r\nx\r\n"), ["x"]);
        assert_eq!(csv_prompts("prompt\nüñí\n"), ["üñí"]);
    }

    #[test]
    fn csv_errors() {
        match parse_csv(b"prompt\n\xff\xfe\n") {
            Err(ScoringError::BadRequest(m)) => assert!(m.contains("UTF-8"), "{m}"),
            other => panic!("{other:?}"),
        }
        match parse_csv(b"") {
            Err(ScoringError::BadRequest(m)) => assert!(m.contains("header"), "{m}"),
            other => panic!("{other:?}"),
        }
        match parse_csv(b"a,b\n1,2\n3\n") {
            Err(ScoringError::BadRequest(m)) => assert!(m.contains("CSV"), "{m}"),
            other => panic!("{other:?}"),
        }
        match parse_csv(b"prompt\n") {
            Err(ScoringError::InvalidParameter(m)) => assert!(m.contains("no rows"), "{m}"),
            other => panic!("{other:?}"),
        }
        let mut body = String::from("prompt\n");
        for i in 0..MAX_ROWS {
            body.push_str(&format!("p{i}\n"));
        }
        assert_eq!(csv_prompts(&body).len(), MAX_ROWS);
        body.push_str("one too many\n");
        match parse_csv(body.as_bytes()) {
            Err(ScoringError::InvalidParameter(m)) => assert!(m.contains("1024"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_display_their_message() {
        let e = ScoringError::InvalidParameter("inputs: no rows".into());
        assert_eq!(e.to_string(), "inputs: no rows");
    }
}
