//! `runtime monitor profile|drift|check|report|unpack`: Lakehouse-Monitoring-style metrics over
//! an inference table (SPEC.md §6.2), computed by `keel_monitor::metrics`.
//!
//! `--table` is a table name under `$KEEL_HOME/tables/` (`chat_payload`) or a path;
//! the metric tables are written beside it (`<table>_profile_metrics/`,
//! `<table>_drift_metrics/`). Exit codes: 0 done (for `check`: no rule breached); 1 a
//! rule breached (`check`), or a failure of keel or the system; 2 a usage mistake (bad
//! granularity, rule, slice, a table that does not exist).

use super::UsageError;
use crate::model_store;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use keel_monitor::metrics::{self, rules, Granularity};
use std::collections::BTreeSet;
use std::path::PathBuf;

#[derive(Args)]
pub struct MonitorArgs {
    #[command(subcommand)]
    command: MonitorCommand,
}

#[derive(Subcommand)]
enum MonitorCommand {
    /// Profile metrics per window, model and slice → <table>_profile_metrics (incremental).
    Profile(ComputeArgs),
    /// Drift metrics, each window against the previous one and the baseline → <table>_drift_metrics.
    Drift(ComputeArgs),
    /// Check alert rules against the latest window; exit 1 when one is breached.
    Check(CheckArgs),
    /// A readable summary of the latest windows.
    Report(ReportArgs),
    /// Write one row per request with its profiled columns (usable as a --baseline).
    Unpack(UnpackArgs),
}

#[derive(Args)]
struct UnpackArgs {
    #[command(flatten)]
    table: TableArg,
    /// The Parquet file to write.
    #[arg(long)]
    output: PathBuf,
}

#[derive(Args)]
struct TableArg {
    /// The inference table: a name under $KEEL_HOME/tables (e.g. chat_payload) or a path.
    #[arg(long)]
    table: String,
}

