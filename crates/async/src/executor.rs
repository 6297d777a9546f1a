//! [`AsyncExecutor`]: the tokio runtime and the event-loop thread that owns it, the builder,
//! the [`Executor`] implementation (blocking jobs on the blocking pool) and the native async
//! API (`map_async`, `map_async_unordered`, `submit_async`, `block_on`).
//!
//! **Who drives the runtime.** The runtime is built, driven and dropped on a thread of its
//! own, the *event loop* (`fanout-async-loop`). A current-thread runtime runs every future on
//! that one thread, like asyncio's event loop; a multi-thread runtime runs them on its worker
//! threads and the loop thread only waits for the shutdown. Callers never enter the runtime:
//! they hand it tasks through its [`Handle`] and wait for results on channels. So no method
//! calls `Runtime::block_on` or drops a runtime on the caller's thread, and an `AsyncExecutor`
//! can be built, used and dropped anywhere, inside another tokio runtime too ("Cannot start a
//! runtime from within a runtime" cannot happen).
//!
//! **Who stops it.** The loop waits until every task's [`Tracker`] is gone (`Finish`), or until
//! the executor is killed; it then drops the runtime, which joins the blocking-pool threads,
//! or, when some were abandoned (stuck in a job) or the executor was killed, shuts it down
//! without waiting (`shutdown_background`), so that no stuck thread can hang the shutdown.
//! With a job time limit, a job timer thread (`PREFIX-timer`, see `blocking`) watches the
//! trait's running jobs; the loop stops it before the runtime goes.

use std::cell::Cell;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use std::marker::PhantomData;

use fanout_core::limit::{AmbientGuard, Gate, RateLimit};
use fanout_core::plumbing::{
    Batch, BatchPacker, Launch, Ordered, ProgressCounters, Reply, Unordered, catch_panic, job_handle,
    launch_one, run_chunk,
};
use fanout_core::{BuildError, Executor, Job, JobError, JobHandle, Payload, ProgressWatch, Shutdown};
use tokio::runtime::{Builder, Handle, Runtime};
use tokio::sync::mpsc;

use crate::blocking::{self, BlockingQueue};
use crate::launch::{self, Shared, Tracker};

/// Blocking jobs launched per `map` call at least: they wait in the blocking queue, so that a
/// drainer finishing a job finds the next one already there.
const BLOCKING_WINDOW_MIN: usize = 64;

/// Tasks the scheduler polls between two looks at the I/O driver (tokio's default: 61).
///
/// A fan-out's tasks do real work in a poll (opening a connection is several system calls), so
/// looking for I/O events more often writes each request as soon as its connection is up,
/// instead of after the next 60 connects. Measured for 200 fresh connections on the
/// current-thread runtime: the run ends 3 ms sooner (42 to 39 ms, median of 12 runs).
const EVENT_INTERVAL: u32 = 8;

/// Threads of the blocking pool beyond the workers, for the runtime's own blocking work
/// (host name lookups, file operations) that must not queue behind the jobs.
const SPARE_BLOCKING_THREADS: usize = 16;

/// Threads of the blocking pool beyond those, with a job time limit: abandoned threads still
/// running their expired jobs count against tokio's limit, and fresh drainers take their
/// places, so that many abandoned threads at once keep the executor's capacity.
const ABANDONED_BLOCKING_THREADS: usize = 512;

/// How long `Shutdown::Kill` waits for the event-loop thread to shut the runtime down before it
/// leaves it behind (only a future that blocks the loop's thread without awaiting can hold it).
const KILL_GRACE: Duration = Duration::from_millis(500);

/// The last executor id handed out; ids start at 1, 0 means "no executor".
static LAST_ID: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// The executor (its id) whose runtime this thread belongs to: its
    /// event loop, its worker threads and its blocking-pool threads. 0 elsewhere.
    static RUNTIME_OF: Cell<usize> = const { Cell::new(0) };
    /// The executor whose event-loop thread this is. 0 elsewhere.
    static LOOP_OF: Cell<usize> = const { Cell::new(0) };
}

/// The kind of tokio runtime an [`AsyncExecutor`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Flavor {
    /// One thread runs every future (asyncio's event loop). The default.
    #[default]
    CurrentThread,
    /// `threads` worker threads run the futures, stealing work from each other.
    MultiThread {
        /// Worker threads.
        threads: usize,
    },
}

