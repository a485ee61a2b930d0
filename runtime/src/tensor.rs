//! `Tensor`: a weight in its stored type, usually a view into a memory-mapped file.
//!
//! Invariant: `bytes().len() == dtype.row_bytes(last dim) * (product of other dims)`,
//! checked when the tensor is made. Weights are never converted at load time; the
//! kernels expand them as they read. An F32 / F16 / BF16 / Q8_0 matrix of a linear layer
//! may also hold a copy repacked into panels (`with_panels`), same type and values, which
//! the exact AVX-512 matmul then reads instead (`keel_kernels::matmul::panels`).

use crate::error::{Error, Result};
use keel_kernels::matmul::panels::PanelMatrix;
use keel_kernels::{DType, WeightMatrix};
use memmap2::Mmap;
use std::sync::Arc;

#[derive(Clone)]
enum Storage {
    Mapped { map: Arc<Mmap>, offset: usize, len: usize },
    Owned(Arc<Vec<u8>>),
}

#[derive(Clone)]
pub struct Tensor {
    pub name: String,
    pub dtype: DType,
    /// Row-major shape, outermost first (`[rows, cols]` for a matrix).
    pub shape: Vec<usize>,
    storage: Storage,
    panels: Option<Arc<PanelMatrix>>,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({} {} {:?})", self.name, self.dtype, self.shape)
    }
}

fn expected_bytes(name: &str, dtype: DType, shape: &[usize]) -> Result<usize> {
    let cols = *shape.last().unwrap_or(&1);
    let rows: usize = shape.iter().rev().skip(1).product();
    let row = dtype.row_bytes(cols).ok_or_else(|| {
        Error::Model(format!("tensor {name}: {cols} columns are not a whole number of {dtype} blocks"))
    })?;
    Ok(row * rows)
}

impl Tensor {
    pub fn mapped(
        name: &str,
        dtype: DType,
        shape: Vec<usize>,
        map: Arc<Mmap>,
        offset: usize,
        len: usize,
    ) -> Result<Tensor> {
        let want = expected_bytes(name, dtype, &shape)?;
        if want != len || offset.checked_add(len).is_none_or(|end| end > map.len()) {
            return Err(Error::Model(format!(
                "tensor {name}: {len} bytes at offset {offset} do not hold {dtype} {shape:?} ({want} bytes) inside the file"
            )));
        }
        Ok(Tensor { name: name.to_string(), dtype, shape, storage: Storage::Mapped { map, offset, len }, panels: None })
    }

    pub fn owned(name: &str, dtype: DType, shape: Vec<usize>, data: Vec<u8>) -> Result<Tensor> {
        let want = expected_bytes(name, dtype, &shape)?;
        if want != data.len() {
            return Err(Error::Model(format!("tensor {name}: {} bytes do not hold {dtype} {shape:?}", data.len())));
        }
        Ok(Tensor { name: name.to_string(), dtype, shape, storage: Storage::Owned(Arc::new(data)), panels: None })
    }

    pub fn bytes(&self) -> &[u8] {
        match &self.storage {
            Storage::Mapped { map, offset, len } => &map[*offset..*offset + *len],
            Storage::Owned(v) => v,
        }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The tensor as a `[rows, cols]` matrix; errors unless it is 2-D.
    pub fn matrix(&self) -> Result<WeightMatrix<'_>> {
        match self.shape[..] {
            [rows, cols] => WeightMatrix::new(self.dtype, self.bytes(), rows, cols)
                .map(|m| m.with_panels(self.panels.as_deref()))
                .ok_or_else(|| Error::Model(format!("tensor {}: inconsistent size", self.name))),
            _ => Err(Error::Model(format!("tensor {}: expected a matrix, shape is {:?}", self.name, self.shape))),
        }
    }

    /// This matrix with a copy repacked into panels, when this process's exact matmuls run
    /// on them (`panels::used`) and its type has panels; else unchanged.
    pub fn with_panels(mut self) -> Result<Tensor> {
        if keel_kernels::matmul::panels::used() && self.shape.len() == 2 {
            self.panels = PanelMatrix::from_weights(&self.matrix()?).map(Arc::new);
        }
        Ok(self)
    }

    /// All values as f32 (for small tensors: norms, biases).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.numel()];
        keel_kernels::quant::dequantize_row(self.dtype, self.bytes(), &mut out);
        out
    }

    /// Errors unless the shape is `want`.
    pub fn expect_shape(&self, want: &[usize]) -> Result<&Tensor> {
        if self.shape != want {
            return Err(Error::Model(format!("tensor {}: shape {:?}, expected {want:?}", self.name, self.shape)));
        }
        Ok(self)
    }
}
