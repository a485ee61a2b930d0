//! keel's runtime: model loading (GGUF, HF safetensors), the Llama-family forward pass
//! over a paged KV cache, sampling, tokenization and chat templates.

pub mod chat_template;
pub mod config;
pub mod engine;
pub mod error;
pub mod forward_batch;
pub mod gguf;
pub mod kv_cache;
pub mod loader;
pub mod model;
pub mod safetensors_dir;
pub mod sampling;
pub mod stop;
pub mod tensor;
pub mod tokenizer;
pub mod weights;

pub use error::{Error, Result};
pub use forward_batch::ForwardBatch;
/// Storage types of tensors; defined beside the kernels that read them.
pub use keel_kernels::DType;
pub use kv_cache::KvCache;
pub use model::Model;