/// Configures an [`AsyncExecutor`].
#[derive(Debug, Clone)]
pub struct AsyncExecutorBuilder {
    workers: usize,
    flavor: Flavor,
    thread_name: String,
    job_timeout: Option<Duration>,
    rate_limit: Option<RateLimit>,
    max_in_flight: Option<usize>,
}

impl AsyncExecutorBuilder {
    /// How many jobs may be in flight at once (required, at least 1): futures in flight for the
    /// native async methods, blocking jobs running on the blocking pool for the trait's.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// One thread runs every future (the default).
    pub fn current_thread(mut self) -> Self {
        self.flavor = Flavor::CurrentThread;
        self
    }

    /// A multi-thread runtime with one worker thread per available core.
    pub fn multi_thread(mut self) -> Self {
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        self.flavor = Flavor::MultiThread { threads };
        self
    }

    /// A multi-thread runtime with `threads` worker threads (at least 1).
    pub fn worker_threads(mut self, threads: usize) -> Self {
        self.flavor = Flavor::MultiThread { threads };
        self
    }

    /// The prefix of the runtime's thread names (default `fanout-async`): the event loop is
    /// `PREFIX-loop`, the worker and blocking-pool threads are `PREFIX`, and the job timer of
    /// an executor with a [`job_timeout`](Self::job_timeout) is `PREFIX-timer`.
    pub fn thread_name(mut self, prefix: impl Into<String>) -> Self {
        self.thread_name = prefix.into();
        self
    }

    /// A time limit for each job, counted from when it starts, not while it waits for one of
    /// the `workers` slots. Off by default; a limit of zero is a build error
    /// ([`BuildError::ZeroJobTimeout`]).
    ///
    /// - **Futures** (`map_async`, `map_async_unordered`, `submit_async`, `block_on`): the
    ///   clock starts when the future gets its in-flight slot. Still running at its limit, it
    ///   is dropped (stopped at the `.await` it waits on) and fails with
    ///   [`JobError::Expired`]; its slot goes to the next future at once.
    /// - **Blocking jobs** of the [`Executor`] trait (`map`, `imap`, `map_unordered`,
    ///   `submit`): the clock starts when a blocking-pool thread starts the job. A thread
    ///   cannot be killed, so at its limit the job is reported [`JobError::Expired`] at once
    ///   and its thread is abandoned: a fresh thread takes its place (the `workers` limit
    ///   counts live threads only), while the abandoned one runs the job to its end, drops
    ///   the result and exits ([`AsyncExecutor::abandoned_threads`] counts them). Inside the
    ///   job, [`deadline::expired`](fanout_core::deadline::expired) and
    ///   [`deadline::time_left`](fanout_core::deadline::time_left) tell it to stop; a job that
    ///   returns past its limit reports `Expired` too, whatever it returned.
    ///
    /// Dropping the executor waits for its jobs as always, and the limit bounds that wait.
    ///
    /// ```
    /// use std::time::Duration;
    /// use fanout_async::AsyncExecutor;
    /// use fanout_core::JobError;
    ///
    /// let limit = Duration::from_millis(500);
    /// let executor = AsyncExecutor::builder().workers(1).job_timeout(limit).build()?;
    /// // One slot: the stuck future holds it until its limit, then the next one runs.
    /// let stuck = executor.submit_async(std::future::pending::<u64>());
    /// let next = executor.submit_async(async { 7 });
    /// assert_eq!(stuck.wait(), Err(JobError::Expired { limit }));
    /// assert_eq!(next.wait(), Ok(7));
    /// # Ok::<(), fanout_core::BuildError>(())
    /// ```
    ///
    /// Not enforced for a future that *blocks* its thread without awaiting: it can only be
    /// dropped once it returns to the runtime. Jobs run inline (a blocking call from one of
    /// this executor's own futures or jobs) run under their caller's limit.
    pub fn job_timeout(mut self, limit: Duration) -> Self {
        self.job_timeout = Some(limit);
        self
    }

