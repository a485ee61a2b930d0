//! `runtime bench` (no subcommand): prefill and decode throughput of one sequence,
//! measured like llama-bench's `pp<N>` and `tg<N>` tests, on the model directly.
//!
//! * prefill: `-p` random tokens in one forward pass (chunked at 512 as in generate),
//!   from an empty cache; tokens/s = p / time.
//! * decode: `-n` steps of one token each from an empty cache (logits computed every
//!   step); tokens/s = n / time.
//!
//! One untimed warm-up run, then `--repetitions` timed runs; the median is reported.

use crate::commands::{kernels_description, load_model, KernelArgs, UsageError};
use anyhow::Result;
use clap::Args;
use keel_kernels::aligned::AlignedBuf;
use keel_runtime::forward_batch::ForwardBatch;
use keel_runtime::kv_cache::{KvCache, BLOCK_SIZE};
use keel_runtime::Model;
use serde_json::json;
use std::time::Instant;

/// Tokens per forward pass in the prefill test (as the engine's default budget).
const PREFILL_CHUNK: usize = 512;

#[derive(Args)]
pub struct SingleArgs {
    /// Model: models:/name@alias, models:/name/N, a path or a known name; default: smollm2.
    #[arg(long)]
    model: Option<String>,
    /// Prompt tokens for the prefill test (0 = skip).
    #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
    n_prompt: usize,
    /// Tokens for the decode test (0 = skip).
    #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
    n_gen: usize,
    /// Timed repetitions (median reported).
    #[arg(short = 'r', long, default_value_t = 5)]
    repetitions: usize,
    #[command(flatten)]
    kernels: KernelArgs,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// One prefill of `ids` into `kv` (made once per test and overwritten by each run, as
/// llama-bench reuses its context: a fresh mapping would put its page faults in the time).
fn prefill_once(model: &Model, kv: &mut KvCache, ids: &[u32]) -> Result<f64> {
    let table: Vec<u32> = (0..kv.num_blocks as u32).collect();
    let mut logits = AlignedBuf::new();
    let t = Instant::now();
    for start in (0..ids.len()).step_by(PREFILL_CHUNK) {
        let end = (start + PREFILL_CHUNK).min(ids.len());
        let mut b = ForwardBatch::default();
        b.push_seq(&ids[start..end], start, &table, BLOCK_SIZE, end == ids.len());
        model.forward_into(&b, kv, &mut logits)?;
    }
    Ok(t.elapsed().as_secs_f64())
}

/// `ids` decoded one token per forward pass into `kv` (as `prefill_once`).
fn decode_once(model: &Model, kv: &mut KvCache, ids: &[u32]) -> Result<f64> {
    let table: Vec<u32> = (0..kv.num_blocks as u32).collect();
    let mut logits = AlignedBuf::new();
    let t = Instant::now();
    for (pos, id) in ids.iter().enumerate() {
        let mut b = ForwardBatch::default();
        b.push_seq(&[*id], pos, &table, BLOCK_SIZE, true);
        model.forward_into(&b, kv, &mut logits)?;
    }
    Ok(t.elapsed().as_secs_f64())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn run(a: SingleArgs) -> Result<()> {
    if a.repetitions == 0 {
        return Err(UsageError("--repetitions must be at least 1".into()).into());
    }
    a.kernels.apply()?;
    let loaded = load_model(a.model.as_deref())?;
    let model = &loaded.model;
    let ctx = model.config.max_position_embeddings;
    for (flag, n) in [("-p", a.n_prompt), ("-n", a.n_gen)] {
        if n > ctx {
            return Err(UsageError(format!("{flag} {n} exceeds the model's context window of {ctx}")).into());
        }
    }
    let vocab = model.config.vocab_size;
    let mut results = serde_json::Map::new();
    let kv_dtype = a.kernels.kv_cache_dtype();
    type Run<'m> = dyn Fn(&mut KvCache, &[u32]) -> Result<f64> + 'm;
    let mut report = |label: &str, n: usize, f: &Run| -> Result<Option<f64>> {
        if n == 0 {
            return Ok(None);
        }
        let ids = super::random_tokens(n, vocab, 0);
        let mut kv = KvCache::with_dtype(&model.config, n.div_ceil(BLOCK_SIZE), kv_dtype)?;
        f(&mut kv, &ids)?; // warm-up
        let mut rates: Vec<f64> = Vec::with_capacity(a.repetitions);
        for _ in 0..a.repetitions {
            rates.push(n as f64 / f(&mut kv, &ids)?);
        }
        let mean = rates.iter().sum::<f64>() / rates.len() as f64;
        let sd = (rates.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / rates.len() as f64).sqrt();
        let med = median(&mut rates.clone());
        if !a.json {
            println!(
                "{label:>8} {n:>6} tokens: {med:>9.2} tok/s (median of {}; mean {mean:.2} ± {sd:.2})",
                a.repetitions
            );
        }
        results.insert(format!("{label}_samples"), json!(rates));
        Ok(Some(med))
    };
    if !a.json {
        println!(
            "model {} ({}, {:.1}M params), {} threads, {}",
            loaded.name,
            model.weights.embed.dtype,
            model.weights.num_parameters() as f64 / 1e6,
            keel_kernels::parallel::num_threads(),
            kernels_description(kv_dtype)
        );
    }
    let pp = report("prefill", a.n_prompt, &|kv, ids| prefill_once(model, kv, ids))?;
    let tg = report("decode", a.n_gen, &|kv, ids| decode_once(model, kv, ids))?;
    if a.json {
        let mut obj = json!({
            "model": loaded.name,
            "model_path": loaded.path,
            "threads": keel_kernels::parallel::num_threads(),
            "simd": keel_kernels::simd_level().name(),
            "matmul_precision": keel_kernels::matmul::precision().name(),
            "kv_cache_dtype": kv_dtype.name(),
            "n_prompt": a.n_prompt,
            "n_gen": a.n_gen,
            "repetitions": a.repetitions,
            "prefill_tokens_per_s": pp,
            "decode_tokens_per_s": tg,
        });
        if let Some(o) = obj.as_object_mut() {
            o.extend(results);
        }
        println!("{obj}");
    }
    Ok(())
}
