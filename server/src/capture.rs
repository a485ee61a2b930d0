//! Inference-table capture on the serving side (SPEC.md §6.1): which endpoints log,
//! where, and how a finished request becomes an [`InferenceRecord`] handed to the
//! table's [`CaptureWriter`].
//!
//! What is logged: every request routed to an endpoint whose `auto_capture_config` is
//! enabled (and that its `sampling_fraction` keeps), whatever its outcome — successes,
//! 4xx found after routing (validation, rate limits, too-long prompts), 5xx, streams.
//! Not logged, because no endpoint is known yet: 401 (auth runs first), 404 for an
//! unknown endpoint or model, 413 / unreadable bodies, and OpenAI-route bodies that are
//! not JSON at all (a body that is JSON but invalid is routed by its `model` and logged).
//!
//! Invariants: a request is logged at most once; the record is submitted, and its
//! acknowledgement awaited (at most [`ACK_WAIT`]), *before* the last bytes of the answer
//! leave — the whole body of a non-streaming answer, the final `[DONE]` (or error) event
//! of a stream — so what a client has received completely is in the WAL. A full channel
//! drops the record at once (`keel_capture_dropped_total`), never waits; an ack later
//! than [`ACK_WAIT`] lets the answer go (`keel_capture_late_acks_total`). A stream the
//! client abandons is logged from `Drop` with status 499, without waiting.

use crate::app::{AppState, RequestId, Routed};
use crate::config::EndpointConfig;
use crate::endpoint::Endpoint;
use crate::error::ApiError;
use crate::metrics::{CaptureEvent, Metrics};
use axum::body::Body;
use axum::response::Response;
use keel_monitor::inference_table::{CaptureOptions, CaptureWriter, InferenceRecord, RequestMetadata};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Longest a handler waits for its record to reach the WAL before answering anyway.
pub const ACK_WAIT: Duration = Duration::from_millis(100);

/// The table writers of a server, by table name (`<prefix>_payload`); endpoints with
/// the same prefix share one table (their rows differ in `request_metadata`).
pub struct Captures {
    /// `<data_dir>/tables`; `None` when this server has no data directory.
    dir: Option<PathBuf>,
    options: CaptureOptions,
    writers: Mutex<HashMap<String, Arc<CaptureWriter>>>,
}

impl Captures {
    pub fn new(dir: Option<PathBuf>) -> Captures {
        Captures { dir, options: CaptureOptions::default(), writers: Mutex::new(HashMap::new()) }
    }

    /// `<data_dir>/tables`, where inference tables and their metric tables live.
    pub fn dir(&self) -> Option<&std::path::Path> {
        self.dir.as_deref()
    }

