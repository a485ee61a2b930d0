//! Unpacking an inference-table row into the columns that are profiled (SPEC.md §6.2):
//! the table's own measurements plus text metrics computed from the request and
//! response bodies.
//!
//! | column | kind | from |
//! |---|---|---|
//! | `execution_time_ms`, `ttft_ms`, `prompt_tokens`, `completion_tokens` | numeric | the table |
//! | `prompt_length`, `response_length` | numeric | characters of the unpacked texts |
//! | `response_flesch_kincaid_grade`, `response_automated_readability_index` | numeric | the response text |
//! | `response_perplexity` | numeric | the served model's own mean log-probability of its answer (`request_metadata.response_mean_logprob`, else the response's `logprobs` when the client asked for them) |
//! | `status_code`, `finish_reason` | categorical | the table; the first choice |
//! | `prompt`, `response` | text (profiled, not drift-tested) | the bodies, see below |
//!
//! Prompt text: chat `messages` (every message's text, one per line), completion
//! `prompt` (a string or a list of strings), the unified `input`, or the MLflow scoring
//! formats' `prompt` column (`dataframe_split`, `dataframe_records`, `instances`,
//! `inputs`); a body that is not JSON (CSV scoring) is its own text; anything else is
//! null. Response text: the choices' `message.content` or `text`, or the scoring
//! `predictions`, one per line; an error answer has none (null).
//!
//! Invariants: unpacking never fails — a body that cannot be read gives nulls, never an
//! error, so one odd request cannot stop a monitor run; numeric values are finite or null.

use crate::inference_table::InferenceRecord;
use crate::text_metrics;
use serde_json::Value;
use std::collections::BTreeMap;

/// What a profiled column holds, which decides its statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// Numbers: avg, stddev, quantiles; KS, Wasserstein and binned distances for drift.
    Numeric,
    /// Categories: frequent items, distinct counts; chi-squared and distances for drift.
    Categorical,
    /// Free text: string statistics (lengths, frequent items) only; its drift is measured
    /// through the numeric columns derived from it.
    Text,
}

impl ColumnKind {
    /// The `data_type` written to the metric tables.
    pub fn data_type(self) -> &'static str {
        match self {
            ColumnKind::Numeric => "double",
            ColumnKind::Categorical | ColumnKind::Text => "string",
        }
    }
}

/// Numeric columns, in the order of [`UnpackedRow::numeric`].
pub const NUMERIC_COLUMNS: [&str; 9] = [
    "execution_time_ms",
    "ttft_ms",
    "prompt_tokens",
    "completion_tokens",
    "prompt_length",
    "response_length",
    "response_flesch_kincaid_grade",
    "response_automated_readability_index",
    "response_perplexity",
];

/// Categorical columns, in the order of [`UnpackedRow::categorical`].
pub const CATEGORICAL_COLUMNS: [&str; 2] = ["status_code", "finish_reason"];

/// Text columns, in the order of [`UnpackedRow::text`].
pub const TEXT_COLUMNS: [&str; 2] = ["prompt", "response"];

/// `request_metadata` keys a profile can be sliced by, besides the categorical columns.
pub const METADATA_SLICES: [&str; 4] = ["endpoint_name", "model_name", "model_version", "served_entity_name"];

/// Every profiled column with its kind, in table order.
pub fn columns() -> impl Iterator<Item = (&'static str, ColumnKind)> {
    NUMERIC_COLUMNS
        .iter()
        .map(|&c| (c, ColumnKind::Numeric))
        .chain(CATEGORICAL_COLUMNS.iter().map(|&c| (c, ColumnKind::Categorical)))
        .chain(TEXT_COLUMNS.iter().map(|&c| (c, ColumnKind::Text)))
}

