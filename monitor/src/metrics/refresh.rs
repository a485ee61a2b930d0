//! Computing the metric tables of an inference table: [`profile`] (incremental) and
//! [`drift`].
//!
//! Incremental profile: `<T>_profile_metrics/_state.json` records, per granularity, the
//! inference-table parts already profiled and the slice keys used. A run lists the
//! table's parts; only the new ones are read to find the windows they touch, and only
//! those windows are recomputed — from every part of the days they overlap, since a
//! window may mix old and new rows — and rewritten (one file per window). Parts are
//! immutable and a row's `date=` partition is its timestamp's day, so this is exact.
//! Changing the slice keys recomputes every window of that granularity.
//!
//! Memory: a profile run holds the rows of the windows it recomputes; a drift run holds
//! every row of the table, without the prompt and response texts.
//!
//! Crash safety: window files are written atomically before the state, which is itself
//! written atomically; a run killed in between recomputes the same windows next time
//! (the files are replaced, never duplicated). Concurrency: a run holds an exclusive
//! lock on its output directory's `_lock` file, so two runs on one table take turns.

use super::compute::{drift_rows, group, input_log_type, profile_rows, GroupKey};
use super::source::{list_parts, read_baseline, read_part, Part};
use super::tables::{self, DriftRow, ProfileRow, ALL_MODELS, LOG_TYPE_BASELINE};
use super::unpack::{unpack, UnpackedRow};
use super::window::{Granularity, Window};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Name of the profile table's state file.
pub const STATE_FILE: &str = "_state.json";

/// The metric tables of inference table directory `table`: `<table>_profile_metrics`
/// and `<table>_drift_metrics`, beside it.
pub fn metric_dirs(table: &Path) -> (PathBuf, PathBuf) {
    let name = table.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let parent = table.parent().unwrap_or(Path::new("."));
    (parent.join(format!("{name}_profile_metrics")), parent.join(format!("{name}_drift_metrics")))
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    granularities: BTreeMap<String, GranularityState>,
}

#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
struct GranularityState {
    slices: Vec<String>,
    parts: BTreeSet<String>,
}

fn read_state(dir: &Path) -> io::Result<State> {
    match fs::read(dir.join(STATE_FILE)) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| {
            io::Error::other(format!("{}: {e} (delete it to recompute every window)", dir.join(STATE_FILE).display()))
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(e),
    }
}

/// What a profile run did.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileOutcome {
    pub output: PathBuf,
    /// Parts of the inference table read for the first time.
    pub new_parts: usize,
    /// Windows whose rows were recomputed and rewritten.
    pub windows_recomputed: usize,
    /// Rows read to recompute them.
    pub rows_read: usize,
    /// Metric rows written.
    pub metric_rows: usize,
    /// Whether a baseline profile was written.
    pub baseline: bool,
}

fn no_rows(table: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("inference table {} has no rows yet (no date=*/part-*.parquet files)", table.display()),
    )
}

fn window_file(g: Granularity, w: Window) -> String {
    format!("{}-{}.parquet", g.slug(), w.start_ms)
}

/// Unpacked rows of `parts`, bucketed by window (only windows in `keep`, if given).
/// Without `keep_text`, the text columns keep only whether they were null (drift uses
/// nothing else of them), so a whole table's rows fit in memory.
fn rows_by_window(
    table: &Path,
    parts: &[&Part],
    g: Granularity,
    keep: Option<&BTreeSet<Window>>,
    keep_text: bool,
) -> io::Result<BTreeMap<Window, Vec<UnpackedRow>>> {
    let mut by_window: BTreeMap<Window, Vec<UnpackedRow>> = BTreeMap::new();
    for part in parts {
        for r in read_part(table, part)? {
            let w = g.window_of(r.timestamp_ms);
            if keep.is_none_or(|k| k.contains(&w)) {
                let mut row = unpack(&r);
                if !keep_text {
                    for t in row.text.iter_mut().flatten() {
                        *t = String::new();
                    }
                }
                by_window.entry(w).or_default().push(row);
            }
        }
    }
    Ok(by_window)
}

