//! Rotary position embedding, in the two pair layouts found in the wild.
//!
//! * `NeoX` — HF `rotate_half`: dimension `i` pairs with `i + d/2` (HF checkpoints, and
//!   GGUF files of NeoX-style architectures such as qwen2).
//! * `Interleaved` — dimension `2i` pairs with `2i + 1`: llama.cpp's converter permutes
//!   the Q/K rows of llama-architecture models into this layout. Rotating in that
//!   layout is the same function up to a fixed permutation of each head's dimensions,
//!   which q·k dot products do not see, so GGUF weights are used without un-permuting.
//!
//! Angles follow HF: `θ = position · inv_freq[i]` as one f32 product; cos/sin of it are
//! correctly rounded; the rotation is `x0·cos − x1·sin`, `x1·cos + x0·sin`.

use crate::parallel::SharedMut;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    NeoX,
    Interleaved,
}

/// cos and sin of `position · inv_freq[i]` (one f32 product each, correctly rounded trig),
/// for `apply_rope`; computed once per token and shared by every layer.
pub fn rope_cos_sin(position: u32, inv_freq: &[f32], cos: &mut [f32], sin: &mut [f32]) {
    for (i, f) in inv_freq.iter().enumerate() {
        let theta = (position as f32 * f) as f64;
        cos[i] = theta.cos() as f32;
        sin[i] = theta.sin() as f32;
    }
}

/// Rotates every head of one token's `x` (`[n_heads, head_dim]`) by the angles whose
/// cos/sin (`head_dim / 2` each) come from `rope_cos_sin`.
pub fn apply_rope(x: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32], style: RopeStyle) {
    let half = head_dim / 2;
    assert!(cos.len() == half && sin.len() == half, "apply_rope: cos/sin must have head_dim/2 entries");
    assert!(x.len().is_multiple_of(head_dim), "apply_rope: x is not whole heads");
    for head in x.chunks_exact_mut(head_dim) {
        for i in 0..half {
            let (a, b) = match style {
                RopeStyle::NeoX => (i, i + half),
                RopeStyle::Interleaved => (2 * i, 2 * i + 1),
            };
            let (x0, x1) = (head[a], head[b]);
            head[a] = x0 * cos[i] - x1 * sin[i];
            head[b] = x1 * cos[i] + x0 * sin[i];
        }
    }
}

/// Tokens per pool task of `apply_rope_rows`; fewer than twice this many stay on the
/// calling thread.
const PARALLEL_TOKENS: usize = 8;

