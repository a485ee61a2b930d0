//! `runtime batch`: offline bulk inference over Parquet (SPEC §5). Every row of this
//! shard's share of the input goes through one continuous-batching `Engine` (the one the
//! server uses) and comes out as a row of the output: all input columns plus
//! `generated_text`, `prompt_tokens`, `completion_tokens`, `finish_reason`, `error`,
//! `model_name`, `model_version`.
//!
//! Invariants: the output holds every row of the shard exactly once, in input order,
//! whether the job ran at once or was killed and rerun any number of times (checkpoint
//! parts, see [`parts`]); a bad row gets its `error` and the job goes on; bad arguments,
//! a missing column, an unreadable input or an unknown model end the job before any
//! generation with exit code 2. Greedy decoding is the default, so reruns, resumes and
//! shards reproduce the same text.
//!
//! Files: [`input`] (listing, streaming, sharding), [`prompt`] (templates), [`driver`]
//! (the engine loop), [`parts`] (checkpoints, resume, combining), [`output`] (output
//! columns), [`progress`] (bar, lines, totals).

mod driver;
mod input;
mod output;
mod parts;
mod progress;
mod prompt;

use super::engine_args::EngineArgs;
use super::{load_path, KernelArgs, UsageError};
use crate::model_ref::{self, Target};
use anyhow::{Context, Result};
use clap::Args;
use input::{InputSet, Shard};
use keel_runtime::engine::{Engine, EngineConfig};
use keel_runtime::sampling::SamplingParams;
use output::ModelIdentity;
use parts::{Manifest, Parts};
use prompt::{BuiltinTemplate, PromptBuilder};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Default `--max-num-seqs` for batch jobs.
const DEFAULT_MAX_NUM_SEQS: usize = 32;

#[derive(Args)]
pub struct BatchArgs {
    /// A Parquet file, or a directory of them (its *.parquet files, in sorted order).
    #[arg(long)]
    input: PathBuf,
    /// The output Parquet file (checkpoints go to <output>.parts/ until it is done).
    #[arg(long)]
    output: PathBuf,
    /// Model: models:/name@alias, models:/name/N, a path or a known name; default: smollm2.
    #[arg(long)]
    model: Option<String>,
    /// The column holding each row's text (string or binary).
    #[arg(long, default_value = "text")]
    column: String,
    /// A column naming rows in messages (e.g. id); the output keeps every column anyway.
    #[arg(long)]
    id_column: Option<String>,
    /// Built-in prompt template.
    #[arg(long, value_enum, default_value_t = BuiltinTemplate::Summarize)]
    template: BuiltinTemplate,
    /// A minijinja template rendered per row ({{ text }} and every column by name); the
    /// result is the user message given to the model's chat template.
    #[arg(long, conflicts_with = "template")]
    template_file: Option<PathBuf>,
    /// Most new tokens per row (fewer when the prompt leaves less of the context).
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// 0 = greedy (the default: reruns, resumes and shards reproduce the same text).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// With --temperature > 0: the job's seed (each row samples with its own seed from it).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Process only rows i (counted over the input files in order) with i % N == K - 1.
    #[arg(long, value_name = "K/N")]
    shard: Option<Shard>,
    /// Rows per checkpoint part (a part is also written every 30 s).
    #[arg(long, default_value_t = 1000)]
    part_rows: usize,
    /// Print the final summary as one JSON object on stdout.
    #[arg(long)]
    json_summary: bool,
    #[command(flatten)]
    kernels: KernelArgs,
    #[command(flatten)]
    engine: EngineArgs,
}

/// The resolved model: what the output columns and the manifest say about it.
struct ModelChoice {
    path: PathBuf,
    registry: Option<Box<keel_registry::ModelVersion>>,
}