    /// A rate limit that every job shares (see [`fanout_core::limit`]): by default each job
    /// takes a permit before it starts (a future waits for it on the runtime; a blocking job of
    /// the [`Executor`] trait is handed to the blocking pool only once it has one); with
    /// [`RateLimit::per_request`] jobs take them themselves, blocking jobs with
    /// [`fanout_core::limit::acquire`] and futures with [`acquire`](crate::acquire)`.await`.
    /// An executor built inside a job of a limited executor draws from that executor's limit
    /// unless it has one of its own.
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// At most `jobs` jobs in flight at once (at least 1): the smaller of this and
    /// [`workers`](Self::workers).
    pub fn max_in_flight(mut self, jobs: usize) -> Self {
        self.max_in_flight = Some(jobs);
        self
    }

    /// Builds the runtime and starts its event-loop thread.
    pub fn build(self) -> Result<AsyncExecutor, BuildError> {
        if self.workers == 0 || self.flavor == (Flavor::MultiThread { threads: 0 }) {
            return Err(BuildError::ZeroWorkers);
        }
        if self.job_timeout == Some(Duration::ZERO) {
            return Err(BuildError::ZeroJobTimeout);
        }
        let gate = Gate::new(self.rate_limit, self.max_in_flight)?;
        // `max_in_flight` below `workers` is simply fewer jobs at once.
        let workers = self.workers.min(self.max_in_flight.unwrap_or(usize::MAX));
        let id = LAST_ID.fetch_add(1, Ordering::Relaxed) + 1;
        let source = gate.source();
        let mut builder = match self.flavor {
            Flavor::CurrentThread => Builder::new_current_thread(),
            Flavor::MultiThread { threads } => {
                let mut builder = Builder::new_multi_thread();
                builder.worker_threads(threads);
                builder
            }
        };
        let runtime = builder
            .enable_all()
            .event_interval(EVENT_INTERVAL)
            .thread_name(self.thread_name.clone())
            .max_blocking_threads(self.max_blocking_threads())
            .on_thread_start(move || {
                RUNTIME_OF.set(id);
                // The runtime's threads run this executor's jobs for their whole life: their
                // permits come from its limit (`limit::acquire`, and pools built in its jobs).
                std::mem::forget(AmbientGuard::install(source.clone()));
            })
            .build()
            .map_err(|source| BuildError::Os { action: "build the tokio runtime", source })?;
        let handle = runtime.handle().clone();
        let runtime = OwnedRuntime(Some(runtime));
        let progress = Arc::new(ProgressCounters::new());
        let shared = Arc::new(Shared::new(workers, self.job_timeout, Arc::clone(&progress), gate));
        let blocking = Arc::new(BlockingQueue::new(workers, handle.clone(), Arc::clone(&shared)));
        let supervisor = match self.job_timeout {
            None => None,
            Some(limit) => {
                let queue = Arc::clone(&blocking);
                let thread = std::thread::Builder::new()
                    .name(format!("{}-timer", self.thread_name))
                    .spawn(move || queue.supervise(limit))
                    .map_err(|source| BuildError::Os { action: "spawn the job timer thread", source })?;
                Some(Supervisor { queue: Arc::clone(&blocking), thread: Some(thread) })
            }
        };
        let (tracker, done) = Tracker::new();
        let (exited, loop_exited) = crossbeam_channel::bounded::<Infallible>(0);
        let loop_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("{}-loop", self.thread_name))
            .spawn(move || {
                let _exited = exited;
                event_loop(runtime, id, done, &loop_shared, supervisor);
            })
            .map_err(|source| BuildError::Os { action: "spawn the event-loop thread", source })?;
        Ok(AsyncExecutor {
            id,
            shared,
            blocking,
            handle,
            workers,
            flavor: self.flavor,
            tracker: Some(tracker),
            thread: Some(thread),
            loop_exited,
            progress,
            job_timeout: self.job_timeout,
        })
    }

    fn max_blocking_threads(&self) -> usize {
        let spare = match self.job_timeout {
            None => SPARE_BLOCKING_THREADS,
            Some(_) => SPARE_BLOCKING_THREADS + ABANDONED_BLOCKING_THREADS,
        };
        self.workers.saturating_add(spare)
    }
}

/// The job timer thread of an executor with a time limit ([`BlockingQueue::supervise`]);
/// dropping it stops and joins the thread.
struct Supervisor {
    queue: Arc<BlockingQueue>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.queue.stop_supervisor();
        if let Some(thread) = self.thread.take() {
            // It never runs a job, only short critical sections: this returns at once.
            let _ = thread.join();
        }
    }
}

