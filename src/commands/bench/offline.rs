//! `runtime bench offline`: `--num-prompts` random prompts of `--input-len` tokens, each
//! generating exactly `--output-len` tokens (greedy, EOS ignored), at most
//! `--concurrency` in flight, all through one continuous-batching engine.
//!
//! Reported like llama-batched-bench (when every prompt starts at once, concurrency =
//! num-prompts): prefill tok/s = prompt tokens / time until the last first token;
//! decode tok/s = tokens after each request's first / the time after that. Plus vLLM's
//! definitions: TTFT, TPOT = (e2e − TTFT)/(output − 1), each p50/p90/p99, and output and
//! total tokens/s over the whole run.

use super::{percentile, random_tokens};
use crate::commands::engine_args::EngineArgs;
use crate::commands::{kernels_description, load_model, KernelArgs, UsageError};
use anyhow::Result;
use clap::Args;
use futures::StreamExt;
use keel_runtime::engine::{Engine, EngineConfig, GenerationRequest, TokenEvent};
use keel_runtime::kv_cache::KvCache;
use keel_runtime::sampling::SamplingParams;
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;

#[derive(Args)]
pub struct OfflineArgs {
    /// Model: models:/name@alias, models:/name/N, a path or a known name; default: smollm2.
    #[arg(long)]
    model: Option<String>,
    #[arg(long, default_value_t = 32)]
    num_prompts: usize,
    /// Prompt tokens per request.
    #[arg(long, default_value_t = 128)]
    input_len: usize,
    /// Generated tokens per request.
    #[arg(long, default_value_t = 128)]
    output_len: usize,
    /// Most requests in flight (default: all of them).
    #[arg(long)]
    concurrency: Option<usize>,
    #[command(flatten)]
    engine: EngineArgs,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    kernels: KernelArgs,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

struct Track {
    submitted: Instant,
    first: Option<Instant>,
    tokens: usize,
}

pub fn run(a: OfflineArgs) -> Result<()> {
    for (flag, v) in [("--num-prompts", a.num_prompts), ("--input-len", a.input_len), ("--output-len", a.output_len)] {
        if v == 0 {
            return Err(UsageError(format!("{flag} must be at least 1")).into());
        }
    }
    let concurrency = a.concurrency.unwrap_or(a.num_prompts).clamp(1, a.num_prompts);
    a.kernels.apply()?;
    let loaded = load_model(a.model.as_deref())?;
    let cfg = loaded.model.config.clone();
    if a.input_len + a.output_len > cfg.max_position_embeddings {
        return Err(UsageError(format!(
            "--input-len + --output-len = {} exceeds the context window of {}",
            a.input_len + a.output_len,
            cfg.max_position_embeddings
        ))
        .into());
    }
    // Defaults: every request in flight runs in one batch, with cache for all of them,
    // and a 2048-token step budget (like llama-batched-bench's default batch).
    // Whole blocks per sequence (a sequence never shares its last, partial block), + 1/8.
    let bs = keel_runtime::kv_cache::BLOCK_SIZE;
    let blocks_per_seq = (a.input_len + a.output_len).div_ceil(bs);
    let kv_dtype = a.kernels.kv_cache_dtype();
    let kv_default = (concurrency * blocks_per_seq * 9).div_ceil(8) * KvCache::bytes_per_block(&cfg, kv_dtype);
    let defaults = EngineConfig {
        max_num_seqs: concurrency,
        max_num_batched_tokens: 2048,
        kv_cache_bytes: Some(kv_default),
        enable_prefix_caching: !a.engine.no_prefix_caching,
        kv_cache_dtype: kv_dtype,
        queue_capacity: a.num_prompts + 1,
    };
    let engine_cfg = a.engine.config(defaults, &cfg)?;
    let max_num_seqs = engine_cfg.max_num_seqs;
    let name = loaded.name.clone();
    let engine = Engine::start(loaded.model, Arc::new(loaded.tokenizer), engine_cfg)?;
    let h = &engine.handle;
    let params =
        SamplingParams { temperature: 0.0, max_tokens: a.output_len, ignore_eos: true, ..SamplingParams::default() };
    let prompts: Vec<Vec<u32>> =
        (0..a.num_prompts).map(|i| random_tokens(a.input_len, cfg.vocab_size, a.seed * 1_000_003 + i as u64)).collect();

    let start = Instant::now();
    let (mut ttft, mut tpot, mut e2e) = (Vec::new(), Vec::new(), Vec::new());
    let (mut out_tokens, mut last_first) = (0usize, start);
    // The streams are awaited, not polled: a poll every 200 us woke this thread thousands
    // of times a second, each time taking a core from the engine's threads (-12% decode
    // tokens/s at 32 sequences on 2 cores).
    let waiter = tokio::runtime::Builder::new_current_thread().build()?;
    waiter.block_on(async {
        let mut pending = prompts.into_iter();
        let mut tracks: Vec<Track> = Vec::new();
        let mut events = futures::stream::SelectAll::new();
        let mut active = 0;
        loop {
            while active < concurrency {
                let Some(p) = pending.next() else { break };
                let stream = h.submit(GenerationRequest { prompt_ids: p, params: params.clone(), priority: 0 })?;
                let id = tracks.len();
                tracks.push(Track { submitted: Instant::now(), first: None, tokens: 0 });
                events.push(Box::pin(futures::stream::unfold(stream, move |mut s| async move {
                    s.next().await.map(|ev| ((id, ev), s))
                })));
                active += 1;
            }
            if active == 0 {
                break;
            }
            let Some((id, ev)) = events.next().await else {
                anyhow::bail!("the engine closed {active} request streams before they finished");
            };
            let t = &mut tracks[id];
            match ev {
                TokenEvent::Token { .. } => {
                    t.tokens += 1;
                    if t.first.is_none() {
                        let now = Instant::now();
                        t.first = Some(now);
                        last_first = last_first.max(now);
                    }
                }
                TokenEvent::Finished { .. } => {
                    let now = Instant::now();
                    let first = t.first.unwrap_or(now);
                    ttft.push((first - t.submitted).as_secs_f64() * 1e3);
                    e2e.push((now - t.submitted).as_secs_f64() * 1e3);
                    if t.tokens > 1 {
                        tpot.push((now - first).as_secs_f64() * 1e3 / (t.tokens - 1) as f64);
                    }
                    out_tokens += t.tokens;
                    active -= 1;
                }
                TokenEvent::Error { message } => anyhow::bail!("request failed: {message}"),
            }
        }
        Ok(())
    })?;
    let wall = start.elapsed().as_secs_f64();
    let m = h.metrics();
    let prompt_tokens = a.num_prompts * a.input_len;
    let t_prefill = (last_first - start).as_secs_f64().max(1e-9);
    let t_decode = (wall - t_prefill).max(1e-9);
    let decode_tokens = out_tokens.saturating_sub(a.num_prompts);
    let r = json!({
        "model": name,
        "threads": keel_kernels::parallel::num_threads(),
        "simd": keel_kernels::simd_level().name(),
        "matmul_precision": keel_kernels::matmul::precision().name(),
        "kv_cache_dtype": kv_dtype.name(),
        "num_prompts": a.num_prompts,
        "input_len": a.input_len,
        "output_len": a.output_len,
        "concurrency": concurrency,
        "max_num_seqs": max_num_seqs,
        "wall_s": wall,
        "prompt_tokens": prompt_tokens,
        "output_tokens": out_tokens,
        "requests_per_s": a.num_prompts as f64 / wall,
        "output_tokens_per_s": out_tokens as f64 / wall,
        "total_tokens_per_s": (prompt_tokens + out_tokens) as f64 / wall,
        "prefill_tokens_per_s": prompt_tokens as f64 / t_prefill,
        "decode_tokens_per_s": decode_tokens as f64 / t_decode,
        "ttft_ms_p50": percentile(&ttft, 0.5),
        "ttft_ms_p90": percentile(&ttft, 0.9),
        "ttft_ms_p99": percentile(&ttft, 0.99),
        "tpot_ms_p50": percentile(&tpot, 0.5),
        "tpot_ms_p90": percentile(&tpot, 0.9),
        "tpot_ms_p99": percentile(&tpot, 0.99),
        "e2e_ms_p50": percentile(&e2e, 0.5),
        "e2e_ms_p99": percentile(&e2e, 0.99),
        "engine_steps": m.steps,
        "preemptions": m.preemptions,
        "prefix_cached_tokens": m.prompt_tokens_cached,
        "kv_cache_blocks": m.kv_blocks_total,
    });
    if a.json {
        println!("{r}");
    } else {
        println!(
            "{name}: {} prompts × ({} in, {} out), concurrency {concurrency}, {} threads, {}",
            a.num_prompts,
            a.input_len,
            a.output_len,
            keel_kernels::parallel::num_threads(),
            kernels_description(kv_dtype)
        );
        println!("  wall {wall:.2} s, {} steps, {} preemptions", m.steps, m.preemptions);
        println!(
            "  prefill {:>9.1} tok/s   decode {:>9.1} tok/s",
            r["prefill_tokens_per_s"].as_f64().unwrap_or(0.0),
            r["decode_tokens_per_s"].as_f64().unwrap_or(0.0)
        );
        println!(
            "  output  {:>9.1} tok/s   total  {:>9.1} tok/s",
            r["output_tokens_per_s"].as_f64().unwrap_or(0.0),
            r["total_tokens_per_s"].as_f64().unwrap_or(0.0)
        );
        println!(
            "  TTFT ms p50 {:.1} p90 {:.1} p99 {:.1}   TPOT ms p50 {:.2} p90 {:.2} p99 {:.2}",
            percentile(&ttft, 0.5),
            percentile(&ttft, 0.9),
            percentile(&ttft, 0.99),
            percentile(&tpot, 0.5),
            percentile(&tpot, 0.9),
            percentile(&tpot, 0.99)
        );
    }
    Ok(())
}
