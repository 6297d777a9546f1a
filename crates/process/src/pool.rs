//! [`ProcessPool`]: the front end the caller holds, its builder, and the bounded streaming of
//! `map_unordered` over encoded chunks.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use fanout_core::remote::{decode_payload, entry_point};
use fanout_core::{
    BuildError, Executor, Job, JobError, JobHandle, Payload, PayloadPart, Shutdown, job_handle,
};

use crate::chunk::{ChunkEncoder, Pushed};
use crate::dispatcher::{Dispatcher, Outcome, Reply, Shared, Task};
use crate::protocol::{WorkerSettings, offset_of_code, offset_of_entry};

/// Messages larger than this are refused unless the builder says otherwise.
const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Chunks of one `map` in flight per worker: one running, one queued behind it.
const CHUNKS_PER_WORKER: usize = 2;

/// A pool of worker processes that runs fanout jobs.
///
/// Jobs and their inputs travel to the workers serialized, over ipc-channel; see the crate
/// documentation for how workers are started and what that means for your program. Dropping
/// the pool runs its queued jobs, then stops and reaps every worker.
pub struct ProcessPool {
    tasks: Option<Sender<Task>>,
    shared: Arc<Shared>,
    dispatcher: Option<JoinHandle<()>>,
    workers: usize,
    chunk_size: usize,
    max_message_bytes: usize,
    server_pid: u32,
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

    /// Starts the fork server and the workers.
    pub fn build(self) -> Result<ProcessPool, BuildError> {
        if self.workers == 0 {
            return Err(BuildError::ZeroWorkers);
        }
        if self.chunk_size == 0 {
            return Err(BuildError::ZeroChunkSize);
        }
        let settings = WorkerSettings {
            initializer: self.initializer.map(|f| offset_of_code(f as usize)),
            max_tasks: self.max_tasks_per_worker,
            max_message_bytes: self.max_message_bytes,
            key: WorkerSettings::new_key(),
        };
        // The queue is bounded: `map` keeps a window of chunks in flight, and `submit` waits
        // when a backlog this deep is already queued.
        let (tasks, queue) = crossbeam_channel::bounded((self.workers * 64).max(1024));
        let (dispatcher, shared) = Dispatcher::start(self.workers, settings, self.retry_lost, queue)
            .map_err(|reason| BuildError::ForkServer { reason })?;
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
        }
    }

    /// The process ids of the live workers (they change as workers die or retire).
    pub fn worker_pids(&self) -> Vec<u32> {
        self.shared.pids.lock().map(|pids| pids.iter().map(|&pid| pid as u32).collect()).unwrap_or_default()
    }

    /// How many tasks ran again because their worker died (see
    /// [`ProcessPoolBuilder::retry_lost`]).
    pub fn retried_tasks(&self) -> u64 {
        self.shared.retried.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The process id of the pool's fork server.
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

    fn stop(&mut self, mode: Shutdown) {
        if mode == Shutdown::CancelQueued {
            self.shared.cancel.store(true, std::sync::atomic::Ordering::SeqCst);
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
        let (sender, receiver) = crossbeam_channel::unbounded();
        Batches {
            pool: self,
            entry: offset_of_entry(entry_point::<J, I>()),
            state: job.encode_state().map(Arc::from),
            inputs: inputs.into_iter(),
            next_index: 0,
            exhausted: false,
            encoder: ChunkEncoder::new(self.max_message_bytes),
            carried: None,
            sender,
            receiver,
            ready: VecDeque::new(),
            in_flight: 0,
            window: self.workers * CHUNKS_PER_WORKER,
        }
    }

    fn submit<J, I>(&self, job: J, input: I) -> JobHandle<J::Output>
    where
        J: Job<I>,
        I: Payload,
        J::Output: Payload,
    {
        let (completer, handle) = job_handle();
        let mut encoder = ChunkEncoder::new(self.max_message_bytes);
        let state = match job.encode_state() {
            Ok(state) => state,
            Err(error) => {
                completer.complete(Err(error));
                return handle;
            }
        };
        if let Pushed::Failed(error) = encoder.push(&input) {
            completer.complete(Err(error));
            return handle;
        }
        let task = Task {
            entry: offset_of_entry(entry_point::<J, I>()),
            state: Arc::from(state),
            inputs: encoder.finish(),
            reply: Reply::new(move |outcome| {
                let result = decode_outcome::<J::Output>(outcome, 1)
                    .and_then(|mut results| results.pop().unwrap_or(Err(JobError::Cancelled)));
                completer.complete(result);
            }),
        };
        self.enqueue(task);
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
            .finish_non_exhaustive()
    }
}

/// Decodes a chunk's outcome into one result per input, or the chunk's one error.
fn decode_outcome<O: Payload>(
    outcome: Outcome,
    expected: usize,
) -> Result<Vec<Result<O, JobError>>, JobError> {
    let results: Vec<Result<O, JobError>> = decode_payload(PayloadPart::Output, &outcome?)?;
    if results.len() != expected {
        return Err(JobError::Serialization {
            part: PayloadPart::Message,
            encoding: false,
            message: format!("a worker answered {} results for a chunk of {expected} inputs", results.len()),
        });
    }
    Ok(results)
}

/// The streaming state of one `map_unordered` call.
struct Batches<'p, O, It: Iterator> {
    pool: &'p ProcessPool,
    entry: isize,
    state: Result<Arc<[u8]>, JobError>,
    inputs: It,
    next_index: usize,
    exhausted: bool,
    encoder: ChunkEncoder,
    /// An input that did not fit in the previous chunk.
    carried: Option<(usize, It::Item)>,
    sender: Sender<(Vec<usize>, Outcome)>,
    receiver: Receiver<(Vec<usize>, Outcome)>,
    ready: VecDeque<(usize, Result<O, JobError>)>,
    in_flight: usize,
    window: usize,
}

