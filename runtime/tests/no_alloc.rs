//! Once warm, a decode step's forward pass (`Model::forward_into`) allocates nothing on
//! the heap (issue 4: "no allocation in the per-token path"): activations live in the
//! model's workspace, logits in the caller's buffer, the kernels' scratch in per-thread
//! buffers that only grow. Every allocation of this test binary is counted (its only
//! test, so nothing else allocates meanwhile). The kernel pool has one thread here, so
//! every task runs on the calling thread and is counted: with more, each pool thread
//! grows the same per-thread buffers the first time it runs a task of a new size, at a
//! moment that depends on which thread was free (a count on them would be flaky).

mod common;

use keel_kernels::aligned::AlignedBuf;
use keel_kernels::matmul::Precision;
use keel_runtime::forward_batch::ForwardBatch;
use keel_runtime::kv_cache::{KvCache, KvCacheDtype, BLOCK_SIZE};
use keel_runtime::loader;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

fn count() {
    ALLOCATIONS.fetch_add(1, SeqCst);
}

// SAFETY: every call goes to the system allocator unchanged; counting allocates nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Two sets of `n_seqs` sequences, each with a 33-token prompt, decode 13 steps each
/// (contexts 34..=46): the first set warms the buffers, the second is counted. Returns
/// the allocations made in the second set's `forward_into` calls.
fn decode_allocations(fixture: &str, n_seqs: usize, dtype: KvCacheDtype) -> usize {
    let model = loader::load_model(&common::fixtures().join("tiny").join(fixture)).expect("load");
    let (prompt, steps) = (33usize, 13usize);
    let blocks_per_seq = (prompt + steps).div_ceil(BLOCK_SIZE);
    let mut kv = KvCache::with_dtype(&model.config, 2 * n_seqs * blocks_per_seq, dtype).expect("cache");
    let vocab = model.config.vocab_size as u32;
    let tokens: Vec<u32> = (0..prompt as u32).map(|t| (t * 7 + 3) % vocab).collect();
    let mut logits = AlignedBuf::new();
    let mut counted = 0;
    for set in 0..2 {
        let tables: Vec<Vec<u32>> = (0..n_seqs)
            .map(|s| {
                let first = ((set * n_seqs + s) * blocks_per_seq) as u32;
                (first..first + blocks_per_seq as u32).collect()
            })
            .collect();
        let mut prefill = ForwardBatch::default();
        for t in &tables {
            prefill.push_seq(&tokens, 0, t, BLOCK_SIZE, true);
        }
        model.forward_into(&prefill, &mut kv, &mut logits).expect("prefill");
        // Built up front: the engine's bookkeeping is not the forward pass.
        let batches: Vec<ForwardBatch> = (0..steps)
            .map(|i| {
                let mut b = ForwardBatch::default();
                for t in &tables {
                    b.push_seq(&[(i as u32 * 5 + 1) % vocab], prompt + i, t, BLOCK_SIZE, true);
                }
                b
            })
            .collect();
        let before = ALLOCATIONS.load(SeqCst);
        for b in &batches {
            model.forward_into(b, &mut kv, &mut logits).expect("decode");
            assert_eq!(logits.len(), n_seqs * vocab as usize);
            assert!(logits.iter().all(|x| x.is_finite()));
        }
        counted = ALLOCATIONS.load(SeqCst) - before;
    }
    counted
}

#[test]
fn a_warm_decode_step_allocates_nothing() {
    assert!(keel_kernels::parallel::set_num_threads(1), "the kernel pool started before the test");
    for (fixture, n_seqs, dtype) in [
        ("llama_gqa_tied", 1, KvCacheDtype::F32),
        ("llama_gqa_tied", 8, KvCacheDtype::F32),
        ("llama_gguf_q", 1, KvCacheDtype::F32),
        ("llama_gguf_q", 8, KvCacheDtype::F16),
        ("qwen2_bias", 3, KvCacheDtype::Bf16),
    ] {
        check(fixture, n_seqs, dtype);
    }
    // The opt-in BF16 matmuls keep their own per-thread buffers (activations and weight
    // rows as BF16).
    if keel_kernels::matmul::medium_available() {
        // The BF16 kernels even where they do not outrun the exact ones (`bf16_rate`).
        std::env::set_var("KEEL_BF16_DOT", "1");
        keel_kernels::matmul::set_precision(Precision::Medium);
        assert_eq!(keel_kernels::matmul::precision(), Precision::Medium);
        check("llama_gguf_q", 1, KvCacheDtype::F32);
        check("llama_gguf_q", 8, KvCacheDtype::F16);
        keel_kernels::matmul::set_precision(Precision::Highest);
    }
}

fn check(fixture: &str, n_seqs: usize, dtype: KvCacheDtype) {
    let what = format!(
        "{fixture}, {n_seqs} sequences, {} KV cache, matmul precision {}, 13 warm decode steps",
        dtype.name(),
        keel_kernels::matmul::precision().name()
    );
    let n = decode_allocations(fixture, n_seqs, dtype);
    assert_eq!(n, 0, "{what}: {n} allocations");
}
