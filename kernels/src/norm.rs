//! RMSNorm (HF `LlamaRMSNorm`): `w · (x / sqrt(mean(x²) + eps))`, per token.
//!
//! The mean of squares is accumulated in f64 (as ggml does); the scaling follows HF's
//! operation order, `weight * (x * rsqrt(var + eps))`, in f32.

/// Normalises each `hidden`-sized row of `x` into `out`.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let hidden = weight.len();
    assert!(x.len() == out.len() && x.len() % hidden == 0, "rms_norm: shape mismatch");
    for (xr, or) in x.chunks_exact(hidden).zip(out.chunks_exact_mut(hidden)) {
        let ss: f64 = xr.iter().map(|v| (*v as f64) * (*v as f64)).sum();
        let var = (ss / hidden as f64) as f32;
        let scale = 1.0 / (var + eps).sqrt();
        for ((o, v), w) in or.iter_mut().zip(xr).zip(weight) {
            *o = w * (v * scale);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_rows_stay_unit() {
        let x = [1.0f32, -1.0, 1.0, -1.0, 2.0, 2.0, 2.0, 2.0];
        let w = [1.0f32, 2.0, 1.0, 1.0];
        let mut out = [0f32; 8];
        rms_norm(&x, &w, 0.0, &mut out);
        assert_eq!(out, [1.0, -2.0, 1.0, -1.0, 1.0, 2.0, 1.0, 1.0]);
    }
}