impl<O, It> Batches<'_, O, It>
where
    O: Payload,
    It: Iterator,
    It::Item: Payload,
{
    /// Queues chunks until the window is full or the inputs run out.
    fn fill(&mut self) {
        while self.in_flight < self.window && !(self.exhausted && self.carried.is_none()) {
            let mut indices = Vec::with_capacity(self.pool.chunk_size);
            while indices.len() < self.pool.chunk_size {
                let Some((index, input)) = self.carried.take().or_else(|| self.next_input()) else { break };
                if let Err(error) = &self.state {
                    self.ready.push_back((index, Err(error.clone())));
                    continue;
                }
                match self.encoder.push(&input) {
                    Pushed::Added => indices.push(index),
                    Pushed::Full => {
                        self.carried = Some((index, input));
                        break;
                    }
                    Pushed::Failed(error) => self.ready.push_back((index, Err(error))),
                }
            }
            if indices.is_empty() {
                continue;
            }
            let sender = self.sender.clone();
            let task = Task {
                entry: self.entry,
                state: self.state.as_ref().map(Arc::clone).unwrap_or_else(|_| Arc::from([])),
                inputs: self.encoder.finish(),
                reply: Reply::new(move |outcome| {
                    let _ = sender.send((indices, outcome));
                }),
            };
            self.pool.enqueue(task);
            self.in_flight += 1;
        }
    }

    fn next_input(&mut self) -> Option<(usize, It::Item)> {
        if self.exhausted {
            return None;
        }
        let Some(input) = self.inputs.next() else {
            self.exhausted = true;
            return None;
        };
        self.next_index += 1;
        Some((self.next_index - 1, input))
    }
}

impl<O, It> Iterator for Batches<'_, O, It>
where
    O: Payload,
    It: Iterator,
    It::Item: Payload,
{
    type Item = (usize, Result<O, JobError>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.fill();
            if let Some(result) = self.ready.pop_front() {
                return Some(result);
            }
            if self.in_flight == 0 {
                return None;
            }
            // Every task answers exactly once, through its `Reply`, even when cancelled.
            let (indices, outcome) = self.receiver.recv().ok()?;
            self.in_flight -= 1;
            match decode_outcome::<O>(outcome, indices.len()) {
                Ok(results) => self.ready.extend(indices.into_iter().zip(results)),
                Err(error) => self.ready.extend(indices.into_iter().map(|index| (index, Err(error.clone())))),
            }
        }
    }
}
