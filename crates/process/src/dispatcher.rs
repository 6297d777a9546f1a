//! The pool's dispatcher thread: owns the workers, hands queued tasks to idle ones, collects
//! their replies, and replaces the ones that die.
//!
//! Only idle workers get a task (one chunk in flight per worker), because ipc-channel's
//! channels are unbounded: the backlog stays in the pool's bounded queue, where shutdown can
//! cancel it. A worker's death shows as its reply channel closing; the fork server then reaps
//! it and says how it ended, and its task is reported as [`JobError::WorkerLost`], or, with
//! retries on, queued again ahead of the pool's queue with its attempt counted.
//!
//! With a job time limit the workers *stream*: one message per finished input, then the end
//! of the chunk. The dispatcher then knows which input of a chunk runs and since when; one
//! that runs past the limit (and a short grace, [`kill_grace`]) gets its worker killed, its own
//! result is [`JobError::Expired`],
//! the results before it are kept, and the inputs after it run again on a worker (a `Stream`
//! request that skips the finished ones). A death while streaming loses (or retries) only the
//! input that was running, in the same way. [`Shutdown::Kill`](fanout_core::Shutdown::Kill)
//! answers the running inputs [`JobError::Killed`] and SIGKILLs every worker.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};
use fanout_core::limit::Gate;
use fanout_core::plumbing::{EncodedReply, Outcome, ProgressCounters, check_message_size};
use fanout_core::{BuildError, Direction, ForkServerError, JobError, PayloadPart, Violation, WorkerExit};
use ipc_channel::TrySelectError;
use ipc_channel::ipc::{self, IpcReceiver, IpcReceiverSet, IpcSelectionResult, IpcSender};

use crate::permits::{Grant, PermitRequest, PermitThread};
use crate::protocol::{
    Forked, MAX_DESCRIPTORS, MAX_SPAWN_BATCH, ServerReply, ServerRequest, WorkerEnds, WorkerReply,
    WorkerRequest, WorkerSettings,
};
use crate::server::ServerLink;

/// A chunk of encoded inputs on its way to a worker.
pub(crate) struct Task {
    /// Code offset of the job's entry point.
    pub(crate) entry: isize,
    /// The job's encoded state.
    pub(crate) state: Arc<[u8]>,
    /// The encoded `Vec<Input>`.
    pub(crate) inputs: Vec<u8>,
    /// Answers the chunk exactly once (`Cancelled` if dropped unanswered).
    pub(crate) reply: EncodedReply,
}

