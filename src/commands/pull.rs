//! `runtime pull [NAME] [--force]`: fetch a known model into `$KEEL_HOME/models/` and
//! register it (`smollm2` → `models:/smollm2-135m-instruct@champion`).

use super::UsageError;
use crate::model_store::{self, KNOWN_MODELS};
use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct PullArgs {
    /// Model to fetch.
    #[arg(default_value = model_store::DEFAULT_MODEL)]
    name: String,
    /// Download again even if present.
    #[arg(long)]
    force: bool,
}

pub fn run(a: PullArgs) -> Result<()> {
    let m = model_store::known(&a.name).ok_or_else(|| {
        let names: Vec<String> = KNOWN_MODELS.iter().map(|m| format!("{} ({})", m.name, m.description)).collect();
        UsageError(format!("unknown model {:?}; known models: {}", a.name, names.join(", ")))
    })?;
    let path = model_store::pull(m, a.force)?;
    crate::model_ref::register_known(m, &path)?;
    println!("{}", path.display());
    Ok(())
}
