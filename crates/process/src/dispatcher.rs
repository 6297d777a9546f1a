//! The pool's dispatcher thread: owns the workers, hands queued tasks to idle ones, collects
//! their replies, and replaces the ones that die.
//!
//! Only idle workers get a task (one chunk in flight per worker), because ipc-channel's
//! channels are unbounded: the backlog stays in the pool's bounded queue, where shutdown can
//! cancel it. A worker's death shows as its reply channel closing; the fork server then reaps
//! it and says how it ended, and its task is reported as [`JobError::WorkerLost`], or, with
//! retries on, queued again ahead of the pool's queue with its attempt counted.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, TryRecvError};
use fanout_core::plumbing::{EncodedReply, Outcome, check_message_size};
use fanout_core::{BuildError, Direction, ForkServerError, JobError, PayloadPart, Violation, WorkerExit};
use ipc_channel::ipc::{self, IpcReceiverSet, IpcSelectionResult, IpcSender};

use crate::protocol::{
    MAX_SPAWN_BATCH, ServerReply, ServerRequest, WorkerEnds, WorkerReply, WorkerRequest, WorkerSettings,
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
    /// Set by `shutdown(CancelQueued)`.
    pub(crate) cancel: AtomicBool,
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
    /// What the task sent, kept to send it again if the worker dies (only with retries on).
    resend: Option<Resend>,
}

/// A task's request, kept for a retry, and the retries it had so far.
struct Resend {
    entry: isize,
    state: Arc<[u8]>,
    inputs: Vec<u8>,
    retries: u32,
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
}

impl Worker {
    fn is_idle(&self) -> bool {
        self.running.is_none() && !self.retiring
    }
}

pub(crate) struct Dispatcher {
    server: ServerLink,
    settings: WorkerSettings,
    size: usize,
    set: IpcReceiverSet,
    wake_id: u64,
    workers: Vec<Worker>,
    queue: Receiver<Task>,
    queue_closed: bool,
    shared: Arc<Shared>,
    /// Why no worker can be started any more; queued tasks then fail with this.
    broken: Option<WorkerExit>,
    /// How many times a task may run again after its worker died.
    retry_lost: u32,
    /// Tasks whose worker died, to run again before the queue's.
    retries: VecDeque<(EncodedReply, Resend)>,
}

