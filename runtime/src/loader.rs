//! Opening a model from disk: a `.gguf` file, a directory holding one, or an HF
//! checkpoint directory (`config.json` + safetensors + tokenizer files).
//!
//! Returns the `Model` (weights mapped, not copied) and its `Tokenizer`. A path that is
//! none of these is an error saying what was expected.

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::model::Model;
use crate::safetensors_dir::SafetensorsDir;
use crate::tokenizer::Tokenizer;
use crate::weights::{ModelWeights, TensorSource};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelFormat {
    Gguf,
    Safetensors,
}

pub struct LoadedModel {
    pub model: Model,
    pub tokenizer: Tokenizer,
    pub format: ModelFormat,
    /// The file or directory the weights came from.
    pub path: PathBuf,
    /// A display name (`general.name`, or the directory name).
    pub name: String,
}

fn not_a_model(path: &Path, why: &str) -> Error {
    Error::io(
        path,
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{why}; expected a .gguf file, a directory holding one, or an HF directory with config.json"),
        ),
    )
}

/// Where the weights of `path` are, and in which format.
pub fn locate(path: &Path) -> Result<(PathBuf, ModelFormat)> {
    if path.is_file() {
        return Ok((path.to_path_buf(), ModelFormat::Gguf));
    }
    if !path.is_dir() {
        return Err(not_a_model(path, "no such file or directory"));
    }
    if path.join("config.json").is_file() {
        return Ok((path.to_path_buf(), ModelFormat::Safetensors));
    }
    let ggufs: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| Error::io(path, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
        .collect();
    match ggufs.as_slice() {
        [one] => Ok((one.clone(), ModelFormat::Gguf)),
        [] => Err(not_a_model(path, "the directory has neither config.json nor a .gguf file")),
        _ => Err(not_a_model(path, "the directory holds several .gguf files; name one")),
    }
}

/// Loads the weights only (no tokenizer): for tools and tests that feed token ids.
pub fn load_model(path: &Path) -> Result<Model> {
    let (path, format) = locate(path)?;
    Ok(match format {
        ModelFormat::Gguf => model_from_gguf(&GgufFile::open(&path)?)?,
        ModelFormat::Safetensors => model_from_hf(&path)?,
    })
}

/// Loads the model and its tokenizer.
pub fn load(path: &Path) -> Result<LoadedModel> {
    let (path, format) = locate(path)?;
    let (model, tokenizer, name) = match format {
        ModelFormat::Gguf => {
            let g = GgufFile::open(&path)?;
            let name = g.get_str("general.name").map(str::to_string).unwrap_or_else(|| file_stem(&path));
            (model_from_gguf(&g)?, Tokenizer::from_gguf(&g)?, name)
        }
        ModelFormat::Safetensors => (model_from_hf(&path)?, Tokenizer::from_hf_dir(&path)?, file_stem(&path)),
    };
    Ok(LoadedModel { model, tokenizer, format, path, name })
}

fn model_from_gguf(g: &GgufFile) -> Result<Model> {
    let src = TensorSource::Gguf(g);
    let rope_freqs = g.tensor("rope_freqs.weight")?.map(|t| t.to_f32_vec());
    let config = ModelConfig::from_gguf(g, rope_freqs, src.has_lm_head())?;
    let weights = ModelWeights::load(&config, &src)?;
    Ok(Model::new(config, weights))
}

fn model_from_hf(dir: &Path) -> Result<Model> {
    let config = ModelConfig::from_hf_file(&dir.join("config.json"))?;
    let st = SafetensorsDir::open(dir)?;
    let weights = ModelWeights::load(&config, &TensorSource::Hf(&st))?;
    Ok(Model::new(config, weights))
}

fn file_stem(p: &Path) -> String {
    p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| p.display().to_string())
}
