//! `BlockPool`: the KV-cache blocks, their reference counts, the free list and the
//! prefix cache.
//!
//! Every block is either *used* (`ref_cnt > 0`) or *free* (`ref_cnt == 0`, in the free
//! list); `num_free() + num_used() == num_blocks()` always. A free block may still be
//! *cached*: it holds the K/V of a full block of tokens, identified by a chained hash,
//! and a new request with the same prefix takes it back from the free list instead of
//! recomputing it. The free list is in LRU order: blocks are allocated (and their
//! cache entries evicted) from the front; freed blocks go to the back.
//!
//! Cache hits are verified against the stored parent hash and token ids, so a 64-bit
//! hash collision can cost a miss, never a wrong answer. All operations are O(1) per
//! block (the free list is intrusive and doubly linked).

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

pub type BlockId = u32;

/// Hash of a full block: its tokens chained with its parent block's hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockHash(pub u64);

impl BlockHash {
    pub fn of(parent: Option<BlockHash>, tokens: &[u32]) -> BlockHash {
        let mut h = DefaultHasher::new();
        parent.map(|p| p.0).hash(&mut h);
        tokens.hash(&mut h);
        BlockHash(h.finish())
    }
}

const NIL: u32 = u32::MAX;

#[derive(Clone, Debug)]
struct Block {
    ref_cnt: u32,
    /// Prefix-cache identity, when the block is registered.
    cached: Option<CacheKey>,
    prev: u32,
    next: u32,
    in_free_list: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct CacheKey {
    hash: BlockHash,
    parent: Option<BlockHash>,
    tokens: Vec<u32>,
}

#[derive(Clone, Debug)]
pub struct BlockPool {
    blocks: Vec<Block>,
    head: u32,
    tail: u32,
    num_free: usize,
    cache: HashMap<BlockHash, BlockId>,
    caching: bool,
}

impl BlockPool {
    pub fn new(num_blocks: usize, enable_caching: bool) -> BlockPool {
        assert!(num_blocks < NIL as usize, "too many blocks");
        let mut pool = BlockPool {
            blocks: vec![Block { ref_cnt: 0, cached: None, prev: NIL, next: NIL, in_free_list: false }; num_blocks],
            head: NIL,
            tail: NIL,
            num_free: 0,
            cache: HashMap::new(),
            caching: enable_caching,
        };
        for b in 0..num_blocks as u32 {
            pool.push_back(b);
        }
        pool
    }

    pub fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    pub fn num_free(&self) -> usize {
        self.num_free
    }

    pub fn num_used(&self) -> usize {
        self.blocks.len() - self.num_free
    }

    /// Blocks registered in the prefix cache (used or free).
    pub fn num_cached(&self) -> usize {
        self.cache.len()
    }

    pub fn ref_count(&self, b: BlockId) -> u32 {
        self.blocks[b as usize].ref_cnt
    }

    pub fn caching_enabled(&self) -> bool {
        self.caching
    }

    fn push_back(&mut self, b: u32) {
        let blk = &mut self.blocks[b as usize];
        debug_assert!(!blk.in_free_list);
        blk.in_free_list = true;
        blk.prev = self.tail;
        blk.next = NIL;
        if self.tail != NIL {
            self.blocks[self.tail as usize].next = b;
        } else {
            self.head = b;
        }
        self.tail = b;
        self.num_free += 1;
    }

    fn unlink(&mut self, b: u32) {
        let (prev, next) = {
            let blk = &self.blocks[b as usize];
            debug_assert!(blk.in_free_list);
            (blk.prev, blk.next)
        };
        if prev != NIL {
            self.blocks[prev as usize].next = next;
        } else {
            self.head = next;
        }
        if next != NIL {
            self.blocks[next as usize].prev = prev;
        } else {
            self.tail = prev;
        }
        let blk = &mut self.blocks[b as usize];
        blk.in_free_list = false;
        blk.prev = NIL;
        blk.next = NIL;
        self.num_free -= 1;
    }

    /// Takes `n` blocks from the front of the free list (evicting their cache entries),
    /// each with one reference. `None`, with nothing changed, if fewer than `n` are free.
    pub fn allocate(&mut self, n: usize) -> Option<Vec<BlockId>> {
        if n > self.num_free {
            return None;
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let b = self.head;
            self.unlink(b);
            if let Some(key) = self.blocks[b as usize].cached.take() {
                self.cache.remove(&key.hash);
            }
            self.blocks[b as usize].ref_cnt = 1;
            out.push(b);
        }
        Some(out)
    }

