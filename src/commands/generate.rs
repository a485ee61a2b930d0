//! `runtime generate`: one completion, streamed to stdout (or one JSON object with
//! `--json`, in which case stdout holds nothing else).

use super::{load_model, KernelArgs, UsageError};
use anyhow::{Context, Result};
use clap::Args;
use keel_runtime::chat_template::ChatMessage;
use keel_runtime::engine::{Engine, EngineConfig, GenerationRequest};
use keel_runtime::kv_cache::{KvCache, BLOCK_SIZE};
use keel_runtime::sampling::SamplingParams;
use serde_json::json;
use std::io::Write;
use std::sync::Arc;

#[derive(Args)]
pub struct GenerateArgs {
    /// Model: models:/name@alias, models:/name/N, a path (.gguf file, directory) or a known name; default: smollm2.
    #[arg(long)]
    model: Option<String>,
    /// Prompt text.
    #[arg(long)]
    prompt: String,
    /// Wrap the prompt in the model's chat template as one user message.
    #[arg(long)]
    chat: bool,
    /// Most new tokens to generate.
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// 0 = greedy (the default here, so runs are reproducible).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// -1 = off.
    #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
    top_k: i32,
    #[arg(long, default_value_t = 0.0)]
    min_p: f32,
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    #[arg(long)]
    seed: Option<u64>,
    /// Stop string (repeatable); never included in the output.
    #[arg(long)]
    stop: Vec<String>,
    /// Keep going past end-of-sequence tokens.
    #[arg(long)]
    ignore_eos: bool,
    #[command(flatten)]
    kernels: KernelArgs,
    /// Print one JSON object instead of streaming text.
    #[arg(long)]
    json: bool,
}

pub fn run(a: GenerateArgs) -> Result<()> {
    a.kernels.apply()?;
    let params = SamplingParams {
        temperature: a.temperature,
        top_p: a.top_p,
        top_k: a.top_k,
        min_p: a.min_p,
        repetition_penalty: a.repetition_penalty,
        seed: a.seed,
        max_tokens: a.max_tokens,
        stop: a.stop.clone(),
        ignore_eos: a.ignore_eos,
    };
    params.validate()?;
    if a.prompt.is_empty() {
        return Err(UsageError("--prompt: the prompt is empty".into()).into());
    }
    let loaded = load_model(a.model.as_deref())?;
    let tok = &loaded.tokenizer;
    let prompt_ids = if a.chat {
        let template = tok
            .chat_template()
            .ok_or_else(|| UsageError(format!("--chat: model {} has no chat template", loaded.name)))?;
        let text = template.render(&[ChatMessage { role: "user".into(), content: a.prompt.clone() }], true)?;
        tok.encode(&text, false)?
    } else {
        tok.encode(&a.prompt, true)?
    };
    let stdout = std::io::stdout();
    let mut on_text = |s: &str| {
        if !a.json {
            let mut out = stdout.lock();
            let _ = out.write_all(s.as_bytes());
            let _ = out.flush();
        }
    };
    // One request: a batch of one, with just the cache it needs.
    let cfg = &loaded.model.config;
    let tokens = (prompt_ids.len() + params.max_tokens).min(cfg.max_position_embeddings);
    let kv_dtype = a.kernels.kv_cache_dtype();
    let engine_cfg = EngineConfig {
        max_num_seqs: 1,
        kv_cache_bytes: Some(tokens.div_ceil(BLOCK_SIZE) * KvCache::bytes_per_block(cfg, kv_dtype)),
        kv_cache_dtype: kv_dtype,
        ..EngineConfig::default()
    };
    let name = loaded.name.clone();
    let engine = Engine::start(loaded.model, Arc::new(loaded.tokenizer), engine_cfg)?;
    let stream = engine.handle.submit(GenerationRequest { prompt_ids: prompt_ids.clone(), params, priority: 0 })?;
    let out = stream.collect_blocking(&mut on_text).context("generating")?;
    let prefill_s = out.timings.ttft.as_secs_f64().max(1e-9);
    let decode_s = (out.timings.e2e - out.timings.ttft).as_secs_f64().max(1e-9);
    let prefill_tps = prompt_ids.len() as f64 / prefill_s;
    let decode_tps = out.completion_ids.len().saturating_sub(1) as f64 / decode_s;
    if a.json {
        let obj = json!({
            "model": name,
            "prompt_ids": prompt_ids,
            "completion_ids": out.completion_ids,
            "text": out.text,
            "finish_reason": out.finish_reason.as_str(),
            "prompt_tokens": out.usage.prompt_tokens,
            "completion_tokens": out.usage.completion_tokens,
            "prefill_tokens_per_s": prefill_tps,
            "decode_tokens_per_s": decode_tps,
        });
        println!("{obj}");
    } else {
        println!();
        tracing::info!(
            "{} prompt tokens, {} completion tokens ({}); prefill {:.1} tok/s, decode {:.1} tok/s",
            out.usage.prompt_tokens,
            out.usage.completion_tokens,
            out.finish_reason.as_str(),
            prefill_tps,
            decode_tps
        );
    }
    Ok(())
}
