//! `ModelConfig`: the hyper-parameters of a Llama-family model, read from an HF
//! `config.json` or from GGUF metadata, plus the RoPE frequencies they imply.
//!
//! Follows HF `transformers` (`models/llama/configuration_llama.py`,
//! `models/qwen2/configuration_qwen2.py`, `modeling_rope_utils.py`). Both the
//! transformers-5 `rope_parameters` form and the older `rope_theta` + `rope_scaling`
//! form are accepted. Unknown architectures and RoPE types are errors naming them.

use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use keel_kernels::rope::RopeStyle;
use serde_json::Value;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    /// `LlamaForCausalLM` (also SmolLM, Llama 2/3, Mistral-style without sliding window).
    Llama,
    /// `Qwen2ForCausalLM`: Llama with q/k/v biases.
    Qwen2,
}

impl Architecture {
    pub fn name(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Qwen2 => "qwen2",
        }
    }

    fn parse(s: &str) -> Result<Architecture> {
        match s {
            "llama" | "LlamaForCausalLM" => Ok(Architecture::Llama),
            "qwen2" | "Qwen2ForCausalLM" => Ok(Architecture::Qwen2),
            other => Err(Error::UnsupportedArchitecture(other.to_string())),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor` (HF "linear").
    Linear {
        factor: f32,
    },
    /// Llama 3.1 frequency-dependent scaling (HF "llama3").
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_max_position_embeddings: f32,
    },
    /// Per-frequency divisors, as GGUF files store Llama 3 scaling (`rope_freqs.weight`).
    FreqFactors(Vec<f32>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    pub rope_scaling: RopeScaling,
    /// How Q/K pairs are laid out for RoPE (see `keel_kernels::rope`).
    pub rope_style: RopeStyle,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// q/k/v projections carry a bias (qwen2, llama with `attention_bias`).
    pub qkv_bias: bool,
}

fn cfg_err(path: &Path, msg: impl Into<String>) -> Error {
    Error::Config { path: path.to_path_buf(), msg: msg.into() }
}

impl ModelConfig {
    /// Reads an HF `config.json`.
    pub fn from_hf_file(path: &Path) -> Result<ModelConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| cfg_err(path, format!("not JSON: {e}")))?;
        Self::from_hf_json(path, &v)
    }

    pub fn from_hf_json(path: &Path, v: &Value) -> Result<ModelConfig> {
        let arch_name = v
            .get("model_type")
            .and_then(Value::as_str)
            .or_else(|| v.get("architectures").and_then(|a| a.get(0)).and_then(Value::as_str))
            .ok_or_else(|| cfg_err(path, "missing model_type"))?;
        let architecture = Architecture::parse(arch_name)?;
        let usize_of = |k: &str| -> Result<usize> {
            v.get(k)
                .and_then(Value::as_u64)
                .map(|x| x as usize)
                .ok_or_else(|| cfg_err(path, format!("missing or invalid {k}")))
        };
        let opt_usize = |k: &str| v.get(k).and_then(Value::as_u64).map(|x| x as usize);
        let f32_of = |k: &str| v.get(k).and_then(Value::as_f64).map(|x| x as f32);
        if let Some(act) = v.get("hidden_act").and_then(Value::as_str) {
            if act != "silu" {
                return Err(cfg_err(path, format!("hidden_act {act:?} is not supported (silu is)")));
            }
        }
        if v.get("mlp_bias").and_then(Value::as_bool) == Some(true) {
            return Err(cfg_err(path, "mlp_bias = true is not supported"));
        }
        let hidden_size = usize_of("hidden_size")?;
        let num_heads = usize_of("num_attention_heads")?;
        let num_kv_heads = opt_usize("num_key_value_heads").unwrap_or(num_heads);
        let head_dim = opt_usize("head_dim").unwrap_or(hidden_size / num_heads.max(1));
        // transformers 5 nests theta and scaling in `rope_parameters`; older files use
        // top-level `rope_theta` and `rope_scaling`.
        let rope = v
            .get("rope_parameters")
            .filter(|r| r.is_object())
            .or_else(|| v.get("rope_scaling").filter(|r| r.is_object()));
        let rope_theta = rope
            .and_then(|r| r.get("rope_theta"))
            .and_then(Value::as_f64)
            .map(|x| x as f32)
            .or_else(|| f32_of("rope_theta"))
            .unwrap_or(10000.0);
        let rope_scaling = match rope {
            None => RopeScaling::None,
            Some(r) => {
                let ty = r.get("rope_type").or_else(|| r.get("type")).and_then(Value::as_str).unwrap_or("default");
                let rf = |k: &str| {
                    r.get(k)
                        .and_then(Value::as_f64)
                        .map(|x| x as f32)
                        .ok_or_else(|| cfg_err(path, format!("rope scaling {ty}: missing {k}")))
                };
                match ty {
                    "default" => RopeScaling::None,
                    "linear" => RopeScaling::Linear { factor: rf("factor")? },
                    "llama3" => RopeScaling::Llama3 {
                        factor: rf("factor")?,
                        low_freq_factor: rf("low_freq_factor")?,
                        high_freq_factor: rf("high_freq_factor")?,
                        original_max_position_embeddings: rf("original_max_position_embeddings")?,
                    },
                    other => {
                        return Err(cfg_err(
                            path,
                            format!("rope scaling type {other:?} is not supported (linear and llama3 are)"),
                        ))
                    }
                }
            }
        };
        let qkv_bias = match architecture {
            Architecture::Qwen2 => true,
            Architecture::Llama => v.get("attention_bias").and_then(Value::as_bool).unwrap_or(false),
        };
        let cfg = ModelConfig {
            architecture,
            vocab_size: usize_of("vocab_size")?,
            hidden_size,
            intermediate_size: usize_of("intermediate_size")?,
            num_layers: usize_of("num_hidden_layers")?,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: f32_of("rms_norm_eps").unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            rope_style: RopeStyle::NeoX,
            max_position_embeddings: opt_usize("max_position_embeddings").unwrap_or(2048),
            tie_word_embeddings: v.get("tie_word_embeddings").and_then(Value::as_bool).unwrap_or(false),
            qkv_bias,
        };
        cfg.validate().map_err(|m| cfg_err(path, m))?;
        Ok(cfg)
    }

    /// Reads the `<arch>.*` metadata of a GGUF file. `rope_freqs` is the content of the
    /// optional `rope_freqs.weight` tensor; `has_output` says whether `output.weight`
    /// exists (no output matrix = tied embeddings).
    pub fn from_gguf(g: &GgufFile, rope_freqs: Option<Vec<f32>>, has_output: bool) -> Result<ModelConfig> {
        let err = |msg: String| Error::Gguf { path: g.path.clone(), msg };
        let arch_name = g.get_str("general.architecture").ok_or_else(|| err("missing general.architecture".into()))?;
        let architecture = Architecture::parse(arch_name)?;
        let key = |k: &str| format!("{arch_name}.{k}");
        let req = |k: &str| -> Result<usize> {
            g.get_u64(&key(k)).map(|x| x as usize).ok_or_else(|| err(format!("missing or invalid {}", key(k))))
        };
        let hidden_size = req("embedding_length")?;
        let num_heads = req("attention.head_count")?;
        let num_kv_heads = g.get_u64(&key("attention.head_count_kv")).map(|x| x as usize).unwrap_or(num_heads);
        let head_dim =
            g.get_u64(&key("attention.key_length")).map(|x| x as usize).unwrap_or(hidden_size / num_heads.max(1));
        if let Some(rd) = g.get_u64(&key("rope.dimension_count")) {
            if rd as usize != head_dim {
                return Err(err(format!(
                    "partial rotary embeddings ({} = {rd}, head_dim {head_dim}) are not supported",
                    key("rope.dimension_count")
                )));
            }
        }
        let vocab_size = match g.get_u64(&key("vocab_size")) {
            Some(v) => v as usize,
            None => g
                .get("tokenizer.ggml.tokens")
                .and_then(|t| t.as_array())
                .map(|a| a.len())
                .ok_or_else(|| err(format!("missing {} and tokenizer.ggml.tokens", key("vocab_size"))))?,
        };
        let rope_scaling = match (g.get_str(&key("rope.scaling.type")), rope_freqs) {
            (_, Some(f)) => RopeScaling::FreqFactors(f),
            (None | Some("none"), None) => RopeScaling::None,
            (Some("linear"), None) => {
                let factor = g
                    .get_f64(&key("rope.scaling.factor"))
                    .ok_or_else(|| err(format!("missing {}", key("rope.scaling.factor"))))?;
                RopeScaling::Linear { factor: factor as f32 }
            }
            (Some(other), None) => return Err(err(format!("rope scaling type {other:?} is not supported"))),
        };
        let cfg = ModelConfig {
            architecture,
            vocab_size,
            hidden_size,
            intermediate_size: req("feed_forward_length")?,
            num_layers: req("block_count")?,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: g.get_f64(&key("attention.layer_norm_rms_epsilon")).unwrap_or(1e-5) as f32,
            rope_theta: g.get_f64(&key("rope.freq_base")).unwrap_or(10000.0) as f32,
            rope_scaling,
            // llama.cpp's converter permutes llama Q/K rows into the interleaved layout;
            // qwen2 keeps HF's (NeoX) layout.
            rope_style: match architecture {
                Architecture::Llama => RopeStyle::Interleaved,
                Architecture::Qwen2 => RopeStyle::NeoX,
            },
            max_position_embeddings: g.get_u64(&key("context_length")).map(|x| x as usize).unwrap_or(2048),
            tie_word_embeddings: !has_output,
            qkv_bias: architecture == Architecture::Qwen2,
        };
        cfg.validate().map_err(err)?;
        Ok(cfg)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        let nonzero = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_layers", self.num_layers),
            ("num_heads", self.num_heads),
            ("num_kv_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
        ];
        if let Some((k, _)) = nonzero.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{k} must be positive"));
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err(format!(
                "num_heads {} is not a multiple of num_kv_heads {}",
                self.num_heads, self.num_kv_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) || self.head_dim > 512 {
            return Err(format!("head_dim {} must be even and at most 512", self.head_dim));
        }
        if !(self.rms_norm_eps.is_finite() && self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err("rms_norm_eps and rope_theta must be finite".into());
        }
        if let RopeScaling::FreqFactors(f) = &self.rope_scaling {
            if f.len() != self.head_dim / 2 {
                return Err(format!("rope_freqs has {} entries, expected {}", f.len(), self.head_dim / 2));
            }
        }
        Ok(())
    }

    /// RoPE inverse frequencies (`head_dim / 2` of them), as HF computes them in f32.
    pub fn inv_freq(&self) -> Vec<f32> {
        let dim = self.head_dim;
        let base = self.rope_theta;
        let inv: Vec<f32> = (0..dim / 2).map(|i| 1.0 / base.powf((2 * i) as f32 / dim as f32)).collect();
        match &self.rope_scaling {
            RopeScaling::None => inv,
            RopeScaling::Linear { factor } => inv.iter().map(|f| f / factor).collect(),
            RopeScaling::FreqFactors(ff) => inv.iter().zip(ff).map(|(f, d)| f / d).collect(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: old,
            } => {
                // modeling_rope_utils._compute_llama3_parameters, element-wise.
                let low_wavelen = old / low_freq_factor;
                let high_wavelen = old / high_freq_factor;
                inv.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f32::consts::PI / f;
                        let scaled = if wavelen > low_wavelen { f / factor } else { f };
                        // HF's `~(wavelen < high) * ~(wavelen > low)`, NaN included.
                        #[allow(clippy::neg_cmp_op_on_partial_ord)]
                        let medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
                        if medium {
                            let smooth = (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * scaled / factor + smooth * scaled
                        } else {
                            scaled
                        }
                    })
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({"model_type": "llama", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
               "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100, "rms_norm_eps": 1e-5})
    }

    #[test]
    fn reads_both_rope_forms() {
        let p = Path::new("config.json");
        let mut v = base();
        v["rope_theta"] = json!(500000.0);
        v["rope_scaling"] = json!({"type": "linear", "factor": 2.0});
        let c = ModelConfig::from_hf_json(p, &v).expect("old form");
        assert_eq!((c.rope_theta, c.rope_scaling.clone()), (500000.0, RopeScaling::Linear { factor: 2.0 }));
        let mut v = base();
        v["rope_parameters"] = json!({"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
        let c = ModelConfig::from_hf_json(p, &v).expect("new form");
        assert_eq!(c.rope_theta, 500000.0);
        assert!(matches!(c.rope_scaling, RopeScaling::Llama3 { .. }));
        assert_eq!(c.head_dim, 16);
        // Llama 3 scaling leaves the highest frequencies alone and divides the lowest by `factor`.
        let plain = ModelConfig { rope_scaling: RopeScaling::None, ..c.clone() }.inv_freq();
        let scaled = c.inv_freq();
        assert_eq!(scaled[0], plain[0]);
        assert_eq!(scaled[7], plain[7] / 8.0);
    }

    #[test]
    fn unknown_things_are_named() {
        let p = Path::new("config.json");
        let mut v = base();
        v["model_type"] = json!("mamba");
        assert!(ModelConfig::from_hf_json(p, &v).unwrap_err().to_string().contains("\"mamba\""));
        let mut v = base();
        v["rope_scaling"] = json!({"rope_type": "yarn", "factor": 4.0});
        assert!(ModelConfig::from_hf_json(p, &v).unwrap_err().to_string().contains("yarn"));
        let mut v = base();
        v["num_key_value_heads"] = json!(3);
        assert!(ModelConfig::from_hf_json(p, &v).unwrap_err().to_string().contains("multiple"));
        let mut v = base();
        v.as_object_mut().expect("object").remove("hidden_size");
        assert!(ModelConfig::from_hf_json(p, &v).unwrap_err().to_string().contains("hidden_size"));
    }
}