    fn writers(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<CaptureWriter>>> {
        self.writers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens the table of `config` for endpoint `endpoint` if its capture is enabled
    /// (replaying a crashed WAL first). Blocking: call it off the async workers.
    pub fn prepare(&self, endpoint: &str, config: &EndpointConfig) -> Result<(), ApiError> {
        let Some(ac) = config.auto_capture_config.as_ref().filter(|c| c.enabled) else { return Ok(()) };
        let table = ac.table_name(endpoint);
        let Some(dir) = &self.dir else {
            return Err(ApiError::invalid(
                "config.auto_capture_config.enabled",
                "this server has no data directory for inference tables",
            ));
        };
        let mut writers = self.writers();
        if writers.contains_key(&table) {
            return Ok(());
        }
        let path = dir.join(&table);
        let w = CaptureWriter::open(&path, self.options.clone())
            .map_err(|e| ApiError::unavailable(format!("cannot open inference table {}: {e}", path.display())))?;
        tracing::info!("endpoint {endpoint}: capturing requests to {}", path.display());
        writers.insert(table, Arc::new(w));
        Ok(())
    }

    fn get(&self, table: &str) -> Option<Arc<CaptureWriter>> {
        self.writers().get(table).cloned()
    }

    /// Flushes and compacts every table, then stops the writers (blocking).
    pub fn close_all(&self) {
        let writers: Vec<_> = self.writers().drain().collect();
        for (table, w) in writers {
            w.close();
            tracing::info!("inference table {table}: flushed and compacted");
        }
    }
}

/// Whether request `id` is in the sample: a hash of the id against the fraction, so
/// the decision is deterministic per request and uniform over requests.
pub fn sampled(id: &str, fraction: f64) -> bool {
    if fraction >= 1.0 {
        return true;
    }
    // FNV-1a, then the top 53 bits as a uniform number in [0, 1).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    ((h >> 11) as f64 / (1u64 << 53) as f64) < fraction
}

/// The body's `client_request_id` (a string; other JSON values as their text).
fn client_request_id(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Probe {
        client_request_id: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Probe>(body).ok()?.client_request_id? {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Null => None,
        v => Some(v.to_string()),
    }
}

fn saturating_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// One request being captured: the record as known so far.
pub struct Capture {
    writer: Arc<CaptureWriter>,
    metrics: Arc<Metrics>,
    record: InferenceRecord,
    arrived: Instant,
}

impl Capture {
    /// Starts capturing a request routed to `ep`, or `None` when the endpoint does not
    /// capture or the sample leaves the request out.
    pub fn begin(st: &AppState, ep: &Endpoint, id: &RequestId, body: &[u8], arrived: Instant) -> Option<Capture> {
        let ac = ep.active().config.auto_capture_config.clone().filter(|c| c.enabled)?;
        let fraction = ac.sampling_fraction.unwrap_or(1.0);
        if !sampled(&id.0, fraction) {
            return None;
        }
        let Some(writer) = st.captures.get(&ac.table_name(&ep.name)) else {
            st.metrics.record_capture(&ep.name, CaptureEvent::Dropped);
            return None;
        };
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let elapsed_ms = arrived.elapsed().as_millis() as i64;
        Some(Capture {
            writer,
            metrics: st.metrics.clone(),
            record: InferenceRecord {
                databricks_request_id: id.0.clone(),
                client_request_id: client_request_id(body),
                timestamp_ms: now_ms - elapsed_ms,
                status_code: 0,
                execution_time_ms: 0,
                sampling_fraction: fraction,
                request: String::from_utf8_lossy(body).into_owned(),
                response: String::new(),
                request_metadata: RequestMetadata { endpoint_name: ep.name.clone(), ..Default::default() },
                prompt_tokens: None,
                completion_tokens: None,
                ttft_ms: None,
            },
            arrived,
        })
    }

    /// Records which entity (and model) answered.
    pub fn route(&mut self, r: &Routed) {
        let m = &mut self.record.request_metadata;
        m.served_entity_name = Some(r.entity.clone());
        m.model_name = r.model_name.clone();
        m.model_version = r.model_version.map(|v| v.to_string());
    }

    /// Token counts, time to first token and mean token log-probability of a finished
    /// generation.
    pub fn generation(
        &mut self,
        prompt_tokens: usize,
        completion_tokens: usize,
        ttft: Option<Duration>,
        mean_logprob: Option<f64>,
    ) {
        self.record.request_metadata.response_mean_logprob = mean_logprob;
        self.record.prompt_tokens = Some(saturating_i32(prompt_tokens));
        self.record.completion_tokens = Some(saturating_i32(completion_tokens));
        self.record.ttft_ms = ttft.map(|d| d.as_millis() as i64);
    }

    fn complete(&mut self, status: u16, response: String) -> (String, InferenceRecord) {
        self.record.status_code = i32::from(status);
        self.record.execution_time_ms = self.arrived.elapsed().as_millis() as i64;
        self.record.response = response;
        let endpoint = self.record.request_metadata.endpoint_name.clone();
        (endpoint, self.record.clone())
    }

    /// Submits the record and waits (at most [`ACK_WAIT`]) until it is in the WAL.
    pub async fn finish(mut self, status: u16, response: String) {
        let (endpoint, record) = self.complete(status, response);
        let ack = match self.writer.submit(record) {
            Ok(ack) => ack,
            Err(_) => return self.metrics.record_capture(&endpoint, CaptureEvent::Dropped),
        };
        self.metrics.record_capture(&endpoint, CaptureEvent::Queued);
        match tokio::time::timeout(ACK_WAIT, ack.written()).await {
            Ok(true) => {}
            Ok(false) => self.metrics.record_capture(&endpoint, CaptureEvent::Dropped),
            Err(_) => self.metrics.record_capture(&endpoint, CaptureEvent::LateAck),
        }
    }

    /// Submits the record without waiting (from `Drop`, where nothing can be awaited).
    pub fn finish_detached(mut self, status: u16, response: String) {
        let (endpoint, record) = self.complete(status, response);
        let event = match self.writer.submit_detached(record) {
            Ok(()) => CaptureEvent::Queued,
            Err(_) => CaptureEvent::Dropped,
        };
        self.metrics.record_capture(&endpoint, event);
    }
}

/// Logs a whole (non-streaming) answer before it is sent: the body is already in
/// memory, so it is read, recorded, and put back. Streams log themselves (their
/// `Capture` was taken), so `cap` is `None` for them.
pub async fn respond(cap: Option<Capture>, resp: Response) -> Response {
    let Some(mut cap) = cap else { return resp };
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    if let Some(r) = parts.extensions.get::<Routed>() {
        cap.route(r);
    }
    cap.finish(parts.status.as_u16(), String::from_utf8_lossy(&bytes).into_owned()).await;
    Response::from_parts(parts, Body::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_is_deterministic_and_close_to_the_fraction() {
        let ids: Vec<String> = (0..20_000).map(|_| uuid::Uuid::new_v4().to_string()).collect();
        let kept = ids.iter().filter(|id| sampled(id, 0.25)).count();
        assert!((4_500..5_500).contains(&kept), "{kept} of 20000 kept at 0.25");
        assert!(ids.iter().all(|id| sampled(id, 1.0)));
        assert!(ids.iter().all(|id| sampled(id, 0.3) == sampled(id, 0.3)));
        // Monotone: what a smaller fraction keeps, a larger one keeps too.
        assert!(ids.iter().filter(|id| sampled(id, 0.1)).all(|id| sampled(id, 0.5)));
    }

    #[test]
    fn client_request_id_comes_from_the_body() {
        assert_eq!(client_request_id(br#"{"prompt": "x", "client_request_id": "abc"}"#).as_deref(), Some("abc"));
        assert_eq!(client_request_id(br#"{"client_request_id": 17}"#).as_deref(), Some("17"));
        assert_eq!(client_request_id(br#"{"prompt": "x"}"#), None);
        assert_eq!(client_request_id(b"a,b\n1,2\n"), None);
    }
}
