//! A small fork-join thread pool for the kernels: `run(n_tasks, f)` calls `f(i)` for
//! every `i < n_tasks` across the pool's threads (the caller is one of them) and returns
//! when all are done.
//!
//! Why not rayon: a decode step runs ~250 parallel regions of a few microseconds each;
//! waking sleeping workers for each of them cost ~20% of decode time. Here workers spin
//! on an atomic for a short while after each job (so back-to-back regions start in
//! nanoseconds) and park on a condvar only when idle.
//!
//! Protocol (see the SAFETY notes): the job state is one `AtomicU64` packing
//! `generation << 32 | next_task << 16 | n_tasks`. A thread may touch the job's closure
//! only after claiming a task index `< n_tasks` of the *current* generation with a CAS;
//! the submitter returns only when every task is finished, and claims of a finished
//! generation fail, so the closure outlives every call made to it. Jobs from several
//! submitting threads are serialized by a mutex; a job submitted from inside a pool
//! task runs inline (no deadlock).

use std::cell::{Cell, UnsafeCell};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Most tasks in one job (16 bits of the packed state).
pub const MAX_TASKS: usize = u16::MAX as usize;

type Job = *const (dyn Fn(usize) + Sync);

struct Shared {
    state: AtomicU64,
    done: AtomicUsize,
    job: UnsafeCell<Job>,
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
    shutdown: AtomicBool,
}

// SAFETY: `job` is written only by the submitter while no thread can claim a task (the
// previous generation is complete and the new one not yet published) and read only by
// threads holding a claim of the current generation.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

pub struct ThreadPool {
    shared: Arc<Shared>,
    submit: Mutex<()>,
    threads: usize,
}

thread_local! {
    static IN_POOL_TASK: Cell<bool> = const { Cell::new(false) };
}

fn pack(generation: u64, next: u64, n: u64) -> u64 {
    (generation << 32) | (next << 16) | n
}

fn unpack(v: u64) -> (u64, u64, u64) {
    (v >> 32, (v >> 16) & 0xFFFF, v & 0xFFFF)
}

impl Shared {
    /// Claims the next task of generation `g`, if any is left.
    fn claim(&self, g: u64) -> Option<usize> {
        let mut v = self.state.load(Acquire);
        loop {
            let (gen, next, n) = unpack(v);
            if gen != g || next >= n {
                return None;
            }
            match self.state.compare_exchange_weak(v, pack(gen, next + 1, n), AcqRel, Acquire) {
                Ok(_) => return Some(next as usize),
                Err(cur) => v = cur,
            }
        }
    }

    /// Runs tasks of generation `g` until none is left.
    fn work(&self, g: u64) {
        while let Some(i) = self.claim(g) {
            // SAFETY: we hold a claim of generation `g`, so the submitter of `g` is still
            // waiting in `run` and the closure `job` points to is alive.
            let f = unsafe { &**self.job.get() };
            IN_POOL_TASK.with(|c| c.set(true));
            f(i);
            IN_POOL_TASK.with(|c| c.set(false));
            self.done.fetch_add(1, Release);
        }
    }
}

fn worker(shared: Arc<Shared>) {
    let mut seen = unpack(shared.state.load(Acquire)).0;
    loop {
        // Spin briefly for the next job, then park.
        let spin_until = Instant::now() + Duration::from_micros(300);
        let mut g = unpack(shared.state.load(Acquire)).0;
        let mut spins = 0u32;
        while g == seen {
            if shared.shutdown.load(Acquire) {
                return;
            }
            std::hint::spin_loop();
            spins += 1;
            if spins.is_multiple_of(256) && Instant::now() > spin_until {
                let guard = shared.lock.lock().unwrap_or_else(|e| e.into_inner());
                shared.sleepers.fetch_add(1, SeqCst);
                let mut guard = guard;
                while unpack(shared.state.load(SeqCst)).0 == seen && !shared.shutdown.load(SeqCst) {
                    guard = shared.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
                }
                shared.sleepers.fetch_sub(1, SeqCst);
                drop(guard);
            }
            g = unpack(shared.state.load(Acquire)).0;
        }
        seen = g;
        shared.work(g);
    }
}

impl ThreadPool {
    /// A pool of `threads` threads in total (the submitting thread counts as one).
    pub fn new(threads: usize) -> ThreadPool {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            state: AtomicU64::new(0),
            done: AtomicUsize::new(0),
            job: UnsafeCell::new(std::ptr::null::<fn(usize)>() as Job),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            shutdown: AtomicBool::new(false),
        });
        for i in 1..threads {
            let s = shared.clone();
            std::thread::Builder::new()
                .name(format!("keel-worker-{i}"))
                .spawn(move || worker(s))
                .expect("spawn kernel worker thread");
        }
        ThreadPool { shared, submit: Mutex::new(()), threads }
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Calls `f(i)` for every `i < n_tasks`, in parallel, and returns when all are done.
    pub fn run(&self, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if n_tasks == 0 {
            return;
        }
        if self.threads == 1 || n_tasks == 1 || IN_POOL_TASK.with(|c| c.get()) {
            (0..n_tasks).for_each(f);
            return;
        }
        assert!(n_tasks <= MAX_TASKS, "ThreadPool::run: {n_tasks} tasks (at most {MAX_TASKS})");
        let _one_job_at_a_time = self.submit.lock().unwrap_or_else(|e| e.into_inner());
        let s = &*self.shared;
        let g = unpack(s.state.load(Acquire)).0 + 1;
        // SAFETY: no claim of any generation can succeed now (the last one is complete),
        // so nobody reads `job` while we write it. The lifetime is erased; `run` does not
        // return before every claimed task has finished.
        unsafe {
            *s.job.get() = std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(f);
        }
        s.done.store(0, Relaxed);
        s.state.store(pack(g & 0xFFFF_FFFF, 0, n_tasks as u64), SeqCst);
        if s.sleepers.load(SeqCst) > 0 {
            let _g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        s.work(g & 0xFFFF_FFFF);
        while s.done.load(Acquire) < n_tasks {
            std::hint::spin_loop();
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, SeqCst);
        let _g = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.shared.wake.notify_all();
    }
}

