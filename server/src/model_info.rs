//! What the registry records about a model's files (`MLmodel`'s flavor section), read by
//! opening the model with keel's loader — so registering also checks that keel can load
//! what is registered.

use keel_registry::ModelInfo;
use keel_runtime::loader::{self, ModelFormat};
use std::collections::BTreeMap;
use std::path::Path;

/// Opens `path` (a `.gguf`, a directory holding one, or an HF directory) and describes it.
pub fn describe(path: &Path) -> Result<ModelInfo, String> {
    let lm = loader::load(path).map_err(|e| format!("{} is not a model keel can load: {e}", path.display()))?;
    let cfg = &lm.model.config;
    let w = &lm.model.weights;
    // The weights' dtype: the most common one over the layers' matrices (GGUF files mix
    // types, e.g. a Q6_K output layer beside Q4_K blocks).
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    for l in &w.layers {
        for t in [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down] {
            *counts.entry(t.dtype.name()).or_default() += 1;
        }
    }
    let dtype = counts.into_iter().max_by_key(|(_, n)| *n).map(|(d, _)| d).unwrap_or("unknown");
    Ok(ModelInfo {
        flavor: "llm".into(),
        architecture: cfg.architecture.name().into(),
        format: match lm.format {
            ModelFormat::Gguf => "gguf".into(),
            ModelFormat::Safetensors => "safetensors".into(),
        },
        dtype: dtype.into(),
        parameter_count: w.num_parameters() as u64,
        context_length: cfg.max_position_embeddings as u64,
        display_name: lm.name,
    })
}
