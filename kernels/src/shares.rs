//! How a memory-bound kernel (matmul rows, attention tasks) splits its work over threads:
//! one contiguous share of blocks per thread, worked front to back (one sequential stream
//! per thread, which the hardware prefetchers follow best, and the thread knows what it
//! takes next, so it can prefetch it), and a thread whose share is done takes blocks from
//! the *back* of the other shares, so one slow thread (a busy neighbour on a shared VM)
//! does not hold the whole step up.
//!
//! Invariant: every block index `< n_blocks` is handed out exactly once. Each share's
//! cursor packs `front << 32 | back` (its blocks not yet handed out are `front..back`);
//! both ends move only by compare-and-swap and never past each other.

use std::sync::atomic::{AtomicU64, Ordering::*};

/// Most shares (threads beyond this share the last ones' blocks by stealing).
pub(crate) const MAX_SHARES: usize = 64;

/// Runs `f(block, own_end)` once for every block `< n_blocks` across the kernel pool's
/// threads, dealt as shares. `own_end` is `Some(end)` when the block comes from the
/// running thread's own share, whose blocks up to `end` are that thread's next (worth
/// prefetching); `None` when it was taken from the back of another thread's share.
pub(crate) fn deal(n_blocks: usize, f: impl Fn(usize, Option<usize>) + Sync) {
    let shares = Shares::new(n_blocks, crate::parallel::num_threads());
    crate::parallel::parallel_for(shares.n_shares(), &|s| {
        let end = shares.share(s).end;
        shares.work(s, |b, own| f(b, own.then_some(end)));
    });
}

pub(crate) struct Shares {
    n_blocks: usize,
    n_shares: usize,
    cursors: [Cursor; MAX_SHARES],
}

/// One share's cursor on its own cache-line pair: a thread claiming its own blocks must
/// not bounce the line its neighbour claims from (false sharing cost ~5% of decode).
#[repr(align(128))]
struct Cursor(AtomicU64);

fn pack(front: usize, back: usize) -> u64 {
    ((front as u64) << 32) | back as u64
}

fn unpack(v: u64) -> (usize, usize) {
    ((v >> 32) as usize, (v & 0xFFFF_FFFF) as usize)
}

impl Shares {
    /// `n_blocks` blocks in `n_shares` (clamped to `1..=MAX_SHARES`) near-equal shares.
    pub fn new(n_blocks: usize, n_shares: usize) -> Shares {
        assert!(n_blocks < 1 << 32, "Shares: {n_blocks} blocks");
        let n_shares = n_shares.clamp(1, MAX_SHARES);
        let bounds =
            |s: usize| if s < n_shares { (s * n_blocks / n_shares, (s + 1) * n_blocks / n_shares) } else { (0, 0) };
        let cursors = std::array::from_fn(|s| {
            let (a, b) = bounds(s);
            Cursor(AtomicU64::new(pack(a, b)))
        });
        Shares { n_blocks, n_shares, cursors }
    }

    pub fn n_shares(&self) -> usize {
        self.n_shares
    }

    /// Takes the next block from the front (`front == true`) or the back of share `s`.
    fn take(&self, s: usize, front: bool) -> Option<usize> {
        let c = &self.cursors[s].0;
        let mut v = c.load(Relaxed);
        loop {
            let (f, b) = unpack(v);
            if f >= b {
                return None;
            }
            let (next, got) = if front { (pack(f + 1, b), f) } else { (pack(f, b - 1), b - 1) };
            match c.compare_exchange_weak(v, next, AcqRel, Relaxed) {
                Ok(_) => return Some(got),
                Err(now) => v = now,
            }
        }
    }

    /// Runs `f(block, own)` for the blocks thread `s` gets: its own share's from the front
    /// (`own == true`), then, until none is left, the other shares' from their backs.
    pub fn work(&self, s: usize, mut f: impl FnMut(usize, bool)) {
        while let Some(b) = self.take(s, true) {
            f(b, true);
        }
        for j in 1..self.n_shares {
            let other = (s + j) % self.n_shares;
            while let Some(b) = self.take(other, false) {
                f(b, false);
            }
        }
    }

    /// Share `s`'s blocks `start..end` as first dealt (its own stream).
    pub fn share(&self, s: usize) -> std::ops::Range<usize> {
        s * self.n_blocks / self.n_shares..(s + 1) * self.n_blocks / self.n_shares
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn every_block_is_handed_out_exactly_once() {
        for (n_blocks, threads) in [(0usize, 2usize), (1, 2), (7, 2), (100, 3), (1000, 4), (5, 8)] {
            for _ in 0..20 {
                let shares = Shares::new(n_blocks, threads);
                let hits: Vec<AtomicU32> = (0..n_blocks).map(|_| AtomicU32::new(0)).collect();
                std::thread::scope(|sc| {
                    for s in 0..shares.n_shares() {
                        let (shares, hits) = (&shares, &hits);
                        sc.spawn(move || {
                            shares.work(s, |b, own| {
                                // A thread's own blocks lie inside its share.
                                if own {
                                    assert!(shares.share(s).contains(&b));
                                }
                                hits[b].fetch_add(1, SeqCst);
                            })
                        });
                    }
                });
                assert!(hits.iter().all(|h| h.load(SeqCst) == 1), "{n_blocks} blocks, {threads} threads");
            }
        }
    }

    #[test]
    fn one_thread_alone_does_every_share() {
        let shares = Shares::new(10, 3);
        let mut seen = Vec::new();
        shares.work(1, |b, _| seen.push(b));
        seen.sort_unstable();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
    }
}