    /// Drops one reference from each block, in order; blocks reaching zero go to the back
    /// of the free list (still cached if they were).
    pub fn free(&mut self, blocks: &[BlockId]) {
        for &b in blocks {
            let blk = &mut self.blocks[b as usize];
            assert!(blk.ref_cnt > 0, "block {b} freed more often than referenced");
            blk.ref_cnt -= 1;
            if blk.ref_cnt == 0 {
                self.push_back(b);
            }
        }
    }

    /// Adds a reference to each block (sharing, or reusing a cached block).
    pub fn touch(&mut self, blocks: &[BlockId]) {
        for &b in blocks {
            if self.blocks[b as usize].ref_cnt == 0 {
                self.unlink(b);
            }
            self.blocks[b as usize].ref_cnt += 1;
        }
    }

    /// The cached block holding `tokens` after the block hashed `parent`, if any.
    pub fn lookup(&self, parent: Option<BlockHash>, tokens: &[u32]) -> Option<(BlockId, BlockHash)> {
        if !self.caching {
            return None;
        }
        let hash = BlockHash::of(parent, tokens);
        let &b = self.cache.get(&hash)?;
        let key = self.blocks[b as usize].cached.as_ref()?;
        (key.parent == parent && key.tokens == tokens).then_some((b, hash))
    }

    /// Registers a full, computed, used block in the prefix cache. A block already
    /// holding the same content keeps the entry (this one stays uncached).
    pub fn register(&mut self, b: BlockId, parent: Option<BlockHash>, tokens: &[u32]) -> BlockHash {
        let hash = BlockHash::of(parent, tokens);
        if self.caching && self.blocks[b as usize].cached.is_none() && !self.cache.contains_key(&hash) {
            self.cache.insert(hash, b);
            self.blocks[b as usize].cached = Some(CacheKey { hash, parent, tokens: tokens.to_vec() });
        }
        hash
    }

    /// Whether `b` is free, i.e. taking it back would use up a free block.
    pub fn is_free(&self, b: BlockId) -> bool {
        self.blocks[b as usize].ref_cnt == 0
    }

    /// Checks every invariant; for tests.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut seen = 0;
        let mut b = self.head;
        let mut prev = NIL;
        while b != NIL {
            let blk = &self.blocks[b as usize];
            if !blk.in_free_list || blk.ref_cnt != 0 || blk.prev != prev {
                return Err(format!("free list corrupt at block {b}"));
            }
            seen += 1;
            if seen > self.blocks.len() {
                return Err("free list has a cycle".into());
            }
            prev = b;
            b = blk.next;
        }
        if prev != self.tail || seen != self.num_free {
            return Err(format!("free list has {seen} blocks, counter says {}", self.num_free));
        }
        let used = self.blocks.iter().filter(|b| b.ref_cnt > 0).count();
        if used + self.num_free != self.blocks.len() {
            return Err(format!("used {used} + free {} != total {}", self.num_free, self.blocks.len()));
        }
        for (h, &b) in &self.cache {
            if self.blocks[b as usize].cached.as_ref().map(|k| k.hash) != Some(*h) {
                return Err(format!("cache entry {h:?} points at block {b} which does not hold it"));
            }
        }
        let registered = self.blocks.iter().filter(|b| b.cached.is_some()).count();
        if registered != self.cache.len() {
            return Err("cached blocks and cache map disagree".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_eviction_and_cache_hits() {
        let mut p = BlockPool::new(3, true);
        let a = p.allocate(2).expect("two free");
        let ha = p.register(a[0], None, &[1, 2]);
        p.register(a[1], Some(ha), &[3, 4]);
        p.free(&[a[1], a[0]]); // tail block first: evicted first
        assert_eq!(p.num_free(), 3);
        assert_eq!(p.lookup(None, &[1, 2]).map(|x| x.0), Some(a[0]));
        // Allocating 2 takes the never-used block, then a[1] (evicting its entry).
        let b = p.allocate(2).expect("free");
        assert!(!b.contains(&a[0]) && b.contains(&a[1]));
        assert!(p.lookup(Some(ha), &[3, 4]).is_none());
        assert!(p.lookup(None, &[1, 2]).is_some());
        // Verification: same hash input, different tokens -> miss.
        assert!(p.lookup(None, &[1, 3]).is_none());
        p.touch(&[a[0]]);
        assert_eq!(p.num_free(), 0);
        assert!(p.allocate(1).is_none());
        p.check_invariants().expect("invariants");
    }
}