/// One request, unpacked.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UnpackedRow {
    pub timestamp_ms: i64,
    /// `model_name:model_version` (`model_name` alone outside the registry); `None` for a
    /// request refused before a model was chosen.
    pub model_id: Option<String>,
    /// The slicing values: `request_metadata` entries and the categorical columns.
    pub slices: BTreeMap<String, String>,
    pub numeric: [Option<f64>; NUMERIC_COLUMNS.len()],
    pub categorical: [Option<String>; CATEGORICAL_COLUMNS.len()],
    pub text: [Option<String>; TEXT_COLUMNS.len()],
}

impl UnpackedRow {
    /// The value of a slicing key, if the row has one.
    pub fn slice_value(&self, key: &str) -> Option<&str> {
        self.slices.get(key).map(String::as_str)
    }
}

/// Whether `key` names something a profile can be sliced by.
pub fn is_slice_key(key: &str) -> bool {
    METADATA_SLICES.contains(&key) || CATEGORICAL_COLUMNS.contains(&key)
}

/// `model_name:model_version`, or the name alone when there is no version.
pub fn model_id(model_name: Option<&str>, model_version: Option<&str>) -> Option<String> {
    let name = model_name?;
    Some(match model_version {
        Some(v) => format!("{name}:{v}"),
        None => name.to_string(),
    })
}

/// Unpacks one inference-table row.
pub fn unpack(r: &InferenceRecord) -> UnpackedRow {
    let request: Option<Value> = serde_json::from_str(&r.request).ok();
    let response: Option<Value> = serde_json::from_str(&r.response).ok();
    let prompt = match &request {
        Some(v) => prompt_text(v),
        None if !r.request.trim().is_empty() => Some(r.request.clone()),
        None => None,
    };
    let ok = (200..300).contains(&r.status_code);
    let response_text = response.as_ref().filter(|_| ok).and_then(response_text);
    let finish_reason = response.as_ref().filter(|_| ok).and_then(first_finish_reason);
    let md = &r.request_metadata;
    let perplexity = md
        .response_mean_logprob
        .map(|m| (-m).exp())
        .or_else(|| response.as_ref().filter(|_| ok).and_then(response_perplexity))
        .filter(|p| p.is_finite());
    let chars = |t: &Option<String>| t.as_ref().map(|t| t.chars().count() as f64);

    let mut slices = BTreeMap::new();
    slices.insert("endpoint_name".to_string(), md.endpoint_name.clone());
    for (k, v) in [
        ("model_name", &md.model_name),
        ("model_version", &md.model_version),
        ("served_entity_name", &md.served_entity_name),
    ] {
        if let Some(v) = v {
            slices.insert(k.to_string(), v.clone());
        }
    }
    let status = r.status_code.to_string();
    slices.insert("status_code".to_string(), status.clone());
    if let Some(f) = &finish_reason {
        slices.insert("finish_reason".to_string(), f.clone());
    }

    UnpackedRow {
        timestamp_ms: r.timestamp_ms,
        model_id: model_id(md.model_name.as_deref(), md.model_version.as_deref()),
        slices,
        numeric: [
            Some(r.execution_time_ms as f64),
            r.ttft_ms.map(|x| x as f64),
            r.prompt_tokens.map(f64::from),
            r.completion_tokens.map(f64::from),
            chars(&prompt),
            chars(&response_text),
            response_text.as_deref().map(text_metrics::flesch_kincaid_grade).filter(|x| x.is_finite()),
            response_text.as_deref().map(text_metrics::automated_readability_index).filter(|x| x.is_finite()),
            perplexity,
        ],
        categorical: [Some(status), finish_reason],
        text: [prompt, response_text],
    }
}

/// The text of a message `content`: a string, or a list of parts whose `text` is kept.
fn content_text(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let texts: Vec<&str> =
                parts.iter().filter_map(|p| p.as_str().or_else(|| p.get("text").and_then(Value::as_str))).collect();
            (!texts.is_empty()).then(|| texts.join("\n"))
        }
        _ => None,
    }
}

/// A string, or a list of strings joined by newlines.
fn string_or_list(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => {
            let texts: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
            (!texts.is_empty()).then(|| texts.join("\n"))
        }
        _ => None,
    }
}