impl ModelChoice {
    fn resolve(arg: Option<&str>) -> Result<ModelChoice> {
        Ok(match model_ref::resolve(arg, None)? {
            Target::Path(p) => ModelChoice { path: p, registry: None },
            Target::Registry { version, .. } => {
                ModelChoice { path: version.model_path.clone(), registry: Some(version) }
            }
        })
    }

    fn manifest_entry(&self) -> serde_json::Value {
        match &self.registry {
            Some(v) => json!({ "registry_name": v.name, "version": v.version }),
            None => json!({ "path": self.path.canonicalize().unwrap_or_else(|_| self.path.clone()) }),
        }
    }
}

fn check_args(a: &BatchArgs) -> Result<()> {
    if a.max_tokens == 0 {
        return Err(UsageError("--max-tokens must be at least 1".into()).into());
    }
    if a.part_rows == 0 {
        return Err(UsageError("--part-rows must be at least 1".into()).into());
    }
    SamplingParams { temperature: a.temperature, max_tokens: a.max_tokens, ..SamplingParams::default() }.validate()?;
    a.kernels.apply()?;
    Ok(())
}

/// The output must not land among the inputs (a rerun would read it back).
fn check_output(output: &Path, input: &Path, set: &InputSet) -> Result<()> {
    if output.is_dir() {
        return Err(UsageError(format!("--output {} is a directory; give a file name", output.display())).into());
    }
    let parent = match output.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(p) => p.to_path_buf(),
        None => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)
        .map_err(|e| UsageError(format!("--output: cannot create directory {}: {e}", parent.display())))?;
    let out = parent.canonicalize()?.join(output.file_name().unwrap_or_default());
    if input.is_dir() && input.canonicalize().is_ok_and(|i| i == parent.canonicalize().unwrap_or_default()) {
        return Err(UsageError(format!(
            "--output {} is inside the input directory {}; write it elsewhere",
            output.display(),
            input.display()
        ))
        .into());
    }
    if set.files.iter().any(|f| f.path.canonicalize().is_ok_and(|p| p == out)) {
        return Err(UsageError(format!("--output {} is an input file", output.display())).into());
    }
    Ok(())
}