/// A runtime that is dropped without blocking unless the event loop takes it: if the loop
/// thread cannot be spawned, the runtime goes away on the caller's thread, which may be
/// inside another runtime where a blocking drop would panic.
struct OwnedRuntime(Option<Runtime>);

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// The event-loop thread: drives the runtime until every task is done and the executor has
/// let go of its tracker, or until the executor is killed; then stops the job timer and drops
/// the runtime, which joins its blocking-pool threads. A killed runtime, or one with abandoned
/// threads (still running expired jobs), is shut down without waiting for them.
fn event_loop(
    mut runtime: OwnedRuntime,
    id: usize,
    mut done: mpsc::Receiver<Infallible>,
    shared: &Shared,
    supervisor: Option<Supervisor>,
) {
    RUNTIME_OF.set(id);
    LOOP_OF.set(id);
    // A current-thread runtime runs its futures here: they draw permits from the limit too.
    let _permits = AmbientGuard::install(shared.gate.source());
    let Some(runtime) = runtime.0.take() else { return };
    runtime.block_on(async {
        // Nothing is ever sent (`Infallible`): `recv` returns `None` once every tracker is gone.
        let done = std::pin::pin!(done.recv());
        let killed = std::pin::pin!(shared.killed());
        let _ = futures_util::future::select(done, killed).await;
    });
    drop(supervisor);
    if shared.is_killed() || shared.abandoned() > 0 {
        // Drops every task now (a running future's reply answers `Killed`), and leaves the
        // abandoned threads to end on their own.
        runtime.shutdown_background();
    } else {
        drop(runtime);
    }
}

/// Where a call comes from, relative to an executor's threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    /// A thread that does not belong to the executor.
    Outside,
    /// The event loop itself: a future of a current-thread executor.
    Loop,
    /// A worker or blocking-pool thread of the executor.
    Runtime,
}

/// fanout's async executor: a tokio runtime with at most `workers` jobs in flight.
///
/// Through the [`Executor`] trait it runs the same blocking jobs as every other executor, on
/// the runtime's blocking pool with at most `workers` running at once (asyncio's
/// `run_in_executor`). Natively it runs futures: [`map_async`](Self::map_async) and
/// [`map_async_unordered`](Self::map_async_unordered) keep at most `workers` in flight,
/// pulling inputs only as futures complete, so `workers = 200` means 200 requests waiting at
/// once on a single thread.
///
/// Dropping the executor waits for its queued and running jobs and futures;
/// [`shutdown`](Executor::shutdown) with [`Shutdown::CancelQueued`] makes queued ones report
/// [`JobError::Cancelled`], and with [`Shutdown::Kill`] it returns at once, running ones
/// reporting [`JobError::Killed`]. A panicking job or future reports [`JobError::Panicked`].
/// Tasks that a future spawns itself (`tokio::spawn`) are not waited for: the shutdown cancels
/// those still running, like the idle connections of a client's pool.
///
/// With a [job time limit](AsyncExecutorBuilder::job_timeout), a future still running at its
/// limit is dropped and a blocking job's thread is abandoned (and replaced); both report
/// [`JobError::Expired`]. Abandoned threads ([`abandoned_threads`](Self::abandoned_threads))
/// are the one thing the executor does not wait for: each ends when its job returns.
///
/// ```
/// use fanout_async::AsyncExecutor;
/// use fanout_core::Executor;
///
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// let executor = AsyncExecutor::new(4)?;
/// // A blocking job through the trait: it runs on the blocking pool.
/// assert_eq!(executor.map(square, [1, 2, 3]), [Ok(1), Ok(4), Ok(9)]);
/// // A future: it runs on the event loop.
/// let doubled = executor.map_async(|x: u64| async move { x * 2 }, [1, 2, 3]);
/// assert_eq!(doubled, [Ok(2), Ok(4), Ok(6)]);
/// # Ok::<(), fanout_core::BuildError>(())
/// ```
pub struct AsyncExecutor {
    /// Tells this executor's threads from others (see `RUNTIME_OF`).
    id: usize,
    shared: Arc<Shared>,
    /// The trait's blocking jobs, drained on the runtime's blocking pool.
    blocking: Arc<BlockingQueue>,
    handle: Handle,
    workers: usize,
    flavor: Flavor,
    /// The executor's own tracker: dropping it lets the event loop end once every task is done.
    tracker: Option<Tracker>,
    thread: Option<JoinHandle<()>>,
    /// Disconnected once the event-loop thread is about to end.
    loop_exited: crossbeam_channel::Receiver<Infallible>,
    /// What the executor did so far.
    progress: Arc<ProgressCounters>,
    job_timeout: Option<Duration>,
}