/// The `prompt` field of each record of a list (`dataframe_records`, `instances`), or
/// the items themselves when they are strings.
fn records_prompt(records: &Value) -> Option<String> {
    let texts: Vec<&str> = records
        .as_array()?
        .iter()
        .filter_map(|r| r.as_str().or_else(|| r.get("prompt").and_then(Value::as_str)))
        .collect();
    (!texts.is_empty()).then(|| texts.join("\n"))
}

fn prompt_text(body: &Value) -> Option<String> {
    if let Some(messages) = body.get("messages").and_then(Value::as_array) {
        let texts: Vec<String> = messages.iter().filter_map(|m| m.get("content").and_then(content_text)).collect();
        return (!texts.is_empty()).then(|| texts.join("\n"));
    }
    if let Some(p) = body.get("prompt") {
        return string_or_list(p);
    }
    if let Some(i) = body.get("input") {
        return string_or_list(i);
    }
    if let Some(split) = body.get("dataframe_split") {
        let columns = split.get("columns")?.as_array()?;
        let col = columns.iter().position(|c| c.as_str() == Some("prompt")).unwrap_or(0);
        let texts: Vec<&str> =
            split.get("data")?.as_array()?.iter().filter_map(|row| row.get(col).and_then(Value::as_str)).collect();
        return (!texts.is_empty()).then(|| texts.join("\n"));
    }
    if let Some(records) = body.get("dataframe_records").or_else(|| body.get("instances")) {
        return records_prompt(records);
    }
    if let Some(inputs) = body.get("inputs") {
        return match inputs {
            Value::Object(o) => o.get("prompt").and_then(string_or_list),
            other => string_or_list(other).or_else(|| records_prompt(other)),
        };
    }
    None
}

fn response_text(body: &Value) -> Option<String> {
    if let Some(choices) = body.get("choices").and_then(Value::as_array) {
        let texts: Vec<String> = choices
            .iter()
            .filter_map(|c| {
                c.get("message")
                    .and_then(|m| m.get("content"))
                    .and_then(content_text)
                    .or_else(|| c.get("text").and_then(Value::as_str).map(str::to_string))
            })
            .collect();
        return (!texts.is_empty()).then(|| texts.join("\n"));
    }
    body.get("predictions").and_then(string_or_list)
}

fn first_finish_reason(body: &Value) -> Option<String> {
    let c = body.get("choices")?.as_array()?.first()?;
    c.get("finish_reason")?.as_str().map(str::to_string)
}

