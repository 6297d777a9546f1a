//! The pool itself: worker threads, the task channel, submission and shutdown.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use fanout_core::limit::{AmbientGuard, Gate, RateLimit};
use fanout_core::plumbing::{Ordered, ProgressCounters, StopGuard, Unordered, job_handle, launch_one};
use fanout_core::{BuildError, Executor, Job, JobError, JobHandle, Payload, ProgressWatch, Shutdown};

use crate::in_place::{RangeTask, map_in_place};
use crate::launch::PoolLaunch;
use crate::supervise::{Claim, RunSupervised, Watch};

/// A unit of work for a worker thread. [`Task::run`]'s flag says whether the pool was
/// cancelled: a cancelled task reports [`JobError::Cancelled`] for its jobs instead of running
/// them.
pub(crate) enum Task {
    /// Any work, boxed.
    Boxed(Box<dyn FnOnce(bool) + Send>),
    /// A range of inputs of an in-place `map`, whose state lives with its caller: sending it
    /// allocates nothing.
    Range(RangeTask),
    /// A chunk under supervision (a job time limit, or a submitted job that `Kill` answers).
    Supervised(Arc<dyn RunSupervised>),
}

impl Task {
    pub(crate) fn run(self, shared: &Arc<Shared>, cancelled: bool) {
        match self {
            Self::Boxed(task) => task(cancelled),
            Self::Range(range) => range.run(cancelled),
            Self::Supervised(chunk) => chunk.run(shared, cancelled),
        }
    }
}

/// What the pool's workers, its watchdog and its front end share.
pub(crate) struct Shared {
    pub(crate) tasks: Receiver<Task>,
    cancelled: AtomicBool,
    /// The most threads the pool runs (abandoned threads do not count).
    workers: usize,
    /// Whether another thread may start: `false` once `workers` run or the OS refused one.
    /// Read on every submission, so that a fully started pool pays one relaxed load.
    may_grow: AtomicBool,
    threads: Mutex<Threads>,
    /// Signalled when a worker thread exits or is abandoned.
    thread_gone: Condvar,
    thread_name: String,
    pub(crate) progress: Arc<ProgressCounters>,
    pub(crate) job_timeout: Option<Duration>,
    /// The inputs of supervised chunks running now.
    pub(crate) watch: Watch,
    /// The rate limit and `max_in_flight` every job passes before it starts.
    pub(crate) gate: Gate,
}

/// The pool's threads.
#[derive(Default)]
struct Threads {
    /// The threads that belong to the pool, with their stop flags: started and not
    /// abandoned. They may have exited already; `stop` joins them.
    handles: Vec<(JoinHandle<()>, Arc<AtomicBool>)>,
    /// Threads in `handles` that have not exited yet.
    live: usize,
    /// Threads started so far, for their names.
    started: usize,
}

thread_local! {
    /// The pool whose worker this thread is (the address of its `Shared`), 0 elsewhere.
    static CURRENT_POOL: Cell<usize> = const { Cell::new(0) };
    /// This worker thread's stop flag: set when the pool gives up on the thread.
    static WORKER_FLAG: RefCell<Option<Arc<AtomicBool>>> = const { RefCell::new(None) };
}

/// The stop flag of the worker thread that calls this (a fresh, unwatched one elsewhere).
pub(crate) fn current_worker_flag() -> Arc<AtomicBool> {
    WORKER_FLAG.with_borrow(|flag| flag.clone()).unwrap_or_default()
}

/// How long `Kill` waits for threads to leave on their own before it abandons them.
const KILL_GRACE: Duration = Duration::from_millis(200);

