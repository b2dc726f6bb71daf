//! Network buffers: the global [`NetworkBufferPool`] of a ShuffleEnvironment, the producers'
//! [`LocalBufferPool`]s drawn from it, and the [`Interrupter`] that wakes a task thread blocked
//! on either. Flink: `NetworkBufferPool`, `LocalBufferPool`, `BufferBuilder`.
//!
//! ## Accounting
//!
//! The global pool hands out *claims*, never memory: `claimed <= total` always. A producer pool
//! claims its minimum (`n + 1` for `n` subpartitions) when it is created and one more claim per
//! buffer it holds beyond that minimum (up to its maximum). A gate claims all its receiver
//! buffers (exclusive + floating) at creation. A claim is given back when its buffer is recycled
//! after its owner is gone, so `in_use` (buffers held by anyone) never exceeds `total`.
//!
//! Memory is reused: every pool keeps a free list of `Vec<u8>` of `segment_size` capacity, so the
//! write path allocates only while a pool grows to its maximum.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use super::error::NetworkError;

/// A snapshot of a ShuffleEnvironment's buffer usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BufferStats {
    /// `total_buffers` of the configuration.
    pub total: usize,
    /// Buffers held right now: producer buffers (queued or being read), typed local batches
    /// (one each), and receiver buffers (exclusive and floating, free or holding data).
    pub in_use: usize,
    /// The highest `in_use` since the environment started.
    pub max_in_use: usize,
    /// Producer writers blocked on a buffer right now: tasks held back by backpressure.
    pub blocked_writers: usize,
}

/// Locks a mutex, recovering the data if a thread panicked while holding it: the state the
/// data plane keeps under its locks is consistent between statements.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The global buffer budget of one ShuffleEnvironment. Flink: `NetworkBufferPool`.
#[derive(Debug)]
pub(crate) struct NetworkBufferPool {
    total: usize,
    segment_size: usize,
    claimed: AtomicUsize,
    in_use: AtomicUsize,
    max_in_use: AtomicUsize,
    blocked_writers: AtomicUsize,
}

impl NetworkBufferPool {
    pub(crate) fn new(total: usize, segment_size: usize) -> NetworkBufferPool {
        NetworkBufferPool {
            total,
            segment_size,
            claimed: AtomicUsize::new(0),
            in_use: AtomicUsize::new(0),
            max_in_use: AtomicUsize::new(0),
            blocked_writers: AtomicUsize::new(0),
        }
    }

    pub(crate) fn segment_size(&self) -> usize {
        self.segment_size
    }

    /// Claims `n` buffers, all or nothing.
    pub(crate) fn try_claim(&self, n: usize) -> bool {
        self.claimed
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                c.checked_add(n).filter(|&sum| sum <= self.total)
            })
            .is_ok()
    }

    /// Claims `n` buffers or explains why not.
    pub(crate) fn claim(&self, n: usize) -> Result<(), NetworkError> {
        if self.try_claim(n) {
            Ok(())
        } else {
            let claimed = self.claimed.load(Ordering::Acquire);
            Err(NetworkError::InsufficientBuffers {
                required: n,
                available: self.total.saturating_sub(claimed),
                total: self.total,
            })
        }
    }

    pub(crate) fn unclaim(&self, n: usize) {
        let _ = self
            .claimed
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                Some(c.saturating_sub(n))
            });
    }

    pub(crate) fn add_in_use(&self, n: usize) {
        let now = self.in_use.fetch_add(n, Ordering::AcqRel) + n;
        self.max_in_use.fetch_max(now, Ordering::AcqRel);
    }

    pub(crate) fn sub_in_use(&self, n: usize) {
        let _ = self
            .in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                Some(c.saturating_sub(n))
            });
    }

    /// Gives back `n` buffers that were claimed and in use (receiver buffers).
    pub(crate) fn release(&self, n: usize) {
        if n > 0 {
            self.sub_in_use(n);
            self.unclaim(n);
        }
    }

    pub(crate) fn stats(&self) -> BufferStats {
        BufferStats {
            total: self.total,
            in_use: self.in_use.load(Ordering::Acquire),
            max_in_use: self.max_in_use.load(Ordering::Acquire),
            blocked_writers: self.blocked_writers.load(Ordering::Acquire),
        }
    }
}

/// Counters a producer's pool updates while its writer blocks.
#[derive(Debug, Default)]
pub(crate) struct BlockCounters {
    pub(crate) blocked: AtomicBool,
    pub(crate) blocked_nanos: AtomicU64,
    pub(crate) block_count: AtomicU64,
    pub(crate) records: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) buffers: AtomicU64,
    pub(crate) batches: AtomicU64,
}

/// Something a task thread may block on, woken by an [`Interrupter`].
pub(crate) trait Interruptible: Send + Sync {
    fn interrupt(&self);
}