/// Profiles the inference table at `table` in windows of `g`, sliced by `slices`, into
/// `out` (see the module doc); with `baseline`, also the baseline's profile
/// (`log_type = BASELINE`, one window spanning its rows).
pub fn profile(
    table: &Path,
    out: &Path,
    g: Granularity,
    slices: &[String],
    baseline: Option<&Path>,
) -> io::Result<ProfileOutcome> {
    let parts = list_parts(table)?;
    if parts.is_empty() {
        return Err(no_rows(table));
    }
    let _lock = tables::lock_dir(out)?;
    let mut state = read_state(out)?;
    let key = g.to_string();
    let mut gs = state.granularities.remove(&key).unwrap_or_default();
    if gs.slices != slices {
        gs = GranularityState { slices: slices.to_vec(), parts: BTreeSet::new() };
    }
    let new: Vec<&Part> = parts.iter().filter(|p| !gs.parts.contains(&p.name)).collect();
    let mut outcome = ProfileOutcome {
        output: out.to_path_buf(),
        new_parts: new.len(),
        windows_recomputed: 0,
        rows_read: 0,
        metric_rows: 0,
        baseline: false,
    };

    if !new.is_empty() {
        // Windows touched by the new parts.
        let mut dirty: BTreeSet<Window> = BTreeSet::new();
        for part in &new {
            for r in read_part(table, part)? {
                dirty.insert(g.window_of(r.timestamp_ms));
            }
        }
        // Every part of a day those windows overlap.
        const DAY_MS: i64 = 86_400_000;
        let days: BTreeSet<i32> = dirty
            .iter()
            .flat_map(|w| (w.start_ms.div_euclid(DAY_MS)..=(w.end_ms - 1).div_euclid(DAY_MS)).map(|d| d as i32))
            .collect();
        let needed: Vec<&Part> = parts.iter().filter(|p| days.contains(&p.day)).collect();
        let by_window = rows_by_window(table, &needed, g, Some(&dirty), true)?;
        for (w, rows) in &by_window {
            let refs: Vec<&UnpackedRow> = rows.iter().collect();
            let metric_rows = profile_rows(*w, &key, input_log_type(), &group(&refs, slices));
            tables::write_parquet(&out.join(window_file(g, *w)), &tables::profile_batch(&metric_rows)?)?;
            outcome.windows_recomputed += 1;
            outcome.rows_read += rows.len();
            outcome.metric_rows += metric_rows.len();
        }
    }

    if let Some(b) = baseline {
        let base = read_baseline(b)?;
        let rows = base.rows;
        let refs: Vec<&UnpackedRow> = rows.iter().collect();
        let (lo, hi) =
            rows.iter().fold((i64::MAX, i64::MIN), |(lo, hi), r| (lo.min(r.timestamp_ms), hi.max(r.timestamp_ms)));
        let w = Window { start_ms: lo, end_ms: hi.saturating_add(1) };
        let mut metric_rows = profile_rows(w, &key, LOG_TYPE_BASELINE, &group(&refs, slices));
        metric_rows.retain(|r| !base.absent.contains(r.column_name.as_str()));
        let path = out.join(format!("{}-baseline.parquet", g.slug()));
        tables::write_parquet(&path, &tables::profile_batch(&metric_rows)?)?;
        outcome.metric_rows += metric_rows.len();
        outcome.baseline = true;
    }

    gs.parts = parts.iter().map(|p| p.name.clone()).collect();
    state.granularities.insert(key, gs);
    let json = serde_json::to_vec_pretty(&state).map_err(io::Error::other)?;
    tables::write_atomic(&out.join(STATE_FILE), &json)?;
    Ok(outcome)
}

/// What a drift run did.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftOutcome {
    pub output: PathBuf,
    pub windows: usize,
    pub consecutive_rows: usize,
    pub baseline_rows: usize,
}

