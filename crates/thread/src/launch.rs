//! [`PoolLaunch`]: how a [`ThreadPool`] launches a chunk for the engine: one boxed task on the
//! pool's channel, which runs the chunk under one unwinding guard and answers its reply.
//!
//! Everything else about a `map` (lazy inputs, the window, the order of results, exactly one
//! answer per input) is fanout-core's engine.

use std::marker::PhantomData;
use std::sync::Arc;

use fanout_core::Executor;
use fanout_core::limit::Gate;
use fanout_core::plumbing::{Batch, BatchPacker, DeadlineGuard, Launch, ProgressCounters, Reply, run_chunk};

use crate::ThreadPool;
use crate::pool::Task;
use crate::supervise::Supervised;

/// Chunks in flight per worker at least: a worker finds the next chunk queued when it
/// finishes one, while the caller is still busy with the previous results.
const MIN_CHUNKS_PER_WORKER: usize = 4;

/// Jobs in flight at least, whatever the chunk size: with tiny jobs the caller, which both
/// feeds and drains, is the bottleneck, and a deep queue keeps it from parking and waking
/// workers on every chunk (one futex call costs more than a hundred empty jobs).
const MIN_JOBS_IN_FLIGHT: usize = 4096;

/// How many chunks of one call may be in flight at once, for a call that keeps at least
/// `min_jobs` jobs in flight.
pub(crate) fn window_chunks(pool: &ThreadPool, min_jobs: usize) -> usize {
    (pool.workers() * MIN_CHUNKS_PER_WORKER).max(min_jobs.div_ceil(pool.chunk_size()))
}

/// The launcher of one call on a thread pool.
pub(crate) struct PoolLaunch<'p, 'env, I, O, C> {
    pool: &'p ThreadPool,
    run: Arc<C>,
    /// How a chunk is launched under supervision (see `supervise`); `None` for the fast path.
    /// A function pointer, because only launchers of `'static` jobs may choose it.
    supervised: Option<LaunchFn<I, O, C>>,
    _types: PhantomData<fn(I) -> O>,
    _env: PhantomData<&'env ()>,
}

type LaunchFn<I, O, C> = fn(&ThreadPool, &Arc<C>, Batch<I>, Reply<O>);

impl<'p, I, O, C> PoolLaunch<'p, 'static, I, O, C>
where
    I: Send + 'static,
    O: Send + 'static,
    C: Fn(I) -> O + Send + Sync + 'static,
{
    /// A launcher whose tasks own everything they use: supervised when the pool has a job time
    /// limit.
    pub(crate) fn new(pool: &'p ThreadPool, run: C) -> Self {
        let supervised =
            pool.job_timeout().is_some().then_some(launch_supervised::<I, O, C> as LaunchFn<I, O, C>);
        Self { pool, run: Arc::new(run), supervised, _types: PhantomData, _env: PhantomData }
    }

    /// A launcher whose every chunk is supervised: for submitted jobs, whose handles a `Kill`
    /// must answer even without a time limit.
    pub(crate) fn supervised(pool: &'p ThreadPool, run: C) -> Self {
        let supervised = Some(launch_supervised::<I, O, C> as LaunchFn<I, O, C>);
        Self { pool, run: Arc::new(run), supervised, _types: PhantomData, _env: PhantomData }
    }
}

/// Launches one chunk as a [`Supervised`] task.
fn launch_supervised<I, O, C>(pool: &ThreadPool, run: &Arc<C>, chunk: Batch<I>, reply: Reply<O>)
where
    I: Send + 'static,
    O: Send + 'static,
    C: Fn(I) -> O + Send + Sync + 'static,
{
    let limit = pool.job_timeout();
    pool.spawn(Task::Supervised(Arc::new(Supervised::new(Arc::clone(run), limit, chunk, reply))));
}

impl<'p, 'env, I, O, C> PoolLaunch<'p, 'env, I, O, C>
where
    C: Fn(I) -> O + Send + Sync + 'env,
{
    /// A launcher whose tasks borrow from `'env`.
    ///
    /// # Safety
    /// Its chunks must all have answered before `'env` ends: use it only inside an engine
    /// made with `Ordered::new_scoped`, which waits for every answer when it is dropped, and
    /// do not leak that engine.
    pub(crate) unsafe fn new_scoped(pool: &'p ThreadPool, run: C) -> Self {
        Self { pool, run: Arc::new(run), supervised: None, _types: PhantomData, _env: PhantomData }
    }
}

impl<'env, I, O, C> Launch for PoolLaunch<'_, 'env, I, O, C>
where
    I: Send + 'env,
    O: Send + 'env,
    C: Fn(I) -> O + Send + Sync + 'env,
{
    type Input = I;
    type Output = O;
    type Packer = BatchPacker<I>;

    fn packer(&mut self) -> BatchPacker<I> {
        BatchPacker::new(self.pool.chunk_size())
    }

    fn window(&self) -> usize {
        window_chunks(self.pool, MIN_JOBS_IN_FLIGHT)
    }

    fn progress(&self) -> Option<Arc<ProgressCounters>> {
        Some(Arc::clone(&self.pool.shared().progress))
    }

    fn launch(&mut self, chunk: Batch<I>, reply: Reply<O>) {
        if let Some(launch) = self.supervised {
            return launch(self.pool, &self.run, chunk, reply);
        }
        let run = Arc::clone(&self.run);
        // Only borrowed jobs (`scoped_map`) run unsupervised under a limit: their thread cannot
        // be given up on while they use the caller's stack, but they can see their deadline.
        let limit = self.pool.job_timeout();
        let gate = (!self.pool.shared().gate.is_open()).then(|| self.pool.shared().gate.clone());
        let task = Box::new(move |cancelled: bool| {
            // A cancelled pool or a dropped call: the reply, dropped, answers `Cancelled`.
            if cancelled || !reply.start() {
                return;
            }
            if limit.is_some() || gate.is_some() {
                return reply.send(run_chunk(chunk, |input| {
                    let _pass = gate.as_ref().map(Gate::enter);
                    let _deadline = DeadlineGuard::start(limit);
                    run(input)
                }));
            }
            reply.send(run_chunk(chunk, &*run));
        });
        // SAFETY: the task borrows from `'env` at most; the constructors make sure that either
        // `'env` is `'static` or the engine waits for every answer, which the task sends (or
        // drops its reply) as its last use of the borrow, before `'env` ends.
        unsafe { self.pool.spawn_unchecked(task) };
    }

    fn help(&mut self) -> bool {
        self.pool.is_own_worker() && self.pool.run_one_queued()
    }
}
