//! Portable reference kernels: the definition every SIMD level is tested against.
//!
//! Accumulation uses 8 interleaved partial sums (element `i` goes to lane `i % 8`)
//! over 32-element chunks, the last chunk zero-padded, then a fixed reduction order.
//! `dot_row` expands each block with the reference dequantizer and feeds the same
//! accumulator as `dot_f32`, so it equals `dot_f32(dequantize_row(w), x)` exactly.

use crate::dtype::DType;
use crate::quant::{dequantize_block, dequantize_row};

/// Running sum over 32-element chunks.
struct Acc8([f32; 8]);

impl Acc8 {
    fn new() -> Self {
        Acc8([0.0; 8])
    }

    #[inline(always)]
    fn add_chunk(&mut self, w: &[f32; 32], x: &[f32; 32]) {
        for j in 0..32 {
            self.0[j % 8] += w[j] * x[j];
        }
    }

    fn sum(&self) -> f32 {
        let a = &self.0;
        ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]))
    }
}

/// Copies up to 32 values into a zero-padded chunk.
#[inline(always)]
fn chunk(src: &[f32]) -> [f32; 32] {
    let mut c = [0f32; 32];
    c[..src.len()].copy_from_slice(src);
    c
}

pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = Acc8::new();
    for (ca, cb) in a.chunks(32).zip(b.chunks(32)) {
        acc.add_chunk(&chunk(ca), &chunk(cb));
    }
    acc.sum()
}

pub fn dot_row(dtype: DType, w: &[u8], x: &[f32]) -> f32 {
    let mut acc = Acc8::new();
    if dtype.is_quantized() {
        let (bs, bb) = (dtype.block_size(), dtype.block_bytes());
        let mut buf = [0f32; 256];
        for (blk, xb) in w.chunks_exact(bb).zip(x.chunks_exact(bs)) {
            dequantize_block(dtype, blk, &mut buf[..bs]);
            for (cw, cx) in buf[..bs].chunks_exact(32).zip(xb.chunks_exact(32)) {
                acc.add_chunk(&chunk(cw), &chunk(cx));
            }
        }
    } else {
        let es = dtype.block_bytes();
        let mut buf = [0f32; 32];
        for (cw, cx) in w.chunks(32 * es).zip(x.chunks(32)) {
            let n = cx.len();
            dequantize_row(dtype, cw, &mut buf[..n]);
            acc.add_chunk(&chunk(&buf[..n]), &chunk(cx));
        }
    }
    acc.sum()
}

pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}
