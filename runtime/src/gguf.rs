//! GGUF v2/v3 reader: header, metadata, tensor infos; tensor data stays memory-mapped.
//!
//! Layout: magic `GGUF`, u32 version, u64 tensor count, u64 metadata count, metadata
//! key/values, tensor infos (name, dims innermost first, ggml type, offset), padding
//! to `general.alignment` (default 32), then tensor data. All integers little-endian.
//! Every length and offset read from the file is bounds-checked: a truncated or hostile
//! file gives an error, never a panic or a huge allocation.

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use keel_kernels::DType;
use memmap2::Mmap;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<GgufValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl GgufValue {
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v as u64),
            GgufValue::U16(v) => Some(v as u64),
            GgufValue::U32(v) => Some(v as u64),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) if v >= 0 => Some(v as u64),
            GgufValue::I16(v) if v >= 0 => Some(v as u64),
            GgufValue::I32(v) if v >= 0 => Some(v as u64),
            GgufValue::I64(v) if v >= 0 => Some(v as u64),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            GgufValue::I8(v) => Some(v as i64),
            GgufValue::I16(v) => Some(v as i64),
            GgufValue::I32(v) => Some(v as i64),
            GgufValue::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v as f64),
            GgufValue::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// Where a tensor's data lies and how it is stored.
#[derive(Clone, Debug)]
pub struct GgufTensorInfo {
    pub name: String,
    /// Row-major shape, outermost first (GGUF lists dims innermost first).
    pub shape: Vec<usize>,
    /// `Err(type name)` for GGML types keel cannot read; reported only if used.
    pub dtype: std::result::Result<DType, String>,
    /// Offset from the start of the data section.
    pub offset: u64,
}

pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: BTreeMap<String, GgufValue>,
    pub tensors: Vec<GgufTensorInfo>,
    data_start: usize,
    map: Arc<Mmap>,
}