impl AsyncExecutor {
    /// A current-thread executor with at most `workers` jobs in flight.
    pub fn new(workers: usize) -> Result<Self, BuildError> {
        Self::builder().workers(workers).build()
    }

    /// A builder for a multi-thread runtime or other non-default settings.
    pub fn builder() -> AsyncExecutorBuilder {
        AsyncExecutorBuilder {
            workers: 0,
            flavor: Flavor::CurrentThread,
            thread_name: "fanout-async".to_owned(),
            job_timeout: None,
            rate_limit: None,
            max_in_flight: None,
        }
    }

    /// The kind of runtime this executor runs.
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// Runs `f` on every input as a future, at most [`workers`](Executor::workers) in flight,
    /// and returns the results in input order.
    ///
    /// `f` runs on the calling thread, when an input's turn comes, and only builds the future;
    /// the future runs on the runtime. So `f` may borrow or capture anything, while the future
    /// must own what it uses (`async move`, with clones of shared clients). A future that
    /// panics, or an `f` that panics, reports [`JobError::Panicked`] for its input alone.
    ///
    /// ```
    /// use std::time::Duration;
    /// use fanout_async::AsyncExecutor;
    ///
    /// async fn fetch(id: u64) -> u64 {
    ///     tokio::time::sleep(Duration::from_millis(10)).await; // an HTTP request, say
    ///     id * 10
    /// }
    ///
    /// let executor = AsyncExecutor::new(100)?; // 100 in flight, one thread
    /// let items = executor.map_async(fetch, 1..=100);
    /// assert_eq!(items[99], Ok(1000));
    /// # Ok::<(), fanout_core::BuildError>(())
    /// ```
    ///
    /// # Panics
    /// When called from a future running on this executor's current-thread event loop, where
    /// waiting would stop the loop that has to run the futures: inside a future, await
    /// [`map_concurrent`](crate::map_concurrent) instead.
    pub fn map_async<I, F, Fut>(
        &self,
        f: F,
        inputs: impl IntoIterator<Item = I>,
    ) -> Vec<Result<Fut::Output, JobError>>
    where
        F: FnMut(I) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        let caller = self.caller();
        refuse_on_loop(caller, "map_async");
        let ordered = Ordered::new(FutureLaunch::new(self, f), inputs.into_iter());
        self.wait_here(caller, ordered).collect()
    }

    /// Like [`map_async`](Self::map_async), but yields `(input index, result)` as futures
    /// complete.
    ///
    /// The iterator is lazy and bounded: it pulls the next input only when a future has
    /// completed, so at most `workers` futures exist at once, whatever the input's length.
    /// Dropping it early cancels the futures of this call that did not start and lets the
    /// running ones finish.
    ///
    /// # Panics
    /// As [`map_async`](Self::map_async).
    pub fn map_async_unordered<'a, I, F, Fut>(
        &'a self,
        f: F,
        inputs: impl IntoIterator<Item = I, IntoIter: 'a>,
    ) -> impl Iterator<Item = (usize, Result<Fut::Output, JobError>)> + 'a
    where
        I: 'a,
        F: FnMut(I) -> Fut + 'a,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        let caller = self.caller();
        refuse_on_loop(caller, "map_async_unordered");
        self.wait_here(caller, Unordered::new(FutureLaunch::new(self, f), inputs.into_iter()))
    }

    /// Wraps a waiting iterator so that it may wait on `caller`'s thread.
    fn wait_here<W: Iterator>(&self, caller: Caller, inner: W) -> WaitOnWorker<W> {
        WaitOnWorker {
            inner,
            block_in_place: caller == Caller::Runtime && self.flavor != Flavor::CurrentThread,
        }
    }

    /// Queues one future and returns a handle to its output. It waits for a free slot among
    /// the `workers` in flight like every future of this executor.
    ///
    /// Never blocks, so it may be called anywhere; waiting on the handle from a future on this
    /// executor's current-thread loop would deadlock it (await the work directly there).
    pub fn submit_async<Fut>(&self, future: Fut) -> JobHandle<Fut::Output>
    where
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        let (mut reply, handle) = job_handle();
        reply.count_in(&self.progress);
        self.launch_futures(Batch::One(future), reply);
        handle
    }

    /// Runs one future on the executor and waits for its output (asyncio's
    /// `run_until_complete`): for the async set-up steps of a program, such as listing what
    /// to fetch, between blocking code.
    ///
    /// # Panics
    /// As [`map_async`](Self::map_async).
    pub fn block_on<Fut>(&self, future: Fut) -> Result<Fut::Output, JobError>
    where
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        let caller = self.caller();
        refuse_on_loop(caller, "block_on");
        let handle = self.submit_async(future);
        if caller == Caller::Runtime && self.flavor != Flavor::CurrentThread {
            tokio::task::block_in_place(|| handle.wait())
        } else {
            handle.wait()
        }
    }

    fn caller(&self) -> Caller {
        if LOOP_OF.get() == self.id {
            Caller::Loop
        } else if RUNTIME_OF.get() == self.id {
            Caller::Runtime
        } else {
            Caller::Outside
        }
    }

    /// Spawns the task of one chunk of futures.
    fn launch_futures<Fut>(&self, futures: Batch<Fut>, reply: Reply<Fut::Output>)
    where
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        // A stopped executor: the reply, dropped, answers `Cancelled`.
        let Some(tracker) = &self.tracker else { return };
        let shared = Arc::clone(&self.shared);
        let task = match self.job_timeout {
            None => self.handle.spawn(launch::futures(
                tracker.clone(),
                shared,
                futures.map(launch::caught),
                reply,
            )),
            Some(limit) => {
                let futures = futures.map(|future| launch::limited(limit, future));
                self.handle.spawn(launch::futures(tracker.clone(), shared, futures, reply))
            }
        };
        drop(task);
    }

    /// Queues one chunk of blocking jobs for the blocking pool's drainers.
    fn launch_blocking<J, I>(&self, job: Arc<J>, chunk: Batch<I>, reply: Reply<J::Output>)
    where
        J: Job<I>,
        I: Send + 'static,
        J::Output: Send + 'static,
    {
        // A stopped executor: the reply, dropped, answers `Cancelled`.
        let Some(tracker) = &self.tracker else { return };
        // A per-job rate limit is kept here, before the job reaches the blocking pool, so that
        // a permit's wait never counts towards the job's time limit.
        if let Some(permits) = self.shared.gate.per_job() {
            for _ in 0..chunk.len() {
                permits.acquire();
            }
        }
        self.blocking.push(blocking::task(job, chunk, reply), tracker);
    }

    /// The job time limit set with [`AsyncExecutorBuilder::job_timeout`].
    pub fn job_timeout(&self) -> Option<Duration> {
        self.job_timeout
    }

    /// How many blocking-pool threads this executor has given up on so far: each was running
    /// a job of the [`Executor`] trait past its time limit ([`JobError::Expired`]). A thread
    /// cannot be killed, so it goes on running its job until the job returns (a job that
    /// polls [`fanout_core::deadline::expired`] returns soon after its limit), then ends
    /// without taking more work; its late result is dropped. A fresh thread takes its place
    /// at once, so the executor keeps its `workers` capacity. Futures are never abandoned:
    /// an expired future is dropped.
    ///
    /// The count only grows. Abandoned threads are not waited for: dropping the executor
    /// returns without them, and they end on their own.
    pub fn abandoned_threads(&self) -> u64 {
        self.shared.abandoned() as u64
    }

    fn stop(&mut self, mode: Shutdown) {
        match mode {
            Shutdown::Finish => {}
            Shutdown::CancelQueued => self.shared.cancel_queued(),
            Shutdown::Kill => {
                // Futures: queued ones are cancelled now, and the event loop wakes up to drop
                // the running ones (`Killed`). Blocking jobs: queued ones are dropped
                // (`Cancelled`), running ones answered `Killed` and their threads abandoned.
                self.shared.kill();
                self.blocking.kill();
            }
        }
        self.blocking.close();
        // The event loop ends once this tracker and every task's are gone.
        self.tracker = None;
        if let Some(thread) = self.thread.take() {
            // Dropped by one of its own tasks (a future that owned the executor): the loop
            // finishes on its own when that task ends; joining here would wait for ourselves.
            if self.caller() == Caller::Outside {
                if mode == Shutdown::Kill {
                    // Only a future that blocks the loop's thread can hold it: leave it then.
                    let ended = self.loop_exited.recv_timeout(KILL_GRACE);
                    if matches!(ended, Err(crossbeam_channel::RecvTimeoutError::Disconnected)) {
                        let _ = thread.join();
                    }
                } else {
                    let _ = thread.join();
                }
            }
        }
    }
}

