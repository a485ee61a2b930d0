//! `ModelWeights`: every tensor a Llama-family forward pass reads, checked for shape,
//! taken from a GGUF file or an HF safetensors checkpoint under their own names.
//!
//! Matrices stay views into the mapped files (their stored dtype); only the small
//! vectors (norm weights, biases) are expanded to f32 once, at load.

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::safetensors_dir::SafetensorsDir;
use crate::tensor::Tensor;

pub struct LayerWeights {
    pub attn_norm: Vec<f32>,
    /// `[num_heads * head_dim, hidden]`
    pub wq: Tensor,
    /// `[num_kv_heads * head_dim, hidden]`
    pub wk: Tensor,
    pub wv: Tensor,
    pub bq: Option<Vec<f32>>,
    pub bk: Option<Vec<f32>>,
    pub bv: Option<Vec<f32>>,
    /// `[hidden, num_heads * head_dim]`
    pub wo: Tensor,
    pub ffn_norm: Vec<f32>,
    /// `[intermediate, hidden]`
    pub w_gate: Tensor,
    pub w_up: Tensor,
    /// `[hidden, intermediate]`
    pub w_down: Tensor,
}

pub struct ModelWeights {
    /// `[vocab, hidden]`
    pub embed: Tensor,
    pub layers: Vec<LayerWeights>,
    pub final_norm: Vec<f32>,
    /// `[vocab, hidden]`; the same tensor as `embed` when embeddings are tied.
    pub lm_head: Tensor,
}

/// Where tensors come from, and what each role is called there.
pub enum TensorSource<'a> {
    Gguf(&'a GgufFile),
    Hf(&'a SafetensorsDir),
}

#[derive(Clone, Copy)]
enum Role {
    Embed,
    FinalNorm,
    LmHead,
    AttnNorm,
    Q,
    K,
    V,
    O,
    FfnNorm,
    Gate,
    Up,
    Down,
}

impl TensorSource<'_> {
    fn name(&self, role: Role, layer: usize, bias: bool) -> String {
        let suffix = if bias { "bias" } else { "weight" };
        match self {
            TensorSource::Gguf(_) => {
                let n = match role {
                    Role::Embed => return "token_embd.weight".into(),
                    Role::FinalNorm => return "output_norm.weight".into(),
                    Role::LmHead => return "output.weight".into(),
                    Role::AttnNorm => "attn_norm",
                    Role::Q => "attn_q",
                    Role::K => "attn_k",
                    Role::V => "attn_v",
                    Role::O => "attn_output",
                    Role::FfnNorm => "ffn_norm",
                    Role::Gate => "ffn_gate",
                    Role::Up => "ffn_up",
                    Role::Down => "ffn_down",
                };
                format!("blk.{layer}.{n}.{suffix}")
            }
            TensorSource::Hf(_) => {
                let n = match role {
                    Role::Embed => return "model.embed_tokens.weight".into(),
                    Role::FinalNorm => return "model.norm.weight".into(),
                    Role::LmHead => return "lm_head.weight".into(),
                    Role::AttnNorm => "input_layernorm",
                    Role::Q => "self_attn.q_proj",
                    Role::K => "self_attn.k_proj",
                    Role::V => "self_attn.v_proj",
                    Role::O => "self_attn.o_proj",
                    Role::FfnNorm => "post_attention_layernorm",
                    Role::Gate => "mlp.gate_proj",
                    Role::Up => "mlp.up_proj",
                    Role::Down => "mlp.down_proj",
                };
                format!("model.layers.{layer}.{n}.{suffix}")
            }
        }
    }

    fn get_named(&self, name: &str) -> Result<Option<Tensor>> {
        match self {
            TensorSource::Gguf(g) => g.tensor(name),
            TensorSource::Hf(d) => d.tensor(name),
        }
    }

    fn get(&self, role: Role, layer: usize, bias: bool) -> Result<Option<Tensor>> {
        self.get_named(&self.name(role, layer, bias))
    }

    fn require(&self, role: Role, layer: usize, shape: &[usize]) -> Result<Tensor> {
        let name = self.name(role, layer, false);
        let t = self.get_named(&name)?.ok_or_else(|| Error::Model(format!("missing tensor {name}")))?;
        t.expect_shape(shape)?;
        Ok(t)
    }

    fn vector(&self, role: Role, layer: usize, bias: bool, len: usize) -> Result<Option<Vec<f32>>> {
        match self.get(role, layer, bias)? {
            None => Ok(None),
            Some(t) => Ok(Some(t.expect_shape(&[len])?.to_f32_vec())),
        }
    }

    fn require_vector(&self, role: Role, layer: usize, len: usize) -> Result<Vec<f32>> {
        self.vector(role, layer, false, len)?
            .ok_or_else(|| Error::Model(format!("missing tensor {}", self.name(role, layer, false))))
    }

    /// Whether the checkpoint has its own output matrix (else embeddings are tied).
    pub fn has_lm_head(&self) -> bool {
        match self {
            TensorSource::Gguf(g) => g.tensor_info("output.weight").is_some(),
            TensorSource::Hf(d) => d.contains("lm_head.weight"),
        }
    }
}

