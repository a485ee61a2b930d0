//! Causal multi-head attention over a paged KV cache (CPU).
//!
//! Cache layout per layer: `[num_blocks, block_size, n_kv_heads, head_dim]` for K and V.
//! A sequence's logical position `p` lives in block `block_table[p / block_size]` at
//! offset `p % block_size`. The query tokens of a sequence are its last `query_len`
//! positions; query `j` attends to positions `0..=context_len - query_len + j`.
//! Grouped-query attention: query head `h` reads KV head `h / (n_heads / n_kv_heads)`.
//!
//! Each (token, head) pair is computed independently (scores, softmax, weighted sum of
//! V), in parallel, with the same operations whatever else is in the batch.

use crate::dot::{axpy, dot_f32};
use rayon::prelude::*;

/// One layer of the paged cache, read-only.
#[derive(Clone, Copy)]
pub struct PagedKv<'a> {
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub block_size: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

impl PagedKv<'_> {
    #[inline]
    fn offset(&self, block_table: &[u32], pos: usize, kv_head: usize) -> usize {
        let block = block_table[pos / self.block_size] as usize;
        ((block * self.block_size + pos % self.block_size) * self.n_kv_heads + kv_head)
            * self.head_dim
    }
}

/// The query tokens of one sequence in a batch.
#[derive(Clone, Copy, Debug)]
pub struct AttnSeq<'a> {
    /// Index of the sequence's first query token in the batch.
    pub query_start: usize,
    pub query_len: usize,
    /// Tokens of the sequence in the cache, including this step's.
    pub context_len: usize,
    pub block_table: &'a [u32],
}

/// `q`, `out`: `[n_tokens, n_heads, head_dim]`. Every token of the batch belongs to
/// exactly one of `seqs`; their K/V must already be in the cache.
pub fn paged_attention(
    q: &[f32],
    seqs: &[AttnSeq],
    kv: &PagedKv,
    n_heads: usize,
    scale: f32,
    out: &mut [f32],
) {
    let hd = kv.head_dim;
    assert!(
        n_heads % kv.n_kv_heads == 0,
        "n_heads must be a multiple of n_kv_heads"
    );
    assert_eq!(q.len(), out.len());
    let n_tokens = q.len() / (n_heads * hd);
    // Per token: (sequence, number of positions it sees).
    let mut token_seq = vec![(usize::MAX, 0usize); n_tokens];
    for (s, seq) in seqs.iter().enumerate() {
        assert!(
            seq.query_len <= seq.context_len,
            "query longer than context"
        );
        assert!(
            seq.block_table.len() * kv.block_size >= seq.context_len,
            "block table too short"
        );
        for j in 0..seq.query_len {
            token_seq[seq.query_start + j] = (s, seq.context_len - seq.query_len + j + 1);
        }
    }
    assert!(
        token_seq.iter().all(|(s, _)| *s != usize::MAX),
        "a token belongs to no sequence"
    );
    let group = n_heads / kv.n_kv_heads;
    out.par_chunks_mut(hd).enumerate().for_each(|(i, o)| {
        let (t, h) = (i / n_heads, i % n_heads);
        let (s, n_pos) = token_seq[t];
        let table = seqs[s].block_table;
        let qh = &q[i * hd..(i + 1) * hd];
        let kvh = h / group;
        let mut scores: Vec<f32> = (0..n_pos)
            .map(|p| {
                let off = kv.offset(table, p, kvh);
                dot_f32(qh, &kv.k[off..off + hd]) * scale
            })
            .collect();
        let max = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f32;
        for sc in scores.iter_mut() {
            *sc = (*sc - max).exp();
            sum += *sc;
        }
        o.fill(0.0);
        for (p, sc) in scores.iter().enumerate() {
            let off = kv.offset(table, p, kvh);
            axpy(sc / sum, &kv.v[off..off + hd], o);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::Lcg;

    /// Dense causal attention over contiguous K/V: `[ctx, n_kv_heads, hd]`.
    fn dense(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        ctx: usize,
        q_len: usize,
        nh: usize,
        nkv: usize,
        hd: usize,
    ) -> Vec<f64> {
        let mut out = vec![0f64; q_len * nh * hd];
        for j in 0..q_len {
            let n_pos = ctx - q_len + j + 1;
            for h in 0..nh {
                let kvh = h / (nh / nkv);
                let qh = &q[(j * nh + h) * hd..][..hd];
                let s: Vec<f64> = (0..n_pos)
                    .map(|p| {
                        (0..hd)
                            .map(|d| qh[d] as f64 * k[(p * nkv + kvh) * hd + d] as f64)
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for p in 0..n_pos {
                    for d in 0..hd {
                        out[(j * nh + h) * hd + d] += e[p] / z * v[(p * nkv + kvh) * hd + d] as f64;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn paged_equals_dense_with_scattered_blocks() {
        let (nh, nkv, hd, bs) = (6, 2, 16, 4);
        let mut rng = Lcg(3);
        // Two sequences: one prefill chunk of 5 new tokens over 9 cached, one decode of 1 over 6.
        let specs = [
            (14usize, 5usize, vec![7u32, 2, 9, 0]),
            (6, 1, vec![4u32, 8]),
        ];
        let num_blocks = 10;
        let mut kc = vec![0f32; num_blocks * bs * nkv * hd];
        let mut vc = kc.clone();
        let mut dense_kv = Vec::new();
        for (ctx, _, table) in &specs {
            let k: Vec<f32> = (0..ctx * nkv * hd).map(|_| rng.normal()).collect();
            let v: Vec<f32> = (0..ctx * nkv * hd).map(|_| rng.normal()).collect();
            for p in 0..*ctx {
                let dst = ((table[p / bs] as usize * bs + p % bs) * nkv) * hd;
                kc[dst..dst + nkv * hd].copy_from_slice(&k[p * nkv * hd..(p + 1) * nkv * hd]);
                vc[dst..dst + nkv * hd].copy_from_slice(&v[p * nkv * hd..(p + 1) * nkv * hd]);
            }
            dense_kv.push((k, v));
        }
        let n_tokens: usize = specs.iter().map(|s| s.1).sum();
        let q: Vec<f32> = (0..n_tokens * nh * hd).map(|_| rng.normal()).collect();
        let seqs = [
            AttnSeq {
                query_start: 0,
                query_len: 5,
                context_len: 14,
                block_table: &specs[0].2,
            },
            AttnSeq {
                query_start: 5,
                query_len: 1,
                context_len: 6,
                block_table: &specs[1].2,
            },
        ];
        let kv = PagedKv {
            k: &kc,
            v: &vc,
            block_size: bs,
            n_kv_heads: nkv,
            head_dim: hd,
        };
        let mut out = vec![0f32; q.len()];
        paged_attention(&q, &seqs, &kv, nh, 1.0 / (hd as f32).sqrt(), &mut out);
        let mut start = 0;
        for ((ctx, ql, _), (k, v)) in specs.iter().zip(&dense_kv) {
            let want = dense(
                &q[start * nh * hd..(start + ql) * nh * hd],
                k,
                v,
                *ctx,
                *ql,
                nh,
                nkv,
                hd,
            );
            for (a, b) in out[start * nh * hd..(start + ql) * nh * hd]
                .iter()
                .zip(&want)
            {
                assert!((*a as f64 - b).abs() < 1e-5, "{a} vs {b}");
            }
            start += ql;
        }
    }
}
