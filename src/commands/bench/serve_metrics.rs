//! `runtime bench serve` metrics, from per-request records to the summary, with the
//! definitions of vLLM's `benchmark_serving.py`:
//!
//! * TTFT: request sent → first chunk with content.
//! * ITL: every gap between consecutive content chunks, pooled over all requests.
//! * TPOT per request: (E2E − TTFT) / (output tokens − 1), for requests with > 1 token.
//! * E2EL: request sent → end of the stream.
//! * Goodput: completed requests per second that meet every given SLO (TPOT counts as 0
//!   for single-token requests).
//!
//! Only successful requests count towards latencies and tokens.

use super::percentile;
use serde_json::{json, Value};

/// What one request measured (times in seconds since it was sent).
#[derive(Clone, Debug, Default)]
pub(crate) struct RequestRecord {
    pub success: bool,
    pub error: Option<String>,
    pub ttft_s: f64,
    /// Gaps between consecutive content chunks.
    pub itl_s: Vec<f64>,
    pub latency_s: f64,
    pub prompt_tokens: usize,
    pub output_tokens: usize,
}

/// Service-level objectives for goodput, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Slo {
    pub ttft_ms: Option<f64>,
    pub tpot_ms: Option<f64>,
    pub e2el_ms: Option<f64>,
}

impl Slo {
    /// Parses `--goodput` specs, each `ttft:MS`, `tpot:MS` or `e2el:MS`.
    pub(crate) fn parse(specs: &[String]) -> Result<Option<Slo>, String> {
        if specs.is_empty() {
            return Ok(None);
        }
        let mut slo = Slo::default();
        for spec in specs {
            let bad = || format!("--goodput {spec:?}: expected ttft:MS, tpot:MS or e2el:MS with MS > 0");
            let (name, ms) = spec.split_once(':').ok_or_else(bad)?;
            let ms: f64 = ms.trim().parse().map_err(|_| bad())?;
            if !(ms.is_finite() && ms > 0.0) {
                return Err(bad());
            }
            let slot = match name.trim().to_ascii_lowercase().as_str() {
                "ttft" => &mut slo.ttft_ms,
                "tpot" => &mut slo.tpot_ms,
                "e2el" => &mut slo.e2el_ms,
                _ => return Err(bad()),
            };
            *slot = Some(ms);
        }
        Ok(Some(slo))
    }

    fn met(&self, ttft_ms: f64, tpot_ms: f64, e2el_ms: f64) -> bool {
        let ok = |slo: Option<f64>, v: f64| slo.is_none_or(|s| v <= s);
        ok(self.ttft_ms, ttft_ms) && ok(self.tpot_ms, tpot_ms) && ok(self.e2el_ms, e2el_ms)
    }
}

/// Mean, median and p99 of one latency, in milliseconds (0 when there are no samples).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Stats {
    pub mean: f64,
    pub median: f64,
    pub p99: f64,
}