/// Wakes the task thread blocked on a writer's buffer request or a gate's `next()`; the blocked
/// call (and every later call that would block) returns [`NetworkError::Interrupted`]. Flink:
/// `Thread.interrupt()` on a canceled task's thread.
///
/// `Clone + Send + Sync`, so the task's cancel hook can hold one while the task thread owns the
/// writer or gate. Interruption is sticky: it is meant for cancellation.
#[derive(Clone)]
pub struct Interrupter {
    target: Arc<dyn Interruptible>,
}

impl Interrupter {
    pub(crate) fn new(target: Arc<dyn Interruptible>) -> Interrupter {
        Interrupter { target }
    }

    /// Interrupts: wakes a blocked call, which returns [`NetworkError::Interrupted`].
    pub fn interrupt(&self) {
        self.target.interrupt();
    }
}

impl std::fmt::Debug for Interrupter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Interrupter")
    }
}

#[derive(Debug)]
struct LocalPoolState {
    held: usize,
    per_sub: Vec<usize>,
    subs_at_cap: usize,
    free: Vec<Vec<u8>>,
    destroyed: bool,
    interrupted: bool,
}

/// A producer partition's buffer pool. Flink: `LocalBufferPool`.
///
/// Holds between `min` (reserved at creation) and `max` buffers. As in Flink, the pool is
/// unavailable while any subpartition holds `max_per_sub` buffers (`max-buffers-per-channel`),
/// so one slow consumer backpressures the producer instead of hoarding the pool.
#[derive(Debug)]
pub(crate) struct LocalBufferPool {
    global: Arc<NetworkBufferPool>,
    min: usize,
    max: usize,
    max_per_sub: usize,
    state: Mutex<LocalPoolState>,
    available: Condvar,
}

impl LocalBufferPool {
    /// Creates a pool, claiming its minimum from `global`.
    pub(crate) fn new(
        global: Arc<NetworkBufferPool>,
        subpartitions: usize,
        min: usize,
        max: usize,
        max_per_sub: usize,
    ) -> Result<Arc<LocalBufferPool>, NetworkError> {
        global.claim(min)?;
        Ok(Arc::new(LocalBufferPool {
            global,
            min,
            max: max.max(min),
            max_per_sub,
            state: Mutex::new(LocalPoolState {
                held: 0,
                per_sub: vec![0; subpartitions],
                subs_at_cap: 0,
                free: Vec::new(),
                destroyed: false,
                interrupted: false,
            }),
            available: Condvar::new(),
        }))
    }

    pub(crate) fn segment_size(&self) -> usize {
        self.global.segment_size()
    }

    /// Takes one buffer for subpartition `sub`, blocking while the pool is exhausted. Returns
    /// the memory (`with_memory`) or only the permit.
    fn acquire(
        &self,
        sub: usize,
        with_memory: bool,
        counters: &BlockCounters,
    ) -> Result<Option<Vec<u8>>, NetworkError> {
        let mut st = lock(&self.state);
        let mut blocked_since: Option<Instant> = None;
        let result = loop {
            if st.interrupted {
                break Err(NetworkError::Interrupted);
            }
            if st.destroyed {
                break Err(NetworkError::Shutdown);
            }
            if st.subs_at_cap == 0
                && (st.held < self.min || (st.held < self.max && self.global.try_claim(1)))
            {
                break Ok(());
            }
            if blocked_since.is_none() {
                blocked_since = Some(Instant::now());
                counters.block_count.fetch_add(1, Ordering::Relaxed);
                counters.blocked.store(true, Ordering::Release);
                self.global.blocked_writers.fetch_add(1, Ordering::AcqRel);
            }
            st = self.available.wait(st).unwrap_or_else(|e| e.into_inner());
        };
        if let Some(since) = blocked_since {
            let nanos = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
            counters.blocked_nanos.fetch_add(nanos, Ordering::Relaxed);
            counters.blocked.store(false, Ordering::Release);
            self.global.blocked_writers.fetch_sub(1, Ordering::AcqRel);
        }
        result?;
        let s = &mut *st;
        s.held += 1;
        if let Some(count) = s.per_sub.get_mut(sub) {
            *count += 1;
            if self.max_per_sub > 0 && *count == self.max_per_sub {
                s.subs_at_cap += 1;
            }
        }
        let memory = if with_memory {
            Some(
                st.free
                    .pop()
                    .unwrap_or_else(|| Vec::with_capacity(self.segment_size())),
            )
        } else {
            None
        };
        drop(st);
        self.global.add_in_use(1);
        Ok(memory)
    }

    /// Buffers held over the pool's maximum: Flink's `outPoolUsage`.
    pub(crate) fn usage(&self) -> f64 {
        let held = lock(&self.state).held;
        if self.max == 0 {
            0.0
        } else {
            (held as f64 / self.max as f64).min(1.0)
        }
    }