/// Why workers could not be started.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpawnError {
    #[error("could not create a channel: {0}")]
    Channel(#[source] std::io::Error),
    #[error("could not watch a worker's channel: {0}")]
    Watch(#[source] std::io::Error),
    #[error("the fork server failed: {0}")]
    Server(#[from] ForkServerError),
    #[error("fork failed: {0}")]
    Fork(#[source] std::io::Error),
}

impl SpawnError {
    /// The error of a pool that could not start its first workers.
    pub(crate) fn into_build_error(self) -> BuildError {
        match self {
            Self::Channel(source) => BuildError::Os { action: "create a worker's channels", source },
            Self::Watch(source) => BuildError::Os { action: "watch a worker's channel", source },
            Self::Fork(source) => BuildError::Os { action: "fork a worker", source },
            Self::Server(error) => BuildError::ForkServer(error),
        }
    }

    /// How the jobs of a pool that cannot start workers any more end.
    fn into_exit(self) -> WorkerExit {
        match self {
            Self::Server(error) => WorkerExit::ForkServerGone { reason: error.to_string() },
            other => WorkerExit::SpawnFailed { reason: other.to_string() },
        }
    }
}

/// What the pool's front end and its dispatcher share.
pub(crate) struct Shared {
    /// Set by the dispatcher when it waits with an idle worker and an empty queue: the next
    /// task must wake it.
    idle_waiting: AtomicBool,
    /// Set by `shutdown(CancelQueued)` and `shutdown(Kill)`.
    pub(crate) cancel: AtomicBool,
    /// Set by `shutdown(Kill)`: answer what runs `Killed`, SIGKILL every worker, stop.
    pub(crate) kill: AtomicBool,
    /// Set when the pool stops taking tasks; the queue then only drains.
    pub(crate) closing: AtomicBool,
    /// The live workers' process ids.
    pub(crate) pids: Mutex<Vec<i32>>,
    /// Tasks queued again because their worker died.
    pub(crate) retried: AtomicU64,
    wake: Mutex<IpcSender<()>>,
}

impl Shared {
    /// Wakes the dispatcher if it is waiting for work.
    pub(crate) fn task_queued(&self) {
        if self.idle_waiting.swap(false, Ordering::SeqCst) {
            self.wake();
        }
    }

    /// Wakes the dispatcher whatever it is doing.
    pub(crate) fn wake(&self) {
        if let Ok(wake) = self.wake.lock() {
            let _ = wake.send(());
        }
    }
}

/// A task a worker runs.
struct Running {
    reply: EncodedReply,
    /// What the task sent, kept to send it again if the worker dies (with retries on) or to
    /// send the rest of a streamed chunk again (with a time limit).
    resend: Option<Resend>,
    /// With a time limit: what the chunk streamed so far, and since when its input runs.
    stream: Option<Stream>,
}

/// A task's request, kept for a retry, and the retries it had so far.
struct Resend {
    entry: isize,
    state: Arc<[u8]>,
    inputs: Vec<u8>,
    /// Retries after a death: of the whole chunk, or, when streaming, of its current input.
    retries: u32,
}

/// The progress of a streamed chunk on its worker.
struct Stream {
    finished: Finished,
    /// When the input after the finished ones started (when the request was sent, or when the
    /// result before it came back).
    since: Instant,
}

/// The results of a chunk's first `count` inputs: each one's encoded `Result<O, JobError>`,
/// concatenated. With postcard's varint of the chunk's length in front, they make the encoded
/// `Vec<Result<O, JobError>>` that an [`EncodedReply`] decodes.
#[derive(Default)]
struct Finished {
    count: usize,
    bytes: Vec<u8>,
}

impl Finished {
    fn push(&mut self, encoded: &[u8]) {
        self.bytes.extend_from_slice(encoded);
        self.count += 1;
    }

    /// Answers the chunk: the finished results, and `rest` for each input after them.
    fn answer(mut self, reply: EncodedReply, rest: JobError) {
        let len = reply.len();
        if self.count == 0 {
            reply.send(Err(rest));
            return;
        }
        if self.count < len {
            let error = encode_error(rest);
            while self.count < len {
                self.push(&error);
            }
        }
        reply.send(Ok(self.into_vec()))
    }

    /// The encoded `Vec` of the finished results.
    fn into_vec(self) -> Vec<u8> {
        // A `usize` always encodes.
        let mut bytes = postcard::to_stdvec(&self.count).unwrap_or_default();
        bytes.extend_from_slice(&self.bytes);
        bytes
    }
}

/// How long past its time limit a job that still runs is given before its worker is killed: a
/// tenth of the limit, at most a second. The job sees its deadline at the limit itself
/// ([`fanout_core::deadline::expired`]); one that stops then answers `Expired` from its worker,
/// which lives on, instead of being killed and replaced.
pub(crate) fn kill_grace(limit: Duration) -> Duration {
    (limit / 10).min(Duration::from_secs(1))
}

/// Postcard's encoding of `Err(error)` as a `Result<O, JobError>`: the variant's tag then the
/// error, the same bytes whatever `O` is.
fn encode_error(error: JobError) -> Vec<u8> {
    // A `JobError` always encodes (strings, numbers and durations).
    postcard::to_stdvec(&Err::<(), JobError>(error)).unwrap_or_default()
}

/// Whether `bytes` can be one streamed result: an `Ok` (whose output only its caller can
/// decode) or a whole, well-formed `Err`.
fn is_result(bytes: &[u8]) -> bool {
    match bytes.split_first() {
        Some((0, _)) => true,
        Some((1, error)) => {
            matches!(postcard::take_from_bytes::<JobError>(error), Ok((_, rest)) if rest.is_empty())
        }
        _ => false,
    }
}

/// A chunk to run again ahead of the queue: its worker died, or it streamed part of its inputs
/// before its worker was stopped.
struct Retry {
    reply: EncodedReply,
    resend: Resend,
    /// The inputs that have their results already (none unless streaming): the rest runs.
    finished: Finished,
}

/// Why a worker is gone.
enum Gone {
    /// It died, or broke the protocol (the violation, if so).
    Died(Option<WorkerExit>),
    /// Its input ran past the job time limit, and it was killed for it.
    Expired(Duration),
}

struct Worker {
    pid: i32,
    jobs: IpcSender<WorkerRequest>,
    /// The id of the worker's reply channel in the receiver set.
    replies: u64,
    /// The task it runs, if any.
    running: Option<Running>,
    /// It said it is leaving (task limit reached, or its initializer failed).
    retiring: bool,
    /// Where the permits its jobs ask for go (a rate-limited pool only).
    grants: Option<IpcSender<Grant>>,
}

impl Worker {
    fn is_idle(&self) -> bool {
        self.running.is_none() && !self.retiring
    }
}

/// The pool's ends of a worker's channels, kept while its ends travel to the fork server.
struct Ours {
    jobs: IpcSender<WorkerRequest>,
    replies: IpcReceiver<WorkerReply>,
    grants: Option<IpcSender<Grant>>,
}

pub(crate) struct Dispatcher {
    server: ServerLink,
    settings: WorkerSettings,
    size: usize,
    set: IpcReceiverSet,
    wake_id: u64,
    /// The id in `set` of the fork server's announcements of `SpawnEach` workers.
    forked_id: u64,
    /// Workers asked for with `SpawnEach` and not announced yet, in the order asked.
    pending: VecDeque<Ours>,
    /// Worker slots opened so far (at most `size`): one at build, more as tasks queue
    /// ([`Dispatcher::grow`]). A worker that dies or retires is replaced, so the pool keeps
    /// the workers it started.
    started: usize,
    /// A fork of `SpawnEach` failed: the pool stays at the workers it has.
    grow_failed: bool,
    workers: Vec<Worker>,
    queue: Receiver<Task>,
    queue_closed: bool,
    shared: Arc<Shared>,
    /// Why no worker can be started any more; queued tasks then fail with this.
    broken: Option<WorkerExit>,
    /// How many times a task may run again after its worker died.
    retry_lost: u32,
    /// Tasks whose worker died, to run again before the queue's.
    retries: VecDeque<Retry>,
    /// The job time limit: with one, workers stream their results.
    limit: Option<Duration>,
    /// How long an input may run before its worker is killed: the limit and its grace.
    kill_after: Option<Duration>,
    /// The pool's counts; the dispatcher counts the runs again.
    progress: Arc<ProgressCounters>,
    /// The pool's rate limit and `max_in_flight`.
    gate: Gate,
    /// Serves every permit of the pool (a rate-limited pool only).
    permits: Option<PermitThread>,
    /// A queued task waiting for its permits.
    held: Option<Task>,
    /// Permits taken for `held`.
    held_permits: usize,
    /// Dispatch permits asked of the permit thread and not taken yet.
    permits_asked: usize,
}

impl Dispatcher {
    /// Attaches a session to the program's fork server (starting it if need be) and starts
    /// the first of the pool's `size` workers; [`Dispatcher::grow`] starts the others.
    pub(crate) fn start(
        size: usize,
        settings: WorkerSettings,
        retry_lost: u32,
        queue: Receiver<Task>,
        progress: Arc<ProgressCounters>,
        gate: Gate,
    ) -> Result<(Self, Arc<Shared>), BuildError> {
        let mut server = ServerLink::attach()?;
        let os = |action| move |source| BuildError::Os { action, source };
        let mut set = IpcReceiverSet::new().map_err(os("create a receiver set"))?;
        let (wake, wake_receiver) = ipc::channel::<()>().map_err(os("create a channel"))?;
        let wake_id = set.add(wake_receiver).map_err(os("watch a channel"))?;
        let forked = server.take_forked().ok_or(ForkServerError::OutOfTurn)?;
        let forked_id = set.add(forked).map_err(os("watch a channel"))?;
        let shared = Arc::new(Shared {
            idle_waiting: AtomicBool::new(false),
            cancel: AtomicBool::new(false),
            kill: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            pids: Mutex::new(Vec::new()),
            retried: AtomicU64::new(0),
            wake: Mutex::new(wake),
        });
        let mut dispatcher = Self {
            server,
            settings,
            size,
            set,
            wake_id,
            forked_id,
            pending: VecDeque::new(),
            started: 1,
            grow_failed: false,
            workers: Vec::with_capacity(size),
            queue,
            queue_closed: false,
            shared: Arc::clone(&shared),
            broken: None,
            retry_lost,
            retries: VecDeque::new(),
            limit: settings.job_timeout,
            kill_after: settings.job_timeout.map(|limit| limit + kill_grace(limit)),
            progress,
            permits: None,
            gate,
            held: None,
            held_permits: 0,
            permits_asked: 0,
        };
        if let Some(source) = dispatcher.gate.source() {
            let waker = Arc::clone(&shared);
            let permits = PermitThread::start(source, move || waker.wake())
                .map_err(|source| BuildError::Os { action: "spawn the permit thread", source })?;
            dispatcher.permits = Some(permits);
        }
        // One worker at build, so that a pool that cannot fork fails here; the others start
        // as tasks queue.
        if let Err(error) = dispatcher.spawn_workers(1) {
            dispatcher.stop_workers(false);
            return Err(error.into_build_error());
        }
        Ok((dispatcher, shared))
    }

    /// The fork server's process id.
    pub(crate) fn server_pid(&self) -> u32 {
        self.server.pid()
    }

    /// The dispatcher thread's loop; returns when the queue is closed and every task is done,
    /// or at once when the pool is killed.
    pub(crate) fn run(mut self) {
        loop {
            if self.shared.kill.load(Ordering::SeqCst) {
                self.kill();
                return;
            }
            self.expire_overdue();
            self.dispatch();
            self.grow();
            // Once closing, nothing more is queued: an empty queue stays empty.
            if self.shared.closing.load(Ordering::SeqCst) && self.queue.is_empty() {
                self.queue_closed = true;
            }
            if self.queue_closed
                && self.retries.is_empty()
                && self.held.is_none()
                && self.workers.iter().all(|w| w.running.is_none())
            {
                break;
            }
            if self.workers.is_empty() && self.broken.is_some() {
                // Nothing can run: fail what is queued, then wait for more or for the end.
                self.fail_queued();
            }
            if !self.park() {
                continue;
            }
            match self.select() {
                Ok(events) => {
                    for event in events {
                        self.handle(event);
                    }
                }
                Err(error) => {
                    let exit = WorkerExit::ChannelsFailed { reason: error.to_string() };
                    for worker in &mut self.workers {
                        if let Some(running) = worker.running.take() {
                            let finished = running.stream.map(|stream| stream.finished).unwrap_or_default();
                            finished.answer(running.reply, lost(exit.clone()));
                        }
                    }
                    self.broken = Some(exit);
                    self.fail_queued();
                    if self.queue_closed {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        self.stop_workers(false);
    }

    /// Waits for the workers' replies (or a wake-up), but not past the earliest deadline of a
    /// running input.
    fn select(&mut self) -> Result<Vec<IpcSelectionResult>, std::io::Error> {
        let Some(deadline) = self.next_deadline() else { return self.set.select() };
        // At least a millisecond: the poll below counts in milliseconds, and a shorter wait
        // would spin until the deadline.
        let wait = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        match self.set.try_select_timeout(wait) {
            Ok(events) => Ok(events),
            Err(TrySelectError::Empty) => Ok(Vec::new()),
            Err(TrySelectError::IoError(error)) => Err(error),
        }
    }

    /// When the first running input is due to be killed, if any runs under a time limit.
    fn next_deadline(&self) -> Option<Instant> {
        let limit = self.kill_after?;
        self.workers
            .iter()
            .filter_map(|w| w.running.as_ref()?.stream.as_ref())
            .map(|stream| stream.since + limit)
            .min()
    }

    /// Stops the workers whose input ran past the time limit (and its grace).
    fn expire_overdue(&mut self) {
        let (Some(limit), Some(kill_after)) = (self.limit, self.kill_after) else { return };
        let now = Instant::now();
        let overdue = |w: &Worker| {
            w.running.as_ref().and_then(|r| r.stream.as_ref()).is_some_and(|s| now >= s.since + kill_after)
        };
        while let Some(index) = self.workers.iter().position(overdue) {
            self.worker_gone(index, Gone::Expired(limit));
        }
    }

    /// `Shutdown::Kill`: cancels what is queued, SIGKILLs and reaps every worker, then answers
    /// what they ran: `Killed` for the input that was running, and, when streaming, the
    /// finished inputs' results and `Cancelled` for the inputs not started.
    fn kill(&mut self) {
        // A permit thread waiting out a long `Retry-After` must not hold up a kill.
        if let Some(permits) = self.permits.take() {
            permits.detach();
        }
        drop(self.held.take());
        for retry in self.retries.drain(..) {
            retry.finished.answer(retry.reply, JobError::Cancelled);
        }
        // Dropped tasks answer `Cancelled` through their `Reply`.
        while self.queue.try_recv().is_ok() {}
        let running: Vec<Running> = self.workers.iter_mut().filter_map(|w| w.running.take()).collect();
        self.stop_workers(true);
        for task in running {
            match task.stream {
                Some(Stream { mut finished, .. }) => {
                    if finished.count < task.reply.len() {
                        finished.push(&encode_error(JobError::Killed));
                    }
                    finished.answer(task.reply, JobError::Cancelled);
                }
                None => task.reply.send(Err(JobError::Killed)),
            }
        }
    }

    /// The request that runs `inputs` from the one at `skip` on: a `Stream` under a time limit.
    fn request(&self, entry: isize, state: &[u8], inputs: Vec<u8>, skip: usize) -> WorkerRequest {
        let (key, state) = (self.settings.key, state.to_vec());
        match self.limit {
            Some(_) => WorkerRequest::Stream { key, entry, state, inputs, skip: skip as u64 },
            None => WorkerRequest::Run { key, entry, state, inputs },
        }
    }

    /// Hands tasks to idle workers: those to run again first, then the queue's.
    fn dispatch(&mut self) {
        loop {
            if self.shared.cancel.load(Ordering::SeqCst) {
                // Dropping a task answers `Cancelled` through its `Reply`; a chunk that ran in
                // part keeps its finished results.
                for retry in self.retries.drain(..) {
                    retry.finished.answer(retry.reply, JobError::Cancelled);
                }
                drop(self.held.take());
                while self.queue.try_recv().is_ok() {}
            }
            let Some(index) = self.workers.iter().position(Worker::is_idle) else { return };
            if let Some(retry) = self.retries.pop_front() {
                if !retry.reply.start() {
                    // Nobody waits for it any more: it answers `Cancelled` past what finished.
                    retry.finished.answer(retry.reply, JobError::Cancelled);
                    continue;
                }
                let Retry { reply, resend, finished } = retry;
                let request =
                    self.request(resend.entry, &resend.state, resend.inputs.clone(), finished.count);
                let _ = self.workers[index].jobs.send(request);
                let stream = self.limit.map(|_| Stream { finished, since: Instant::now() });
                self.workers[index].running = Some(Running { reply, resend: Some(resend), stream });
                continue;
            }
            if self.gate.slots().is_some_and(|slots| self.busy() >= slots.max()) {
                return; // `max_in_flight` chunks run: a reply frees a slot
            }
            let next = match self.held.take() {
                Some(task) => Ok(task),
                None => self.queue.try_recv(),
            };
            let next = match next {
                Ok(task) if !self.has_permits_for(&task) => {
                    self.held = Some(task);
                    return; // the permit thread wakes us when a permit is granted
                }
                other => other,
            };
            match next {
                Ok(task) if !task.reply.start() => {} // cancelled: dropped, it answers so
                Ok(task) => {
                    // The request is kept only when it may be sent again: a dead worker's task
                    // with retries on, or the rest of a streamed chunk.
                    let resend = (self.retry_lost > 0 || self.limit.is_some()).then(|| Resend {
                        entry: task.entry,
                        state: Arc::clone(&task.state),
                        inputs: task.inputs.clone(),
                        retries: 0,
                    });
                    let request = self.request(task.entry, &task.state, task.inputs, 0);
                    // A failed send means the worker is dying: its closed channel will report
                    // the task as lost with the worker's exit status.
                    let _ = self.workers[index].jobs.send(request);
                    let stream =
                        self.limit.map(|_| Stream { finished: Finished::default(), since: Instant::now() });
                    self.workers[index].running = Some(Running { reply: task.reply, resend, stream });
                }
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    self.queue_closed = true;
                    return;
                }
            }
        }
    }

    /// How many workers run a chunk.
    fn busy(&self) -> usize {
        self.workers.iter().filter(|w| w.running.is_some()).count()
    }

    /// Takes the per-job permits `task` needs (one per input), as far as they are granted, and
    /// asks the permit thread for the rest; `true` once it has them all.
    fn has_permits_for(&mut self, task: &Task) -> bool {
        let (Some(permits), Some(_)) = (&self.permits, self.gate.per_job()) else { return true };
        let needed = task.reply.len();
        while self.held_permits < needed && permits.take() {
            self.held_permits += 1;
            self.permits_asked = self.permits_asked.saturating_sub(1);
        }
        if self.held_permits >= needed {
            self.held_permits -= needed;
            return true;
        }
        for _ in self.permits_asked..needed - self.held_permits {
            permits.request(PermitRequest::Dispatch);
            self.permits_asked += 1;
        }
        false
    }

    /// Prepares to block; `false` if there is work after all.
    fn park(&mut self) -> bool {
        if self.held.is_some() {
            // Waiting for permits: the permit thread wakes us (so do replies and a shutdown).
            return true;
        }
        // A new task needs us when a worker is idle, or when there are no workers at all (a
        // broken pool fails queued tasks), or when the pool may start a worker for it.
        // Otherwise a busy worker's reply wakes the select.
        let can_take =
            self.workers.iter().any(Worker::is_idle) || (self.workers.is_empty() && self.pending.is_empty());
        let task_needs_us = can_take || self.may_grow();
        if !self.retries.is_empty() && self.workers.iter().any(Worker::is_idle) {
            return false;
        }
        if self.queue_closed || !task_needs_us {
            return true;
        }
        self.shared.idle_waiting.store(true, Ordering::SeqCst);
        // A task queued before the flag was set saw no flag and sent no wake-up: look again.
        // (Tasks that wait for the workers on their way are not new.)
        let new_task = match can_take {
            true => !self.queue.is_empty(),
            false => self.growth() > 0,
        };
        if new_task || self.shared.cancel.load(Ordering::SeqCst) {
            self.shared.idle_waiting.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    fn handle(&mut self, event: IpcSelectionResult) {
        match event {
            IpcSelectionResult::MessageReceived(id, _) if id == self.wake_id => {
                // The queue may have been closed: `dispatch` finds out.
            }
            IpcSelectionResult::MessageReceived(id, message) if id == self.forked_id => {
                self.forked(message.to::<Forked>().ok());
            }
            IpcSelectionResult::ChannelClosed(id) if id == self.forked_id => {
                // The fork server is gone: no announcement will come.
                while !self.pending.is_empty() {
                    self.forked(None);
                }
            }
            IpcSelectionResult::MessageReceived(id, message) => {
                let Some(index) = self.worker_index(id) else { return };
                match message.to::<WorkerReply>() {
                    Ok(WorkerReply::Done { outcome, last }) => {
                        if last {
                            // Its replacement starts now, before the caller hears of the result.
                            self.workers[index].retiring = true;
                            self.forget_pid(self.workers[index].pid);
                            self.replenish();
                        }
                        self.task_done(index, outcome);
                    }
                    Ok(WorkerReply::InitFailed { message }) => {
                        self.workers[index].retiring = true;
                        self.broken = Some(WorkerExit::InitializerPanicked { message });
                    }
                    Ok(WorkerReply::Result { bytes }) => self.input_done(index, &bytes),
                    Ok(WorkerReply::Acquire) => {
                        if let (Some(permits), Some(grant)) = (&self.permits, &self.workers[index].grants) {
                            permits.request(PermitRequest::Worker(grant.clone()));
                        }
                    }
                    Ok(WorkerReply::Pause { nanos }) => {
                        if let Some(source) = self.gate.source() {
                            source.pause(Duration::from_nanos(nanos));
                        }
                    }
                    Ok(WorkerReply::Streamed { outcome, last }) => {
                        if last {
                            self.workers[index].retiring = true;
                            self.forget_pid(self.workers[index].pid);
                            self.replenish();
                        }
                        self.stream_done(index, outcome);
                    }
                    // Only `stop_workers` asks for a release; dropping the spare lets it exit.
                    Ok(WorkerReply::Released) => self.violation(index, Violation::UnrequestedAnswer),
                    Err(error) => {
                        // A worker that breaks the protocol cannot be trusted with more work.
                        let message = error.to_string();
                        self.violation(index, Violation::MalformedMessage { message });
                    }
                }
            }
            IpcSelectionResult::ChannelClosed(id) => {
                if let Some(index) = self.worker_index(id) {
                    self.worker_gone(index, Gone::Died(None));
                }
            }
        }
    }

    fn worker_index(&self, replies: u64) -> Option<usize> {
        self.workers.iter().position(|w| w.replies == replies)
    }

    fn task_done(&mut self, index: usize, outcome: Outcome) {
        let worker = &mut self.workers[index];
        match worker.running.take() {
            Some(Running { reply, stream: None, .. }) => {
                reply.send(outcome.and_then(|bytes| self.check_size(bytes)));
            }
            // A whole answer to a streamed chunk, or an answer to nothing.
            running => {
                worker.running = running;
                self.violation(index, Violation::UnrequestedAnswer);
            }
        }
    }

    /// One streamed input's result: kept, and the clock starts for the next input.
    fn input_done(&mut self, index: usize, bytes: &[u8]) {
        let limit = self.settings.max_message_bytes;
        let violation = match self.workers[index].running.as_mut() {
            Some(Running { reply, resend, stream: Some(stream) }) => {
                let Stream { finished, since } = stream;
                if finished.count >= reply.len() {
                    Some(Violation::WrongResultCount { expected: reply.len(), got: finished.count + 1 })
                } else if !is_result(bytes) {
                    let message = "a streamed result that is not an encoded `Result`".to_owned();
                    Some(Violation::MalformedMessage { message })
                } else {
                    match check_message_size(PayloadPart::Message, Direction::Decode, bytes.len(), limit) {
                        Ok(()) => finished.push(bytes),
                        Err(error) => finished.push(&encode_error(error)),
                    }
                    *since = Instant::now();
                    if let Some(resend) = resend {
                        // When streaming, retries after a death count per input: this one is
                        // done, the next starts with none.
                        resend.retries = 0;
                    }
                    None
                }
            }
            _ => Some(Violation::UnrequestedAnswer),
        };
        if let Some(violation) = violation {
            self.violation(index, violation);
        }
    }

    /// The end of a streamed chunk: every input answered, or the chunk failed with the
    /// outcome's error before the inputs that did not answer.
    fn stream_done(&mut self, index: usize, outcome: Result<(), JobError>) {
        let worker = &mut self.workers[index];
        let Some((expected, got)) =
            worker.running.as_ref().and_then(|r| Some((r.reply.len(), r.stream.as_ref()?.finished.count)))
        else {
            self.violation(index, Violation::UnrequestedAnswer);
            return;
        };
        match outcome {
            Ok(()) if got < expected => self.violation(index, Violation::WrongResultCount { expected, got }),
            outcome => {
                if let Some(Running { reply, stream: Some(stream), .. }) = worker.running.take() {
                    stream.finished.answer(reply, outcome.err().unwrap_or(JobError::Cancelled));
                }
            }
        }
    }

    /// Kills a worker that broke the protocol.
    fn violation(&mut self, index: usize, violation: Violation) {
        self.worker_gone(index, Gone::Died(Some(WorkerExit::ProtocolViolation(violation))));
    }

    fn check_size(&self, bytes: Vec<u8>) -> Outcome {
        let limit = self.settings.max_message_bytes;
        check_message_size(PayloadPart::Message, Direction::Decode, bytes.len(), limit).map(|()| bytes)
    }

    /// Reaps a worker whose channel closed (or that must go), starts a replacement, and
    /// reports the worker's task as lost (by then the pool is whole again) or queues it to run
    /// again. A streamed chunk keeps its finished results: the input that ran is lost, expired
    /// or retried, and the inputs after it run again.
    fn worker_gone(&mut self, index: usize, gone: Gone) {
        let worker = self.workers.swap_remove(index);
        self.forget_pid(worker.pid);
        let exit = self
            .reap(vec![worker.pid])
            .pop()
            .unwrap_or_else(|| WorkerExit::ForkServerGone { reason: ForkServerError::OutOfTurn.to_string() });
        // A broken pool has no worker to run anything again on; a cancelled one runs nothing more.
        let may_rerun = self.broken.is_none() && !self.shared.cancel.load(Ordering::SeqCst);
        let (reason, expired) = match gone {
            Gone::Died(reason) => (reason, None),
            Gone::Expired(limit) => (None, Some(limit)),
        };
        // What the task's caller hears once the pool is whole again, unless it runs again.
        let answer = match worker.running {
            Some(Running { reply, resend: Some(mut resend), stream: Some(Stream { mut finished, .. }) }) => {
                let len = reply.len();
                if finished.count < len && expired.is_none() && resend.retries < self.retry_lost && may_rerun
                {
                    // The input that ran goes again, with the ones after it.
                    resend.retries += 1;
                    self.shared.retried.fetch_add(1, Ordering::Relaxed);
                    self.progress.retried(len - finished.count);
                    self.retries.push_back(Retry { reply, resend, finished });
                    None
                } else {
                    if finished.count < len {
                        let error = match expired {
                            Some(limit) => JobError::Expired { limit },
                            None => {
                                lost(reason.clone().or_else(|| self.broken.clone()).unwrap_or(exit.clone()))
                            }
                        };
                        finished.push(&encode_error(error));
                    }
                    if finished.count < len && may_rerun {
                        // The inputs after it never started: they run on another worker, the
                        // next one with its own retries.
                        resend.retries = 0;
                        self.progress.retried(len - finished.count);
                        self.retries.push_back(Retry { reply, resend, finished });
                        None
                    } else {
                        Some((reply, finished))
                    }
                }
            }
            Some(Running { reply, resend: Some(mut resend), stream: None })
                if resend.retries < self.retry_lost && may_rerun =>
            {
                resend.retries += 1;
                self.shared.retried.fetch_add(1, Ordering::Relaxed);
                self.progress.retried(reply.len());
                self.retries.push_back(Retry { reply, resend, finished: Finished::default() });
                None
            }
            Some(running) => Some((running.reply, running.stream.map(|s| s.finished).unwrap_or_default())),
            None => None,
        };
        self.replenish();
        if let Some((reply, finished)) = answer {
            // A worker whose initializer failed exits without running its task: say why. The
            // inputs of a streamed chunk past the one that ran are cancelled (the pool stops).
            let rest = match (finished.count, expired) {
                (0, Some(limit)) => JobError::Expired { limit },
                (0, None) => lost(reason.or_else(|| self.broken.clone()).unwrap_or(exit)),
                _ if self.broken.is_some() => lost(self.broken.clone().unwrap_or(exit)),
                _ => JobError::Cancelled,
            };
            finished.answer(reply, rest);
        }
    }

    /// Starts workers until the pool has its size again, unless it is broken, or closing with
    /// no task left to run again.
    fn replenish(&mut self) {
        let active = self.workers.iter().filter(|w| !w.retiring).count() + self.pending.len();
        if self.broken.is_none()
            && (!self.queue_closed || !self.retries.is_empty())
            && active < self.started
            && let Err(error) = self.spawn_workers(self.started - active)
        {
            self.broken = Some(error.into_exit());
        }
    }

    /// The most workers the pool runs: its size, or fewer if fewer chunks may run at once.
    fn most_workers(&self) -> usize {
        self.gate.slots().map_or(self.size, |slots| slots.max().min(self.size))
    }

    /// Whether the pool may start more workers.
    fn may_grow(&self) -> bool {
        self.broken.is_none() && !self.grow_failed && self.started < self.most_workers()
    }

    /// How many workers to start now: one per task that waits with no idle worker, and no
    /// worker on its way, to take it.
    fn growth(&self) -> usize {
        if !self.may_grow() {
            return 0;
        }
        let waiting = self.queue.len() + self.retries.len() + usize::from(self.held.is_some());
        let idle = self.workers.iter().filter(|w| w.is_idle()).count();
        waiting.saturating_sub(idle + self.pending.len()).min(self.most_workers() - self.started)
    }

    /// Starts workers for the tasks that wait with no idle worker (and none on its way) to
    /// take them, up to the pool's size: [`ServerRequest::SpawnEach`], so that the first
    /// workers run tasks while the fork server forks the others.
    fn grow(&mut self) {
        if self.shared.cancel.load(Ordering::Relaxed) {
            return;
        }
        let count = self.growth();
        if count == 0 {
            return;
        }
        let limited = self.permits.is_some();
        let max_batch = if limited { MAX_DESCRIPTORS / 3 } else { MAX_SPAWN_BATCH };
        let mut left = count;
        while left > 0 {
            let batch = left.min(max_batch);
            let mut theirs = Vec::with_capacity(batch);
            let mut ours = Vec::with_capacity(batch);
            for _ in 0..batch {
                match channels(limited) {
                    Ok((mine, ends)) => {
                        ours.push(mine);
                        theirs.push(ends);
                    }
                    Err(_) => break,
                }
            }
            if theirs.is_empty() {
                self.grow_failed = true;
                return;
            }
            let asked = theirs.len();
            if self
                .server
                .send(ServerRequest::SpawnEach { workers: theirs, settings: self.settings })
                .is_err()
            {
                self.grow_failed = true;
                return;
            }
            self.pending.extend(ours);
            self.started += asked;
            left -= batch;
        }
    }

    /// The fork server announced the next `SpawnEach` worker (`None`: it could not).
    fn forked(&mut self, announced: Option<Forked>) {
        let Some(ours) = self.pending.pop_front() else { return };
        match announced {
            Some(Forked(Ok(pid))) => match self.set.add(ours.replies) {
                Ok(replies) => {
                    let Ours { jobs, grants, .. } = ours;
                    self.workers.push(Worker { pid, jobs, replies, running: None, retiring: false, grants });
                    if let Ok(mut live) = self.shared.pids.lock() {
                        live.push(pid);
                    }
                }
                Err(_) => {
                    // Unwatched, it cannot be used: reap it now (its channels are closed).
                    self.started -= 1;
                    self.grow_failed = true;
                    self.reap(vec![pid]);
                }
            },
            _ => {
                // A failed fork (out of processes, or memory): stay at the workers we have.
                self.started -= 1;
                self.grow_failed = true;
                if self.workers.is_empty() && self.pending.is_empty() && self.broken.is_none() {
                    let reason = "the fork server could not fork a worker".to_owned();
                    self.broken = Some(WorkerExit::SpawnFailed { reason });
                }
            }
        }
    }

    fn forget_pid(&self, pid: i32) {
        if let Ok(mut pids) = self.shared.pids.lock() {
            pids.retain(|&other| other != pid);
        }
    }

    /// Forks `count` workers, in as few requests to the fork server as ipc-channel allows.
    fn spawn_workers(&mut self, count: usize) -> Result<(), SpawnError> {
        let mut left = count;
        let limited = self.permits.is_some();
        // A rate-limited pool's workers bring a third descriptor, for their grants.
        let max_batch = if limited { MAX_DESCRIPTORS / 3 } else { MAX_SPAWN_BATCH };
        while left > 0 {
            let batch = left.min(max_batch);
            left -= batch;
            let mut ours = Vec::with_capacity(batch);
            let mut theirs = Vec::with_capacity(batch);
            for _ in 0..batch {
                let (mine, ends) = channels(limited)?;
                ours.push(mine);
                theirs.push(ends);
            }
            // The workers' ends travel to the fork server inside the request and are closed
            // here once sent, so that each worker alone holds its own.
            let pids =
                match self.server.call(ServerRequest::Spawn { workers: theirs, settings: self.settings })? {
                    ServerReply::Spawned { pids } if pids.len() == batch => pids,
                    _ => return Err(ForkServerError::OutOfTurn.into()),
                };
            for (Ours { jobs, replies, grants }, pid) in ours.into_iter().zip(pids) {
                let pid = pid.map_err(|errno| SpawnError::Fork(std::io::Error::from_raw_os_error(errno)))?;
                let replies = self.set.add(replies).map_err(SpawnError::Watch)?;
                self.workers.push(Worker { pid, jobs, replies, running: None, retiring: false, grants });
                if let Ok(mut live) = self.shared.pids.lock() {
                    live.push(pid);
                }
            }
        }
        Ok(())
    }

    /// Kills (if needed) and reaps workers through the fork server; how each ended, in order.
    fn reap(&self, pids: Vec<i32>) -> Vec<WorkerExit> {
        let count = pids.len();
        match self.server.call(ServerRequest::Reap { pids }) {
            Ok(ServerReply::Reaped { exits }) if exits.len() == count => exits,
            Ok(_) => {
                vec![WorkerExit::ForkServerGone { reason: ForkServerError::OutOfTurn.to_string() }; count]
            }
            Err(error) => vec![WorkerExit::ForkServerGone { reason: error.to_string() }; count],
        }
    }

    fn fail_queued(&mut self) {
        let exit = self
            .broken
            .clone()
            .unwrap_or_else(|| WorkerExit::SpawnFailed { reason: "the pool has no workers".to_owned() });
        for retry in self.retries.drain(..) {
            retry.finished.answer(retry.reply, lost(exit.clone()));
        }
        if let Some(task) = self.held.take() {
            task.reply.send(Err(lost(exit.clone())));
        }
        loop {
            match self.queue.try_recv() {
                Ok(task) => task.reply.send(Err(lost(exit.clone()))),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    self.queue_closed = true;
                    return;
                }
            }
        }
    }

    /// Lets every worker go, reaps those that exit, and ends the pool's session with the fork
    /// server (the last pool's stops the server). Workers go by exiting (their job channels
    /// close) or, in a pool that reuses them, as spares of the fork server: an idle worker
    /// asked to [`Release`](WorkerRequest::Release) answers `Released`, and the server keeps
    /// it ([`ServerRequest::Keep`]). Workers still on their way (`SpawnEach`)
    /// are waited for first, so that they go too. `kill` skips the wait for the workers to
    /// go: the fork server SIGKILLs them at once.
    fn stop_workers(&mut self, kill: bool) {
        let mut open: Vec<u64> = Vec::with_capacity(self.workers.len() + self.pending.len());
        // Who is asked to stay as a spare, by the id of its replies, and its pid.
        let mut releasing: Vec<(u64, i32)> = Vec::new();
        let mut pids = Vec::with_capacity(open.capacity());
        let release = self.settings.reuse && !kill && self.broken.is_none();
        let key = self.settings.key;
        let let_go = |workers: &mut Vec<Worker>,
                      open: &mut Vec<u64>,
                      releasing: &mut Vec<(u64, i32)>,
                      pids: &mut Vec<i32>| {
            for worker in workers.drain(..) {
                open.push(worker.replies);
                let idle = worker.is_idle();
                // Dropping `worker.jobs` closes the worker's queue: it leaves its loop and exits.
                if release && idle && worker.jobs.send(WorkerRequest::Release { key }).is_ok() {
                    releasing.push((worker.replies, worker.pid));
                } else {
                    pids.push(worker.pid);
                }
                drop(worker.running);
            }
        };
        let_go(&mut self.workers, &mut open, &mut releasing, &mut pids);
        let mut spares = Vec::new();
        // Give them a moment to go on their own (flushing what they printed).
        let deadline = Instant::now() + if kill { Duration::ZERO } else { Duration::from_secs(1) };
        let settle_by = Instant::now() + Duration::from_secs(10);
        while (!self.pending.is_empty() && Instant::now() < settle_by)
            || (!open.is_empty() && Instant::now() < deadline)
        {
            match self.set.try_select_timeout(Duration::from_millis(50)) {
                Ok(events) => {
                    for event in events {
                        match event {
                            IpcSelectionResult::MessageReceived(id, message) if id == self.forked_id => {
                                self.forked(message.to::<Forked>().ok());
                            }
                            IpcSelectionResult::ChannelClosed(id) if id == self.forked_id => {
                                while !self.pending.is_empty() {
                                    self.forked(None);
                                }
                            }
                            IpcSelectionResult::ChannelClosed(id) => open.retain(|&other| other != id),
                            IpcSelectionResult::MessageReceived(id, message) => {
                                let Some(at) = releasing.iter().position(|&(replies, _)| replies == id)
                                else {
                                    continue;
                                };
                                let (_, pid) = releasing.swap_remove(at);
                                match message.to::<WorkerReply>() {
                                    Ok(WorkerReply::Released) => spares.push(pid),
                                    // Anything else (a job's late `Pause`, say): it exits instead.
                                    _ => pids.push(pid),
                                }
                            }
                        }
                    }
                    let_go(&mut self.workers, &mut open, &mut releasing, &mut pids);
                }
                Err(_) => continue,
            }
        }
        // Those asked that did not answer are killed with the others.
        pids.extend(releasing.into_iter().map(|(_, pid)| pid));
        // The spares first: a `Reap` of the others would otherwise leave them to the session's
        // end, which kills what the session still owns.
        if !spares.is_empty() {
            let _ = self.server.send(ServerRequest::Keep { pids: spares });
        }
        // Kills the ones that did not go on their own, then reaps them all.
        if !pids.is_empty() {
            self.reap(pids);
        }
        if let Ok(mut pids) = self.shared.pids.lock() {
            pids.clear();
        }
    }
}

fn lost(exit: WorkerExit) -> JobError {
    JobError::WorkerLost { exit }
}

/// A new worker's channels: the pool's ends, and the worker's, to send to the fork server. A
/// rate-limited pool's workers get a third channel, for their grants.
fn channels(limited: bool) -> Result<(Ours, WorkerEnds), SpawnError> {
    let (jobs, jobs_receiver) = ipc::channel::<WorkerRequest>().map_err(SpawnError::Channel)?;
    let (replies_sender, replies) = ipc::channel::<WorkerReply>().map_err(SpawnError::Channel)?;
    let (grants, grants_receiver) = match limited {
        true => ipc::channel::<Grant>().map(|(s, r)| (Some(s), Some(r))).map_err(SpawnError::Channel)?,
        false => (None, None),
    };
    let ends = WorkerEnds { jobs: jobs_receiver, replies: replies_sender, grants: grants_receiver };
    Ok((Ours { jobs, replies, grants }, ends))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use fanout_core::deadline;
    use fanout_core::plumbing::entry_point_streaming;

    use super::*;

    #[test]
    fn an_error_encodes_the_same_whatever_the_output_type() {
        for error in [
            JobError::Expired { limit: Duration::from_millis(300) },
            JobError::Killed,
            JobError::Cancelled,
            JobError::Panicked { message: "boom".to_owned() },
            lost(WorkerExit::Signaled { signal: 9, name: "SIGKILL".to_owned() }),
        ] {
            let ours = encode_error(error.clone());
            assert_eq!(ours, postcard::to_stdvec(&Err::<u64, JobError>(error.clone())).unwrap());
            assert_eq!(ours, postcard::to_stdvec(&Err::<String, JobError>(error.clone())).unwrap());
            assert_eq!(
                ours,
                postcard::to_stdvec(&Err::<Vec<(u8, String)>, JobError>(error.clone())).unwrap()
            );
            assert!(is_result(&ours));
            let decoded: Result<Vec<u8>, JobError> = postcard::from_bytes(&ours).unwrap();
            assert_eq!(decoded, Err(error));
        }
    }

    #[test]
    fn streamed_results_concatenated_are_the_encoding_of_the_chunks_vec() {
        let results: Vec<Result<String, JobError>> = (0..300)
            .map(|i| match i % 7 {
                3 => Err(JobError::Expired { limit: Duration::from_secs(i) }),
                5 => Err(JobError::Panicked { message: format!("input {i}") }),
                _ => Ok(format!("output {i}")),
            })
            .collect();
        let mut finished = Finished::default();
        for result in &results {
            let bytes = postcard::to_stdvec(result).unwrap();
            assert!(is_result(&bytes));
            finished.push(&bytes);
        }
        assert_eq!(finished.into_vec(), postcard::to_stdvec(&results).unwrap());
    }

    #[test]
    fn what_is_not_an_encoded_result_is_refused() {
        assert!(!is_result(&[]));
        assert!(!is_result(&[2, 0]));
        assert!(!is_result(&[0xff, 0xff]));
        // An `Err` whose error is cut short, or followed by stray bytes.
        let error = encode_error(JobError::Panicked { message: "a message".to_owned() });
        assert!(!is_result(&error[..error.len() - 1]));
        let mut longer = error.clone();
        longer.push(0);
        assert!(!is_result(&longer));
    }

    fn job(x: u64) -> (u64, bool) {
        assert!(x != 4, "four");
        (x * 10, deadline::time_left().is_some())
    }

    /// The streaming entry point of a job, named by its (zero-sized) value.
    fn entry_of<J: fanout_core::Job<u64, Output = (u64, bool)>>(
        _job: J,
    ) -> fanout_core::plumbing::StreamingEntry {
        entry_point_streaming::<J, u64>()
    }

    fn stream(skip: usize, limit: Option<Duration>) -> Vec<Result<(u64, bool), JobError>> {
        let entry = entry_of(job);
        let inputs = postcard::to_stdvec(&(0..6_u64).collect::<Vec<_>>()).unwrap();
        let mut emitted = Vec::new();
        entry(&[], &inputs, skip, limit, &mut |bytes| {
            emitted.push(postcard::from_bytes(&bytes).unwrap());
            true
        })
        .unwrap();
        emitted
    }

    #[test]
    fn the_streaming_entry_point_skips_runs_each_input_under_its_deadline_and_catches_panics() {
        let results = stream(2, Some(Duration::from_secs(60)));
        assert_eq!(results.len(), 4);
        assert_eq!(results[0], Ok((20, true)));
        assert_eq!(results[1], Ok((30, true)));
        assert!(matches!(&results[2], Err(JobError::Panicked { message }) if message == "four"));
        assert_eq!(results[3], Ok((50, true)));
        // Without a limit there is no deadline, and nothing is skipped.
        let results = stream(0, None);
        assert_eq!(results.len(), 6);
        assert_eq!(results[0], Ok((0, false)));
        // The deadline does not outlive the chunk.
        assert_eq!(deadline::time_left(), None);
    }

    #[test]
    fn the_streaming_entry_point_stops_when_nobody_listens() {
        let entry = entry_of(job);
        let inputs = postcard::to_stdvec(&[1_u64, 2, 3]).unwrap();
        let mut calls = 0;
        entry(&[], &inputs, 0, None, &mut |_| {
            calls += 1;
            false
        })
        .unwrap();
        assert_eq!(calls, 1);
        // Bytes that are not a `Vec<u64>` fail the chunk before anything runs.
        assert!(matches!(entry(&[], &[0xff], 0, None, &mut |_| true), Err(JobError::Serialization { .. })));
    }
}
