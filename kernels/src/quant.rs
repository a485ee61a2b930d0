//! GGML block formats: the scalar reference dequantizers, and quantizers for the
//! 32-element formats (used by tests and the converter).
//!
//! The dequantizers reproduce ggml's arithmetic operation by operation (same products,
//! same order, f32), so an expanded weight equals the one llama.cpp, gguf-py and HF
//! `transformers` see, bit for bit. The SIMD kernels expand weights with the same
//! operations, so "dequantize then f32 dot" and a fused quantized dot give identical
//! bits (this is what makes greedy output independent of batch size).

use crate::dtype::DType;
use half::{bf16, f16};

#[inline(always)]
pub(crate) fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

#[inline(always)]
pub(crate) fn bf16_at(b: &[u8], i: usize) -> f32 {
    bf16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

#[inline(always)]
pub(crate) fn f32_at(b: &[u8], i: usize) -> f32 {
    f32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// Expands one block of `dtype` (`dtype.block_bytes()` bytes) into `out`
/// (`dtype.block_size()` values).
pub fn dequantize_block(dtype: DType, b: &[u8], out: &mut [f32]) {
    match dtype {
        DType::F32 => out[0] = f32_at(b, 0),
        DType::F16 => out[0] = f16_at(b, 0),
        DType::BF16 => out[0] = bf16_at(b, 0),
        DType::Q8_0 => {
            let d = f16_at(b, 0);
            for (o, &q) in out[..32].iter_mut().zip(&b[2..34]) {
                *o = (q as i8) as f32 * d;
            }
        }
        DType::Q4_0 => {
            let d = f16_at(b, 0);
            let qs = &b[2..18];
            for j in 0..16 {
                out[j] = ((qs[j] & 0x0F) as i32 - 8) as f32 * d;
                out[j + 16] = ((qs[j] >> 4) as i32 - 8) as f32 * d;
            }
        }
        DType::Q4_1 => {
            let d = f16_at(b, 0);
            let m = f16_at(b, 2);
            let qs = &b[4..20];
            for j in 0..16 {
                out[j] = (qs[j] & 0x0F) as f32 * d + m;
                out[j + 16] = (qs[j] >> 4) as f32 * d + m;
            }
        }
        DType::Q5_0 => {
            let d = f16_at(b, 0);
            let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
            let qs = &b[6..22];
            for j in 0..16 {
                let xh0 = (((qh >> j) << 4) & 0x10) as u8;
                let xh1 = ((qh >> (j + 12)) & 0x10) as u8;
                let x0 = ((qs[j] & 0x0F) | xh0) as i32 - 16;
                let x1 = ((qs[j] >> 4) | xh1) as i32 - 16;
                out[j] = x0 as f32 * d;
                out[j + 16] = x1 as f32 * d;
            }
        }
        DType::Q4K => dequantize_q4k(b, out),
        DType::Q6K => dequantize_q6k(b, out),
    }
}

/// The 6-bit scales and mins of a Q4_K block's 8 sub-blocks, from its 12 packed bytes
/// `q` (ggml's `get_scale_min_k4`, four lanes at a time: sub-block `j < 4` keeps the low 6
/// bits of `q[j]` and `q[j + 4]`; `j >= 4` takes 4 bits from `q[j + 4]` and its top 2 from
/// the spare bits of `q[j - 4]` and `q[j]`).
pub(crate) fn q4k_scale_bytes(q: &[u8]) -> ([u8; 8], [u8; 8]) {
    let word = |i: usize| u32::from_le_bytes([q[i], q[i + 1], q[i + 2], q[i + 3]]);
    let (a, b, c) = (word(0), word(4), word(8));
    let sc_lo = a & 0x3F3F_3F3F;
    let m_lo = b & 0x3F3F_3F3F;
    let sc_hi = (c & 0x0F0F_0F0F) | (((a >> 6) & 0x0303_0303) << 4);
    let m_hi = ((c >> 4) & 0x0F0F_0F0F) | (((b >> 6) & 0x0303_0303) << 4);
    let join = |lo: u32, hi: u32| (lo as u64 | (hi as u64) << 32).to_le_bytes();
    (join(sc_lo, sc_hi), join(m_lo, m_hi))
}

/// A Q4_K block's `d · scale` and `dmin · min` for each of its 8 sub-blocks of 32
/// (element `i` of sub-block `j` is `scales[j] · q - mins[j]`).
pub(crate) fn q4k_scales(b: &[u8]) -> ([f32; 8], [f32; 8]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let (sc, m) = q4k_scale_bytes(&b[4..16]);
    (sc.map(|s| d * s as f32), m.map(|m| dmin * m as f32))
}

/// A Q6_K block's `d · scale` for each of its 16 groups of 16 (element `i` of group `g`
/// is `scales[g] · q`).
pub(crate) fn q6k_scales(b: &[u8]) -> [f32; 16] {
    let d = f16_at(b, 208);
    std::array::from_fn(|g| d * (b[192 + g] as i8) as f32)
}

fn dequantize_q4k(b: &[u8], out: &mut [f32]) {
    let (scales, mins) = q4k_scales(b);
    let q = &b[16..144];
    for g in 0..4 {
        let (d1, m1, d2, m2) = (scales[2 * g], mins[2 * g], scales[2 * g + 1], mins[2 * g + 1]);
        for l in 0..32 {
            let byte = q[32 * g + l];
            out[64 * g + l] = d1 * (byte & 0x0F) as f32 - m1;
            out[64 * g + 32 + l] = d2 * (byte >> 4) as f32 - m2;
        }
    }
}

fn dequantize_q6k(b: &[u8], out: &mut [f32]) {
    let scales = q6k_scales(b);
    for n in 0..2 {
        let (ql, qh, sc) = (&b[64 * n..64 * n + 64], &b[128 + 32 * n..160 + 32 * n], &scales[8 * n..8 * n + 8]);
        let y = &mut out[128 * n..128 * n + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            y[l] = sc[is] * q1 as f32;
            y[l + 32] = sc[is + 2] * q2 as f32;
            y[l + 64] = sc[is + 4] * q3 as f32;
            y[l + 96] = sc[is + 6] * q4 as f32;
        }
    }
}

/// Expands a whole row (`out.len()` elements) stored as `dtype`.
///
/// Panics if `row` is shorter than `out.len()` elements of `dtype`.
pub fn dequantize_row(dtype: DType, row: &[u8], out: &mut [f32]) {
    let (bs, bb) = (dtype.block_size(), dtype.block_bytes());
    match dtype {
        DType::F32 => {
            for (o, c) in out.iter_mut().zip(row.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        DType::F16 => {
            for (o, c) in out.iter_mut().zip(row.chunks_exact(2)) {
                *o = f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
            }
        }
        DType::BF16 => {
            for (o, c) in out.iter_mut().zip(row.chunks_exact(2)) {
                *o = bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
            }
        }
        _ => {
            for (o, b) in out.chunks_exact_mut(bs).zip(row.chunks_exact(bb)) {
                dequantize_block(dtype, b, o);
            }
        }
    }
}

/// Quantizes `x` (a multiple of 32 values) with ggml's reference rounding for the
/// 32-element formats. K-quants are not produced here (their search is not needed:
/// keel reads them, llama.cpp writes them).
pub fn quantize_row(dtype: DType, x: &[f32]) -> Vec<u8> {
    assert!(x.len().is_multiple_of(32), "quantize_row: length {} is not a multiple of 32", x.len());
    let mut out = Vec::with_capacity(x.len() / 32 * dtype.block_bytes());
    for blk in x.chunks_exact(32) {
        match dtype {
            DType::Q8_0 => {
                let amax = blk.iter().fold(0f32, |a, v| a.max(v.abs()));
                let d = amax / 127.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend_from_slice(&f16::from_f32(d).to_bits().to_le_bytes());
                out.extend(blk.iter().map(|v| ((v * id).round() as i8) as u8));
            }
            DType::Q4_0 => {
                // ggml: the value of largest magnitude maps to -8.
                let max = blk.iter().fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
                let d = max / -8.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend_from_slice(&f16::from_f32(d).to_bits().to_le_bytes());
                for j in 0..16 {
                    let q0 = ((blk[j] * id + 8.5) as i32).min(15) as u8;
                    let q1 = ((blk[j + 16] * id + 8.5) as i32).min(15) as u8;
                    out.push(q0 | (q1 << 4));
                }
            }
            DType::Q4_1 => {
                let min = blk.iter().cloned().fold(f32::INFINITY, f32::min);
                let max = blk.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let d = (max - min) / 15.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend_from_slice(&f16::from_f32(d).to_bits().to_le_bytes());
                out.extend_from_slice(&f16::from_f32(min).to_bits().to_le_bytes());
                for j in 0..16 {
                    let q0 = (((blk[j] - min) * id + 0.5) as i32).min(15) as u8;
                    let q1 = (((blk[j + 16] - min) * id + 0.5) as i32).min(15) as u8;
                    out.push(q0 | (q1 << 4));
                }
            }
            DType::Q5_0 => {
                let max = blk.iter().fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
                let d = max / -16.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend_from_slice(&f16::from_f32(d).to_bits().to_le_bytes());
                let mut qh = 0u32;
                let mut qs = [0u8; 16];
                for j in 0..16 {
                    let x0 = ((blk[j] * id + 16.5) as i32).min(31) as u32;
                    let x1 = ((blk[j + 16] * id + 16.5) as i32).min(31) as u32;
                    qs[j] = ((x0 & 0x0F) | ((x1 & 0x0F) << 4)) as u8;
                    qh |= ((x0 & 0x10) >> 4) << j;
                    qh |= ((x1 & 0x10) >> 4) << (j + 16);
                }
                out.extend_from_slice(&qh.to_le_bytes());
                out.extend_from_slice(&qs);
            }
            other => panic!("quantize_row: {other} is not a 32-element quantized format"),
        }
    }
    out
}

/// Encodes f32 values as `dtype` for the float types (tests and converters).
pub fn encode_float_row(dtype: DType, x: &[f32]) -> Vec<u8> {
    match dtype {
        DType::F32 => x.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::F16 => x.iter().flat_map(|v| f16::from_f32(*v).to_bits().to_le_bytes()).collect(),
        DType::BF16 => x.iter().flat_map(|v| bf16::from_f32(*v).to_bits().to_le_bytes()).collect(),
        other => panic!("encode_float_row: {other} is not a float type"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_32_element_formats_stays_close() {
        let x: Vec<f32> = (0..64).map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0).collect();
        for (dtype, tol) in [(DType::Q8_0, 0.02), (DType::Q4_0, 0.25), (DType::Q4_1, 0.15), (DType::Q5_0, 0.12)] {
            let q = quantize_row(dtype, &x);
            assert_eq!(q.len(), dtype.row_bytes(64).unwrap());
            let mut y = vec![0f32; 64];
            dequantize_row(dtype, &q, &mut y);
            for (a, b) in x.iter().zip(&y) {
                assert!((a - b).abs() <= tol, "{dtype}: {a} vs {b}");
            }
        }
    }

    /// The four-lanes-at-a-time unpacking is ggml's `get_scale_min_k4`, for any bytes.
    #[test]
    fn q4k_scale_bytes_is_get_scale_min_k4() {
        let get_scale_min_k4 = |j: usize, q: &[u8]| -> (u8, u8) {
            if j < 4 {
                (q[j] & 63, q[j + 4] & 63)
            } else {
                ((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
            }
        };
        let mut rng = crate::test_util::Lcg(3);
        for _ in 0..1000 {
            let q: Vec<u8> = (0..12).map(|_| rng.next_u32() as u8).collect();
            let (sc, m) = q4k_scale_bytes(&q);
            for j in 0..8 {
                assert_eq!((sc[j], m[j]), get_scale_min_k4(j, &q), "sub-block {j} of {q:?}");
            }
        }
    }

    #[test]
    fn q4k_and_q6k_known_block() {
        // Q4_K: d = 1, dmin = 0.5, every scale 2 / min 1 for sub-blocks 0..4; quants 3 / 5.
        let mut b = vec![0u8; 144];
        b[0..2].copy_from_slice(&f16::from_f32(1.0).to_bits().to_le_bytes());
        b[2..4].copy_from_slice(&f16::from_f32(0.5).to_bits().to_le_bytes());
        for j in 0..4 {
            b[4 + j] = 2; // scale of sub-block j
            b[8 + j] = 1; // min of sub-block j
        }
        for q in &mut b[16..144] {
            *q = 3 | (5 << 4);
        }
        let mut y = vec![0f32; 256];
        dequantize_block(DType::Q4K, &b, &mut y);
        assert_eq!(y[0], 2.0 * 3.0 - 0.5); // sub-block 0: low nibbles
        assert_eq!(y[32], 2.0 * 5.0 - 0.5); // sub-block 1: high nibbles
        assert_eq!(y[200], 0.0); // sub-blocks 4..8 have scale 0 and min 0

        // Q6_K: d = 0.25, scales all 4, quants 33 (ql low nibble 1, qh bits 2) → (33 − 32)·4·0.25.
        let mut b = vec![0u8; 210];
        for q in &mut b[0..128] {
            *q = 0x11;
        }
        for q in &mut b[128..192] {
            *q = 0b10_10_10_10;
        }
        for s in &mut b[192..208] {
            *s = 4;
        }
        b[208..210].copy_from_slice(&f16::from_f32(0.25).to_bits().to_le_bytes());
        dequantize_block(DType::Q6K, &b, &mut y);
        assert!(y.iter().all(|&v| v == 1.0 * 4.0 * 0.25 * 1.0), "{:?}", &y[..8]);
    }
}