/// GGML type id → keel dtype, or the GGML name of a type keel does not read.
fn ggml_type(id: u32) -> std::result::Result<DType, String> {
    Ok(match id {
        0 => DType::F32,
        1 => DType::F16,
        2 => DType::Q4_0,
        3 => DType::Q4_1,
        6 => DType::Q5_0,
        8 => DType::Q8_0,
        12 => DType::Q4K,
        14 => DType::Q6K,
        30 => DType::BF16,
        _ => {
            let name = match id {
                4 | 5 => "Q4_2/Q4_3 (removed from ggml)",
                7 => "Q5_1",
                9 => "Q8_1",
                10 => "Q2_K",
                11 => "Q3_K",
                13 => "Q5_K",
                15 => "Q8_K",
                16..=23 | 29 => "IQ (i-quant)",
                24 => "I8",
                25 => "I16",
                26 => "I32",
                27 => "I64",
                28 => "F64",
                _ => "unknown",
            };
            return Err(format!("{name} (ggml type {id})"));
        }
    })
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn err(&self, msg: impl Into<String>) -> Error {
        Error::Gguf { path: self.path.to_path_buf(), msg: format!("{} (at byte {})", msg.into(), self.pos) }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| self.err("unexpected end of file"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("take returns N bytes"))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A count that must fit in the rest of the file at `min_size` bytes per item.
    fn count(&mut self, min_size: usize) -> Result<usize> {
        let n = self.u64()?;
        let left = (self.buf.len() - self.pos) as u64;
        if n.saturating_mul(min_size as u64) > left {
            return Err(self.err(format!("count {n} exceeds the file size")));
        }
        Ok(n as usize)
    }

    fn string(&mut self) -> Result<String> {
        let n = self.count(1)?;
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.err("string is not valid UTF-8"))
    }

    fn value(&mut self, ty: u32, depth: u32) -> Result<GgufValue> {
        Ok(match ty {
            0 => GgufValue::U8(self.array::<1>()?[0]),
            1 => GgufValue::I8(self.array::<1>()?[0] as i8),
            2 => GgufValue::U16(u16::from_le_bytes(self.array()?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.array()?)),
            4 => GgufValue::U32(self.u32()?),
            5 => GgufValue::I32(i32::from_le_bytes(self.array()?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.array()?)),
            7 => match self.array::<1>()?[0] {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => return Err(self.err(format!("invalid bool byte {b}"))),
            },
            8 => GgufValue::String(self.string()?),
            9 => {
                if depth > 2 {
                    return Err(self.err("arrays nested too deep"));
                }
                let elem = self.u32()?;
                let n = self.count(1)?;
                let mut v = Vec::with_capacity(n.min(1 << 20));
                for _ in 0..n {
                    v.push(self.value(elem, depth + 1)?);
                }
                GgufValue::Array(v)
            }
            10 => GgufValue::U64(self.u64()?),
            11 => GgufValue::I64(i64::from_le_bytes(self.array()?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array()?)),
            t => return Err(self.err(format!("unknown metadata value type {t}"))),
        })
    }
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GgufFile({}, v{}, {} keys, {} tensors)",
            self.path.display(),
            self.version,
            self.metadata.len(),
            self.tensors.len()
        )
    }
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<GgufFile> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the file is opened read-only; keel never writes to model files while
        // they are mapped. Another process truncating it is outside our contract.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Self::parse(path, Arc::new(map))
    }

    fn parse(path: &Path, map: Arc<Mmap>) -> Result<GgufFile> {
        let mut r = Reader { buf: &map[..], pos: 0, path };
        if r.take(4).ok() != Some(b"GGUF".as_slice()) {
            return Err(Error::Gguf { path: path.to_path_buf(), msg: "missing GGUF magic".into() });
        }
        let version = r.u32()?;
        if !(2..=3).contains(&version) {
            return Err(r.err(format!("GGUF version {version} is not supported (2 and 3 are)")));
        }
        let n_tensors = r.count(24)?;
        let n_kv = r.count(12)?;
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = r.string()?;
            let ty = r.u32()?;
            let v = r.value(ty, 0)?;
            metadata.insert(key, v);
        }
        let mut tensors = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let name = r.string()?;
            let n_dims = r.u32()? as usize;
            if n_dims > 4 {
                return Err(r.err(format!("tensor {name}: {n_dims} dimensions (at most 4)")));
            }
            let mut shape = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                let d = r.u64()?;
                shape.push(usize::try_from(d).map_err(|_| r.err(format!("tensor {name}: dimension {d} too large")))?);
            }
            shape.reverse();
            let dtype = ggml_type(r.u32()?);
            let offset = r.u64()?;
            tensors.push(GgufTensorInfo { name, shape, dtype, offset });
        }
        let alignment = match metadata.get("general.alignment") {
            Some(v) => v
                .as_u64()
                .filter(|a| *a > 0 && a.is_power_of_two())
                .ok_or_else(|| r.err("general.alignment must be a power of two"))?,
            None => 32,
        } as usize;
        let data_start = r.pos.div_ceil(alignment) * alignment;
        Ok(GgufFile { path: path.to_path_buf(), version, metadata, tensors, data_start, map })
    }

    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(GgufValue::as_str)
    }

    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(GgufValue::as_u64)
    }

    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(GgufValue::as_f64)
    }

    pub fn tensor_info(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The named tensor as a view into the mapped file.
    pub fn tensor(&self, name: &str) -> Result<Option<Tensor>> {
        let Some(info) = self.tensor_info(name) else {
            return Ok(None);
        };
        let dtype = info.dtype.clone().map_err(|t| Error::UnsupportedDType { tensor: name.into(), dtype: t })?;
        let cols = *info.shape.last().unwrap_or(&1);
        let rows: usize = info.shape.iter().rev().skip(1).product();
        let len = dtype.row_bytes(cols).and_then(|rb| rb.checked_mul(rows)).ok_or_else(|| Error::Gguf {
            path: self.path.clone(),
            msg: format!("tensor {name}: bad shape {:?} for {dtype}", info.shape),
        })?;
        let offset =
            usize::try_from(info.offset).ok().and_then(|o| o.checked_add(self.data_start)).ok_or_else(|| {
                Error::Gguf { path: self.path.clone(), msg: format!("tensor {name}: offset out of range") }
            })?;
        Tensor::mapped(name, dtype, info.shape.clone(), self.map.clone(), offset, len).map(Some)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a GGUF v3 file in memory (tests only).
    pub(crate) struct GgufBuilder {
        kv: Vec<(String, u32, Vec<u8>)>,
        tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
    }

    impl GgufBuilder {
        pub fn new() -> Self {
            GgufBuilder { kv: vec![], tensors: vec![] }
        }
        fn str_bytes(s: &str) -> Vec<u8> {
            let mut v = (s.len() as u64).to_le_bytes().to_vec();
            v.extend_from_slice(s.as_bytes());
            v
        }
        pub fn kv_str(mut self, k: &str, v: &str) -> Self {
            self.kv.push((k.into(), 8, Self::str_bytes(v)));
            self
        }
        pub fn kv_u32(mut self, k: &str, v: u32) -> Self {
            self.kv.push((k.into(), 4, v.to_le_bytes().to_vec()));
            self
        }
        pub fn kv_str_array(mut self, k: &str, items: &[&str]) -> Self {
            let mut v = 8u32.to_le_bytes().to_vec();
            v.extend((items.len() as u64).to_le_bytes());
            for s in items {
                v.extend(Self::str_bytes(s));
            }
            self.kv.push((k.into(), 9, v));
            self
        }
        /// `dims` innermost first, as GGUF stores them.
        pub fn tensor(mut self, name: &str, dims: &[u64], ggml_type: u32, data: Vec<u8>) -> Self {
            self.tensors.push((name.into(), dims.to_vec(), ggml_type, data));
            self
        }
        pub fn build(self) -> Vec<u8> {
            let mut out = b"GGUF".to_vec();
            out.extend(3u32.to_le_bytes());
            out.extend((self.tensors.len() as u64).to_le_bytes());
            out.extend((self.kv.len() as u64).to_le_bytes());
            for (k, t, v) in &self.kv {
                out.extend(Self::str_bytes(k));
                out.extend(t.to_le_bytes());
                out.extend(v);
            }
            let mut offset = 0u64;
            for (name, dims, t, data) in &self.tensors {
                out.extend(Self::str_bytes(name));
                out.extend((dims.len() as u32).to_le_bytes());
                for d in dims {
                    out.extend(d.to_le_bytes());
                }
                out.extend(t.to_le_bytes());
                out.extend(offset.to_le_bytes());
                offset += (data.len() as u64).div_ceil(32) * 32;
            }
            while out.len() % 32 != 0 {
                out.push(0);
            }
            for (_, _, _, data) in &self.tensors {
                out.extend(data);
                while out.len() % 32 != 0 {
                    out.push(0);
                }
            }
            out
        }
    }

    fn write_temp(bytes: &[u8], name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("keel-gguf-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let p = dir.join(name);
        std::fs::write(&p, bytes).expect("write");
        p
    }

    #[test]
    fn reads_metadata_and_tensors() {
        let data: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let bytes = GgufBuilder::new()
            .kv_str("general.architecture", "llama")
            .kv_u32("llama.block_count", 2)
            .kv_str_array("tokenizer.ggml.tokens", &["a", "b"])
            .tensor("w", &[3, 2], 0, data)
            .tensor("q", &[32, 1], 7, vec![0u8; 24])
            .build();
        let p = write_temp(&bytes, "ok.gguf");
        let f = GgufFile::open(&p).expect("parse");
        assert_eq!(f.get_str("general.architecture"), Some("llama"));
        assert_eq!(f.get_u64("llama.block_count"), Some(2));
        assert_eq!(f.get("tokenizer.ggml.tokens").and_then(|v| v.as_array()).map(|a| a.len()), Some(2));
        let w = f.tensor("w").expect("ok").expect("present");
        assert_eq!(w.shape, vec![2, 3]);
        assert_eq!(w.to_f32_vec(), vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        let err = f.tensor("q").expect_err("Q5_1 is unsupported").to_string();
        assert!(err.contains("Q5_1") && err.contains("tensor q"), "{err}");
        assert!(f.tensor("missing").expect("ok").is_none());
    }

    #[test]
    fn truncated_and_hostile_files_are_errors() {
        let bytes =
            GgufBuilder::new().kv_str("general.architecture", "llama").tensor("w", &[4], 0, vec![0u8; 16]).build();
        for cut in [3, 10, 30, 60] {
            let p = write_temp(&bytes[..cut], &format!("cut{cut}.gguf"));
            assert!(GgufFile::open(&p).is_err(), "cut at {cut}");
        }
        // Tensor data that runs past the end of the file.
        // (the builder pads the 16 data bytes to 32; cutting 20 leaves 12)
        let p = write_temp(&bytes[..bytes.len() - 20], "short.gguf");
        let f = GgufFile::open(&p).expect("header is intact");
        assert!(f.tensor("w").is_err());
        // A string length of 2^60.
        let mut evil = b"GGUF".to_vec();
        evil.extend(3u32.to_le_bytes());
        evil.extend(0u64.to_le_bytes());
        evil.extend(1u64.to_le_bytes());
        evil.extend((1u64 << 60).to_le_bytes());
        let p = write_temp(&evil, "evil.gguf");
        assert!(GgufFile::open(&p).unwrap_err().to_string().contains("exceeds"));
        let p = write_temp(b"NOPE", "magic.gguf");
        assert!(GgufFile::open(&p).unwrap_err().to_string().contains("magic"));
    }
}
