//! `Model`: the Llama-family decoder (llama, qwen2) on CPU, over a paged KV cache.
//!
//! Follows HF `transformers` `models/llama/modeling_llama.py` (and `qwen2`, which adds
//! q/k/v biases): per layer `x += o_proj(attn(rope(q), rope(k), v))` on
//! `input_layernorm(x)`, then `x += down(silu(gate(h)) · up(h))` on
//! `post_attention_layernorm(x)`; final norm; `lm_head`.
//!
//! Activations and accumulation are f32; weights are read in their stored dtype. Every
//! token's arithmetic is independent of the other tokens in the batch (see
//! `keel_kernels::matmul`), so results do not depend on batch composition.

use crate::config::ModelConfig;
use crate::error::Result;
use crate::forward_batch::ForwardBatch;
use crate::kv_cache::KvCache;
use crate::tensor::Tensor;
use crate::weights::ModelWeights;
use keel_kernels::activation::silu_mul;
use keel_kernels::attention::{paged_attention, AttnSeq};
use keel_kernels::matmul::matmul;
use keel_kernels::norm::rms_norm;
use keel_kernels::rope::apply_rope;
use keel_kernels::WeightMatrix;

pub struct Model {
    pub config: ModelConfig,
    pub weights: ModelWeights,
    inv_freq: Vec<f32>,
}

/// `out = x · Wᵀ (+ bias)`, `x` `[n, in]`, returning `[n, out]`.
fn linear(w: &Tensor, bias: Option<&Vec<f32>>, x: &[f32]) -> Result<Vec<f32>> {
    let m: WeightMatrix = w.matrix()?;
    let n = x.len() / m.cols;
    let mut out = vec![0f32; n * m.rows];
    matmul(&m, x, &mut out);
    if let Some(b) = bias {
        for row in out.chunks_exact_mut(m.rows) {
            for (o, b) in row.iter_mut().zip(b) {
                *o += b;
            }
        }
    }
    Ok(out)
}

impl Model {
    pub fn new(config: ModelConfig, weights: ModelWeights) -> Model {
        let inv_freq = config.inv_freq();
        Model {
            config,
            weights,
            inv_freq,
        }
    }

    /// Runs one step: writes every token's K/V into `kv` and returns the logits of
    /// `batch.logits_indices`, `[logits_indices.len(), vocab]` row-major.
    pub fn forward(&self, batch: &ForwardBatch, kv: &mut KvCache) -> Result<Vec<f32>> {
        let cfg = &self.config;
        batch.validate(cfg.vocab_size, kv.num_slots(), kv.block_size)?;
        let (h, hd) = (cfg.hidden_size, cfg.head_dim);
        let (nh, nkv) = (cfg.num_heads, cfg.num_kv_heads);
        let n = batch.num_tokens();
        if n == 0 {
            return Ok(Vec::new());
        }

        // [n, hidden]
        let mut x = vec![0f32; n * h];
        let embed = self.weights.embed.matrix()?;
        for (t, &id) in batch.token_ids.iter().enumerate() {
            embed.dequantize_row_into(id as usize, &mut x[t * h..(t + 1) * h]);
        }
        let seqs: Vec<AttnSeq> = batch
            .seqs
            .iter()
            .map(|s| AttnSeq {
                query_start: s.query_start,
                query_len: s.query_len,
                context_len: s.context_len,
                block_table: &s.block_table,
            })
            .collect();
        let scale = 1.0 / (hd as f32).sqrt();
        let mut normed = vec![0f32; n * h];
        let mut attn = vec![0f32; n * nh * hd];

        for (l, lw) in self.weights.layers.iter().enumerate() {
            rms_norm(&x, &lw.attn_norm, cfg.rms_norm_eps, &mut normed);
            let mut q = linear(&lw.wq, lw.bq.as_ref(), &normed)?; // [n, nh*hd]
            let mut k = linear(&lw.wk, lw.bk.as_ref(), &normed)?; // [n, nkv*hd]
            let v = linear(&lw.wv, lw.bv.as_ref(), &normed)?; // [n, nkv*hd]
            for t in 0..n {
                let pos = batch.positions[t];
                apply_rope(
                    &mut q[t * nh * hd..(t + 1) * nh * hd],
                    hd,
                    pos,
                    &self.inv_freq,
                    cfg.rope_style,
                );
                apply_rope(
                    &mut k[t * nkv * hd..(t + 1) * nkv * hd],
                    hd,
                    pos,
                    &self.inv_freq,
                    cfg.rope_style,
                );
                let kv_w = nkv * hd;
                kv.write(
                    l,
                    batch.slot_mapping[t] as usize,
                    &k[t * kv_w..(t + 1) * kv_w],
                    &v[t * kv_w..(t + 1) * kv_w],
                );
            }
            paged_attention(&q, &seqs, &kv.layer(l), nh, scale, &mut attn);
            let o = linear(&lw.wo, None, &attn)?; // [n, hidden]
            for (xi, oi) in x.iter_mut().zip(&o) {
                *xi += oi;
            }

            rms_norm(&x, &lw.ffn_norm, cfg.rms_norm_eps, &mut normed);
            let mut gate = linear(&lw.w_gate, None, &normed)?; // [n, ff]
            let up = linear(&lw.w_up, None, &normed)?;
            silu_mul(&mut gate, &up);
            let down = linear(&lw.w_down, None, &gate)?; // [n, hidden]
            for (xi, di) in x.iter_mut().zip(&down) {
                *xi += di;
            }
        }

        // Only the requested rows go through the final norm and the (large) lm_head.
        let m = batch.logits_indices.len();
        let mut last = vec![0f32; m * h];
        for (i, &t) in batch.logits_indices.iter().enumerate() {
            last[i * h..(i + 1) * h].copy_from_slice(&x[t * h..(t + 1) * h]);
        }
        let mut last_normed = vec![0f32; m * h];
        rms_norm(
            &last,
            &self.weights.final_norm,
            cfg.rms_norm_eps,
            &mut last_normed,
        );
        linear(&self.weights.lm_head, None, &last_normed)
    }
}