#[derive(Args)]
struct ComputeArgs {
    #[command(flatten)]
    table: TableArg,
    /// Window width: "5 minutes", "1 hour", "1 day", "1 week", ... (repeatable).
    #[arg(long, default_value = "1 day")]
    granularity: Vec<String>,
    /// Also compute the metrics per value of this column (repeatable): status_code,
    /// finish_reason, endpoint_name, model_name, model_version, served_entity_name.
    #[arg(long)]
    slice: Vec<String>,
    /// A baseline: an inference table (directory or Parquet file) or a Parquet file whose
    /// columns are profiled columns by name.
    #[arg(long)]
    baseline: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum DriftType {
    Consecutive,
    Baseline,
}

#[derive(Args)]
struct CheckArgs {
    #[command(flatten)]
    table: TableArg,
    /// "<metric>(<column>) <op> <number>", e.g. "js_distance(response_length) > 0.2" (repeatable).
    #[arg(long, required = true)]
    rule: Vec<String>,
    /// Granularity of the rows checked (default: the only one computed).
    #[arg(long)]
    granularity: Option<String>,
    /// Model id of the rows checked: ":all" (every model) or "<model_name>:<version>".
    #[arg(long, default_value = ":all")]
    model_id: String,
    /// Only the rows of one slice, "<key>=<value>" (default: the unsliced rows).
    #[arg(long)]
    slice: Option<String>,
    /// Drift type for drift rules.
    #[arg(long, value_enum, default_value = "consecutive")]
    drift_type: DriftType,
    /// Check every window, not only the latest.
    #[arg(long)]
    all_windows: bool,
}

#[derive(Args)]
struct ReportArgs {
    #[command(flatten)]
    table: TableArg,
    /// Granularity to report (default: the only one computed, else the finest).
    #[arg(long)]
    granularity: Option<String>,
    /// How many of the latest windows to show.
    #[arg(long, default_value_t = 3)]
    windows: usize,
}

pub fn run(a: MonitorArgs) -> Result<()> {
    match a.command {
        MonitorCommand::Profile(c) => compute(c, false),
        MonitorCommand::Drift(c) => compute(c, true),
        MonitorCommand::Check(c) => check(c),
        MonitorCommand::Report(r) => report(r),
        MonitorCommand::Unpack(u) => {
            let dir = table_dir(&u.table)?;
            let n = metrics::unpacked_table::write_unpacked(&dir, &u.output)
                .with_context(|| format!("unpacking {}", dir.display()))?;
            println!("{n} rows → {}", u.output.display());
            Ok(())
        }
    }
}

/// The table directory `--table` names; a usage error when it does not exist.
fn table_dir(t: &TableArg) -> Result<PathBuf> {
    let dir = metrics::source::table_dir(&model_store::keel_home().join("tables"), &t.table);
    if !dir.is_dir() {
        return Err(UsageError(format!(
            "--table {}: no inference table at {} (capture writes tables under $KEEL_HOME/tables/<prefix>_payload)",
            t.table,
            dir.display()
        ))
        .into());
    }
    Ok(dir)
}

fn granularities(gs: &[String]) -> Result<Vec<Granularity>> {
    let parsed: BTreeSet<Granularity> = gs
        .iter()
        .map(|g| Granularity::parse(g).map_err(|e| UsageError(format!("--granularity: {e}"))))
        .collect::<Result<_, _>>()?;
    Ok(parsed.into_iter().collect())
}

/// A usage error unless `key` (given in `--slice arg`) is something to slice by.
fn check_slice_key(arg: &str, key: &str) -> Result<()> {
    if metrics::unpack::is_slice_key(key) {
        return Ok(());
    }
    bail!(UsageError(format!(
        "--slice {arg}: {key} is not a column to slice by; use one of {}, {}",
        metrics::unpack::CATEGORICAL_COLUMNS.join(", "),
        metrics::unpack::METADATA_SLICES.join(", ")
    )))
}

fn compute(c: ComputeArgs, drift: bool) -> Result<()> {
    let dir = table_dir(&c.table)?;
    let gs = granularities(&c.granularity)?;
    for s in &c.slice {
        check_slice_key(s, s)?;
    }
    let mut slices = c.slice.clone();
    slices.sort();
    slices.dedup();
    if let Some(b) = &c.baseline {
        if !b.exists() {
            bail!(UsageError(format!("--baseline {}: no such file or directory", b.display())));
        }
        metrics::source::check_baseline(b).map_err(|e| UsageError(format!("--baseline: {e}")))?;
    }
    let (profile_dir, drift_dir) = metrics::metric_dirs(&dir);
    for g in gs {
        if drift {
            let o = metrics::drift(&dir, &drift_dir, g, &slices, c.baseline.as_deref())
                .with_context(|| format!("drift of {} ({g})", dir.display()))?;
            let note = if o.windows < 2 && c.baseline.is_none() {
                " (CONSECUTIVE drift needs two windows with rows)"
            } else {
                ""
            };
            println!(
                "drift {g}: {} window(s), {} CONSECUTIVE and {} BASELINE rows → {}{note}",
                o.windows,
                o.consecutive_rows,
                o.baseline_rows,
                o.output.display()
            );
        } else {
            let o = metrics::profile(&dir, &profile_dir, g, &slices, c.baseline.as_deref())
                .with_context(|| format!("profile of {} ({g})", dir.display()))?;
            let baseline = if o.baseline { " and the baseline" } else { "" };
            println!(
                "profile {g}: {} new part(s), {} window(s) recomputed from {} rows, {} metric rows{baseline} → {}",
                o.new_parts,
                o.windows_recomputed,
                o.rows_read,
                o.metric_rows,
                o.output.display()
            );
        }
    }
    Ok(())
}

/// A rule was breached: `check` exits 1 (its report is already on stdout).
#[derive(Debug, thiserror::Error)]
#[error("{0} of {1} rule evaluation(s) breached")]
pub struct Breached(usize, usize);

/// The granularity to use: the one asked for, or the only one the tables hold
/// (`finest` picks the smallest when there are several).
fn pick_granularity(asked: Option<&str>, present: BTreeSet<String>, finest: bool) -> Result<String> {
    if let Some(g) = asked {
        let g = Granularity::parse(g).map_err(|e| UsageError(format!("--granularity: {e}")))?.to_string();
        if !present.contains(&g) {
            bail!(UsageError(format!(
                "--granularity {g}: not computed for this table (computed: {}); run `runtime monitor profile/drift --granularity \"{g}\"`",
                present.into_iter().collect::<Vec<_>>().join(", ")
            )));
        }
        return Ok(g);
    }
    let mut parsed: Vec<Granularity> = present.iter().filter_map(|g| Granularity::parse(g).ok()).collect();
    parsed.sort();
    match parsed.len() {
        0 => bail!(UsageError(
            "no metric tables for this table yet: run `runtime monitor profile` and `runtime monitor drift` first"
                .into()
        )),
        1 => Ok(parsed[0].to_string()),
        _ if finest => Ok(parsed[0].to_string()),
        _ => bail!(UsageError(format!(
            "the metric tables hold several granularities ({}): choose one with --granularity",
            present.into_iter().collect::<Vec<_>>().join(", ")
        ))),
    }
}

fn check(c: CheckArgs) -> Result<()> {
    let dir = table_dir(&c.table)?;
    let parsed: Vec<rules::Rule> =
        c.rule.iter().map(|r| rules::Rule::parse(r).map_err(UsageError)).collect::<Result<_, _>>()?;
    let slice = match &c.slice {
        None => None,
        Some(s) => {
            let (k, v) =
                s.split_once('=').ok_or_else(|| UsageError(format!("--slice {s:?}: expected <key>=<value>")))?;
            check_slice_key(s, k.trim())?;
            Some((k.trim().to_string(), v.trim().to_string()))
        }
    };
    let (profile, drift) = metrics::read_tables(&dir)?;
    let present: BTreeSet<String> = parsed
        .iter()
        .flat_map(|r| match r.source() {
            rules::Source::Profile => profile.iter().map(|p| p.granularity.clone()).collect::<Vec<_>>(),
            rules::Source::Drift => drift.iter().map(|d| d.granularity.clone()).collect(),
        })
        .collect();
    let scope = rules::Scope {
        granularity: pick_granularity(c.granularity.as_deref(), present, false)?,
        model_id: c.model_id.clone(),
        slice,
        drift_type: match c.drift_type {
            DriftType::Consecutive => "CONSECUTIVE",
            DriftType::Baseline => "BASELINE",
        }
        .into(),
        all_windows: c.all_windows,
    };
    // A model id or slice the metric tables never mention is a typo, not "no data".
    let groups: BTreeSet<(&str, Option<(&str, &str)>)> = profile
        .iter()
        .map(|p| (p.model_id.as_str(), p.slice_key.as_deref().zip(p.slice_value.as_deref())))
        .chain(drift.iter().map(|d| (d.model_id.as_str(), d.slice_key.as_deref().zip(d.slice_value.as_deref()))))
        .collect();
    if !groups.iter().any(|(m, _)| *m == scope.model_id) {
        let models: BTreeSet<&str> = groups.iter().map(|(m, _)| *m).collect();
        bail!(UsageError(format!(
            "--model-id {}: no metric rows for it; model ids in the tables: {}",
            scope.model_id,
            models.into_iter().collect::<Vec<_>>().join(", ")
        )));
    }
    if let Some((k, v)) = &scope.slice {
        if !groups.iter().any(|(m, s)| *m == scope.model_id && *s == Some((k.as_str(), v.as_str()))) {
            let values: BTreeSet<&str> =
                groups.iter().filter_map(|(_, s)| s.filter(|s| s.0 == k).map(|s| s.1)).collect();
            let hint = if values.is_empty() {
                format!("the tables are not sliced by {k}; run profile/drift with --slice {k}")
            } else {
                format!("values of {k} in the tables: {}", values.into_iter().collect::<Vec<_>>().join(", "))
            };
            bail!(UsageError(format!("--slice {k}={v}: no metric rows for it; {hint}")));
        }
    }
    let evals: Vec<rules::Evaluation> =
        parsed.iter().flat_map(|r| rules::evaluate(r, &scope, &profile, &drift)).collect();
    println!("{} — granularity {}, model {}", dir.display(), scope.granularity, scope.model_id);
    for e in &evals {
        println!("  {e}");
    }
    let breached = evals.iter().filter(|e| e.breached).count();
    if breached > 0 {
        return Err(Breached(breached, evals.len()).into());
    }
    println!("no rule breached");
    Ok(())
}

fn report(r: ReportArgs) -> Result<()> {
    let dir = table_dir(&r.table)?;
    let (profile, drift) = metrics::read_tables(&dir)?;
    let present: BTreeSet<String> = profile.iter().map(|p| p.granularity.clone()).collect();
    let g = pick_granularity(r.granularity.as_deref(), present, true)?;
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    print!("{}", metrics::report::render(&name, &g, r.windows.max(1), &profile, &drift));
    Ok(())
}