    /// Takes a buffer for `sub`, blocking while none is available.
    pub(crate) fn request_buffer(
        self: &Arc<Self>,
        sub: usize,
        counters: &BlockCounters,
    ) -> Result<PooledBuffer, NetworkError> {
        let mut data = self.acquire(sub, true, counters)?.unwrap_or_default();
        data.clear();
        Ok(PooledBuffer {
            data,
            pool: Arc::clone(self),
            sub,
        })
    }

    /// Takes a permit (a buffer without memory, for a typed batch) for `sub`.
    pub(crate) fn request_permit(
        self: &Arc<Self>,
        sub: usize,
        counters: &BlockCounters,
    ) -> Result<BufferPermit, NetworkError> {
        self.acquire(sub, false, counters)?;
        Ok(BufferPermit {
            pool: Arc::clone(self),
            sub,
        })
    }

    fn recycle(&self, sub: usize, memory: Option<Vec<u8>>) {
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        st.held = st.held.saturating_sub(1);
        if let Some(count) = st.per_sub.get_mut(sub) {
            if self.max_per_sub > 0 && *count == self.max_per_sub {
                st.subs_at_cap = st.subs_at_cap.saturating_sub(1);
            }
            *count = count.saturating_sub(1);
        }
        // Before destruction the pool claims max(min, held); after, exactly held.
        let unclaim = st.destroyed || st.held >= self.min;
        if let Some(memory) = memory {
            if !st.destroyed {
                st.free.push(memory);
            }
        }
        drop(guard);
        self.global.sub_in_use(1);
        if unclaim {
            self.global.unclaim(1);
        }
        self.available.notify_all();
    }

    /// Gives up the reservation: buffers still out are unclaimed one by one as they return.
    pub(crate) fn destroy(&self) {
        let mut st = lock(&self.state);
        if st.destroyed {
            return;
        }
        st.destroyed = true;
        let unreserve = self.min.saturating_sub(st.held);
        st.free = Vec::new();
        drop(st);
        self.global.unclaim(unreserve);
        self.available.notify_all();
    }
}

impl Interruptible for LocalBufferPool {
    fn interrupt(&self) {
        lock(&self.state).interrupted = true;
        self.available.notify_all();
    }
}

/// A producer buffer: bytes of one subpartition, returned to its pool when dropped. Flink:
/// `NetworkBuffer` from a `BufferBuilder`.
#[derive(Debug)]
pub(crate) struct PooledBuffer {
    pub(crate) data: Vec<u8>,
    pool: Arc<LocalBufferPool>,
    sub: usize,
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        self.pool
            .recycle(self.sub, Some(std::mem::take(&mut self.data)));
    }
}

/// One buffer's worth of a producer pool without memory: what a typed local batch holds.
#[derive(Debug)]
pub(crate) struct BufferPermit {
    pool: Arc<LocalBufferPool>,
    sub: usize,
}

impl Drop for BufferPermit {
    fn drop(&mut self) {
        self.pool.recycle(self.sub, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_claims_its_minimum_and_grows_to_its_maximum() {
        let global = Arc::new(NetworkBufferPool::new(10, 64));
        let counters = BlockCounters::default();
        let pool = LocalBufferPool::new(Arc::clone(&global), 2, 3, 5, 0).unwrap();
        assert!(LocalBufferPool::new(Arc::clone(&global), 7, 8, 8, 0).is_err());
        let bufs: Vec<_> = (0..5)
            .map(|i| pool.request_buffer(i % 2, &counters).unwrap())
            .collect();
        assert_eq!(global.stats().in_use, 5);
        assert_eq!(global.claimed.load(Ordering::Acquire), 5);
        drop(bufs);
        assert_eq!(global.stats().in_use, 0);
        assert_eq!(global.claimed.load(Ordering::Acquire), 3);
        let held = pool.request_buffer(0, &counters).unwrap();
        pool.destroy();
        assert_eq!(global.claimed.load(Ordering::Acquire), 1);
        drop(held);
        assert_eq!(global.claimed.load(Ordering::Acquire), 0);
        assert_eq!(global.stats().max_in_use, 5);
    }

    #[test]
    fn interrupt_wakes_a_blocked_request() {
        let global = Arc::new(NetworkBufferPool::new(2, 64));
        let pool = LocalBufferPool::new(Arc::clone(&global), 1, 2, 2, 0).unwrap();
        let counters = Arc::new(BlockCounters::default());
        let _a = pool.request_buffer(0, &counters).unwrap();
        let _b = pool.request_buffer(0, &counters).unwrap();
        let interrupter = Interrupter::new(Arc::clone(&pool) as Arc<dyn Interruptible>);
        let (p, c) = (Arc::clone(&pool), Arc::clone(&counters));
        let t = std::thread::spawn(move || p.request_buffer(0, &c).map(|_| ()));
        while !counters.blocked.load(Ordering::Acquire) {
            std::thread::yield_now();
        }
        interrupter.interrupt();
        assert_eq!(t.join().unwrap(), Err(NetworkError::Interrupted));
    }
}
