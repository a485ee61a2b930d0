//! `InferenceRecord`: one row of an inference table (SPEC.md §6.1) — one request to an
//! endpoint with capture enabled, successful or not.
//!
//! Invariants: `date` is derived from `timestamp_ms` (UTC) and never stored separately,
//! so a row's partition always agrees with its timestamp; `request` and `response` hold
//! the bodies as sent (raw text, normally JSON), never re-serialized; the record is
//! plain data (serde), which is what the write-ahead log stores.

use serde::{Deserialize, Serialize};

/// Milliseconds in a UTC day.
const MS_PER_DAY: i64 = 86_400_000;

/// Who answered the request: the `request_metadata` map of the table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestMetadata {
    pub endpoint_name: String,
    /// Registry model name (or the declared model for models outside the registry);
    /// `None` when the request failed before an entity was chosen.
    pub model_name: Option<String>,
    /// Registry version as a decimal string; `None` outside the registry.
    pub model_version: Option<String>,
    /// `None` when the request failed before an entity was chosen (rate limit, drain).
    pub served_entity_name: Option<String>,
    /// keel's extension: the mean natural-log probability the served model gave the
    /// tokens it generated (every choice), from which the monitor derives the model's
    /// perplexity of its own answer; `None` when nothing was generated. (`serde(default)`:
    /// WAL records written before the field existed still replay.)
    #[serde(default)]
    pub response_mean_logprob: Option<f64>,
}

impl RequestMetadata {
    /// The map's entries in a fixed order (every key always present; values may be null).
    /// `response_mean_logprob` is written with Rust's shortest round-trip float format.
    pub fn entries(&self) -> [(&'static str, Option<String>); 5] {
        [
            ("endpoint_name", Some(self.endpoint_name.clone())),
            ("model_name", self.model_name.clone()),
            ("model_version", self.model_version.clone()),
            ("served_entity_name", self.served_entity_name.clone()),
            ("response_mean_logprob", self.response_mean_logprob.map(|x| x.to_string())),
        ]
    }

    /// Sets the entry `key` as read back from a table; unknown keys are ignored, and a
    /// `response_mean_logprob` that is not a finite number reads as null.
    pub fn set(&mut self, key: &str, value: Option<String>) {
        match key {
            "endpoint_name" => self.endpoint_name = value.unwrap_or_default(),
            "model_name" => self.model_name = value,
            "model_version" => self.model_version = value,
            "served_entity_name" => self.served_entity_name = value,
            "response_mean_logprob" => {
                self.response_mean_logprob = value.and_then(|v| v.parse::<f64>().ok()).filter(|x| x.is_finite())
            }
            _ => {}
        }
    }
}

/// One captured request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferenceRecord {
    /// Server-generated UUID, also sent as the `x-request-id` response header.
    pub databricks_request_id: String,
    /// The body's `client_request_id`, if it had one.
    pub client_request_id: Option<String>,
    /// Arrival time, milliseconds since the Unix epoch (UTC).
    pub timestamp_ms: i64,
    /// HTTP status of the answer (for a stream: 200, or the status of the error that
    /// ended it; 499 when the client went away before the end).
    pub status_code: i32,
    /// Arrival to the last byte of the answer, in milliseconds.
    pub execution_time_ms: i64,
    /// Fraction of the endpoint's requests that are captured (1.0 = all).
    pub sampling_fraction: f64,
    /// The request body as received.
    pub request: String,
    /// The answer body; for a stream, the assembled non-streaming response object.
    pub response: String,
    pub request_metadata: RequestMetadata,
    pub prompt_tokens: Option<i32>,
    pub completion_tokens: Option<i32>,
    /// Arrival to the first generated token, in milliseconds.
    pub ttft_ms: Option<i64>,
}

impl InferenceRecord {
    /// The UTC day of the request, as days since 1970-01-01 (Arrow `Date32`).
    pub fn date_days(&self) -> i32 {
        days_from_ms(self.timestamp_ms)
    }
}

/// Days since 1970-01-01 of a Unix time in milliseconds (floor, so times before the
/// epoch land on the right day too); saturates outside `i32`.
pub fn days_from_ms(ms: i64) -> i32 {
    let d = ms.div_euclid(MS_PER_DAY);
    i32::try_from(d).unwrap_or(if d < 0 { i32::MIN } else { i32::MAX })
}

/// `YYYY-MM-DD` of a day number (proleptic Gregorian, Howard Hinnant's
/// `civil_from_days`), as the `date=` partition directories spell it.
pub fn format_date(days: i32) -> String {
    let z = i64::from(days) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_days() {
        assert_eq!(format_date(0), "1970-01-01");
        assert_eq!(format_date(days_from_ms(-1)), "1969-12-31");
        // 2024-02-29T23:59:59.999Z and one millisecond later.
        assert_eq!(format_date(days_from_ms(1_709_251_199_999)), "2024-02-29");
        assert_eq!(format_date(days_from_ms(1_709_251_200_000)), "2024-03-01");
        assert_eq!(format_date(days_from_ms(951_782_400_000)), "2000-02-29");
        assert_eq!(format_date(19_723), "2024-01-01");
    }
}
