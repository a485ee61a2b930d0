//! keel's scheduler: which requests run in the next engine step, how many tokens each,
//! and which KV-cache blocks hold them. Pure CPU bookkeeping in token counts and block
//! ids — no tensors, no model (DESIGN.md). The engine turns a `SchedulerOutput` into a
//! forward batch and reports sampled tokens back with `update_from_output`.

pub mod block_pool;
pub mod kv_cache_manager;
pub mod request;
pub mod scheduler;

pub use block_pool::{BlockId, BlockPool};
pub use kv_cache_manager::{BlockTable, KvCacheManager};
pub use request::{FinishReason, Request, RequestId, RequestStatus};
pub use scheduler::{ScheduledRequest, Scheduler, SchedulerConfig, SchedulerOutput};

/// Errors the scheduler reports to its caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("request {0} already exists")]
    DuplicateRequest(RequestId),
    #[error("request {id}: {tokens} tokens can never fit in the KV cache ({capacity} token slots); raise --kv-cache-mem or shorten the prompt")]
    TooLong { id: RequestId, tokens: usize, capacity: usize },
    #[error("request {0}: empty prompt")]
    EmptyPrompt(RequestId),
}
