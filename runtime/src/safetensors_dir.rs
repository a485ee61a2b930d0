//! An HF checkpoint's tensors: `model.safetensors`, or the shards listed in
//! `model.safetensors.index.json`, each memory-mapped; tensors are views into the maps.
//!
//! Only F32, F16 and BF16 tensors are readable; other dtypes are reported with the
//! tensor's name when (and only when) that tensor is asked for.

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use keel_kernels::DType;
use memmap2::Mmap;
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

struct Entry {
    shard: usize,
    dtype: std::result::Result<DType, String>,
    shape: Vec<usize>,
    offset: usize,
    len: usize,
}

pub struct SafetensorsDir {
    pub dir: PathBuf,
    shards: Vec<(PathBuf, Arc<Mmap>)>,
    entries: HashMap<String, Entry>,
}

impl SafetensorsDir {
    pub fn open(dir: &Path) -> Result<SafetensorsDir> {
        let index = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| Error::Safetensors { path: index.clone(), msg: format!("not JSON: {e}") })?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| Error::Safetensors { path: index.clone(), msg: "missing weight_map".into() })?;
            let mut names: Vec<&str> = map.values().filter_map(|f| f.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            for n in &names {
                if n.contains('/') || n.contains("..") {
                    return Err(Error::Safetensors {
                        path: index.clone(),
                        msg: format!("shard name {n:?} leaves the model directory"),
                    });
                }
            }
            names.into_iter().map(|n| dir.join(n)).collect()
        } else {
            vec![dir.join("model.safetensors")]
        };
        let mut shards = Vec::new();
        let mut entries = HashMap::new();
        for (i, path) in files.into_iter().enumerate() {
            let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
            // SAFETY: read-only map of a model file keel does not modify.
            let map = Arc::new(unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?);
            let st = SafeTensors::deserialize(&map)
                .map_err(|e| Error::Safetensors { path: path.clone(), msg: e.to_string() })?;
            for (name, view) in st.tensors() {
                let dtype = match view.dtype() {
                    safetensors::Dtype::F32 => Ok(DType::F32),
                    safetensors::Dtype::F16 => Ok(DType::F16),
                    safetensors::Dtype::BF16 => Ok(DType::BF16),
                    other => Err(format!("{other:?}")),
                };
                let offset = view.data().as_ptr() as usize - map.as_ptr() as usize;
                entries.insert(
                    name,
                    Entry { shard: i, dtype, shape: view.shape().to_vec(), offset, len: view.data().len() },
                );
            }
            shards.push((path, map));
        }
        Ok(SafetensorsDir { dir: dir.to_path_buf(), shards, entries })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    pub fn tensor(&self, name: &str) -> Result<Option<Tensor>> {
        let Some(e) = self.entries.get(name) else {
            return Ok(None);
        };
        let dtype = e.dtype.clone().map_err(|d| Error::UnsupportedDType { tensor: name.into(), dtype: d })?;
        let (path, map) = &self.shards[e.shard];
        Tensor::mapped(name, dtype, e.shape.clone(), map.clone(), e.offset, e.len)
            .map_err(|err| Error::Safetensors { path: path.clone(), msg: err.to_string() })
            .map(Some)
    }
}
