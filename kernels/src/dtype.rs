//! Storage types of weight matrices, and the byte layout of their blocks.
//!
//! A row of `n` elements of a block-quantized type is `n / block_size()` blocks of
//! `block_bytes()` bytes each, stored back to back (the GGML layout). Float types are
//! "blocks" of one element. Every kernel that reads weights takes the raw row bytes
//! plus a `DType`, so weights never need converting when they are loaded.

use std::fmt;

/// How the elements of a tensor are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
    /// 32 values: f16 scale `d`, 32 × i8. Value = q·d.
    Q8_0,
    /// 32 values: f16 scale `d`, 16 bytes of nibbles. Value = (q − 8)·d.
    Q4_0,
    /// 32 values: f16 scale `d`, f16 min `m`, 16 bytes of nibbles. Value = q·d + m.
    Q4_1,
    /// 32 values: f16 `d`, 32 high bits, 16 bytes of nibbles. Value = (q − 16)·d.
    Q5_0,
    /// 256 values in 8 sub-blocks with 6-bit scales and mins (GGML "k-quant").
    Q4K,
    /// 256 values in 16 sub-blocks with 8-bit scales, 6-bit quants.
    Q6K,
}

impl DType {
    /// Elements per block.
    pub const fn block_size(self) -> usize {
        match self {
            DType::F32 | DType::F16 | DType::BF16 => 1,
            DType::Q8_0 | DType::Q4_0 | DType::Q4_1 | DType::Q5_0 => 32,
            DType::Q4K | DType::Q6K => 256,
        }
    }

    /// Bytes per block.
    pub const fn block_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::Q8_0 => 34,
            DType::Q4_0 => 18,
            DType::Q4_1 => 20,
            DType::Q5_0 => 22,
            DType::Q4K => 144,
            DType::Q6K => 210,
        }
    }

    pub const fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// Bytes taken by `n` elements, or `None` when `n` is not a whole number of blocks.
    pub fn row_bytes(self, n: usize) -> Option<usize> {
        n.is_multiple_of(self.block_size()).then(|| n / self.block_size() * self.block_bytes())
    }

    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::Q8_0 => "Q8_0",
            DType::Q4_0 => "Q4_0",
            DType::Q4_1 => "Q4_1",
            DType::Q5_0 => "Q5_0",
            DType::Q4K => "Q4_K",
            DType::Q6K => "Q6_K",
        }
    }

    pub const ALL: [DType; 9] = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::Q8_0,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q4K,
        DType::Q6K,
    ];
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