/// `apply_rope` for every token of `q` and `k` (`n` rows each, whole heads), token `t` by
/// row `t` of `cos` and `sin` (`[n, head_dim / 2]`); from `2 * PARALLEL_TOKENS` tokens on
/// over the pool, which changes no token's operations.
pub fn apply_rope_rows(q: &mut [f32], k: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32], style: RopeStyle) {
    let half = head_dim / 2;
    assert!(half > 0 && cos.len() == sin.len() && cos.len().is_multiple_of(half), "apply_rope_rows: cos/sin shapes");
    let n = cos.len() / half;
    assert!(n > 0 && q.len().is_multiple_of(n) && k.len().is_multiple_of(n), "apply_rope_rows: q/k are not {n} rows");
    let (qw, kw) = (q.len() / n, k.len() / n);
    let rope = |t: usize, q: &mut [f32], k: &mut [f32]| {
        let (c, s) = (&cos[t * half..(t + 1) * half], &sin[t * half..(t + 1) * half]);
        apply_rope(q, head_dim, c, s, style);
        apply_rope(k, head_dim, c, s, style);
    };
    if n < 2 * PARALLEL_TOKENS {
        for (t, (qt, kt)) in q.chunks_exact_mut(qw).zip(k.chunks_exact_mut(kw)).enumerate() {
            rope(t, qt, kt);
        }
        return;
    }
    let (qs, ks) = (SharedMut::new(q), SharedMut::new(k));
    crate::parallel::parallel_for(n.div_ceil(PARALLEL_TOKENS), &|i| {
        for t in i * PARALLEL_TOKENS..((i + 1) * PARALLEL_TOKENS).min(n) {
            // SAFETY: task `i` alone gets tokens `i * PARALLEL_TOKENS..`, whose rows lie in
            // `q` and `k`; both stay borrowed mutably until every task has returned.
            let (qt, kt) = unsafe {
                (std::slice::from_raw_parts_mut(qs.at(t * qw), qw), std::slice::from_raw_parts_mut(ks.at(t * kw), kw))
            };
            rope(t, qt, kt);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `apply_rope_rows` gives each token `apply_rope`'s bits with its own angles, on the
    /// calling thread (few tokens) and over the pool (many), in both layouts.
    #[test]
    fn rows_are_apply_rope_token_by_token() {
        let (hd, nh, nkv) = (8, 3, 1);
        let inv_freq = [1.0f32, 0.3, 0.05, 0.001];
        for n in [1usize, 5, 16, 37] {
            for style in [RopeStyle::NeoX, RopeStyle::Interleaved] {
                let (mut cos, mut sin) = (vec![0f32; n * 4], vec![0f32; n * 4]);
                for t in 0..n {
                    rope_cos_sin(7 * t as u32 + 3, &inv_freq, &mut cos[t * 4..][..4], &mut sin[t * 4..][..4]);
                }
                let q: Vec<f32> = (0..n * nh * hd).map(|i| (i as f32 * 0.37).sin()).collect();
                let k: Vec<f32> = (0..n * nkv * hd).map(|i| (i as f32 * 0.11).cos()).collect();
                let (mut qw, mut kw) = (q.clone(), k.clone());
                for t in 0..n {
                    let (c, s) = (&cos[t * 4..][..4], &sin[t * 4..][..4]);
                    apply_rope(&mut qw[t * nh * hd..][..nh * hd], hd, c, s, style);
                    apply_rope(&mut kw[t * nkv * hd..][..nkv * hd], hd, c, s, style);
                }
                let (mut qr, mut kr) = (q, k);
                apply_rope_rows(&mut qr, &mut kr, hd, &cos, &sin, style);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&qr), bits(&qw), "q, {n} tokens, {style:?}");
                assert_eq!(bits(&kr), bits(&kw), "k, {n} tokens, {style:?}");
            }
        }
    }

    #[test]
    fn layouts_agree_up_to_the_permutation() {
        let head_dim = 8;
        let inv_freq = [1.0f32, 0.1, 0.01, 0.001];
        let neox: Vec<f32> = (0..8).map(|i| i as f32 + 1.0).collect();
        // Interleaved position 2i holds NeoX dimension i, 2i+1 holds i + d/2.
        let mut inter = vec![0f32; 8];
        for i in 0..4 {
            inter[2 * i] = neox[i];
            inter[2 * i + 1] = neox[i + 4];
        }
        let (mut cos, mut sin) = ([0f32; 4], [0f32; 4]);
        rope_cos_sin(7, &inv_freq, &mut cos, &mut sin);
        let mut a = neox.clone();
        apply_rope(&mut a, head_dim, &cos, &sin, RopeStyle::NeoX);
        apply_rope(&mut inter, head_dim, &cos, &sin, RopeStyle::Interleaved);
        for i in 0..4 {
            assert_eq!(a[i], inter[2 * i]);
            assert_eq!(a[i + 4], inter[2 * i + 1]);
        }
        // Position 0 is the identity; rotation preserves the norm.
        let mut z = neox.clone();
        rope_cos_sin(0, &inv_freq, &mut cos, &mut sin);
        apply_rope(&mut z, head_dim, &cos, &sin, RopeStyle::NeoX);
        assert_eq!(z, neox);
        let n0: f32 = neox.iter().map(|v| v * v).sum();
        let n1: f32 = a.iter().map(|v| v * v).sum();
        assert!((n0 - n1).abs() < 1e-4);
    }
}
