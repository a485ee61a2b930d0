//! `Model`: the Llama-family decoder (llama, qwen2) on CPU, over a paged KV cache.
//!
//! Follows HF `transformers` `models/llama/modeling_llama.py` (and `qwen2`, which adds
//! q/k/v biases): per layer `x += o_proj(attn(rope(q), rope(k), v))` on
//! `input_layernorm(x)`, then `x += down(silu(gate(h)) · up(h))` on
//! `post_attention_layernorm(x)`; final norm; `lm_head`.
//!
//! Activations and accumulation are f32; weights are read in their stored dtype (unless
//! the process opted into `keel_kernels::matmul::Precision::Medium`, where BF16 weights
//! meet BF16-rounded activations). Every
//! token's arithmetic is independent of the other tokens in the batch (see
//! `keel_kernels::matmul` and `keel_kernels::attention`), so results do not depend on
//! batch composition. Activation buffers live in a `Workspace` reused across steps
//! (64-byte aligned, grown on demand) and `forward_into` writes the caller's logits
//! buffer, so a warm decode step allocates nothing (`runtime/tests/no_alloc.rs`).

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::forward_batch::ForwardBatch;
use crate::kv_cache::KvCache;
use crate::tensor::Tensor;
use crate::weights::ModelWeights;
use keel_kernels::activation::silu_mul;
use keel_kernels::aligned::AlignedBuf;
use keel_kernels::attention::AttnSeq;
use keel_kernels::matmul::{matmul, matmul_many, WeightMatrix};
use keel_kernels::norm::rms_norm;
use keel_kernels::rope::{apply_rope_rows, rope_cos_sin};
use std::sync::Mutex;

pub struct Model {
    pub config: ModelConfig,
    pub weights: ModelWeights,
    inv_freq: Vec<f32>,
    workspace: Mutex<Workspace>,
}

/// Activation buffers of one forward pass; shapes in the comments of `forward`.
#[derive(Default)]
struct Workspace {
    x: AlignedBuf,
    normed: AlignedBuf,
    q: AlignedBuf,
    k: AlignedBuf,
    v: AlignedBuf,
    attn: AlignedBuf,
    proj: AlignedBuf,
    gate: AlignedBuf,
    up: AlignedBuf,
    last: AlignedBuf,
    cos: Vec<f32>,
    sin: Vec<f32>,
    /// The attention's view of the batch; kept empty between steps, for its allocation.
    attn_seqs: Vec<AttnSeq<'static>>,
}

/// `v` emptied, as a vector of another lifetime that keeps `v`'s allocation (an
/// in-place collect: same element layout, nothing to move). That reuse is std's in-place
/// iteration, an optimisation rather than a documented guarantee: `tests/no_alloc.rs`
/// fails if it stops happening.
fn recycle<'b>(mut v: Vec<AttnSeq<'_>>) -> Vec<AttnSeq<'b>> {
    v.clear();
    v.into_iter().map(|_| unreachable!("the vector is empty")).collect()
}

/// `out = x · Wᵀ (+ bias)`, `x` `[n, in]`, `out` resized to `[n, out]`.
fn linear(w: &Tensor, bias: Option<&Vec<f32>>, x: &[f32], out: &mut AlignedBuf) -> Result<()> {
    let m = w.matrix()?;
    let n = x.len() / m.cols;
    out.resize(n * m.rows);
    matmul(&m, x, out);
    add_bias(out, m.rows, bias);
    Ok(())
}

/// Adds `bias` (one value per output column, `rows` of them) to every token's row.
fn add_bias(out: &mut [f32], rows: usize, bias: Option<&Vec<f32>>) {
    if let Some(b) = bias {
        for row in out.chunks_exact_mut(rows) {
            for (o, b) in row.iter_mut().zip(b) {
                *o += b;
            }
        }
    }
}

/// `linear` for `N` matrices that read the same `x` (q/k/v, gate/up), in one parallel
/// region (`matmul_many`); same results as `N` calls of `linear`.
fn linears<const N: usize>(
    ws: [(&Tensor, Option<&Vec<f32>>); N],
    x: &[f32],
    mut outs: [&mut AlignedBuf; N],
) -> Result<()> {
    let mut ms: [WeightMatrix; N] = [ws[0].0.matrix()?; N];
    for i in 1..N {
        ms[i] = ws[i].0.matrix()?;
    }
    if ms.iter().any(|m| m.cols != ms[0].cols) {
        for (i, (w, b)) in ws.iter().enumerate() {
            linear(w, *b, x, outs[i])?;
        }
        return Ok(());
    }
    let n = x.len() / ms[0].cols;
    for (m, out) in ms.iter().zip(outs.iter_mut()) {
        out.resize(n * m.rows);
    }
    let mut views = outs.each_mut().map(|o| o.as_mut_slice());
    matmul_many(&ms, x, &mut views);
    for (i, (_, b)) in ws.iter().enumerate() {
        add_bias(outs[i], ms[i].rows, *b);
    }
    Ok(())
}