/// Perplexity from the `logprobs` the response carries (when the client asked for
/// them): chat `logprobs.content[].logprob` or completion `logprobs.token_logprobs`,
/// over every choice.
fn response_perplexity(body: &Value) -> Option<f64> {
    let mut lps: Vec<f32> = Vec::new();
    for c in body.get("choices")?.as_array()? {
        let Some(lp) = c.get("logprobs") else { continue };
        if let Some(content) = lp.get("content").and_then(Value::as_array) {
            lps.extend(content.iter().filter_map(|t| t.get("logprob")?.as_f64()).map(|x| x as f32));
        } else if let Some(tl) = lp.get("token_logprobs").and_then(Value::as_array) {
            lps.extend(tl.iter().filter_map(Value::as_f64).map(|x| x as f32));
        }
    }
    text_metrics::perplexity(&lps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference_table::RequestMetadata;
    use serde_json::json;

    fn record(request: Value, status: i32, response: Value) -> InferenceRecord {
        InferenceRecord {
            databricks_request_id: "id".into(),
            client_request_id: None,
            timestamp_ms: 1_000,
            status_code: status,
            execution_time_ms: 120,
            sampling_fraction: 1.0,
            request: request.to_string(),
            response: response.to_string(),
            request_metadata: RequestMetadata {
                endpoint_name: "chat".into(),
                model_name: Some("m".into()),
                model_version: Some("3".into()),
                served_entity_name: Some("m-3".into()),
                response_mean_logprob: None,
            },
            prompt_tokens: Some(12),
            completion_tokens: Some(4),
            ttft_ms: Some(30),
        }
    }

    fn col(row: &UnpackedRow, name: &str) -> Option<f64> {
        row.numeric[NUMERIC_COLUMNS.iter().position(|c| *c == name).unwrap()]
    }

    #[test]
    fn chat_request_and_answer() {
        let r = record(
            json!({"messages": [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": [{"type": "text", "text": "Hi there"}]}]}),
            200,
            json!({"choices": [{"message": {"role": "assistant", "content": "The cat sat on the mat."},
                                "finish_reason": "stop"}]}),
        );
        let u = unpack(&r);
        assert_eq!(u.text[0].as_deref(), Some("Be brief.\nHi there"));
        assert_eq!(u.text[1].as_deref(), Some("The cat sat on the mat."));
        assert_eq!(u.model_id.as_deref(), Some("m:3"));
        assert_eq!(u.categorical, [Some("200".into()), Some("stop".into())]);
        assert_eq!(col(&u, "prompt_length"), Some(18.0));
        assert_eq!(col(&u, "response_length"), Some(23.0));
        assert_eq!(col(&u, "execution_time_ms"), Some(120.0));
        assert_eq!(col(&u, "ttft_ms"), Some(30.0));
        let fk = col(&u, "response_flesch_kincaid_grade").unwrap();
        assert!((fk - text_metrics::flesch_kincaid_grade("The cat sat on the mat.")).abs() < 1e-12);
        assert_eq!(col(&u, "response_perplexity"), None);
        assert_eq!(u.slice_value("served_entity_name"), Some("m-3"));
        assert_eq!(u.slice_value("finish_reason"), Some("stop"));
    }

    #[test]
    fn perplexity_comes_from_the_recorded_mean_logprob_or_the_response() {
        let mut r = record(json!({"prompt": "a"}), 200, json!({"choices": [{"text": "b", "finish_reason": "length"}]}));
        r.request_metadata.response_mean_logprob = Some(-0.5);
        assert!((col(&unpack(&r), "response_perplexity").unwrap() - 0.5f64.exp()).abs() < 1e-12);
        let r = record(
            json!({"prompt": ["a", "b"]}),
            200,
            json!({"choices": [{"text": "x", "logprobs": {"token_logprobs": [-1.0, -3.0]}}]}),
        );
        let u = unpack(&r);
        assert!((col(&u, "response_perplexity").unwrap() - 2f64.exp()).abs() < 1e-6);
        assert_eq!(u.text[0].as_deref(), Some("a\nb"));
    }

    #[test]
    fn errors_and_scoring_bodies() {
        let r =
            record(json!({"prompt": "x"}), 400, json!({"error": {"message": "bad", "type": "invalid_request_error"}}));
        let u = unpack(&r);
        assert_eq!(u.text[1], None);
        assert_eq!(u.categorical, [Some("400".into()), None]);
        assert_eq!(col(&u, "response_length"), None);

        let split = json!({"dataframe_split": {"columns": ["id", "prompt"], "data": [[1, "p1"], [2, "p2"]]}});
        let u = unpack(&record(split, 200, json!({"predictions": ["a", "bb"]})));
        assert_eq!((u.text[0].as_deref(), u.text[1].as_deref()), (Some("p1\np2"), Some("a\nbb")));
        let u = unpack(&record(json!({"dataframe_records": [{"prompt": "r"}]}), 200, json!({})));
        assert_eq!(u.text[0].as_deref(), Some("r"));
        let u = unpack(&record(json!({"inputs": {"prompt": ["i"]}}), 200, json!({})));
        assert_eq!(u.text[0].as_deref(), Some("i"));
        let mut csv = record(json!({}), 200, json!({}));
        csv.request = "prompt\nhello\n".into();
        assert_eq!(unpack(&csv).text[0].as_deref(), Some("prompt\nhello\n"));
        let mut anon = record(json!({"what": 1}), 429, json!({}));
        anon.request_metadata.model_name = None;
        let u = unpack(&anon);
        assert_eq!((u.model_id, u.text[0].clone()), (None, None));
    }
}
