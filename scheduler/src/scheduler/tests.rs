//! State-machine tests of the block manager and the scheduler (proptest).

use super::*;
use crate::block_pool::BlockId;
use crate::kv_cache_manager::{ComputedBlocks, KvCacheManager};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    /// New request with a prompt drawn from a small alphabet (so prefixes repeat).
    Add {
        len: usize,
        seed: u8,
    },
    /// Grow request `i % live` by `n` computed tokens.
    Append {
        i: usize,
        n: usize,
    },
    Fork {
        i: usize,
    },
    Free {
        i: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1usize..80, 0u8..4).prop_map(|(len, seed)| Op::Add { len, seed }),
        (0usize..16, 1usize..40).prop_map(|(i, n)| Op::Append { i, n }),
        (0usize..16).prop_map(|i| Op::Fork { i }),
        (0usize..16).prop_map(|i| Op::Free { i }),
    ]
}

fn prompt(len: usize, seed: u8) -> Vec<u32> {
    (0..len).map(|i| ((i as u32 / 7) * 3 + seed as u32 % 2) % 5).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// free + used == total, ref counts match owners, no block twice in a table, and
    /// prefix hits only ever return blocks whose content matches — after any sequence
    /// of allocate / append / fork / free, with eviction forced by a small pool.
    #[test]
    fn block_manager_invariants(ops in proptest::collection::vec(op(), 1..60), num_blocks in 4usize..24, caching in any::<bool>()) {
        let bs = 4;
        let mut kv = KvCacheManager::new(num_blocks, bs, caching);
        // Live requests: (request, tokens whose K/V "content" we track per block).
        let mut live: Vec<Request> = Vec::new();
        let mut content: std::collections::HashMap<BlockId, Vec<u32>> = std::collections::HashMap::new();
        let mut next_id = 0u64;
        for op in ops {
            match op {
                Op::Add { len, seed } => {
                    let mut r = Request::new(RequestId(next_id), prompt(len, seed), 0);
                    next_id += 1;
                    let hit = kv.get_computed_blocks(&r);
                    // Every hit block must hold exactly the tokens it claims.
                    for (i, b) in hit.blocks.iter().enumerate() {
                        prop_assert_eq!(content.get(b), Some(&r.tokens(i * bs, (i + 1) * bs)));
                    }
                    let n = r.num_tokens() - hit.num_tokens;
                    if kv.allocate_slots(&r, n, &hit) {
                        r.num_computed_tokens = r.num_tokens();
                        record(&kv, &r, &mut content, bs);
                        kv.cache_blocks(&r);
                        live.push(r);
                    }
                }
                Op::Append { i, n } if !live.is_empty() => {
                    let k = i % live.len();
                    let r = &mut live[k];
                    if kv.allocate_slots(r, n, &ComputedBlocks::default()) {
                        for j in 0..n {
                            r.output_ids.push((j % 3) as u32);
                        }
                        r.num_computed_tokens = r.num_tokens();
                        record(&kv, r, &mut content, bs);
                        kv.cache_blocks(r);
                    }
                }
                Op::Fork { i } if !live.is_empty() => {
                    let parent = live[i % live.len()].clone();
                    let child_id = RequestId(next_id);
                    next_id += 1;
                    if let Some(copies) = kv.fork(parent.id, child_id, parent.num_tokens()) {
                        for (src, dst) in copies {
                            let c = content.get(&src).cloned().unwrap_or_default();
                            content.insert(dst, c);
                        }
                        let mut child = parent.clone();
                        child.id = child_id;
                        live.push(child);
                    }
                }
                Op::Free { i } if !live.is_empty() => {
                    let r = live.swap_remove(i % live.len());
                    kv.free(r.id);
                }
                _ => {}
            }
            prop_assert!(kv.check_invariants().is_ok(), "{:?}", kv.check_invariants());
            let p = kv.pool();
            prop_assert_eq!(p.num_free() + p.num_used(), p.num_blocks());
            // Each live request's table covers its tokens, and shared blocks hold its content.
            for r in &live {
                let t = kv.block_table(r.id);
                prop_assert!(t.len() * bs >= r.num_tokens());
                for (i, b) in t.iter().enumerate().take(r.num_tokens() / bs) {
                    prop_assert_eq!(content.get(b), Some(&r.tokens(i * bs, (i + 1) * bs)), "block {} of {}", b, r.id);
                }
            }
        }
        for r in live.drain(..) {
            kv.free(r.id);
        }
        prop_assert_eq!(kv.pool().num_free(), num_blocks);
        prop_assert!(kv.check_invariants().is_ok());
    }
}

/// Pretends the engine wrote `r`'s tokens into its blocks (what a hit must later return).
fn record(kv: &KvCacheManager, r: &Request, content: &mut std::collections::HashMap<BlockId, Vec<u32>>, bs: usize) {
    for (i, b) in kv.block_table(r.id).iter().enumerate().take(r.num_tokens() / bs) {
        content.insert(*b, r.tokens(i * bs, (i + 1) * bs));
    }
}