static POOL: OnceLock<ThreadPool> = OnceLock::new();
static WANT_THREADS: AtomicUsize = AtomicUsize::new(0);

/// Sets the kernels' thread count; only before the first parallel kernel runs.
/// Returns false if the pool already exists with another size.
pub fn set_num_threads(n: usize) -> bool {
    WANT_THREADS.store(n.max(1), SeqCst);
    POOL.get().is_none_or(|p| p.threads == n.max(1))
}

/// The process-wide pool (default: one thread per available CPU).
pub fn pool() -> &'static ThreadPool {
    POOL.get_or_init(|| {
        let n = match WANT_THREADS.load(SeqCst) {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            n => n,
        };
        ThreadPool::new(n)
    })
}

pub fn num_threads() -> usize {
    pool().threads()
}

/// `pool().run(n_tasks, f)`.
pub fn parallel_for(n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
    pool().run(n_tasks, f)
}

/// Calls `f(range, piece)` for consecutive `chunk`-long pieces of `out` (the last may be
/// shorter) across the pool; `range` is the piece's place in `out`. Each piece goes to
/// exactly one call, so the calls write their pieces in parallel.
pub fn for_each_chunk_mut<T: Send>(out: &mut [T], chunk: usize, f: &(dyn Fn(std::ops::Range<usize>, &mut [T]) + Sync)) {
    assert!(chunk > 0, "for_each_chunk_mut: empty chunks");
    let len = out.len();
    let base = SharedMut::new(out);
    parallel_for(len.div_ceil(chunk), &|i| {
        let range = i * chunk..((i + 1) * chunk).min(len);
        // SAFETY: task `i` alone gets this range, which lies inside `out`; `out` is
        // borrowed mutably until every task has returned.
        let piece = unsafe { std::slice::from_raw_parts_mut(base.at(range.start), range.len()) };
        f(range, piece)
    });
}

/// An output slice that the tasks of one parallel region share, each writing only the
/// elements it owns (the owner's SAFETY note says which). Nothing here checks bounds or
/// ownership: `at` is as unsafe to use as the raw pointer it returns.
pub(crate) struct SharedMut<T>(*mut T);

impl<T> SharedMut<T> {
    pub(crate) fn new(out: &mut [T]) -> SharedMut<T> {
        SharedMut(out.as_mut_ptr())
    }

    /// A null pointer, for slots filled in later.
    pub(crate) const fn null() -> SharedMut<T> {
        SharedMut(std::ptr::null_mut())
    }

    /// Element `i`'s address; the caller stays within the slice and writes only its own elements.
    pub(crate) fn at(&self, i: usize) -> *mut T {
        self.0.wrapping_add(i)
    }
}

impl<T> Clone for SharedMut<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SharedMut<T> {}
// SAFETY: the tasks sharing it write disjoint elements, which are `Send`.
unsafe impl<T: Send> Sync for SharedMut<T> {}
unsafe impl<T: Send> Send for SharedMut<T> {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn every_task_runs_exactly_once_across_many_jobs() {
        let pool = ThreadPool::new(3);
        for n in [1usize, 2, 3, 7, 64, 1000] {
            for _ in 0..50 {
                let hits: Vec<AtomicU32> = (0..n).map(|_| AtomicU32::new(0)).collect();
                pool.run(n, &|i| {
                    hits[i].fetch_add(1, SeqCst);
                });
                assert!(hits.iter().all(|h| h.load(SeqCst) == 1), "n={n}");
            }
        }
    }

    #[test]
    fn nested_and_concurrent_submission() {
        let pool = Arc::new(ThreadPool::new(2));
        let total = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..3)
            .map(|_| {
                let (p, t) = (pool.clone(), total.clone());
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        p.run(4, &|_| {
                            // A nested job runs inline.
                            p.run(3, &|_| {
                                t.fetch_add(1, SeqCst);
                            });
                        });
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("thread");
        }
        assert_eq!(total.load(SeqCst), 3 * 100 * 4 * 3);
    }

    #[test]
    fn workers_wake_after_parking() {
        let pool = ThreadPool::new(2);
        let c = AtomicUsize::new(0);
        pool.run(8, &|_| {
            c.fetch_add(1, SeqCst);
        });
        std::thread::sleep(Duration::from_millis(5)); // the worker parks
        pool.run(8, &|_| {
            c.fetch_add(1, SeqCst);
        });
        assert_eq!(c.load(SeqCst), 16);
    }
}
