//! Continuous batching end to end (issue: paged KV cache and continuous batching).
//!
//! * Batch invariance: a request's greedy (and seeded sampled) completion is bit-identical
//!   whether it runs alone or with 63 others of mixed lengths, arriving at different
//!   steps, with chunked prefill and with preemption forced by a tiny KV pool; with the
//!   f32 KV cache and with the BF16 one.
//! * Prefix caching: a repeated long prompt computes only its uncached tail and gives the
//!   same output.

mod common;

use keel_runtime::engine::{Completion, Engine, EngineConfig, GenerationRequest};
use keel_runtime::kv_cache::{KvCache, KvCacheDtype, BLOCK_SIZE};
use keel_runtime::loader;
use keel_runtime::sampling::SamplingParams;
use std::path::Path;

/// Mixed prompt lengths (1 ..= max_len) of pseudo-random tokens.
fn prompts(n: usize, max_len: usize, vocab: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut s = seed;
    let mut next = move || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (s >> 33) as usize
    };
    (0..n)
        .map(|_| {
            let len = 1 + next() % max_len;
            (0..len).map(|_| (next() % vocab) as u32).collect()
        })
        .collect()
}

fn params(i: usize, max_tokens: usize) -> SamplingParams {
    if i % 4 == 3 {
        // Every fourth request samples, with its own seed.
        SamplingParams {
            temperature: 0.8,
            top_p: 0.95,
            top_k: 40,
            seed: Some(1000 + i as u64),
            max_tokens,
            ignore_eos: true,
            ..SamplingParams::default()
        }
    } else {
        common::greedy(max_tokens)
    }
}

fn alone(path: &Path, reqs: &[GenerationRequest], kv_cache_dtype: KvCacheDtype) -> Vec<Completion> {
    let cfg = EngineConfig { max_num_seqs: 1, kv_cache_dtype, ..EngineConfig::default() };
    let engine = common::engine(loader::load(path).expect("load"), cfg);
    reqs.iter()
        .map(|r| engine.handle.submit(r.clone()).expect("submit").collect_blocking(&mut |_| {}).expect("done"))
        .collect()
}

/// All requests through one engine with a small step budget and a pool of `pool_tokens`
/// slots, submitted in waves: each wave after the previous one has produced tokens.
fn together(
    path: &Path,
    reqs: &[GenerationRequest],
    budget: usize,
    pool_tokens: usize,
    kv_cache_dtype: KvCacheDtype,
) -> (Vec<Completion>, u64) {
    let loaded = loader::load(path).expect("load");
    let bytes = pool_tokens.div_ceil(BLOCK_SIZE) * KvCache::bytes_per_block(&loaded.model.config, kv_cache_dtype);
    let cfg = EngineConfig {
        max_num_seqs: 64,
        max_num_batched_tokens: budget,
        kv_cache_bytes: Some(bytes),
        enable_prefix_caching: true,
        kv_cache_dtype,
        queue_capacity: 256,
    };
    let engine: Engine = common::engine(loaded, cfg);
    let mut streams = Vec::new();
    for wave in reqs.chunks(16) {
        let generated = engine.handle.metrics().generated_tokens;
        for r in wave {
            streams.push(engine.handle.submit(r.clone()).expect("submit"));
        }
        // Let this wave get going before the next one arrives.
        while engine.handle.metrics().generated_tokens == generated {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    let out = streams.into_iter().map(|s| s.collect_blocking(&mut |_| {}).expect("done")).collect();
    (out, engine.handle.metrics().preemptions)
}

fn check_invariance(path: &Path, n: usize, max_prompt: usize, max_tokens: usize, budget: usize, pool_tokens: usize) {
    check_invariance_with(path, n, max_prompt, max_tokens, budget, pool_tokens, KvCacheDtype::F32)
}

fn check_invariance_with(
    path: &Path,
    n: usize,
    max_prompt: usize,
    max_tokens: usize,
    budget: usize,
    pool_tokens: usize,
    dtype: KvCacheDtype,
) {
    let vocab = loader::load_model(path).expect("load").config.vocab_size;
    let reqs: Vec<GenerationRequest> = prompts(n, max_prompt, vocab, 42)
        .into_iter()
        .enumerate()
        .map(|(i, p)| GenerationRequest { prompt_ids: p, params: params(i, max_tokens), priority: 0 })
        .collect();
    let want = alone(path, &reqs, dtype);
    let (got, preemptions) = together(path, &reqs, budget, pool_tokens, dtype);
    assert!(preemptions > 0, "the pool was meant to force preemption");
    for (i, (w, g)) in want.iter().zip(&got).enumerate() {
        assert_eq!(
            g.completion_ids,
            w.completion_ids,
            "request {i} (prompt {} tokens) differs in the batch",
            reqs[i].prompt_ids.len()
        );
        assert_eq!(g.logprobs, w.logprobs, "request {i}: log-probabilities differ");
        assert_eq!(w.completion_ids.len(), max_tokens);
    }
}

#[test]
fn tiny_llama_batch_invariance_with_chunking_and_preemption() {
    let p = common::fixtures().join("tiny/llama_gqa_tied");
    check_invariance(&p, 64, 120, 24, 64, 900);
}

#[test]
fn tiny_llama_batch_invariance_with_a_bf16_kv_cache() {
    let p = common::fixtures().join("tiny/llama_gqa_tied");
    check_invariance_with(&p, 64, 120, 24, 64, 900, KvCacheDtype::Bf16);
}

#[test]
fn tiny_gguf_quantized_batch_invariance() {
    let p = common::fixtures().join("tiny/llama_gguf_q");
    check_invariance(&p, 64, 100, 16, 64, 700);
}

#[test]
fn smollm2_batch_invariance_64_requests() {
    let Some(path) = common::asset(common::smollm2_path(), "SmolLM2 GGUF", common::MODEL_HINT) else {
        return;
    };
    check_invariance(&path, 64, 96, 12, 256, 2200);
}

#[test]
fn prefix_cache_reuses_full_blocks_and_keeps_the_output() {
    let path = common::fixtures().join("tiny/llama_gqa_tied");
    let engine = common::engine(loader::load(&path).expect("load"), EngineConfig::default());
    let prompt: Vec<u32> = (0..150).map(|i| (i * 7 % 300) as u32).collect();
    let run = |e: &Engine| {
        let before = e.handle.metrics().tokens_computed;
        let c = e
            .handle
            .submit(GenerationRequest { prompt_ids: prompt.clone(), params: common::greedy(10), priority: 0 })
            .expect("submit")
            .collect_blocking(&mut |_| {})
            .expect("done");
        (c, e.handle.metrics().tokens_computed - before)
    };
    let (first, computed_first) = run(&engine);
    let (second, computed_second) = run(&engine);
    assert_eq!(first.usage.cached_tokens, 0);
    // 150 tokens = 9 full blocks + 6; at least one token is always recomputed.
    assert_eq!(second.usage.cached_tokens, 144);
    assert_eq!(computed_first, 150 + 9, "prompt + 9 decode steps");
    assert_eq!(computed_second, 6 + 9, "only the uncached tail + decode steps");
    assert_eq!(first.completion_ids, second.completion_ids);
    assert_eq!(first.logprobs, second.logprobs, "bit-identical, not just the same argmax");
}
