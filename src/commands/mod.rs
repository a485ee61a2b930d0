//! One module per CLI command; shared helpers for loading models and thread pools.

pub mod batch;
pub mod bench;
pub mod engine_args;
pub mod generate;
pub mod monitor;
pub mod pull;
pub mod registry;
pub mod serve;

use crate::model_ref::Target;
use crate::model_store::BadModelArg;
use anyhow::{Context, Result};
use keel_kernels::matmul::Precision;
use keel_runtime::kv_cache::KvCacheDtype;
use keel_runtime::loader::LoadedModel;

/// 2 for the caller's mistakes (bad path, bad value), 1 for failures of keel or the system.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if cause.downcast_ref::<monitor::Breached>().is_some() {
            return 1;
        }
        if cause.downcast_ref::<BadModelArg>().is_some() || cause.downcast_ref::<UsageError>().is_some() {
            return 2;
        }
        if let Some(re) = cause.downcast_ref::<keel_registry::RegistryError>() {
            return if re.is_user_error() { 2 } else { 1 };
        }
        if let Some(re) = cause.downcast_ref::<keel_runtime::Error>() {
            return if re.is_user_error() { 2 } else { 1 };
        }
        if let Some(keel_runtime::engine::SubmitError::Invalid(re)) = cause.downcast_ref() {
            return if re.is_user_error() { 2 } else { 1 };
        }
    }
    1
}

/// A usage error found after argument parsing (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Resolves `--model` (pulling the default model if needed) and loads it.
pub fn load_model(arg: Option<&str>) -> Result<LoadedModel> {
    let (path, registered_name) = match crate::model_ref::resolve_verified_target(arg)? {
        Target::Path(p) => (p, None),
        Target::Registry { version, .. } => {
            (version.model_path, Some(version.info.display_name).filter(|n| !n.is_empty()))
        }
    };
    let mut loaded = load_path(&path)?;
    // The stored copy's file name says nothing (`model/`): keep the name registered.
    if let Some(n) = registered_name {
        loaded.name = n;
    }
    Ok(loaded)
}

/// Loads the model at `path` (already resolved and verified).
pub fn load_path(path: &std::path::Path) -> Result<LoadedModel> {
    let t = std::time::Instant::now();
    let loaded = keel_runtime::loader::load(path).with_context(|| format!("loading model {}", path.display()))?;
    tracing::info!(
        "loaded {} ({}, {} layers, {:.1}M parameters) in {:.2}s",
        loaded.name,
        loaded.model.config.architecture.name(),
        loaded.model.config.num_layers,
        loaded.model.weights.num_parameters() as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    Ok(loaded)
}

/// Parses a byte size: `1048576`, `512MiB`, `2GiB`, `1.5G`, `300MB`.
pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num.trim().parse().map_err(|_| format!("{s:?} is not a size like 512MiB or 2GiB"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("unknown size unit {other:?} (use B, KiB, MiB, GiB, KB, MB, GB)")),
    };
    if !(v.is_finite() && v > 0.0) {
        return Err(format!("{s:?} must be a positive size"));
    }
    Ok((v * mult) as usize)
}

/// Options of the CPU kernels, shared by every command that runs a model.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct KernelArgs {
    /// Kernel threads (default: one per CPU).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// `highest`: exact f32 arithmetic, greedy output equal to the reference (the default).
    /// `medium`: weights and activations rounded to BF16 for AVX512-BF16 dot products
    /// where the CPU has them: faster prefill and batched decode, not exact.
    #[arg(long, value_enum, default_value = "highest")]
    pub matmul_precision: MatmulPrecision,
    /// What the KV cache stores: `f32` (exact, the default), `f16` or `bf16` (half the memory
    /// per token and half attention's reads; K and V rounded, not exact; f16 is llama.cpp's
    /// default cache type).
    #[arg(long, value_enum, default_value = "f32")]
    pub kv_cache_dtype: KvDtype,
}

/// `--kv-cache-dtype`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvDtype {
    #[default]
    F32,
    F16,
    Bf16,
}

/// `--matmul-precision` (PyTorch's `set_float32_matmul_precision` names).
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MatmulPrecision {
    #[default]
    Highest,
    Medium,
}

impl KernelArgs {
    pub fn kv_cache_dtype(&self) -> KvCacheDtype {
        match self.kv_cache_dtype {
            KvDtype::F32 => KvCacheDtype::F32,
            KvDtype::F16 => KvCacheDtype::F16,
            KvDtype::Bf16 => KvCacheDtype::Bf16,
        }
    }

    /// Sets the kernels' thread count and matmul precision for this process.
    pub fn apply(&self) -> Result<()> {
        set_threads(self.threads)?;
        let p = match self.matmul_precision {
            MatmulPrecision::Highest => Precision::Highest,
            MatmulPrecision::Medium => Precision::Medium,
        };
        if p == Precision::Medium && !keel_kernels::matmul::medium_available() {
            tracing::warn!(
                "--matmul-precision medium needs AVX-512 with AVX512-BF16; this CPU (SIMD {}) runs the exact kernels",
                keel_kernels::simd_level().name()
            );
        } else if p == Precision::Medium && !keel_kernels::matmul::medium_pays() {
            #[cfg(target_arch = "x86_64")]
            {
                let r = keel_kernels::matmul::bf16_rate::rates();
                tracing::warn!(
                    "--matmul-precision medium: BF16 dot products run {:.1} G multiply-adds/s per thread on this CPU, \
                     f32 FMAs {:.1} (measured at start; KEEL_BF16_DOT=1 forces them): it runs the exact kernels",
                    r.bf16 / 1e9,
                    r.f32 / 1e9
                );
            }
        }
        keel_kernels::matmul::set_precision(p);
        Ok(())
    }
}

/// How the kernels run, for bench headers: `SIMD avx512` (`, matmul precision medium`)
/// (`, KV cache bf16`): what is in effect, defaults left out.
pub fn kernels_description(kv: KvCacheDtype) -> String {
    let mut d = format!("SIMD {}", keel_kernels::simd_level().name());
    if keel_kernels::matmul::precision() == Precision::Medium {
        d += ", matmul precision medium";
    }
    if kv != KvCacheDtype::F32 {
        d += &format!(", KV cache {}", kv.name());
    }
    d
}

/// Sets the kernels' thread count (default: one per CPU).
fn set_threads(threads: Option<usize>) -> Result<()> {
    if let Some(n) = threads {
        if n == 0 {
            return Err(UsageError("--threads must be at least 1".into()).into());
        }
        keel_kernels::parallel::set_num_threads(n);
    }
    Ok(())
}