/// Fails loudly where waiting would deadlock: on the event loop of a current-thread executor,
/// the only thread that could run the futures being waited for.
fn refuse_on_loop(caller: Caller, method: &str) {
    assert!(
        caller != Caller::Loop,
        "AsyncExecutor::{method} was called from a future running on the same executor's \
         event loop, which cannot wait for futures it has to run itself; inside a future, \
         `.await` the work, or use `fanout_async::map_concurrent(..).await`"
    );
}

/// A `map_async` window; on a worker thread of a multi-thread executor, each wait hands the
/// worker's other tasks to another thread first (`block_in_place`), so waiting cannot starve
/// the futures being waited for.
struct WaitOnWorker<W> {
    inner: W,
    block_in_place: bool,
}

impl<W: Iterator> Iterator for WaitOnWorker<W> {
    type Item = W::Item;

    fn next(&mut self) -> Option<W::Item> {
        if self.block_in_place {
            tokio::task::block_in_place(|| self.inner.next())
        } else {
            self.inner.next()
        }
    }
}

impl Executor for AsyncExecutor {
    fn name(&self) -> &'static str {
        "async"
    }

    fn workers(&self) -> usize {
        self.workers
    }

    fn progress_watch(&self) -> ProgressWatch {
        ProgressWatch::new(&self.progress)
    }

    /// Runs blocking jobs on the runtime's blocking pool, at most `workers` at once.
    ///
    /// Called from one of the executor's own threads (a future or a job of this executor),
    /// the jobs run inline on that thread instead: waiting there for the pool could deadlock,
    /// and a future that calls blocking code stalls its event loop either way.
    fn map_unordered<'a, J, I>(
        &'a self,
        job: J,
        inputs: impl IntoIterator<Item = I, IntoIter: 'a>,
    ) -> impl Iterator<Item = (usize, Result<J::Output, JobError>)> + 'a
    where
        J: Job<I>,
        I: Payload,
        J::Output: Payload,
    {
        Unordered::new(BlockingLaunch::new(self, job), inputs.into_iter())
    }

    /// As [`map_unordered`](Self::map_unordered), results in input order.
    fn imap<'a, J, I>(
        &'a self,
        job: J,
        inputs: impl IntoIterator<Item = I, IntoIter: 'a>,
    ) -> impl Iterator<Item = Result<J::Output, JobError>> + 'a
    where
        J: Job<I>,
        I: Payload,
        J::Output: Payload,
    {
        Ordered::new(BlockingLaunch::new(self, job), inputs.into_iter())
    }

    fn submit<J, I>(&self, job: J, input: I) -> JobHandle<J::Output>
    where
        J: Job<I>,
        I: Payload,
        J::Output: Payload,
    {
        let (reply, handle) = job_handle();
        launch_one(&mut BlockingLaunch::new(self, job), input, reply);
        handle
    }

    /// Stops the executor. [`Shutdown::Finish`] (what `Drop` does) waits for every queued and
    /// running job and future; [`Shutdown::CancelQueued`] makes what has not started report
    /// [`JobError::Cancelled`] and waits for what runs. [`Shutdown::Kill`] waits for nothing:
    /// what has not started reports `Cancelled` (futures waiting for a slot, blocking jobs in
    /// the queue), running futures are dropped and running blocking jobs abandoned with their
    /// threads (see [`abandoned_threads`](AsyncExecutor::abandoned_threads)), both reporting
    /// [`JobError::Killed`], and the runtime shuts down without waiting for them. It returns
    /// within a millisecond or so; only a future that blocks the current-thread event loop
    /// without awaiting can hold it, and then for half a second, after which the loop's
    /// thread is left to finish on its own.
    ///
    /// ```
    /// use fanout_async::AsyncExecutor;
    /// use fanout_core::{Executor, JobError, Shutdown, deadline};
    ///
    /// /// A blocking job stuck until its executor gives up on it.
    /// fn stuck(_: ()) -> u64 {
    ///     while !deadline::expired() {
    ///         std::thread::sleep(std::time::Duration::from_millis(1));
    ///     }
    ///     0
    /// }
    ///
    /// let executor = AsyncExecutor::new(1)?;
    /// let running = executor.submit(stuck, ());
    /// while executor.progress().started == 0 {
    ///     std::thread::yield_now();
    /// }
    /// let queued = executor.submit(stuck, ());
    /// executor.shutdown(Shutdown::Kill);
    /// assert_eq!(running.wait(), Err(JobError::Killed));
    /// assert_eq!(queued.wait(), Err(JobError::Cancelled));
    /// # Ok::<(), fanout_core::BuildError>(())
    /// ```
    fn shutdown(mut self, mode: Shutdown) {
        self.stop(mode);
    }
}

