//! The pool itself: worker threads, the task channel, submission and shutdown.

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use fanout_core::plumbing::{Ordered, ProgressCounters, Unordered, job_handle, launch_one};
use fanout_core::{BuildError, Executor, Job, JobError, JobHandle, Payload, ProgressWatch, Shutdown};

use crate::in_place::{RangeTask, map_in_place};
use crate::launch::PoolLaunch;

/// A unit of work for a worker thread. [`Task::run`]'s flag says whether the pool was
/// cancelled: a cancelled task reports [`JobError::Cancelled`] for its jobs instead of running
/// them.
pub(crate) enum Task {
    /// Any work, boxed.
    Boxed(Box<dyn FnOnce(bool) + Send>),
    /// A range of inputs of an in-place `map`, whose state lives with its caller: sending it
    /// allocates nothing.
    Range(RangeTask),
}

impl Task {
    pub(crate) fn run(self, cancelled: bool) {
        match self {
            Self::Boxed(task) => task(cancelled),
            Self::Range(range) => range.run(cancelled),
        }
    }
}

/// What the pool's workers share.
pub(crate) struct Shared {
    pub(crate) tasks: Receiver<Task>,
    cancelled: AtomicBool,
}

thread_local! {
    /// The pool whose worker this thread is (the address of its `Shared`), 0 elsewhere.
    static CURRENT_POOL: Cell<usize> = const { Cell::new(0) };
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
    /// The most threads the pool starts.
    workers: usize,
    /// Whether another thread may start: `false` once `workers` run or the OS refused one.
    /// Read on every submission, so that a fully started pool pays one relaxed load.
    may_grow: AtomicBool,
    /// The started threads. Only submissions (through `&self`) add to it and only `stop`
    /// (through `&mut self`) drains it, so no thread can start behind a shutdown's back.
    threads: Mutex<Vec<JoinHandle<()>>>,
    thread_name: String,
    chunk_size: usize,
    /// What the pool did so far.
    pub(crate) progress: Arc<ProgressCounters>,
    job_timeout: Option<Duration>,
}

/// Configures a [`ThreadPool`].
#[derive(Debug, Clone)]
pub struct ThreadPoolBuilder {
    workers: usize,
    chunk_size: usize,
    thread_name: String,
    job_timeout: Option<Duration>,
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
        let (sender, tasks) = crossbeam_channel::unbounded::<Task>();
        let shared = Arc::new(Shared { tasks, cancelled: AtomicBool::new(false) });
        let pool = ThreadPool {
            shared,
            sender: Some(sender),
            workers: self.workers,
            may_grow: AtomicBool::new(true),
            threads: Mutex::new(Vec::with_capacity(self.workers)),
            thread_name: self.thread_name,
            chunk_size: self.chunk_size,
            progress: Arc::new(ProgressCounters::new()),
            job_timeout: self.job_timeout,
        };
        pool.start_thread().map_err(|source| BuildError::Os { action: "spawn a worker thread", source })?;
        Ok(pool)
    }
}

fn work(shared: &Arc<Shared>) {
    CURRENT_POOL.set(pool_id(shared));
    while let Ok(task) = shared.tasks.recv() {
        task.run(shared.cancelled.load(Ordering::Acquire));
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
            (low, Some(high)) if low == high && !self.is_own_worker() => map_in_place(self, f, inputs, low),
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
        self.lock_threads().len()
    }

    /// Queues a task for the workers, and starts another thread if the task found none free.
    pub(crate) fn spawn(&self, task: Task) {
        if let Some(sender) = &self.sender {
            // The receiver lives in `shared`, which `self` keeps alive: sending cannot fail.
            let _ = sender.send(task);
            // A task still queued right after the send found no thread waiting for it. (A
            // waiting thread that has not woken yet also leaves it queued: then one thread
            // too many starts, which is cheaper than one too few for jobs that block.)
            if self.may_grow.load(Ordering::Relaxed) && !self.shared.tasks.is_empty() {
                // An OS refusal is not the task's failure: the started threads will run it.
                let _ = self.start_thread();
            }
        }
    }

    /// Starts one more worker thread, unless `workers` already run. On an OS refusal the pool
    /// stops growing and keeps the threads it has.
    fn start_thread(&self) -> std::io::Result<()> {
        let mut threads = self.lock_threads();
        let index = threads.len();
        if index >= self.workers {
            return Ok(());
        }
        let shared = Arc::clone(&self.shared);
        let started = std::thread::Builder::new()
            .name(format!("{}-{index}", self.thread_name))
            .spawn(move || work(&shared));
        match started {
            Ok(thread) => {
                threads.push(thread);
                if threads.len() == self.workers {
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

    fn lock_threads(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        // Nothing panics while the lock is held; a poisoned list is still the right list.
        self.threads.lock().unwrap_or_else(PoisonError::into_inner)
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
                task.run(self.shared.cancelled.load(Ordering::Acquire));
                true
            }
            Err(_) => false,
        }
    }

    /// Whether the calling thread is one of this pool's workers.
    pub(crate) fn is_own_worker(&self) -> bool {
        CURRENT_POOL.get() == pool_id(&self.shared)
    }

    /// The job time limit set with [`ThreadPoolBuilder::job_timeout`].
    pub fn job_timeout(&self) -> Option<Duration> {
        self.job_timeout
    }

    fn stop(&mut self, mode: Shutdown) {
        if mode != Shutdown::Finish {
            self.shared.cancelled.store(true, Ordering::Release);
        }
        // Closing the channel lets the workers drain what is queued and then leave.
        self.sender = None;
        let current = std::thread::current().id();
        let threads = std::mem::take(self.threads.get_mut().unwrap_or_else(PoisonError::into_inner));
        for thread in threads {
            // A pool dropped by one of its own workers (a job that owned it) cannot join itself.
            if thread.thread().id() != current {
                let _ = thread.join();
            }
        }
    }
}

impl Executor for ThreadPool {
    fn name(&self) -> &'static str {
        "thread"
    }

    fn workers(&self) -> usize {
        self.workers
    }

    fn progress_watch(&self) -> ProgressWatch {
        ProgressWatch::new(&self.progress)
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
        launch_one(&mut PoolLaunch::new(self, move |input| job.call(input)), input, reply);
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
            .field("workers", &self.workers)
            .field("threads_started", &self.threads_started())
            .field("chunk_size", &self.chunk_size)
            .finish_non_exhaustive()
    }
}
