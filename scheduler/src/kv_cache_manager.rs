//! `KvCacheManager`: which blocks each request owns (its `BlockTable`), allocation as
//! requests grow, prefix-cache lookups and registration, forks and frees.
//!
//! A request's block table covers positions `0..n` where `n` is the number of token
//! slots allocated for it (computed tokens plus those scheduled this step); block `i`
//! holds positions `i*block_size .. (i+1)*block_size`. Full blocks whose tokens have been
//! computed are registered in the prefix cache with a hash chained over all earlier
//! blocks, so a hit on block `i` implies the whole prefix `0..(i+1)*block_size` matches.

use crate::block_pool::{BlockHash, BlockId, BlockPool};
use crate::request::{Request, RequestId};
use std::collections::HashMap;

/// The blocks of one request, in position order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlockTable(pub Vec<BlockId>);

#[derive(Clone, Debug, Default)]
struct Owned {
    table: BlockTable,
    /// Hashes of the leading full blocks already registered (or found) in the cache.
    hashes: Vec<BlockHash>,
}

#[derive(Clone, Debug)]
pub struct KvCacheManager {
    pool: BlockPool,
    block_size: usize,
    owned: HashMap<RequestId, Owned>,
}

/// Prefix-cache hits for a request about to be scheduled: blocks to take back and the
/// number of tokens they hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ComputedBlocks {
    pub blocks: Vec<BlockId>,
    hashes: Vec<BlockHash>,
    pub num_tokens: usize,
}

impl KvCacheManager {
    pub fn new(num_blocks: usize, block_size: usize, enable_prefix_caching: bool) -> KvCacheManager {
        assert!(block_size > 0);
        KvCacheManager { pool: BlockPool::new(num_blocks, enable_prefix_caching), block_size, owned: HashMap::new() }
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn pool(&self) -> &BlockPool {
        &self.pool
    }

    /// Token slots in the whole pool.
    pub fn capacity_tokens(&self) -> usize {
        self.pool.num_blocks() * self.block_size
    }

    pub fn block_table(&self, id: RequestId) -> &[BlockId] {
        self.owned.get(&id).map(|o| &o.table.0[..]).unwrap_or(&[])
    }

    /// Longest run of cached full blocks at the start of `req`'s tokens, leaving at
    /// least one token to compute (its logits are needed).
    pub fn get_computed_blocks(&self, req: &Request) -> ComputedBlocks {
        let mut out = ComputedBlocks::default();
        if !self.pool.caching_enabled() {
            return out;
        }
        let max_blocks = req.num_tokens().saturating_sub(1) / self.block_size;
        let mut parent = None;
        for i in 0..max_blocks {
            let toks = req.tokens(i * self.block_size, (i + 1) * self.block_size);
            match self.pool.lookup(parent, &toks) {
                Some((b, h)) => {
                    out.blocks.push(b);
                    out.hashes.push(h);
                    parent = Some(h);
                }
                None => break,
            }
        }
        out.num_tokens = out.blocks.len() * self.block_size;
        out
    }

    /// Makes room for `num_new_tokens` more tokens of `req` (after `req.num_computed_tokens`,
    /// or after `computed.num_tokens` for a request entering from the queue). Returns false,
    /// changing nothing, when the pool cannot supply the blocks.
    pub fn allocate_slots(&mut self, req: &Request, num_new_tokens: usize, computed: &ComputedBlocks) -> bool {
        let have = self.owned.get(&req.id).map_or(0, |o| o.table.0.len());
        let start = if have == 0 { computed.num_tokens } else { req.num_computed_tokens };
        let need_total = (start + num_new_tokens).div_ceil(self.block_size);
        let reused = if have == 0 { computed.blocks.len() } else { 0 };
        let new = need_total.saturating_sub(have + reused);
        // Cached blocks taken back from the free list use up free blocks too.
        let revived = if have == 0 { computed.blocks.iter().filter(|b| self.pool.is_free(**b)).count() } else { 0 };
        if new + revived > self.pool.num_free() {
            return false;
        }
        let owned = self.owned.entry(req.id).or_default();
        if have == 0 && !computed.blocks.is_empty() {
            self.pool.touch(&computed.blocks);
            owned.table.0.extend_from_slice(&computed.blocks);
            owned.hashes.extend_from_slice(&computed.hashes);
        }
        let fresh = self.pool.allocate(new).expect("checked above");
        owned.table.0.extend(fresh);
        true
    }

    /// Registers the full blocks among `req`'s first `req.num_computed_tokens` tokens.
    pub fn cache_blocks(&mut self, req: &Request) {
        if !self.pool.caching_enabled() {
            return;
        }
        let Some(owned) = self.owned.get_mut(&req.id) else {
            return;
        };
        let full = (req.num_computed_tokens / self.block_size).min(owned.table.0.len());
        for i in owned.hashes.len()..full {
            let parent = i.checked_sub(1).map(|p| owned.hashes[p]);
            let toks = req.tokens(i * self.block_size, (i + 1) * self.block_size);
            let h = self.pool.register(owned.table.0[i], parent, &toks);
            owned.hashes.push(h);
        }
    }

    /// Releases every block of `id`; the tail goes to the free list first, so it is
    /// evicted before the (more shareable) head.
    pub fn free(&mut self, id: RequestId) {
        if let Some(o) = self.owned.remove(&id) {
            let rev: Vec<BlockId> = o.table.0.iter().rev().copied().collect();
            self.pool.free(&rev);
        }
    }

    /// Gives `child` the blocks of `parent`'s first `num_tokens` tokens: full blocks are
    /// shared; a partial last block gets a fresh block, returned as `(src, dst)` for the
    /// engine to copy. `None`, changing nothing, when no block is free for that copy.
    pub fn fork(&mut self, parent: RequestId, child: RequestId, num_tokens: usize) -> Option<Vec<(BlockId, BlockId)>> {
        assert!(!self.owned.contains_key(&child), "fork into an existing request");
        let src = self.owned.get(&parent)?.clone();
        let n_blocks = num_tokens.div_ceil(self.block_size).min(src.table.0.len());
        let full = (num_tokens / self.block_size).min(n_blocks);
        let mut copies = Vec::new();
        let mut table = src.table.0[..full].to_vec();
        if n_blocks > full {
            let fresh = self.pool.allocate(1)?;
            copies.push((src.table.0[full], fresh[0]));
            table.push(fresh[0]);
        }
        self.pool.touch(&src.table.0[..full]);
        let hashes = src.hashes[..src.hashes.len().min(full)].to_vec();
        self.owned.insert(child, Owned { table: BlockTable(table), hashes });
        Some(copies)
    }

    /// Checks the pool's invariants and that ownership matches reference counts.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.pool.check_invariants()?;
        let mut refs = vec![0u32; self.pool.num_blocks()];
        for o in self.owned.values() {
            let mut seen = std::collections::HashSet::new();
            for &b in &o.table.0 {
                if !seen.insert(b) {
                    return Err(format!("block {b} appears twice in one table"));
                }
                refs[b as usize] += 1;
            }
        }
        for (b, &r) in refs.iter().enumerate() {
            if self.pool.ref_count(b as BlockId) != r {
                return Err(format!("block {b}: ref_cnt {} but {r} tables hold it", self.pool.ref_count(b as BlockId)));
            }
        }
        Ok(())
    }
}