impl Drop for AsyncExecutor {
    fn drop(&mut self) {
        self.stop(Shutdown::Finish);
    }
}

impl fmt::Debug for AsyncExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncExecutor")
            .field("workers", &self.workers)
            .field("flavor", &self.flavor)
            .finish_non_exhaustive()
    }
}

/// The launcher of the trait's blocking jobs: each chunk goes to the [`BlockingQueue`], drained
/// on the runtime's blocking pool; from one of the executor's own threads, inline.
struct BlockingLaunch<'e, J, I> {
    executor: &'e AsyncExecutor,
    job: Arc<J>,
    /// Called from the executor's own threads: waiting there for the pool could deadlock,
    /// and a future that calls blocking code stalls its loop either way.
    inline: bool,
    _input: PhantomData<fn(I)>,
}

impl<'e, J, I> BlockingLaunch<'e, J, I> {
    fn new(executor: &'e AsyncExecutor, job: J) -> Self {
        let inline = executor.caller() != Caller::Outside;
        Self { executor, job: Arc::new(job), inline, _input: PhantomData }
    }
}

impl<J, I> Launch for BlockingLaunch<'_, J, I>
where
    J: Job<I>,
    I: Send + 'static,
    J::Output: Send + 'static,
{
    type Input = I;
    type Output = J::Output;
    type Packer = BatchPacker<I>;

    fn packer(&mut self) -> BatchPacker<I> {
        BatchPacker::new(1)
    }

    fn window(&self) -> usize {
        if self.inline { 1 } else { self.executor.workers.saturating_mul(2).max(BLOCKING_WINDOW_MIN) }
    }

    fn progress(&self) -> Option<Arc<ProgressCounters>> {
        Some(Arc::clone(&self.executor.progress))
    }

    fn launch(&mut self, chunk: Batch<I>, reply: Reply<J::Output>) {
        if !self.inline {
            self.executor.launch_blocking(Arc::clone(&self.job), chunk, reply);
        } else if reply.start() {
            reply.send(run_chunk(chunk, |input| self.job.call(input)));
        }
    }
}

