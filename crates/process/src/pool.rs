//! [`ProcessPool`]: the front end the caller holds, its builder, and [`PoolLaunch`], how the
//! engine's chunks reach the dispatcher: encoded, with their job's code offset and state.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;
use fanout_core::limit::{Gate, RateLimit};
use fanout_core::plumbing::{
    EncodedPacker, JobState, Launch, Ordered, ProgressCounters, Reply, Unordered, entry_point,
    entry_point_streaming, job_handle, launch_one,
};
use fanout_core::{BuildError, Executor, Job, JobError, JobHandle, Payload, ProgressWatch, Shutdown};

use crate::dispatcher::{Dispatcher, Shared, Task};
use crate::protocol::{WorkerSettings, offset_of_code, offset_of_entry, offset_of_streaming_entry};

/// Messages larger than this are refused unless the builder says otherwise.
const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Chunks of one `map` in flight per worker: one running, one queued behind it.
const CHUNKS_PER_WORKER: usize = 2;

/// A pool of worker processes that runs fanout jobs.
///
/// Jobs and their inputs travel to the workers serialized, over ipc-channel; see the crate
/// documentation for how workers are started and what that means for your program. Dropping
/// the pool runs its queued jobs, then stops and reaps every worker: it waits for every job,
/// as long as a stuck one takes unless the pool has a
/// [`job_timeout`](ProcessPoolBuilder::job_timeout). [`Executor::shutdown`] with
/// [`Shutdown::Kill`] returns at once instead: queued jobs answer [`JobError::Cancelled`],
/// running ones [`JobError::Killed`] (under a time limit, the inputs of a running chunk that
/// had finished keep their results and those not started are `Cancelled`), and every worker
/// is SIGKILLed and reaped. The program's fork server stops with its last pool.
///
/// Workers start on demand, like the threads of `fanout-thread`'s `ThreadPool`:
/// one when the pool is built (so that a pool that cannot fork fails to build), then one
/// more for each job that waits with no idle worker, up to
/// [`workers`](ProcessPoolBuilder::workers). A worker that dies or retires is replaced.
pub struct ProcessPool {
    tasks: Option<Sender<Task>>,
    shared: Arc<Shared>,
    dispatcher: Option<JoinHandle<()>>,
    workers: usize,
    chunk_size: usize,
    max_message_bytes: usize,
    server_pid: u32,
    /// What the pool did so far, counted here in the parent.
    progress: Arc<ProgressCounters>,
    job_timeout: Option<Duration>,
}

/// Configures a [`ProcessPool`].
#[derive(Debug, Clone)]
pub struct ProcessPoolBuilder {
    workers: usize,
    chunk_size: usize,
    max_tasks_per_worker: Option<u64>,
    initializer: Option<fn()>,
    max_message_bytes: usize,
    retry_lost: u32,
    job_timeout: Option<Duration>,
    rate_limit: Option<RateLimit>,
    max_in_flight: Option<usize>,
    reuse_workers: Option<bool>,
}

impl ProcessPoolBuilder {
    /// How many worker processes to run (required, at least 1).
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// How many inputs of a `map` travel together in one message (default 1). Larger chunks
    /// amortize the round trip of tiny jobs.
    pub fn chunk_size(mut self, chunk_size: usize) -> Self {
        self.chunk_size = chunk_size;
        self
    }

    /// Replace each worker by a fresh one after it ran this many chunks (Python's
    /// `maxtasksperchild`): a bound on what leaks in job code can accumulate.
    pub fn max_tasks_per_worker(mut self, tasks: u64) -> Self {
        self.max_tasks_per_worker = Some(tasks.max(1));
        self
    }