impl Shared {
    fn lock_threads(&self) -> MutexGuard<'_, Threads> {
        // Nothing panics while the lock is held; a poisoned list is still the right list.
        self.threads.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts one more worker thread, unless `workers` already run; one that must continue a
    /// chunk (`first`) starts in any case. On an OS refusal the pool stops growing and keeps the
    /// threads it has.
    fn start_thread(self: &Arc<Self>, first: Option<Task>) -> std::io::Result<()> {
        let mut threads = self.lock_threads();
        if threads.handles.len() >= self.workers && first.is_none() {
            return Ok(());
        }
        let index = threads.started;
        let shared = Arc::clone(self);
        let flag = Arc::new(AtomicBool::new(false));
        let thread_flag = Arc::clone(&flag);
        let started = std::thread::Builder::new()
            .name(format!("{}-{index}", self.thread_name))
            .spawn(move || work(&shared, thread_flag, first));
        match started {
            Ok(thread) => {
                threads.handles.push((thread, flag));
                threads.live += 1;
                threads.started += 1;
                if threads.handles.len() >= self.workers {
                    self.may_grow.store(false, Ordering::Relaxed);
                }
                Ok(())
            }
            Err(error) => {
                self.may_grow.store(false, Ordering::Relaxed);
                Err(error)
            }
        }
    }

    /// Gives up on the thread whose stop flag is `flag` (it runs a job past its limit, or the
    /// pool was killed): detaches it, counts it, and starts a thread in its place when there is
    /// work for one (`continuation`, the rest of the claimed chunk, or a queued task).
    pub(crate) fn abandon(self: &Arc<Self>, flag: &Arc<AtomicBool>, continuation: Option<Task>) {
        self.give_up(flag);
        self.replace_abandoned(continuation);
    }

    /// The first half of [`abandon`](Self::abandon): detaches and counts the thread. A claimed
    /// chunk calls it before it answers the claimed input, so that a caller who sees the
    /// input's `Expired` or `Killed` also sees the thread counted in `abandoned_threads`.
    pub(crate) fn give_up(&self, flag: &Arc<AtomicBool>) {
        let mut threads = self.lock_threads();
        // The flag is set under the lock, once: a thread is abandoned at most once, and a
        // thread that exits reads it under the same lock to know whether it still counts.
        if !flag.swap(true, Ordering::SeqCst) {
            if let Some(position) = threads.handles.iter().position(|(_, other)| Arc::ptr_eq(other, flag)) {
                // Dropping the handle detaches the thread.
                drop(threads.handles.swap_remove(position));
                threads.live -= 1;
            }
            self.progress.abandoned_threads(1);
            self.thread_gone.notify_all();
        }
        if threads.handles.len() < self.workers {
            self.may_grow.store(true, Ordering::Relaxed);
        }
    }

    /// The second half of [`abandon`](Self::abandon): starts a thread in an abandoned one's
    /// place when there is work for it.
    pub(crate) fn replace_abandoned(self: &Arc<Self>, continuation: Option<Task>) {
        if continuation.is_some() || !self.tasks.is_empty() {
            // An OS refusal drops the continuation, which answers its chunk: the results it has,
            // and `Cancelled` for the inputs that could not run.
            let _ = self.start_thread(continuation);
        }
    }

    /// Whether the pool was shut down with its queue cancelled (or killed).
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// A worker thread leaves: it no longer counts as live (unless it was abandoned, which
    /// uncounted it already).
    fn thread_exits(&self, flag: &AtomicBool) {
        let mut threads = self.lock_threads();
        if !flag.load(Ordering::SeqCst) {
            threads.live -= 1;
            self.thread_gone.notify_all();
        }
    }
}

fn work(shared: &Arc<Shared>, flag: Arc<AtomicBool>, first: Option<Task>) {
    CURRENT_POOL.set(pool_id(shared));
    WORKER_FLAG.set(Some(Arc::clone(&flag)));
    // Jobs on this thread see `deadline::expired()` once the pool gives up on the thread, and
    // draw their permits (`limit::acquire`) from the pool's limit.
    let _stop = StopGuard::install(Arc::clone(&flag));
    let _permits = AmbientGuard::install(shared.gate.source());
    if let Some(task) = first {
        task.run(shared, shared.cancelled.load(Ordering::Acquire));
    }
    // An abandoned thread takes no more work: another thread has its place.
    while !flag.load(Ordering::Relaxed)
        && let Ok(task) = shared.tasks.recv()
    {
        task.run(shared, shared.cancelled.load(Ordering::Acquire));
    }
    shared.thread_exits(&flag);
}

