//! SwiGLU gating: `silu(gate) · up`, with `silu(x) = x / (1 + e^(−x))` (torch's form).

/// `gate[i] = silu(gate[i]) * up[i]`, in place.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "silu_mul: length mismatch");
    for (g, u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn silu_values() {
        let mut g = [0.0f32, 1.0, -30.0];
        super::silu_mul(&mut g, &[1.0, 2.0, 1.0]);
        assert_eq!(g[0], 0.0);
        assert!((g[1] - 2.0 * 0.7310586).abs() < 1e-6);
        assert!(g[2].abs() < 1e-11);
    }
}