    /// Runs a task again, up to `retries` more times, when the worker running it dies (a
    /// killed process, a crash in native code): what would otherwise be
    /// [`JobError::WorkerLost`]. Off by default (0).
    ///
    /// Only for idempotent jobs: a job may have done some or all of its work before its worker
    /// died, and with [`chunk_size`](Self::chunk_size) above 1 the whole chunk runs again. A
    /// job that kills every worker it runs on fails with `WorkerLost` after `1 + retries`
    /// workers. [`ProcessPool::retried_tasks`] counts the retries.
    ///
    /// With a [`job_timeout`](Self::job_timeout) the pool hears of each input of a chunk as it
    /// finishes, so a death costs less: the finished inputs keep their results, and only the
    /// input that was running (with the inputs after it) runs again; the retries are counted
    /// per input. The count of [`Progress::retried`](fanout_core::Progress::retried) is of
    /// inputs sent to a worker again.
    pub fn retry_lost(mut self, retries: u32) -> Self {
        self.retry_lost = retries;
        self
    }

    /// A function each worker runs once when it starts, before any job: the place to set up
    /// per-worker state such as an HTTP client in a `thread_local!` or a `OnceLock`.
    ///
    /// If it panics, the pool starts no more workers and its jobs fail with
    /// [`JobError::WorkerLost`] saying so, instead of restarting workers forever.
    pub fn initializer(mut self, initializer: fn()) -> Self {
        self.initializer = Some(initializer);
        self
    }

    /// The largest message, in bytes, that may travel between the pool and a worker (default
    /// 64 MiB). An input over it fails alone with [`JobError::Serialization`]; so does a
    /// chunk of outputs.
    pub fn max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes;
        self
    }

    /// A time limit for each job, counted from when it starts on its worker (not while it is
    /// queued). A job still running at its limit fails with [`JobError::Expired`]: its worker
    /// is SIGKILLed, reaped and replaced. In a chunk of several inputs only that input fails;
    /// the inputs of the chunk that had not run yet run again on a worker, and those that had
    /// finished keep their results. Off by default; zero is a [`BuildError::ZeroJobTimeout`].
    ///
    /// The job sees its deadline: [`fanout_core::deadline::expired`] turns true at the limit,
    /// and the worker is killed a short grace later (a tenth of the limit, at most a second),
    /// so a job that checks it between steps can stop cleanly and keep its worker. A job that
    /// returns after its limit, for that reason or any other, fails with `Expired` all the
    /// same; so does one whose panic took it past the limit (a panic hook printing a
    /// backtrace can take a while).
    ///
    /// Under a limit, each finished input of a chunk is its own message to the pool (without
    /// one, a chunk's results travel together): a small cost per input, which
    /// [`chunk_size`](Self::chunk_size) no longer amortizes.
    pub fn job_timeout(mut self, limit: Duration) -> Self {
        self.job_timeout = Some(limit);
        self
    }

    /// A rate limit that every worker shares, enforced here in the parent (see
    /// [`fanout_core::limit`]): by default each job takes a permit before it is handed to a
    /// worker; with [`RateLimit::per_request`] jobs take them with
    /// [`fanout_core::limit::acquire`], which in a worker asks this process for the permit, so
    /// the limit holds across all workers. A pool built inside a job of a limited executor
    /// (in a worker process too) draws from that executor's limit unless it has one of its own.
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// At most `chunks` chunks (jobs, with the default chunk size of 1) run at once, at
    /// least 1, whatever the number of workers.
    pub fn max_in_flight(mut self, chunks: usize) -> Self {
        self.max_in_flight = Some(chunks);
        self
    }

    /// Whether the pool's workers outlive it as *spares* of the program's fork server, and the
    /// pool takes spares before it forks new workers.
    ///
    /// When such a pool ends (dropped, or [`Shutdown::Finish`] / [`Shutdown::CancelQueued`]),
    /// each idle worker writes out what its jobs printed, closes every channel of the pool and
    /// waits in the fork server, which hands it to the next pool that reuses workers: a message
    /// instead of a fork, a process exit and the page faults of a fresh process, and a worker
    /// that keeps what its jobs set up for themselves (an HTTP client with its keep-alive
    /// connection in a `thread_local!`, say). A spare is like a worker between two jobs of its
    /// pool: a fresh start of the program, plus whatever earlier jobs of the program left in
    /// it. Workers that were killed ([`Shutdown::Kill`], a time limit) or died never come back;
    /// the server keeps at most 64 spares, and they end with it (with the program's last
    /// pool), killed and reaped like any worker. A pool with an
    /// [`initializer`](Self::initializer) or a [task limit](Self::max_tasks_per_worker) always
    /// gets fresh processes, whatever this says.
    ///
    /// Default: on for a pool built inside a job on a process worker (a nested pool, built and
    /// dropped once per job: its workers are the previous job's), off elsewhere, where a
    /// dropped pool's workers are gone when the drop returns.
    ///
    /// ```
    /// use fanout_core::Executor;
    /// use fanout_process::ProcessPool;
    ///
    /// fn id(_: u64) -> u32 {
    ///     std::process::id()
    /// }
    ///
    /// let _keeps_the_server = ProcessPool::new(1)?;
    /// let first = ProcessPool::builder().workers(1).reuse_workers(true).build()?;
    /// let pid = first.submit(id, 0).wait()?;
    /// drop(first);
    /// let second = ProcessPool::builder().workers(1).reuse_workers(true).build()?;
    /// assert_eq!(second.submit(id, 0).wait()?, pid, "the first pool's worker, as a spare");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn reuse_workers(mut self, reuse: bool) -> Self {
        self.reuse_workers = Some(reuse);
        self
    }

    /// Builds the pool and starts its first worker (the program's fork server too, if no pool
    /// of this process runs it); the others start as jobs queue.
    pub fn build(self) -> Result<ProcessPool, BuildError> {
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
        let settings = WorkerSettings {
            initializer: self.initializer.map(|f| offset_of_code(f as usize)),
            max_tasks: self.max_tasks_per_worker,
            max_message_bytes: self.max_message_bytes,
            key: WorkerSettings::new_key(),
            job_timeout: self.job_timeout,
            permits: gate.source().map(|source| source.scope()),
            reuse: self.reuse_workers.unwrap_or_else(crate::server::in_worker)
                && self.initializer.is_none()
                && self.max_tasks_per_worker.is_none(),
        };
        // The queue is bounded: `map` keeps a window of chunks in flight, and `submit` waits
        // when a backlog this deep is already queued.
        let (tasks, queue) = crossbeam_channel::bounded((self.workers * 64).max(1024));
        let progress = Arc::new(ProgressCounters::new());
        let (dispatcher, shared) =
            Dispatcher::start(self.workers, settings, self.retry_lost, queue, Arc::clone(&progress), gate)?;
        let server_pid = dispatcher.server_pid();
        let dispatcher = std::thread::Builder::new()
            .name("fanout-process-dispatcher".to_owned())
            .spawn(move || dispatcher.run())
            .map_err(|source| BuildError::Os { action: "spawn the dispatcher thread", source })?;
        Ok(ProcessPool {
            tasks: Some(tasks),
            shared,
            dispatcher: Some(dispatcher),
            workers: self.workers,
            chunk_size: self.chunk_size,
            max_message_bytes: self.max_message_bytes,
            server_pid,
            progress,
            job_timeout: self.job_timeout,
        })
    }
}

