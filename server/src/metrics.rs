//! `/metrics`: Prometheus text (OpenMetrics 1.0) for SPEC §6.3.
//!
//! Request-side series (counts, latency, TTFT, inter-token latency, tokens) are recorded
//! by the handlers as requests finish; engine-side series (running, waiting, KV blocks,
//! preemptions) and process CPU / memory are read at scrape time. Label values are
//! endpoint and entity names (validated to `[A-Za-z0-9_-]`), never user input or tokens.

use crate::endpoint::Endpoints;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EntityLabels {
    pub endpoint: String,
    pub entity: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: String,
}

/// What became of a request's inference-table record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptureEvent {
    /// Queued for the table (`keel_capture_records_total`).
    Queued,
    /// Not logged: the channel was full, the writer stopped, or the write failed.
    Dropped,
    /// Queued, but not acknowledged within the wait; the answer went anyway.
    LateAck,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub endpoint: String,
    pub entity: String,
    pub status: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0])
}

fn itl_histogram() -> Histogram {
    Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.5])
}

pub struct Metrics {
    registry: Registry,
    requests: Family<StatusLabels, Counter>,
    latency: Family<EntityLabels, Histogram, fn() -> Histogram>,
    ttft: Family<EntityLabels, Histogram, fn() -> Histogram>,
    itl: Family<EntityLabels, Histogram, fn() -> Histogram>,
    prompt_tokens: Family<EntityLabels, Counter>,
    generation_tokens: Family<EntityLabels, Counter>,
    running: Family<EntityLabels, Gauge>,
    waiting: Family<EntityLabels, Gauge>,
    in_flight: Family<EntityLabels, Gauge>,
    kv_used: Family<EntityLabels, Gauge>,
    kv_total: Family<EntityLabels, Gauge>,
    loaded: Family<EntityLabels, Gauge>,
    preemptions: Family<EntityLabels, Counter>,
    last_preemptions: Mutex<HashMap<EntityLabels, u64>>,
    rss: Gauge,
    cpu: Gauge<f64, AtomicU64>,
    capture_records: Family<EndpointLabels, Counter>,
    capture_dropped: Family<EndpointLabels, Counter>,
    capture_late_acks: Family<EndpointLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix("keel"),
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            ttft: Family::new_with_constructor(latency_histogram),
            itl: Family::new_with_constructor(itl_histogram),
            prompt_tokens: Family::default(),
            generation_tokens: Family::default(),
            running: Family::default(),
            waiting: Family::default(),
            in_flight: Family::default(),
            kv_used: Family::default(),
            kv_total: Family::default(),
            loaded: Family::default(),
            preemptions: Family::default(),
            last_preemptions: Mutex::new(HashMap::new()),
            rss: Gauge::default(),
            cpu: Gauge::default(),
            capture_records: Family::default(),
            capture_dropped: Family::default(),
            capture_late_acks: Family::default(),
        };
        let r = &mut m.registry;
        r.register("requests", "Requests by endpoint, served entity and HTTP status", m.requests.clone());
        r.register("request_duration_seconds", "End-to-end request latency", m.latency.clone());
        r.register("time_to_first_token_seconds", "Time from arrival to the first token", m.ttft.clone());
        r.register("inter_token_latency_seconds", "Time between consecutive tokens of a stream", m.itl.clone());
        r.register("prompt_tokens", "Prompt tokens of finished requests", m.prompt_tokens.clone());
        r.register("generation_tokens", "Generated tokens of finished requests", m.generation_tokens.clone());
        r.register("num_requests_running", "Requests in the engine's running batch", m.running.clone());
        r.register("num_requests_waiting", "Requests queued in the engine (queue length)", m.waiting.clone());
        r.register("num_requests_in_flight", "HTTP requests admitted to a served entity", m.in_flight.clone());
        r.register("kv_cache_blocks_used", "KV-cache blocks in use", m.kv_used.clone());
        r.register("kv_cache_blocks_total", "KV-cache blocks in the pool", m.kv_total.clone());
        r.register("entity_loaded", "1 when the served entity's model is loaded", m.loaded.clone());
        r.register("preemptions", "Requests preempted for lack of KV-cache blocks", m.preemptions.clone());
        r.register("process_resident_memory_bytes", "Resident memory of the server process", m.rss.clone());
        r.register("process_cpu_seconds", "CPU time used by the server process", m.cpu.clone());
        r.register("capture_records", "Requests queued for the endpoint's inference table", m.capture_records.clone());
        r.register(
            "capture_dropped",
            "Inference-table records dropped (channel full, writer stopped or write failed)",
            m.capture_dropped.clone(),
        );
        r.register(
            "capture_late_acks",
            "Inference-table records not in the WAL within the ack wait (the answer went anyway)",
            m.capture_late_acks.clone(),
        );
        m
    }

    pub fn record_status(&self, endpoint: &str, entity: &str, status: u16) {
        let l = StatusLabels { endpoint: endpoint.into(), entity: entity.into(), status: status.to_string() };
        self.requests.get_or_create(&l).inc();
    }

    pub fn record_capture(&self, endpoint: &str, event: CaptureEvent) {
        let l = EndpointLabels { endpoint: endpoint.into() };
        match event {
            CaptureEvent::Queued => &self.capture_records,
            CaptureEvent::Dropped => &self.capture_dropped,
            CaptureEvent::LateAck => &self.capture_late_acks,
        }
        .get_or_create(&l)
        .inc();
    }

    /// A finished generation (one choice): latency and token counts.
    pub fn record_finish(&self, l: &EntityLabels, e2e: Duration, usage: &keel_runtime::engine::Usage) {
        self.latency.get_or_create(l).observe(e2e.as_secs_f64());
        self.prompt_tokens.get_or_create(l).inc_by(usage.prompt_tokens as u64);
        self.generation_tokens.get_or_create(l).inc_by(usage.completion_tokens as u64);
    }

    pub fn record_ttft(&self, l: &EntityLabels, ttft: Duration) {
        self.ttft.get_or_create(l).observe(ttft.as_secs_f64());
    }

    pub fn record_itl(&self, l: &EntityLabels, gap: Duration) {
        self.itl.get_or_create(l).observe(gap.as_secs_f64());
    }

    /// Reads engine and process state, then encodes everything.
    pub fn render(&self, endpoints: &Endpoints) -> String {
        for (ep, e) in endpoints.entities() {
            let l = EntityLabels { endpoint: ep.name.clone(), entity: e.name().to_string() };
            self.in_flight.get_or_create(&l).set(e.in_flight() as i64);
            match e.handle() {
                Some(h) => {
                    let s = h.metrics();
                    self.loaded.get_or_create(&l).set(i64::from(h.is_alive()));
                    self.running.get_or_create(&l).set(s.running as i64);
                    self.waiting.get_or_create(&l).set(s.waiting as i64);
                    self.kv_used.get_or_create(&l).set(s.kv_blocks_used as i64);
                    self.kv_total.get_or_create(&l).set(s.kv_blocks_total as i64);
                    let mut last = self.last_preemptions.lock().unwrap_or_else(|p| p.into_inner());
                    let prev = last.insert(l.clone(), s.preemptions).unwrap_or(0);
                    // A reloaded engine starts from zero again.
                    let delta = if s.preemptions >= prev { s.preemptions - prev } else { s.preemptions };
                    self.preemptions.get_or_create(&l).inc_by(delta);
                }
                None => {
                    self.loaded.get_or_create(&l).set(0);
                    for g in [&self.running, &self.waiting, &self.kv_used] {
                        g.get_or_create(&l).set(0);
                    }
                }
            }
        }
        for ep in endpoints.all() {
            if ep.active().config.auto_capture_config.as_ref().is_some_and(|c| c.enabled) {
                // Captured endpoints show their counters from the start, at 0.
                let l = EndpointLabels { endpoint: ep.name.clone() };
                for f in [&self.capture_records, &self.capture_dropped, &self.capture_late_acks] {
                    let _ = f.get_or_create(&l);
                }
            }
        }
        if let Some((rss, cpu)) = process_stats() {
            self.rss.set(rss as i64);
            self.cpu.set(cpu);
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Resident bytes and CPU seconds of this process, from /proc (None elsewhere).
pub fn process_stats() -> Option<(u64, f64)> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // sysconf(_SC_CLK_TCK) is 100 on every Linux this runs on.
    Some((pages * 4096, ticks as f64 / 100.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_recorded_series() {
        let m = Metrics::new();
        let l = EntityLabels { endpoint: "default".into(), entity: "tiny".into() };
        m.record_status("default", "tiny", 200);
        m.record_status("default", "tiny", 200);
        let usage = keel_runtime::engine::Usage { prompt_tokens: 7, completion_tokens: 3, ..Default::default() };
        m.record_finish(&l, Duration::from_millis(30), &usage);
        m.record_ttft(&l, Duration::from_millis(5));
        m.record_capture("default", CaptureEvent::Queued);
        m.record_capture("default", CaptureEvent::Dropped);
        let endpoints =
            crate::endpoint::Endpoints::new(std::sync::Arc::new(crate::entity::NoModels), Default::default());
        let text = m.render(&endpoints);
        assert!(text.contains(r#"keel_requests_total{endpoint="default",entity="tiny",status="200"} 2"#), "{text}");
        assert!(text.contains(r#"keel_prompt_tokens_total{endpoint="default",entity="tiny"} 7"#), "{text}");
        assert!(text.contains("keel_time_to_first_token_seconds_bucket"), "{text}");
        assert!(text.contains("keel_process_resident_memory_bytes"), "{text}");
        assert!(text.contains(r#"keel_capture_records_total{endpoint="default"} 1"#), "{text}");
        assert!(text.contains(r#"keel_capture_dropped_total{endpoint="default"} 1"#), "{text}");
    }
}
