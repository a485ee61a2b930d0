//! Engine options shared by the commands that start an engine (`bench offline`, later
//! `serve` and `batch`): batch limits and the KV-cache budget.

use super::{parse_bytes, UsageError};
use anyhow::Result;
use clap::Args;
use keel_runtime::config::ModelConfig;
use keel_runtime::engine::EngineConfig;

#[derive(Args, Clone, Debug, Default)]
pub struct EngineArgs {
    /// Most requests in the running batch.
    #[arg(long)]
    pub max_num_seqs: Option<usize>,
    /// Most tokens computed per engine step (the chunked-prefill budget).
    #[arg(long)]
    pub max_num_batched_tokens: Option<usize>,
    /// KV-cache size, e.g. 512MiB or 2GiB.
    #[arg(long, value_parser = parse_bytes, conflicts_with = "kv_cache_fraction")]
    pub kv_cache_mem: Option<usize>,
    /// KV-cache size as a fraction of this machine's memory, e.g. 0.25.
    #[arg(long)]
    pub kv_cache_fraction: Option<f64>,
    /// Turn off prefix caching.
    #[arg(long)]
    pub no_prefix_caching: bool,
}

/// Total physical memory in bytes (Linux), if known.
fn total_memory() -> Option<usize> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

impl EngineArgs {
    /// The engine configuration, with `defaults` for what was not given; logs the
    /// KV-cache size it gives `model`.
    pub fn config(&self, defaults: EngineConfig, model: &ModelConfig) -> Result<EngineConfig> {
        let c = self.resolve(defaults)?;
        let blocks = c.num_blocks(model);
        tracing::info!(
            "KV cache: {blocks} blocks of {} tokens, {}",
            keel_runtime::kv_cache::BLOCK_SIZE,
            c.kv_cache_dtype.name()
        );
        Ok(c)
    }

    /// The engine configuration, with `defaults` for what was not given.
    pub fn resolve(&self, defaults: EngineConfig) -> Result<EngineConfig> {
        let mut c = defaults;
        if let Some(n) = self.max_num_seqs {
            c.max_num_seqs = n;
        }
        if let Some(n) = self.max_num_batched_tokens {
            c.max_num_batched_tokens = n;
        } else {
            c.max_num_batched_tokens = c.max_num_batched_tokens.max(c.max_num_seqs);
        }
        if let Some(b) = self.kv_cache_mem {
            c.kv_cache_bytes = Some(b);
        }
        if let Some(f) = self.kv_cache_fraction {
            if !(f > 0.0 && f <= 0.95) {
                return Err(UsageError(format!("--kv-cache-fraction {f}: must be in (0, 0.95]")).into());
            }
            let total = total_memory().ok_or_else(|| {
                UsageError("--kv-cache-fraction: cannot read this machine's memory size; use --kv-cache-mem".into())
            })?;
            c.kv_cache_bytes = Some((total as f64 * f) as usize);
        }
        if c.max_num_seqs == 0 {
            return Err(UsageError("--max-num-seqs must be at least 1".into()).into());
        }
        if c.max_num_batched_tokens < c.max_num_seqs {
            return Err(UsageError(format!(
                "--max-num-batched-tokens must be at least --max-num-seqs ({})",
                c.max_num_seqs
            ))
            .into());
        }
        Ok(c)
    }
}