/// The token a fake model samples: a function of the request and position only, like a
/// batch-invariant greedy model.
fn fake_token(id: RequestId, pos: usize) -> u32 {
    ((id.0 * 31 + pos as u64 * 7) % 11) as u32
}

#[derive(Clone, Debug)]
struct Arrival {
    step: usize,
    prompt_len: usize,
    max_tokens: usize,
    priority: i32,
    abort_at: Option<usize>,
}

fn arrival() -> impl Strategy<Value = Arrival> {
    (0usize..20, 1usize..70, 1usize..30, 0i32..3, proptest::option::weighted(0.15, 0usize..40)).prop_map(
        |(step, prompt_len, max_tokens, priority, abort_at)| Arrival {
            step,
            prompt_len,
            max_tokens,
            priority,
            abort_at,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]

    /// Requests arriving at random steps into a small pool: every request ends (done,
    /// aborted or failed for a clear reason), outputs equal what the request would produce
    /// alone, invariants hold every step, and no deadlock (bounded steps).
    #[test]
    fn scheduler_runs_everything_to_completion(
        arrivals in proptest::collection::vec(arrival(), 1..24),
        num_blocks in 3usize..40,
        budget in 1usize..64,
        max_seqs in 1usize..8,
        caching in any::<bool>(),
    ) {
        let bs = 4;
        let cfg = SchedulerConfig { max_num_seqs: max_seqs, max_num_batched_tokens: budget.max(max_seqs), num_blocks, block_size: bs, enable_prefix_caching: caching };
        let mut s = Scheduler::new(cfg);
        let mut ended: std::collections::HashMap<RequestId, (FinishReason, Vec<u32>)> = std::collections::HashMap::new();
        let mut rejected = 0;
        let max_tokens: std::collections::HashMap<RequestId, usize> = arrivals.iter().enumerate().map(|(i, a)| (RequestId(i as u64), a.max_tokens)).collect();
        let mut step = 0;
        while step < 5000 {
            for (i, a) in arrivals.iter().enumerate() {
                if a.step == step {
                    let p: Vec<u32> = (0..a.prompt_len).map(|j| (j % 5) as u32).collect();
                    match s.add_request(Request::new(RequestId(i as u64), p, a.priority)) {
                        Ok(()) => {}
                        Err(Error::TooLong { .. }) => { rejected += 1; ended.insert(RequestId(i as u64), (FinishReason::Error, vec![])); }
                        Err(e) => prop_assert!(false, "{e}"),
                    }
                }
                if a.abort_at == Some(step) {
                    if let Some(r) = s.finish_request(RequestId(i as u64), FinishReason::Aborted) {
                        ended.insert(r.id, (FinishReason::Aborted, r.output_ids));
                    }
                }
            }
            let out = s.schedule();
            prop_assert!(out.num_scheduled_tokens() <= budget.max(max_seqs));
            prop_assert!(s.num_running() <= max_seqs);
            for (id, _) in &out.failed {
                ended.insert(*id, (FinishReason::Error, vec![]));
            }
            let sampled: Vec<(RequestId, u32)> = out.scheduled.iter().filter(|x| x.samples)
                .map(|x| (x.id, fake_token(x.id, x.num_computed_tokens + x.token_ids.len()))).collect();
            // Each scheduled chunk continues exactly where the request's computed tokens end.
            for x in &out.scheduled {
                let r = s.request(x.id).expect("scheduled request exists");
                prop_assert_eq!(x.num_computed_tokens, r.num_computed_tokens);
                prop_assert!(x.block_table.len() * bs >= x.num_computed_tokens + x.token_ids.len());
            }
            s.update_from_output(&out, &sampled);
            for (id, _) in &sampled {
                let done = s.request(*id).map(|r| r.output_ids.len() >= max_tokens[id]).unwrap_or(false);
                if done {
                    let r = s.finish_request(*id, FinishReason::Length).expect("exists");
                    ended.insert(r.id, (FinishReason::Length, r.output_ids));
                }
            }
            prop_assert!(s.check_invariants().is_ok(), "{:?}", s.check_invariants());
            step += 1;
            if step > 20 && !s.has_unfinished() {
                break;
            }
        }
        prop_assert!(!s.has_unfinished(), "deadlock: {} running, {} waiting after {step} steps", s.num_running(), s.num_waiting());
        prop_assert_eq!(ended.len(), arrivals.len());
        prop_assert_eq!(s.kv_cache().pool().num_free(), num_blocks);
        let _ = rejected;
        for (id, (reason, out)) in &ended {
            if *reason == FinishReason::Length {
                let p = arrivals[id.0 as usize].prompt_len;
                let want: Vec<u32> = (0..max_tokens[id]).map(|k| fake_token(*id, p + k)).collect();
                prop_assert_eq!(out, &want, "{} produced other tokens under contention", id);
            }
        }
    }
}

#[test]
fn decodes_go_first_and_long_prompts_are_chunked() {
    let cfg = SchedulerConfig {
        max_num_seqs: 8,
        max_num_batched_tokens: 10,
        num_blocks: 64,
        block_size: 4,
        enable_prefix_caching: false,
    };
    let mut s = Scheduler::new(cfg);
    s.add_request(Request::new(RequestId(1), vec![1, 2, 3], 0)).expect("add");
    let out = s.schedule();
    s.update_from_output(&out, &[(RequestId(1), 9)]);
    s.add_request(Request::new(RequestId(2), (0..25).collect(), 0)).expect("add");
    let out = s.schedule();
    assert_eq!(out.scheduled[0].id, RequestId(1));
    assert_eq!(out.scheduled[0].token_ids, vec![9]);
    assert_eq!(out.scheduled[1].id, RequestId(2));
    assert_eq!(out.scheduled[1].token_ids.len(), 9, "the rest of the budget");
    assert!(!out.scheduled[1].samples);
    s.update_from_output(&out, &[(RequestId(1), 8)]);
    let out = s.schedule();
    assert_eq!(out.scheduled[0].token_ids, vec![8]);
    assert_eq!(out.scheduled[1].num_computed_tokens, 9);
}

#[test]
fn prefix_cache_hits_skip_computed_blocks() {
    let cfg = SchedulerConfig {
        max_num_seqs: 8,
        max_num_batched_tokens: 100,
        num_blocks: 64,
        block_size: 4,
        enable_prefix_caching: true,
    };
    let mut s = Scheduler::new(cfg);
    let prompt: Vec<u32> = (0..18).collect();
    s.add_request(Request::new(RequestId(1), prompt.clone(), 0)).expect("add");
    let out = s.schedule();
    s.update_from_output(&out, &[(RequestId(1), 99)]);
    s.finish_request(RequestId(1), FinishReason::Length);
    s.add_request(Request::new(RequestId(2), prompt, 0)).expect("add");
    let out = s.schedule();
    assert_eq!(out.scheduled[0].num_computed_tokens, 16, "4 full blocks cached");
    assert_eq!(out.scheduled[0].token_ids, vec![16, 17]);
    assert_eq!(s.request(RequestId(2)).map(|r| r.num_cached_tokens), Some(16));
}

#[test]
fn a_request_that_cannot_fit_fails_clearly() {
    let cfg = SchedulerConfig {
        max_num_seqs: 4,
        max_num_batched_tokens: 64,
        num_blocks: 2,
        block_size: 4,
        enable_prefix_caching: false,
    };
    let mut s = Scheduler::new(cfg);
    let err = s.add_request(Request::new(RequestId(1), vec![0; 9], 0)).expect_err("9 > 8 slots");
    assert!(err.to_string().contains("never fit"), "{err}");
    s.add_request(Request::new(RequestId(2), vec![0; 8], 0)).expect("fits exactly");
    let out = s.schedule();
    s.update_from_output(&out, &[(RequestId(2), 1)]);
    let out = s.schedule();
    assert_eq!(out.failed.len(), 1, "its 9th token has no slot");
    assert!(out.failed[0].1.contains("outgrew"));
    assert!(!s.has_unfinished());
}

#[test]
fn preemption_takes_the_latest_and_requeues_it_first() {
    let cfg = SchedulerConfig {
        max_num_seqs: 4,
        max_num_batched_tokens: 64,
        num_blocks: 4,
        block_size: 4,
        enable_prefix_caching: false,
    };
    let mut s = Scheduler::new(cfg);
    s.add_request(Request::new(RequestId(1), vec![1; 8], 0)).expect("add");
    s.add_request(Request::new(RequestId(2), vec![2; 8], 0)).expect("add");
    s.add_request(Request::new(RequestId(3), vec![3; 4], 0)).expect("add");
    let out = s.schedule();
    assert_eq!(out.scheduled.len(), 2, "4 blocks: requests 1 and 2 fill them");
    s.update_from_output(&out, &[(RequestId(1), 5), (RequestId(2), 6)]);
    let out = s.schedule();
    assert_eq!(out.preempted, vec![RequestId(2)]);
    assert_eq!(out.scheduled.len(), 1);
    assert_eq!(s.request(RequestId(2)).map(|r| (r.num_computed_tokens, r.output_ids.clone())), Some((0, vec![6])));
    s.update_from_output(&out, &[(RequestId(1), 7)]);
    s.finish_request(RequestId(1), FinishReason::Stop);
    let out = s.schedule();
    assert_eq!(out.scheduled[0].id, RequestId(2), "the preempted request goes before request 3");
    assert_eq!(out.scheduled[0].token_ids.len(), 9, "prompt + its output are recomputed");
}