/// The launcher of `map_async`: `f` builds each input's future on the calling thread, and the
/// future runs on the runtime.
struct FutureLaunch<'e, F, I> {
    executor: &'e AsyncExecutor,
    f: F,
    _input: PhantomData<fn(I)>,
}

impl<'e, F, I> FutureLaunch<'e, F, I> {
    fn new(executor: &'e AsyncExecutor, f: F) -> Self {
        Self { executor, f, _input: PhantomData }
    }
}

impl<F, I, Fut> Launch for FutureLaunch<'_, F, I>
where
    F: FnMut(I) -> Fut,
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    type Input = I;
    type Output = Fut::Output;
    type Packer = BatchPacker<I>;

    fn packer(&mut self) -> BatchPacker<I> {
        BatchPacker::new(1)
    }

    fn window(&self) -> usize {
        self.executor.workers
    }

    fn progress(&self) -> Option<Arc<ProgressCounters>> {
        Some(Arc::clone(&self.executor.progress))
    }

    fn launch(&mut self, chunk: Batch<I>, reply: Reply<Fut::Output>) {
        let f = &mut self.f;
        let mut futures = Vec::with_capacity(chunk.len());
        for input in chunk {
            match catch_panic(|| f(input)) {
                Ok(future) => futures.push(future),
                // A panicking `f` is its input's result (chunks here hold one input).
                Err(error) => return reply.fail(error),
            }
        }
        self.executor.launch_futures(Batch::from_vec(futures), reply);
    }
}
