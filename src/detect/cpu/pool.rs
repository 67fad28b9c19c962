//! Parallel loops of the CPU kernels, on the rayon global pool that `--threads` sizes.
//!
//! (candle 0.11 runs its own CPU ops on a separate spinning barrier pool; running the
//! kernels there instead was ~5× slower on a loaded 2-core machine, where a preempted
//! worker stalls every barrier, while rayon's work stealing lets running threads take the
//! tiles of a preempted one.)

use rayon::prelude::*;

/// Calls `f(i)` for every `i` in `0..n_items` on the rayon pool, one item per task so
/// uneven items balance out.
pub fn for_each_index(n_items: usize, f: impl Fn(usize) + Sync + Send) {
    match n_items {
        0 => {}
        1 => f(0),
        _ => (0..n_items).into_par_iter().with_max_len(1).for_each(f),
    }
}

/// Runs `f` on a thread of the pool and waits for it. A parallel loop started from outside
/// the pool hands its work to the pool and sleeps until it is done, a futex sleep and
/// wake-up per loop; started from a worker it just runs. A network is ~100 loops, so the
/// executor enters the pool once per frame instead.
pub fn in_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let mut result = None;
    rayon::scope(|_| result = Some(f()));
    result.expect("rayon::scope runs its closure before returning")
}

/// An output buffer shared by the items of a [`for_each_index`] loop, each of which writes
/// its own disjoint part (the users' `unsafe` blocks say which).
#[derive(Debug, Clone, Copy)]
pub struct SharedMut(pub *mut f32);
// SAFETY: only a pointer; every user writes disjoint elements and the buffer outlives the loop.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The pointer (a method, so closures capture the whole `Sync` wrapper, not the field).
    pub fn ptr(self) -> *mut f32 {
        self.0
    }
}