pub fn run(a: BatchArgs) -> Result<()> {
    let t0 = Instant::now();
    check_args(&a)?;
    let shard = a.shard.unwrap_or(Shard::ALL);
    let input = InputSet::open(&a.input)?;
    check_output(&a.output, &a.input, &input)?;
    let prompts = PromptBuilder::new(a.template, a.template_file.as_deref(), &input.schema, &a.column)?;
    let id_index = match &a.id_column {
        Some(c) => Some(input.schema.index_of(c).map_err(|_| {
            UsageError(format!(
                "--id-column {c}: the input has no such column (columns: {})",
                input::describe_columns(&input.schema)
            ))
        })?),
        None => None,
    };
    let output_schema = output::output_schema(&input.schema)?;
    let model = ModelChoice::resolve(a.model.as_deref())?;

    let mut inputs = input.files.clone();
    for f in &mut inputs {
        f.path = f.path.canonicalize().unwrap_or_else(|_| f.path.clone());
    }
    let manifest = Manifest::new(
        inputs,
        &a.column,
        prompts.identity(),
        model.manifest_entry(),
        shard.to_string(),
        a.max_tokens,
        a.temperature,
        a.seed,
    );
    let mut parts = Parts::open(&a.output, &manifest)?;
    let shard_rows = shard.rows_of(input.total_rows);
    let resumed = parts.done();
    if resumed > shard_rows {
        return Err(UsageError(format!(
            "{} holds {resumed} rows but shard {shard} of the input has {shard_rows}; delete it to start over",
            parts::parts_dir(&a.output).display()
        ))
        .into());
    }
    if resumed > 0 {
        eprintln!(
            "batch: resuming after {resumed} of {shard_rows} rows (from {})",
            parts::parts_dir(&a.output).display()
        );
    }

    let mut identity = ModelIdentity { name: String::new(), version: None };
    let (mut max_num_seqs, mut load_s) = (0, 0.0);
    let mut progress = None;
    if resumed < shard_rows {
        if let Some(v) = &model.registry {
            model_ref::open_registry()?
                .verify(v)
                .map_err(|e| anyhow::anyhow!("models:/{}/{}: {e}", v.name, v.version))?;
        }
        let tl = Instant::now();
        let loaded = load_path(&model.path)?;
        load_s = tl.elapsed().as_secs_f64();
        identity = match &model.registry {
            Some(v) => ModelIdentity { name: v.name.clone(), version: Some(v.version.to_string()) },
            None => ModelIdentity { name: loaded.name.clone(), version: None },
        };
        let defaults = EngineConfig {
            max_num_seqs: DEFAULT_MAX_NUM_SEQS,
            max_num_batched_tokens: 2048,
            kv_cache_bytes: None,
            enable_prefix_caching: !a.engine.no_prefix_caching,
            kv_cache_dtype: a.kernels.kv_cache_dtype(),
            queue_capacity: 1,
        };
        let mut cfg = a.engine.config(defaults, &loaded.model.config)?;
        max_num_seqs = cfg.max_num_seqs;
        // Twice the running batch in flight: the engine's waiting queue never runs dry.
        let window = 2 * cfg.max_num_seqs;
        cfg.queue_capacity = 2 * window + 16;
        let engine = Engine::start(loaded.model, Arc::new(loaded.tokenizer), cfg)?;
        let job = driver::Job {
            engine: &engine.handle,
            prompts: &prompts,
            params: SamplingParams {
                temperature: a.temperature,
                max_tokens: a.max_tokens,
                seed: Some(a.seed),
                ..SamplingParams::default()
            },
            shard,
            input_schema: input.schema.clone(),
            output_schema: output_schema.clone(),
            model: identity.clone(),
            id_index,
            window,
            part_rows: a.part_rows,
        };
        let mut p = progress::Progress::new(shard_rows, resumed);
        driver::run(&job, input.reader(shard, resumed), &mut parts, &mut p)?;
        p.finish();
        progress = Some(p);
    }
    let gen_s = progress.as_ref().map_or(0.0, progress::Progress::elapsed);
    let t = progress.map(|p| p.totals).unwrap_or_default();
    let (rows, errors) = parts.combine(&a.output, &output_schema).context("combining the parts")?;
    anyhow::ensure!(rows == shard_rows, "internal: wrote {rows} rows but shard {shard} has {shard_rows}");
    let wall = t0.elapsed().as_secs_f64();
    let out_tps = t.completion_tokens as f64 / gen_s.max(1e-9);
    let total_tps = (t.prompt_tokens + t.completion_tokens) as f64 / gen_s.max(1e-9);
    eprintln!(
        "batch: {rows} rows ({errors} errors) written to {}; this run: {} rows, {} prompt + {} completion tokens in {gen_s:.1} s, {out_tps:.1} output tok/s, {total_tps:.1} total tok/s (wall {wall:.1} s)",
        a.output.display(),
        t.rows,
        t.prompt_tokens,
        t.completion_tokens,
    );
    if a.json_summary {
        let s = json!({
            "output": a.output,
            "rows": rows,
            "errors": errors,
            "rows_this_run": t.rows,
            "errors_this_run": t.errors,
            "rows_resumed": resumed,
            "prompt_tokens": t.prompt_tokens,
            "completion_tokens": t.completion_tokens,
            "generation_s": gen_s,
            "load_s": load_s,
            "wall_s": wall,
            "output_tokens_per_s": out_tps,
            "total_tokens_per_s": total_tps,
            "model_name": Some(identity.name).filter(|n| !n.is_empty()),
            "model_version": identity.version,
            "shard": shard.to_string(),
            "max_num_seqs": max_num_seqs,
            "threads": keel_kernels::parallel::num_threads(),
        });
        println!("{s}");
    }
    Ok(())
}
