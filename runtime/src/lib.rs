//! keel's runtime: model loading (GGUF, HF safetensors), the Llama-family forward pass
//! over a paged KV cache, sampling, tokenization and chat templates.

pub mod error;
pub mod gguf;
pub mod tensor;

pub use error::{Error, Result};