impl Dispatcher {
    /// Starts the fork server and `size` workers.
    pub(crate) fn start(
        size: usize,
        settings: WorkerSettings,
        retry_lost: u32,
        queue: Receiver<Task>,
    ) -> Result<(Self, Arc<Shared>), BuildError> {
        let server = ServerLink::start()?;
        let os = |action| move |source| BuildError::Os { action, source };
        let mut set = IpcReceiverSet::new().map_err(os("create a receiver set"))?;
        let (wake, wake_receiver) = ipc::channel::<()>().map_err(os("create a channel"))?;
        let wake_id = set.add(wake_receiver).map_err(os("watch a channel"))?;
        let shared = Arc::new(Shared {
            idle_waiting: AtomicBool::new(false),
            cancel: AtomicBool::new(false),
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
            workers: Vec::with_capacity(size),
            queue,
            queue_closed: false,
            shared: Arc::clone(&shared),
            broken: None,
            retry_lost,
            retries: VecDeque::new(),
        };
        if let Err(error) = dispatcher.spawn_workers(size) {
            dispatcher.stop_workers();
            return Err(error.into_build_error());
        }
        Ok((dispatcher, shared))
    }

    /// The fork server's process id.
    pub(crate) fn server_pid(&self) -> u32 {
        self.server.pid()
    }

    /// The dispatcher thread's loop; returns when the queue is closed and every task is done.
    pub(crate) fn run(mut self) {
        loop {
            self.dispatch();
            // Once closing, nothing more is queued: an empty queue stays empty.
            if self.shared.closing.load(Ordering::SeqCst) && self.queue.is_empty() {
                self.queue_closed = true;
            }
            if self.queue_closed
                && self.retries.is_empty()
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
            match self.set.select() {
                Ok(events) => {
                    for event in events {
                        self.handle(event);
                    }
                }
                Err(error) => {
                    let exit = WorkerExit::ChannelsFailed { reason: error.to_string() };
                    for worker in &mut self.workers {
                        if let Some(running) = worker.running.take() {
                            running.reply.send(Err(lost(exit.clone())));
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
        self.stop_workers();
    }

    /// Hands tasks to idle workers: those to run again first, then the queue's.
    fn dispatch(&mut self) {
        loop {
            if self.shared.cancel.load(Ordering::SeqCst) {
                // Dropping a task answers `Cancelled` through its `Reply`.
                self.retries.clear();
                while self.queue.try_recv().is_ok() {}
            }
            let Some(worker) = self.workers.iter_mut().find(|w| w.is_idle()) else { return };
            if let Some((reply, resend)) = self.retries.pop_front() {
                if !reply.start() {
                    continue; // nobody waits for it any more: dropped, it answers `Cancelled`
                }
                let request = WorkerRequest::Run {
                    key: self.settings.key,
                    entry: resend.entry,
                    state: resend.state.to_vec(),
                    inputs: resend.inputs.clone(),
                };
                let _ = worker.jobs.send(request);
                worker.running = Some(Running { reply, resend: Some(resend) });
                continue;
            }
            match self.queue.try_recv() {
                Ok(task) if !task.reply.start() => {} // cancelled: dropped, it answers so
                Ok(task) => {
                    // The request is kept only when a dead worker's task may run again.
                    let resend = (self.retry_lost > 0).then(|| Resend {
                        entry: task.entry,
                        state: Arc::clone(&task.state),
                        inputs: task.inputs.clone(),
                        retries: 0,
                    });
                    let request = WorkerRequest::Run {
                        key: self.settings.key,
                        entry: task.entry,
                        state: task.state.to_vec(),
                        inputs: task.inputs,
                    };
                    // A failed send means the worker is dying: its closed channel will report
                    // the task as lost with the worker's exit status.
                    let _ = worker.jobs.send(request);
                    worker.running = Some(Running { reply: task.reply, resend });
                }
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    self.queue_closed = true;
                    return;
                }
            }
        }
    }

    /// Prepares to block; `false` if there is work after all.
    fn park(&mut self) -> bool {
        // A new task needs us when a worker is idle, or when there are no workers at all (a
        // broken pool fails queued tasks). Otherwise a busy worker's reply wakes the select.
        let task_needs_us = self.workers.is_empty() || self.workers.iter().any(Worker::is_idle);
        if !self.retries.is_empty() && self.workers.iter().any(Worker::is_idle) {
            return false;
        }
        if self.queue_closed || !task_needs_us {
            return true;
        }
        self.shared.idle_waiting.store(true, Ordering::SeqCst);
        // A task queued before the flag was set saw no flag and sent no wake-up: look again.
        if !self.queue.is_empty() || self.shared.cancel.load(Ordering::SeqCst) {
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
                    Err(error) => {
                        // A worker that breaks the protocol cannot be trusted with more work.
                        let violation = Violation::MalformedMessage { message: error.to_string() };
                        self.worker_gone(index, Some(WorkerExit::ProtocolViolation(violation)));
                    }
                }
            }
            IpcSelectionResult::ChannelClosed(id) => {
                if let Some(index) = self.worker_index(id) {
                    self.worker_gone(index, None);
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
            Some(running) => running.reply.send(outcome.and_then(|bytes| self.check_size(bytes))),
            None => {
                let violation = WorkerExit::ProtocolViolation(Violation::UnrequestedAnswer);
                self.worker_gone(index, Some(violation));
            }
        }
    }

    fn check_size(&self, bytes: Vec<u8>) -> Outcome {
        let limit = self.settings.max_message_bytes;
        check_message_size(PayloadPart::Message, Direction::Decode, bytes.len(), limit).map(|()| bytes)
    }

    /// Reaps a worker whose channel closed (or that must go), starts a replacement, and
    /// reports the worker's task as lost (by then the pool is whole again) or queues it to run
    /// again.
    fn worker_gone(&mut self, index: usize, reason: Option<WorkerExit>) {
        let worker = self.workers.swap_remove(index);
        self.forget_pid(worker.pid);
        let exit = self
            .reap(vec![worker.pid])
            .pop()
            .unwrap_or_else(|| WorkerExit::ForkServerGone { reason: ForkServerError::OutOfTurn.to_string() });
        let lost_task = match worker.running {
            Some(Running { reply, resend: Some(mut resend) })
                // A broken pool has no worker to retry on; a cancelled one runs nothing more.
                if resend.retries < self.retry_lost
                    && self.broken.is_none()
                    && !self.shared.cancel.load(Ordering::SeqCst) =>
            {
                resend.retries += 1;
                self.shared.retried.fetch_add(1, Ordering::Relaxed);
                self.retries.push_back((reply, resend));
                None
            }
            Some(running) => Some(running.reply),
            None => None,
        };
        self.replenish();
        if let Some(reply) = lost_task {
            // A worker whose initializer failed exits without running its task: say why.
            reply.send(Err(lost(reason.or_else(|| self.broken.clone()).unwrap_or(exit))));
        }
    }

    /// Starts workers until the pool has its size again, unless it is broken, or closing with
    /// no task left to run again.
    fn replenish(&mut self) {
        let active = self.workers.iter().filter(|w| !w.retiring).count();
        if self.broken.is_none()
            && (!self.queue_closed || !self.retries.is_empty())
            && active < self.size
            && let Err(error) = self.spawn_workers(self.size - active)
        {
            self.broken = Some(error.into_exit());
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
        while left > 0 {
            let batch = left.min(MAX_SPAWN_BATCH);
            left -= batch;
            let mut ours = Vec::with_capacity(batch);
            let mut theirs = Vec::with_capacity(batch);
            for _ in 0..batch {
                let (jobs, jobs_receiver) = ipc::channel::<WorkerRequest>().map_err(SpawnError::Channel)?;
                let (replies_sender, replies) = ipc::channel::<WorkerReply>().map_err(SpawnError::Channel)?;
                ours.push((jobs, replies));
                theirs.push(WorkerEnds { jobs: jobs_receiver, replies: replies_sender });
            }
            // The workers' ends travel to the fork server inside the request and are closed
            // here once sent, so that each worker alone holds its own.
            let pids =
                match self.server.call(ServerRequest::Spawn { workers: theirs, settings: self.settings })? {
                    ServerReply::Spawned { pids } if pids.len() == batch => pids,
                    _ => return Err(ForkServerError::OutOfTurn.into()),
                };
            for ((jobs, replies), pid) in ours.into_iter().zip(pids) {
                let pid = pid.map_err(|errno| SpawnError::Fork(std::io::Error::from_raw_os_error(errno)))?;
                let replies = self.set.add(replies).map_err(SpawnError::Watch)?;
                self.workers.push(Worker { pid, jobs, replies, running: None, retiring: false });
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
        for (reply, _) in self.retries.drain(..) {
            reply.send(Err(lost(exit.clone())));
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

    /// Lets every worker exit (their job channels close), reaps them all, then the server.
    fn stop_workers(&mut self) {
        let workers = std::mem::take(&mut self.workers);
        let mut open: Vec<u64> = Vec::with_capacity(workers.len());
        let mut pids = Vec::with_capacity(workers.len());
        for worker in workers {
            open.push(worker.replies);
            pids.push(worker.pid);
            // Dropping `worker.jobs` closes the worker's queue: it leaves its loop and exits.
            drop(worker.running);
        }
        // Give them a moment to exit on their own (flushing what they printed).
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while !open.is_empty() && std::time::Instant::now() < deadline {
            match self.set.try_select_timeout(Duration::from_millis(50)) {
                Ok(events) => {
                    for event in events {
                        if let IpcSelectionResult::ChannelClosed(id) = event {
                            open.retain(|&other| other != id);
                        }
                    }
                }
                Err(_) => continue,
            }
        }
        // Kills the ones that did not go on their own, then reaps them all.
        self.reap(pids);
        if let Ok(mut pids) = self.shared.pids.lock() {
            pids.clear();
        }
    }
}

fn lost(exit: WorkerExit) -> JobError {
    JobError::WorkerLost { exit }
}