/// For each current group, the baseline group of the same model and slice, or else the
/// baseline's all-models group of that slice (a baseline need not name models).
fn baseline_for<'a>(
    cur: &BTreeMap<GroupKey, Vec<&UnpackedRow>>,
    base: &BTreeMap<GroupKey, Vec<&'a UnpackedRow>>,
) -> BTreeMap<GroupKey, Vec<&'a UnpackedRow>> {
    cur.keys()
        .filter_map(|k| {
            let fallback = (ALL_MODELS.to_string(), k.1.clone());
            base.get(k).or_else(|| base.get(&fallback)).map(|rows| (k.clone(), rows.clone()))
        })
        .collect()
}

/// Drift of the inference table at `table` in windows of `g`: CONSECUTIVE (each window
/// against the previous window that has rows) and, with `baseline`, BASELINE (each
/// window against the baseline); written to `out/<granularity>.parquet`, replacing the
/// previous run's file of that granularity.
pub fn drift(
    table: &Path,
    out: &Path,
    g: Granularity,
    slices: &[String],
    baseline: Option<&Path>,
) -> io::Result<DriftOutcome> {
    let parts = list_parts(table)?;
    if parts.is_empty() {
        return Err(no_rows(table));
    }
    let (base_rows, base_absent) = match baseline.map(read_baseline).transpose()? {
        Some(mut b) => {
            for t in b.rows.iter_mut().flat_map(|r| r.text.iter_mut().flatten()) {
                *t = String::new();
            }
            (Some(b.rows), b.absent)
        }
        None => (None, BTreeSet::new()),
    };
    let _lock = tables::lock_dir(out)?;
    let all: Vec<&Part> = parts.iter().collect();
    let by_window = rows_by_window(table, &all, g, None, false)?;
    let key = g.to_string();
    let base_refs: Vec<&UnpackedRow> = base_rows.iter().flatten().collect();
    let base_groups = group(&base_refs, slices);

    let mut rows: Vec<DriftRow> = Vec::new();
    let mut outcome =
        DriftOutcome { output: out.to_path_buf(), windows: by_window.len(), consecutive_rows: 0, baseline_rows: 0 };
    let mut previous: Option<(Window, BTreeMap<GroupKey, Vec<&UnpackedRow>>)> = None;
    for (w, wrows) in &by_window {
        let refs: Vec<&UnpackedRow> = wrows.iter().collect();
        let groups = group(&refs, slices);
        if let Some((pw, pg)) = &previous {
            let d = drift_rows((*w, Some(*pw), "CONSECUTIVE", &key), &groups, pg);
            outcome.consecutive_rows += d.len();
            rows.extend(d);
        }
        if base_rows.is_some() {
            let mut d = drift_rows((*w, None, "BASELINE", &key), &groups, &baseline_for(&groups, &base_groups));
            for r in d.iter_mut().filter(|r| base_absent.contains(r.column_name.as_str())) {
                // The baseline has no such column: nothing to compare it with.
                *r = DriftRow {
                    window: r.window,
                    window_cmp: r.window_cmp,
                    drift_type: std::mem::take(&mut r.drift_type),
                    granularity: std::mem::take(&mut r.granularity),
                    model_id: std::mem::take(&mut r.model_id),
                    slice_key: r.slice_key.take(),
                    slice_value: r.slice_value.take(),
                    column_name: std::mem::take(&mut r.column_name),
                    data_type: std::mem::take(&mut r.data_type),
                    count_delta: r.count_delta,
                    ..Default::default()
                };
            }
            outcome.baseline_rows += d.len();
            rows.extend(d);
        }
        previous = Some((*w, groups));
    }
    tables::write_parquet(&out.join(format!("{}.parquet", g.slug())), &tables::drift_batch(&rows)?)?;
    Ok(outcome)
}

/// The latest profile and drift rows are what `check` and `report` read; both tables
/// hold every granularity computed so far.
pub fn read_tables(table: &Path) -> io::Result<(Vec<ProfileRow>, Vec<DriftRow>)> {
    let (p, d) = metric_dirs(table);
    let profile = if p.is_dir() { tables::read_profile(&p)? } else { Vec::new() };
    let drift = if d.is_dir() { tables::read_drift(&d)? } else { Vec::new() };
    Ok((profile, drift))
}