impl ModelWeights {
    pub fn load(cfg: &ModelConfig, src: &TensorSource) -> Result<ModelWeights> {
        let (h, hd, ff) = (cfg.hidden_size, cfg.head_dim, cfg.intermediate_size);
        let (q_dim, kv_dim) = (cfg.num_heads * hd, cfg.num_kv_heads * hd);
        let embed = src.require(Role::Embed, 0, &[cfg.vocab_size, h])?;
        // The linear layers' matrices get panels where the exact AVX-512 path reads them
        // (`Tensor::with_panels`); the embedding table stays rows (lookups read rows).
        let lm_head =
            if cfg.tie_word_embeddings { embed.clone() } else { src.require(Role::LmHead, 0, &[cfg.vocab_size, h])? }
                .with_panels()?;
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for l in 0..cfg.num_layers {
            let bias = |role, len| -> Result<Option<Vec<f32>>> {
                let b = src.vector(role, l, true, len)?;
                if cfg.qkv_bias && b.is_none() {
                    return Err(Error::Model(format!("missing tensor {}", src.name(role, l, true))));
                }
                Ok(b)
            };
            layers.push(LayerWeights {
                attn_norm: src.require_vector(Role::AttnNorm, l, h)?,
                wq: src.require(Role::Q, l, &[q_dim, h])?.with_panels()?,
                wk: src.require(Role::K, l, &[kv_dim, h])?.with_panels()?,
                wv: src.require(Role::V, l, &[kv_dim, h])?.with_panels()?,
                bq: bias(Role::Q, q_dim)?,
                bk: bias(Role::K, kv_dim)?,
                bv: bias(Role::V, kv_dim)?,
                wo: src.require(Role::O, l, &[h, q_dim])?.with_panels()?,
                ffn_norm: src.require_vector(Role::FfnNorm, l, h)?,
                w_gate: src.require(Role::Gate, l, &[ff, h])?.with_panels()?,
                w_up: src.require(Role::Up, l, &[ff, h])?.with_panels()?,
                w_down: src.require(Role::Down, l, &[h, ff])?.with_panels()?,
            });
        }
        Ok(ModelWeights { embed, layers, final_norm: src.require_vector(Role::FinalNorm, 0, h)?, lm_head })
    }

    /// Parameters, counted once even when tied.
    pub fn num_parameters(&self) -> usize {
        let mut n = self.embed.numel() + self.final_norm.len();
        if !std::ptr::eq(self.lm_head.bytes().as_ptr(), self.embed.bytes().as_ptr()) {
            n += self.lm_head.numel();
        }
        for l in &self.layers {
            n += l.attn_norm.len() + l.ffn_norm.len();
            n += [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down].iter().map(|t| t.numel()).sum::<usize>();
            n += [&l.bq, &l.bk, &l.bv].iter().map(|b| b.as_ref().map_or(0, |b| b.len())).sum::<usize>();
        }
        n
    }
}