impl Stats {
    pub(crate) fn of(ms: &[f64]) -> Stats {
        if ms.is_empty() {
            return Stats::default();
        }
        Stats { mean: ms.iter().sum::<f64>() / ms.len() as f64, median: percentile(ms, 0.5), p99: percentile(ms, 0.99) }
    }
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Summary {
    pub completed: usize,
    pub failed: usize,
    pub first_error: Option<String>,
    pub duration_s: f64,
    pub total_input_tokens: usize,
    pub total_output_tokens: usize,
    pub request_throughput: f64,
    pub output_throughput: f64,
    pub total_token_throughput: f64,
    pub ttft: Stats,
    pub tpot: Stats,
    pub itl: Stats,
    pub e2el: Stats,
    /// Requests/s meeting every SLO; `None` without `--goodput`.
    pub goodput: Option<f64>,
}

/// The summary of a run of `duration_s` seconds.
pub(crate) fn summarize(records: &[RequestRecord], duration_s: f64, slo: Option<&Slo>) -> Summary {
    let mut s = Summary { duration_s, ..Summary::default() };
    let (mut ttft, mut tpot, mut itl, mut e2el) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut good = 0usize;
    for r in records {
        if !r.success {
            s.failed += 1;
            if s.first_error.is_none() {
                s.first_error = r.error.clone();
            }
            continue;
        }
        s.completed += 1;
        s.total_input_tokens += r.prompt_tokens;
        s.total_output_tokens += r.output_tokens;
        let ttft_ms = r.ttft_s * 1e3;
        let e2el_ms = r.latency_s * 1e3;
        let tpot_ms = if r.output_tokens > 1 {
            let v = (r.latency_s - r.ttft_s) * 1e3 / (r.output_tokens - 1) as f64;
            tpot.push(v);
            v
        } else {
            0.0
        };
        ttft.push(ttft_ms);
        e2el.push(e2el_ms);
        itl.extend(r.itl_s.iter().map(|g| g * 1e3));
        if slo.is_some_and(|slo| slo.met(ttft_ms, tpot_ms, e2el_ms)) {
            good += 1;
        }
    }
    let d = duration_s.max(1e-9);
    s.request_throughput = s.completed as f64 / d;
    s.output_throughput = s.total_output_tokens as f64 / d;
    s.total_token_throughput = (s.total_input_tokens + s.total_output_tokens) as f64 / d;
    s.ttft = Stats::of(&ttft);
    s.tpot = Stats::of(&tpot);
    s.itl = Stats::of(&itl);
    s.e2el = Stats::of(&e2el);
    s.goodput = slo.map(|_| good as f64 / d);
    s
}

impl Summary {
    pub(crate) fn to_json(&self) -> Value {
        let mut v = json!({
            "completed": self.completed,
            "failed": self.failed,
            "first_error": self.first_error,
            "duration_s": self.duration_s,
            "total_input_tokens": self.total_input_tokens,
            "total_output_tokens": self.total_output_tokens,
            "request_throughput": self.request_throughput,
            "output_throughput": self.output_throughput,
            "total_token_throughput": self.total_token_throughput,
            "goodput": self.goodput,
        });
        for (name, st) in [("ttft", self.ttft), ("tpot", self.tpot), ("itl", self.itl), ("e2el", self.e2el)] {
            v[format!("mean_{name}_ms")] = json!(st.mean);
            v[format!("median_{name}_ms")] = json!(st.median);
            v[format!("p99_{name}_ms")] = json!(st.p99);
        }
        v
    }