/// A pool of worker threads that runs fanout jobs.
///
/// Threads start on demand, like Python's `ThreadPoolExecutor`: the first one when the pool is
/// built (so that an OS refusal is a [`BuildError`]), each further one when a task is queued
/// and finds no thread free to take it, up to `workers`. A pool of 200 threads for 10 jobs
/// therefore starts about 10, and the first jobs run while later threads are still being
/// started: on the 2-core VM this was measured on, starting a thread costs 70–100 µs, so
/// starting 200 up front cost more than the 10 ms jobs they were for. If the OS refuses a
/// later thread, the pool goes on with the threads it has.
///
/// Dropping the pool runs its queued jobs, then joins its threads;
/// [`shutdown`](Executor::shutdown) with [`Shutdown::CancelQueued`] drops the queue instead.
/// A panicking job becomes [`JobError::Panicked`] and the worker goes on.
pub struct ThreadPool {
    shared: Arc<Shared>,
    sender: Option<Sender<Task>>,
    /// The thread that gives up on jobs past their time limit (only with a limit).
    watchdog: Option<JoinHandle<()>>,
    chunk_size: usize,
}

/// Configures a [`ThreadPool`].
#[derive(Debug, Clone)]
pub struct ThreadPoolBuilder {
    workers: usize,
    chunk_size: usize,
    thread_name: String,
    job_timeout: Option<Duration>,
    rate_limit: Option<RateLimit>,
    max_in_flight: Option<usize>,
}

impl ThreadPoolBuilder {
    /// The most worker threads the pool runs (required, at least 1). They start on demand.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// How many inputs of a `map` travel together as one task (default 1). Larger chunks
    /// amortize the channel cost of tiny jobs and delay the first results.
    pub fn chunk_size(mut self, chunk_size: usize) -> Self {
        self.chunk_size = chunk_size;
        self
    }

    /// The prefix of the worker threads' names (default `fanout-thread`).
    pub fn thread_name(mut self, prefix: impl Into<String>) -> Self {
        self.thread_name = prefix.into();
        self
    }

    /// A time limit for each job, counted from when it starts on its thread (not while it is
    /// queued). A thread cannot be killed, so a job still running at its limit is *abandoned*:
    /// it fails with [`JobError::Expired`] at once, its thread is detached (it runs the job to
    /// its end and then exits, its result dropped) and a fresh thread takes its place, so the
    /// pool keeps its capacity. [`ThreadPool::abandoned_threads`] counts them. A job can end
    /// itself early by polling [`fanout_core::deadline::expired`]. Off by default.
    pub fn job_timeout(mut self, limit: Duration) -> Self {
        self.job_timeout = Some(limit);
        self
    }

    /// A rate limit that every job of the pool shares (see [`fanout_core::limit`]): by default
    /// each job takes a permit before it starts; with [`RateLimit::per_request`] jobs take
    /// them with [`fanout_core::limit::acquire`]. A pool built inside a job of a limited
    /// executor draws from that executor's limit unless it has one of its own.
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// At most `jobs` jobs run at once (at least 1), whatever the number of threads.
    pub fn max_in_flight(mut self, jobs: usize) -> Self {
        self.max_in_flight = Some(jobs);
        self
    }

