//! `runtime bench`: throughput and latency measurements (SPEC §7).
//!
//! * `runtime bench [-p N] [-n N]` — one sequence, like llama-bench (`single`).
//! * `runtime bench offline` — many requests through the continuous-batching engine,
//!   like llama-batched-bench / vLLM's offline benchmark (`offline`).
//! * `runtime bench serve --url U` — load on an OpenAI-compatible server, like vLLM's
//!   `benchmark_serving.py` (`serve`, metrics in `serve_metrics`, SSE parsing in `sse`).

mod offline;
mod serve;
mod serve_metrics;
mod single;
mod sse;

use anyhow::Result;
use clap::{Args, Subcommand};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: Option<BenchCommand>,
    #[command(flatten)]
    single: single::SingleArgs,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Many prompts at once through the engine: total, prefill and decode tok/s, TTFT/TPOT.
    Offline(offline::OfflineArgs),
    /// Streaming requests to an OpenAI-compatible server (Poisson arrivals): TTFT, TPOT, ITL, E2EL.
    Serve(serve::ServeArgs),
}

pub fn run(a: BenchArgs) -> Result<()> {
    match a.command {
        Some(BenchCommand::Offline(o)) => offline::run(o),
        Some(BenchCommand::Serve(s)) => serve::run(s),
        None => single::run(a.single),
    }
}

/// The `q`-quantile (0..=1) of `v` by nearest rank; 0 for an empty slice.
pub(crate) fn percentile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

/// A fixed pseudo-random token sequence (speed does not depend on content).
pub(crate) fn random_tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut s = seed ^ 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 33) % vocab as u64) as u32
        })
        .collect()
}
