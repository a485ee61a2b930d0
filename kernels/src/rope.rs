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
    assert!(x.len() % head_dim == 0, "apply_rope: x is not whole heads");
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

#[cfg(test)]
mod tests {
    use super::*;

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
