//! keel's runtime: model loading (GGUF, HF safetensors), the Llama-family forward pass
//! over a paged KV cache, sampling, tokenization and chat templates.

pub mod chat_template;
pub mod error;
pub mod gguf;
pub mod sampling;
pub mod stop;
pub mod tensor;
pub mod tokenizer;

pub use error::{Error, Result};