impl ProcessPool {
    /// A pool of `workers` processes with default settings.
    pub fn new(workers: usize) -> Result<Self, BuildError> {
        Self::builder().workers(workers).build()
    }

    /// A builder for a pool with non-default settings.
    pub fn builder() -> ProcessPoolBuilder {
        ProcessPoolBuilder {
            workers: 0,
            chunk_size: 1,
            max_tasks_per_worker: None,
            initializer: None,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            retry_lost: 0,
            job_timeout: None,
            rate_limit: None,
            max_in_flight: None,
            reuse_workers: None,
        }
    }

    /// The process ids of the live workers (they change as workers die or retire).
    pub fn worker_pids(&self) -> Vec<u32> {
        self.shared.pids.lock().map(|pids| pids.iter().map(|&pid| pid as u32).collect()).unwrap_or_default()
    }

    /// How many tasks ran again because their worker died (see
    /// [`ProcessPoolBuilder::retry_lost`]). Under a time limit a task is the input that was
    /// running; [`Executor::progress`]'s `retried` counts every input sent to a worker again,
    /// the not-yet-started inputs of a stopped chunk included.
    pub fn retried_tasks(&self) -> u64 {
        self.shared.retried.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The process id of the program's fork server, which forks this pool's workers (and every
    /// other pool's of the program, nested ones included).
    pub fn fork_server_pid(&self) -> u32 {
        self.server_pid
    }

    fn enqueue(&self, task: Task) {
        if let Some(tasks) = &self.tasks {
            // A dispatcher that is gone drops the task, whose `Reply` then answers `Cancelled`.
            let _ = tasks.send(task);
            self.shared.task_queued();
        }
    }

    /// The job time limit set with [`ProcessPoolBuilder::job_timeout`].
    pub fn job_timeout(&self) -> Option<Duration> {
        self.job_timeout
    }

    fn stop(&mut self, mode: Shutdown) {
        if mode != Shutdown::Finish {
            self.shared.cancel.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        if mode == Shutdown::Kill {
            self.shared.kill.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        self.shared.closing.store(true, std::sync::atomic::Ordering::SeqCst);
        self.tasks = None;
        self.shared.wake();
        if let Some(dispatcher) = self.dispatcher.take() {
            let _ = dispatcher.join();
        }
    }
}

impl Executor for ProcessPool {
    fn name(&self) -> &'static str {
        "process"
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
        Unordered::new(PoolLaunch::new(self, &job), inputs.into_iter())
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
        Ordered::new(PoolLaunch::new(self, &job), inputs.into_iter())
    }

    fn submit<J, I>(&self, job: J, input: I) -> JobHandle<J::Output>
    where
        J: Job<I>,
        I: Payload,
        J::Output: Payload,
    {
        let (reply, handle) = job_handle();
        launch_one(&mut PoolLaunch::new(self, &job), input, reply);
        handle
    }

    fn shutdown(mut self, mode: Shutdown) {
        self.stop(mode);
    }
}

impl Drop for ProcessPool {
    fn drop(&mut self) {
        self.stop(Shutdown::Finish);
    }
}

impl fmt::Debug for ProcessPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessPool")
            .field("workers", &self.workers)
            .field("chunk_size", &self.chunk_size)
            .field("fork_server_pid", &self.server_pid)
            .field("job_timeout", &self.job_timeout)
            .finish_non_exhaustive()
    }
}

/// The launcher of one call on a process pool: chunks are encoded by [`EncodedPacker`] and
/// travel with the code offset of the job's entry point and its encoded state.
struct PoolLaunch<'p, I, O> {
    pool: &'p ProcessPool,
    entry: isize,
    /// The job's state, encoded once per call; if it does not encode, every chunk fails with
    /// that error.
    state: Result<Arc<[u8]>, JobError>,
    _types: PhantomData<fn(I) -> O>,
}