    /// Builds the pool and starts its first worker thread; the others start on demand.
    pub fn build(self) -> Result<ThreadPool, BuildError> {
        if self.workers == 0 {
            return Err(BuildError::ZeroWorkers);
        }
        if self.job_timeout == Some(Duration::ZERO) {
            return Err(BuildError::ZeroJobTimeout);
        }
        if self.chunk_size == 0 {
            return Err(BuildError::ZeroChunkSize);
        }
        let gate = Gate::new(self.rate_limit, self.max_in_flight)?;
        let (sender, tasks) = crossbeam_channel::unbounded::<Task>();
        let shared = Arc::new(Shared {
            tasks,
            cancelled: AtomicBool::new(false),
            workers: self.workers,
            may_grow: AtomicBool::new(true),
            threads: Mutex::new(Threads::default()),
            thread_gone: Condvar::new(),
            thread_name: self.thread_name,
            progress: Arc::new(ProgressCounters::new()),
            job_timeout: self.job_timeout,
            watch: Watch::new(),
            gate,
        });
        let mut pool =
            ThreadPool { shared, sender: Some(sender), watchdog: None, chunk_size: self.chunk_size };
        pool.shared
            .start_thread(None)
            .map_err(|source| BuildError::Os { action: "spawn a worker thread", source })?;
        if self.job_timeout.is_some() {
            let shared = Arc::clone(&pool.shared);
            let watchdog = std::thread::Builder::new()
                .name(format!("{}-watchdog", pool.shared.thread_name))
                .spawn(move || shared.watch.watchdog(&shared))
                .map_err(|source| BuildError::Os { action: "spawn the watchdog thread", source })?;
            pool.watchdog = Some(watchdog);
        }
        Ok(pool)
    }
}

fn pool_id(shared: &Arc<Shared>) -> usize {
    Arc::as_ptr(shared) as usize
}

impl ThreadPool {
    /// A pool of `workers` threads with default settings.
    pub fn new(workers: usize) -> Result<Self, BuildError> {
        Self::builder().workers(workers).build()
    }

    /// A builder for a pool with non-default settings.
    pub fn builder() -> ThreadPoolBuilder {
        ThreadPoolBuilder {
            workers: 0,
            chunk_size: 1,
            thread_name: "fanout-thread".to_owned(),
            job_timeout: None,
            rate_limit: None,
            max_in_flight: None,
        }
    }