impl Model {
    pub fn new(config: ModelConfig, weights: ModelWeights) -> Model {
        let inv_freq = config.inv_freq();
        Model { config, weights, inv_freq, workspace: Mutex::new(Workspace::default()) }
    }

    /// Runs one step: writes every token's K/V into `kv` and returns the logits of
    /// `batch.logits_indices`, `[logits_indices.len(), vocab]` row-major.
    pub fn forward(&self, batch: &ForwardBatch, kv: &mut KvCache) -> Result<AlignedBuf> {
        let mut logits = AlignedBuf::new();
        self.forward_into(batch, kv, &mut logits)?;
        Ok(logits)
    }

    /// `forward` into the caller's `logits` buffer (resized, its allocation reused): with
    /// a warm workspace a decode step allocates nothing (`runtime/tests/no_alloc.rs`).
    pub fn forward_into(&self, batch: &ForwardBatch, kv: &mut KvCache, logits: &mut AlignedBuf) -> Result<()> {
        let cfg = &self.config;
        batch.validate(cfg.vocab_size, kv.num_slots(), kv.block_size)?;
        let n = batch.num_tokens();
        if n == 0 {
            logits.resize(0);
            return Ok(());
        }
        let mut guard = self.workspace.lock().map_err(|_| Error::Model("a previous forward pass panicked".into()))?;
        let ws = &mut *guard;
        let (h, hd) = (cfg.hidden_size, cfg.head_dim);
        let nh = cfg.num_heads;
        let half = hd / 2;

        // [n, hidden]
        ws.x.resize(n * h);
        let embed = self.weights.embed.matrix()?;
        for (t, &id) in batch.token_ids.iter().enumerate() {
            embed.dequantize_row_into(id as usize, &mut ws.x[t * h..(t + 1) * h]);
        }
        // [n, head_dim / 2] each, shared by all layers.
        ws.cos.resize(n * half, 0.0);
        ws.sin.resize(n * half, 0.0);
        for (t, &pos) in batch.positions.iter().enumerate() {
            rope_cos_sin(
                pos,
                &self.inv_freq,
                &mut ws.cos[t * half..(t + 1) * half],
                &mut ws.sin[t * half..(t + 1) * half],
            );
        }
        let mut seqs = recycle(std::mem::take(&mut ws.attn_seqs));
        seqs.extend(batch.seqs.iter().map(|s| AttnSeq {
            query_start: s.query_start,
            query_len: s.query_len,
            context_len: s.context_len,
            block_table: &s.block_table,
        }));
        let scale = 1.0 / (hd as f32).sqrt();
        ws.normed.resize(n * h);
        ws.attn.resize(n * nh * hd);

        for (l, lw) in self.weights.layers.iter().enumerate() {
            rms_norm(&ws.x, &lw.attn_norm, cfg.rms_norm_eps, &mut ws.normed);
            // q [n, nh*hd], k and v [n, nkv*hd]
            linears(
                [(&lw.wq, lw.bq.as_ref()), (&lw.wk, lw.bk.as_ref()), (&lw.wv, lw.bv.as_ref())],
                &ws.normed,
                [&mut ws.q, &mut ws.k, &mut ws.v],
            )?;
            apply_rope_rows(&mut ws.q, &mut ws.k, hd, &ws.cos, &ws.sin, cfg.rope_style);
            kv.write_rows(l, &batch.slot_mapping, &ws.k, &ws.v);
            kv.attention(l, &ws.q, &seqs, nh, scale, &mut ws.attn);
            linear(&lw.wo, None, &ws.attn, &mut ws.proj)?; // [n, hidden]
            for (xi, oi) in ws.x.iter_mut().zip(ws.proj.iter()) {
                *xi += oi;
            }

            rms_norm(&ws.x, &lw.ffn_norm, cfg.rms_norm_eps, &mut ws.normed);
            // gate and up [n, ff]
            linears([(&lw.w_gate, None), (&lw.w_up, None)], &ws.normed, [&mut ws.gate, &mut ws.up])?;
            silu_mul(&mut ws.gate, &ws.up);
            linear(&lw.w_down, None, &ws.gate, &mut ws.proj)?; // [n, hidden]
            for (xi, di) in ws.x.iter_mut().zip(ws.proj.iter()) {
                *xi += di;
            }
        }

        // Only the requested rows go through the final norm and the (large) lm_head.
        let m = batch.logits_indices.len();
        ws.last.resize(m * h);
        for (i, &t) in batch.logits_indices.iter().enumerate() {
            ws.last[i * h..(i + 1) * h].copy_from_slice(&ws.x[t * h..(t + 1) * h]);
        }
        ws.normed.resize(m * h);
        rms_norm(&ws.last, &self.weights.final_norm, cfg.rms_norm_eps, &mut ws.normed);
        linear(&self.weights.lm_head, None, &ws.normed, logits)?;
        ws.attn_seqs = recycle(seqs);
        Ok(())
    }
}
