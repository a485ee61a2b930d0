//! The runtime's error type. Every message names the file, tensor, key or field at
//! fault so that the CLI can print it as the one line a user needs.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },

    #[error("{}: not a valid GGUF file: {msg}", path.display())]
    Gguf { path: PathBuf, msg: String },

    #[error("{}: {msg}", path.display())]
    Safetensors { path: PathBuf, msg: String },

    #[error("{}: invalid config: {msg}", path.display())]
    Config { path: PathBuf, msg: String },

    #[error("unsupported architecture {0:?}: keel runs llama and qwen2 (LlamaForCausalLM, Qwen2ForCausalLM)")]
    UnsupportedArchitecture(String),

    #[error(
        "tensor {tensor}: unsupported type {dtype} (keel reads F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q4_K, Q6_K)"
    )]
    UnsupportedDType { tensor: String, dtype: String },

    #[error("model: {0}")]
    Model(String),

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    #[error("chat template: {0}")]
    ChatTemplate(String),

    #[error("invalid value for {field}: {msg}")]
    InvalidArgument { field: &'static str, msg: String },

    #[error("out of KV cache: {0}")]
    OutOfCache(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io { path: path.into(), source }
    }

    pub(crate) fn invalid(field: &'static str, msg: impl Into<String>) -> Error {
        Error::InvalidArgument { field, msg: msg.into() }
    }

    /// True when the error is the caller's input (a path, a value), not a fault of keel.
    pub fn is_user_error(&self) -> bool {
        !matches!(self, Error::Model(_) | Error::OutOfCache(_))
    }
}