    /// The chunk size of this pool's `map` calls.
    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// Runs `f` on every input and returns the results in input order.
    ///
    /// Unlike [`Executor::map`], `f` may be any closure: one that captures state, borrows local
    /// variables, or takes and returns borrowed, non-serializable values. That is what a
    /// process pool cannot do, and why it is not part of the trait. The call returns only after
    /// every task that borrowed from the caller has finished.
    ///
    /// ```
    /// use fanout_thread::ThreadPool;
    ///
    /// let pool = ThreadPool::new(2)?;
    /// let words = vec!["fork".to_owned(), "thread".to_owned()];
    /// let suffix = String::from("s");
    /// let plural = pool.scoped_map(|word: &String| format!("{word}{suffix}"), &words);
    /// assert_eq!(plural, [Ok("forks".to_owned()), Ok("threads".to_owned())]);
    /// # Ok::<(), fanout_core::BuildError>(())
    /// ```
    pub fn scoped_map<'env, F, I, O>(
        &self,
        f: F,
        inputs: impl IntoIterator<Item = I>,
    ) -> Vec<Result<O, JobError>>
    where
        F: Fn(I) -> O + Sync + 'env,
        I: Send + 'env,
        O: Send + 'env,
    {
        // SAFETY: the tasks borrow `f` and the caller's environment, both alive for this whole
        // call, and the launcher goes straight into a scoped engine (below).
        let launcher = unsafe { PoolLaunch::new_scoped(self, &f) };
        // SAFETY: the scoped engine waits for every chunk's answer, when it finishes and when it
        // is dropped by a panic, before this function returns or unwinds; it is never leaked.
        unsafe { Ordered::new_scoped(launcher, inputs.into_iter()) }.collect()
    }

    /// Runs `f` over `inputs`, results in input order: written in place when the input's
    /// length is known (and the caller is not one of this pool's workers, which must not park),
    /// through the engine otherwise.
    fn ordered<I, O, F>(&self, f: F, inputs: impl Iterator<Item = I>) -> Vec<Result<O, JobError>>
    where
        I: Send + 'static,
        O: Send + 'static,
        F: Fn(I) -> O + Send + Sync + 'static,
    {
        match inputs.size_hint() {
            // A job time limit needs supervised chunks (a thread given up on must not hold a
            // pointer into the caller's output), and limits gate each job: both stream.
            (low, Some(high))
                if low == high
                    && !self.is_own_worker()
                    && self.shared.job_timeout.is_none()
                    && self.shared.gate.is_open() =>
            {
                map_in_place(self, f, inputs, low)
            }
            _ => Ordered::new(PoolLaunch::new(self, f), inputs).collect(),
        }
    }

    /// How many worker threads have started so far (at most [`Executor::workers`]).
    ///
    /// ```
    /// use fanout_core::Executor;
    /// use fanout_thread::ThreadPool;
    ///
    /// let pool = ThreadPool::new(200)?;
    /// assert_eq!(pool.threads_started(), 1); // the others start when jobs wait for them
    /// assert_eq!(pool.map(|x: u64| x + 1, [1]), [Ok(2)]);
    /// assert!(pool.threads_started() <= 2);
    /// # Ok::<(), fanout_core::BuildError>(())
    /// ```
    pub fn threads_started(&self) -> usize {
        self.shared.lock_threads().handles.len()
    }

    /// How many threads this pool gave up on so far: threads whose job ran past the pool's
    /// time limit, each replaced by a fresh thread (see [`ThreadPoolBuilder::job_timeout`]).
    /// The same count is [`Progress::abandoned_threads`](fanout_core::Progress), which stays
    /// readable through a [`progress_watch`](Executor::progress_watch) after a `Kill`.
    pub fn abandoned_threads(&self) -> u64 {
        self.shared.progress.snapshot().abandoned_threads
    }

    /// Queues a task for the workers, and starts another thread if the task found none free.
    pub(crate) fn spawn(&self, task: Task) {
        if let Some(sender) = &self.sender {
            // The receiver lives in `shared`, which `self` keeps alive: sending cannot fail.
            let _ = sender.send(task);
            // A task still queued right after the send found no thread waiting for it. (A
            // waiting thread that has not woken yet also leaves it queued: then one thread
            // too many starts, which is cheaper than one too few for jobs that block.)
            if self.shared.may_grow.load(Ordering::Relaxed) && !self.shared.tasks.is_empty() {
                // An OS refusal is not the task's failure: the started threads will run it.
                let _ = self.shared.start_thread(None);
            }
        }
    }

    /// Queues a task that borrows from its caller.
    ///
    /// # Safety
    /// Everything `task` borrows must stay alive until the task has run or been dropped.
    pub(crate) unsafe fn spawn_unchecked<'env>(&self, task: Box<dyn FnOnce(bool) + Send + 'env>) {
        // SAFETY: the two types differ only in the lifetime bound of the trait object, so they
        // have the same layout and vtable; the caller guarantees that the borrows inside
        // outlive the task, which is all the `'static` bound would have promised.
        let task = unsafe {
            std::mem::transmute::<Box<dyn FnOnce(bool) + Send + 'env>, Box<dyn FnOnce(bool) + Send>>(task)
        };
        self.spawn(Task::Boxed(task));
    }

    /// Runs one queued task on the calling thread, if there is one: how a worker that waits for
    /// its own pool helps instead of blocking it.
    pub(crate) fn run_one_queued(&self) -> bool {
        match self.shared.tasks.try_recv() {
            Ok(task) => {
                task.run(&self.shared, self.shared.cancelled.load(Ordering::Acquire));
                true
            }
            Err(_) => false,
        }
    }

    /// Whether the calling thread is one of this pool's workers.
    pub(crate) fn is_own_worker(&self) -> bool {
        CURRENT_POOL.get() == pool_id(&self.shared)
    }

    /// What the pool's threads share.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The job time limit set with [`ThreadPoolBuilder::job_timeout`].
    pub fn job_timeout(&self) -> Option<Duration> {
        self.shared.job_timeout
    }

    fn stop(&mut self, mode: Shutdown) {
        let shared = Arc::clone(&self.shared);
        if mode != Shutdown::Finish {
            shared.cancelled.store(true, Ordering::Release);
        }
        // Closing the channel lets the workers drain what is queued and then leave.
        self.sender = None;
        if mode == Shutdown::Kill {
            // Running supervised inputs report `Killed`, their chunks' other inputs `Cancelled`,
            // and their threads are given up on at once.
            for (id, entry) in shared.watch.drain() {
                // The claim gives up on the thread (a `Kill` continues nothing).
                let _ = Arc::clone(&entry.chunk).claim(id, Claim::Killed, &shared, &entry.flag);
            }
            // What is still queued reports `Cancelled` now, whatever the threads do.
            while let Ok(task) = shared.tasks.try_recv() {
                task.run(&shared, true);
            }
        }
        // A pool dropped by one of its own workers (a job that owned it) cannot wait for itself.
        let own = usize::from(self.is_own_worker());
        let kill_deadline = Instant::now() + KILL_GRACE;
        let mut threads = shared.lock_threads();
        while threads.live > own {
            if mode != Shutdown::Kill {
                // With a job time limit, a stuck thread is abandoned at its limit, which ends
                // this wait; without one, `Finish` waits for the job as it promises.
                threads = shared.thread_gone.wait(threads).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            let now = Instant::now();
            if now >= kill_deadline {
                // Threads still busy (with unsupervised work that nobody waits for) are given
                // up on; they leave when their job returns.
                let flags: Vec<_> = threads.handles.iter().map(|(_, flag)| Arc::clone(flag)).collect();
                drop(threads);
                let me = WORKER_FLAG.with_borrow(Clone::clone);
                for flag in flags.iter().filter(|flag| me.as_ref().is_none_or(|me| !Arc::ptr_eq(me, flag))) {
                    shared.abandon(flag, None);
                }
                threads = shared.lock_threads();
                break;
            }
            threads = shared
                .thread_gone
                .wait_timeout(threads, kill_deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        let handles = std::mem::take(&mut threads.handles);
        drop(threads);
        let current = std::thread::current().id();
        for (thread, _) in handles {
            if thread.thread().id() != current {
                let _ = thread.join();
            }
        }
        shared.watch.stop();
        if let Some(watchdog) = self.watchdog.take() {
            let _ = watchdog.join();
        }
    }
}

impl Executor for ThreadPool {
    fn name(&self) -> &'static str {
        "thread"
    }

    fn workers(&self) -> usize {
        self.shared.workers
    }

    fn progress_watch(&self) -> ProgressWatch {
        ProgressWatch::new(&self.shared.progress)
    }

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
        Unordered::new(PoolLaunch::new(self, move |input| job.call(input)), inputs.into_iter())
    }

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
        Ordered::new(PoolLaunch::new(self, move |input| job.call(input)), inputs.into_iter())
    }

    fn map<J, I>(&self, job: J, inputs: impl IntoIterator<Item = I>) -> Vec<Result<J::Output, JobError>>
    where
        J: Job<I>,
        I: Payload,
        J::Output: Payload,
    {
        self.ordered(move |input| job.call(input), inputs.into_iter())
    }

    fn submit<J, I>(&self, job: J, input: I) -> JobHandle<J::Output>
    where
        J: Job<I>,
        I: Payload,
        J::Output: Payload,
    {
        let (reply, handle) = job_handle();
        launch_one(&mut PoolLaunch::supervised(self, move |input| job.call(input)), input, reply);
        handle
    }

    fn shutdown(mut self, mode: Shutdown) {
        self.stop(mode);
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.stop(Shutdown::Finish);
    }
}

impl fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadPool")
            .field("workers", &self.shared.workers)
            .field("threads_started", &self.threads_started())
            .field("chunk_size", &self.chunk_size)
            .finish_non_exhaustive()
    }
}