    /// vLLM's "Serving Benchmark Result" table.
    pub(crate) fn table(&self, request_rate: Option<f64>, max_concurrency: Option<usize>) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let line = |o: &mut String, k: &str, v: String| writeln!(o, "{k:<40}{v:<10}").unwrap();
        writeln!(o, "{:=^50}", " Serving Benchmark Result ").unwrap();
        line(&mut o, "Successful requests:", self.completed.to_string());
        line(&mut o, "Failed requests:", self.failed.to_string());
        line(&mut o, "Request rate (req/s):", request_rate.map_or("inf".into(), |r| format!("{r:.2}")));
        if let Some(c) = max_concurrency {
            line(&mut o, "Maximum request concurrency:", c.to_string());
        }
        line(&mut o, "Benchmark duration (s):", format!("{:.2}", self.duration_s));
        line(&mut o, "Total input tokens:", self.total_input_tokens.to_string());
        line(&mut o, "Total generated tokens:", self.total_output_tokens.to_string());
        line(&mut o, "Request throughput (req/s):", format!("{:.2}", self.request_throughput));
        if let Some(g) = self.goodput {
            line(&mut o, "Request goodput (req/s):", format!("{g:.2}"));
        }
        line(&mut o, "Output token throughput (tok/s):", format!("{:.2}", self.output_throughput));
        line(&mut o, "Total token throughput (tok/s):", format!("{:.2}", self.total_token_throughput));
        for (name, title, st) in [
            ("TTFT", "Time to First Token", self.ttft),
            ("TPOT", "Time per Output Token (excl. 1st token)", self.tpot),
            ("ITL", "Inter-token Latency", self.itl),
            ("E2EL", "End-to-end Latency", self.e2el),
        ] {
            writeln!(o, "{:-^50}", format!(" {title} ")).unwrap();
            line(&mut o, &format!("Mean {name} (ms):"), format!("{:.2}", st.mean));
            line(&mut o, &format!("Median {name} (ms):"), format!("{:.2}", st.median));
            line(&mut o, &format!("P99 {name} (ms):"), format!("{:.2}", st.p99));
        }
        writeln!(o, "{}", "=".repeat(50)).unwrap();
        if let Some(e) = &self.first_error {
            writeln!(o, "First error: {e}").unwrap();
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(ttft: f64, latency: f64, out: usize, itl: &[f64]) -> RequestRecord {
        RequestRecord {
            success: true,
            ttft_s: ttft,
            latency_s: latency,
            output_tokens: out,
            prompt_tokens: 10,
            itl_s: itl.to_vec(),
            error: None,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn tpot_excludes_the_first_token_and_single_token_requests() {
        // (1.1 − 0.1) s over 10 − 1 tokens; the 1-token request has no TPOT.
        let recs = [ok(0.1, 1.0, 10, &[]), ok(0.2, 0.2, 1, &[])];
        let s = summarize(&recs, 2.0, None);
        assert_eq!(s.completed, 2);
        assert!(close(s.tpot.mean, 100.0), "{}", s.tpot.mean);
        assert!(close(s.tpot.p99, 100.0));
        assert!(close(s.ttft.mean, 150.0));
        assert!(close(s.e2el.mean, 600.0));
    }

    #[test]
    fn itl_is_pooled_over_requests() {
        let recs = [ok(0.1, 0.4, 3, &[0.1, 0.2]), ok(0.1, 0.5, 4, &[0.05, 0.15, 0.2])];
        let s = summarize(&recs, 1.0, None);
        // Five gaps pooled (not the mean of per-request means).
        assert!(close(s.itl.mean, (100.0 + 200.0 + 50.0 + 150.0 + 200.0) / 5.0));
        assert!(close(s.itl.median, 150.0));
        assert!(close(s.itl.p99, 200.0));
    }

    #[test]
    fn throughputs_count_only_successes_and_keep_the_first_error() {
        let fail = |m: &str| RequestRecord { error: Some(m.into()), ..RequestRecord::default() };
        let recs = [fail("HTTP 500"), ok(0.1, 1.0, 10, &[]), fail("other"), ok(0.1, 1.0, 30, &[])];
        let s = summarize(&recs, 4.0, None);
        assert_eq!((s.completed, s.failed), (2, 2));
        assert_eq!(s.first_error.as_deref(), Some("HTTP 500"));
        assert_eq!((s.total_input_tokens, s.total_output_tokens), (20, 40));
        assert!(close(s.request_throughput, 0.5));
        assert!(close(s.output_throughput, 10.0));
        assert!(close(s.total_token_throughput, 15.0));
        assert!(s.goodput.is_none());
        assert!(s.to_json()["goodput"].is_null());
    }

    #[test]
    fn goodput_needs_every_slo() {
        let slo = Slo::parse(&["ttft:150".into(), "tpot:50".into()]).unwrap().unwrap();
        assert_eq!(slo, Slo { ttft_ms: Some(150.0), tpot_ms: Some(50.0), e2el_ms: None });
        let recs = [
            ok(0.1, 0.5, 11, &[]), // TTFT 100, TPOT 40: good
            ok(0.2, 0.6, 11, &[]), // TTFT 200: bad
            ok(0.1, 1.1, 11, &[]), // TPOT 100: bad
            ok(0.1, 0.1, 1, &[]),  // one token: TPOT 0, good
        ];
        let s = summarize(&recs, 2.0, Some(&slo));
        assert!(close(s.goodput.unwrap(), 1.0));
        assert_eq!(s.to_json()["goodput"], json!(1.0));
    }

    #[test]
    fn bad_goodput_specs() {
        assert_eq!(Slo::parse(&[]), Ok(None));
        for bad in ["ttft", "ttft:", "ttft:-1", "ttft:abc", "foo:10", "ttft:inf"] {
            assert!(Slo::parse(&[bad.to_string()]).is_err(), "{bad}");
        }
        assert_eq!(Slo::parse(&["E2EL: 2000".into()]).unwrap().unwrap().e2el_ms, Some(2000.0));
    }

    #[test]
    fn json_has_every_key_and_stats_use_nearest_rank() {
        let recs: Vec<_> = (1..=100).map(|i| ok(i as f64 / 1e3, 1.0, 2, &[])).collect();
        let s = summarize(&recs, 1.0, None);
        assert!(close(s.ttft.median, 50.0));
        assert!(close(s.ttft.p99, 99.0));
        assert!(close(s.ttft.mean, 50.5));
        let v = s.to_json();
        for k in
            ["completed", "failed", "duration_s", "request_throughput", "output_throughput", "total_token_throughput"]
        {
            assert!(v.get(k).is_some(), "{k}");
        }
        for m in ["ttft", "tpot", "itl", "e2el"] {
            for st in ["mean", "median", "p99"] {
                assert!(v[format!("{st}_{m}_ms")].is_number(), "{st}_{m}_ms");
            }
        }
        assert!(s.table(None, None).contains("Serving Benchmark Result"));
    }

    #[test]
    fn empty_run_is_all_zero() {
        let s = summarize(&[], 0.0, None);
        assert_eq!(s.completed, 0);
        assert_eq!(s.ttft, Stats::default());
        assert_eq!(s.request_throughput, 0.0);
    }
}