impl<'p, I: Payload, O: Payload> PoolLaunch<'p, I, O> {
    fn new<J: Job<I, Output = O>>(pool: &'p ProcessPool, job: &J) -> Self {
        // With a time limit the workers stream (see `WorkerRequest::Stream`), through the
        // streaming entry point; the dispatcher sends `Stream` requests exactly then.
        let entry = match pool.job_timeout {
            Some(_) => offset_of_streaming_entry(entry_point_streaming::<J, I>()),
            None => offset_of_entry(entry_point::<J, I>()),
        };
        Self { pool, entry, state: JobState::encode_state(job).map(Arc::from), _types: PhantomData }
    }
}

impl<I: Payload, O: Payload> Launch for PoolLaunch<'_, I, O> {
    type Input = I;
    type Output = O;
    type Packer = EncodedPacker;

    fn packer(&mut self) -> EncodedPacker {
        EncodedPacker::new(self.pool.chunk_size, self.pool.max_message_bytes)
    }

    fn window(&self) -> usize {
        self.pool.workers * CHUNKS_PER_WORKER
    }

    fn progress(&self) -> Option<Arc<ProgressCounters>> {
        Some(Arc::clone(&self.pool.progress))
    }

    fn launch(&mut self, inputs: Vec<u8>, reply: Reply<O>) {
        match &self.state {
            Ok(state) => {
                self.pool.enqueue(Task {
                    entry: self.entry,
                    state: Arc::clone(state),
                    inputs,
                    reply: reply.encoded(),
                });
            }
            Err(error) => reply.fail(error.clone()),
        }
    }
}
