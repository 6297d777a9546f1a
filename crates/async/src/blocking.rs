//! [`BlockingQueue`]: the trait's blocking jobs on tokio's blocking pool, at most `workers` at
//! once (asyncio's `run_in_executor`), without a hop through the event loop; their time limit
//! and what `Shutdown::Kill` does to them.
//!
//! Callers push chunks onto one queue; at most `workers` *drainers* run on the runtime's
//! blocking pool, each taking chunks until the queue is empty. A push starts a drainer when
//! fewer than `workers` run. A chunk therefore costs a queue operation and, when the pool is
//! busy, no wake-up at all: the drainer that finishes a chunk finds the next one queued, as the
//! threads of a thread pool do. The first version spawned one blocking task per job behind a
//! semaphore on the event loop: three cross-thread wake-ups a job (see `benches/overhead.rs`
//! for both against tokio's own `spawn_blocking`).
//!
//! One mutex guards the queue, the drainers' slots and their count together, so that "the
//! queue holds a chunk" implies "a drainer runs or is being started", and a drainer that finds
//! the queue empty leaves in the same critical section: no chunk is stranded, and no
//! hand-rolled atomic protocol needs a model. An idle drainer waits [`IDLE`] for more work
//! before it leaves: with many workers on few cores the queue runs dry between two refills of
//! the caller, and a drainer that left at once had to be started again through the blocking
//! pool a moment later.
//!
//! **Stuck jobs.** A thread cannot be killed, so a job that runs past its time limit, or runs
//! when the executor is killed, is *abandoned* with its thread, as a thread pool does: its
//! [`Task`]'s reply is *claimed* (answered [`JobError::Expired`] or [`JobError::Killed`] at
//! once), its drainer's slot is freed so that a fresh drainer can take its place (the
//! `workers` limit counts live drainers only), and its stop flag is set, so that the job sees
//! [`deadline::expired`](fanout_core::deadline::expired) turn true. The thread runs the job
//! until it returns, finds its reply gone, drops the late result and leaves without taking more
//! work. Each reply sits in its task behind a mutex, so the drainer and whoever claims it (the
//! supervisor, or the kill) cannot both answer it. The slot holds the drainer's [`Tracker`],
//! so an abandoned thread no longer holds up the executor's shutdown.
//!
//! **The supervisor** ([`BlockingQueue::supervise`], a thread of its own, started only with a
//! time limit) sleeps until the earliest deadline of the running jobs. Every job has the same
//! limit, so a job that starts never has an earlier deadline than those already running: the
//! supervisor is woken only when it sleeps with no deadline at all.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use fanout_core::plumbing::{Batch, DeadlineGuard, Reply, StopGuard, run_chunk};
use fanout_core::{Job, JobError};
use tokio::runtime::Handle;

use crate::launch::{Shared, Tracker};

/// How long an idle drainer waits for another task before it leaves.
const IDLE: Duration = Duration::from_millis(20);

/// Locks `mutex`. Jobs run outside every lock of this module and nothing panics inside one, so
/// a poisoned lock still holds consistent data.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A chunk of blocking jobs with its reply, shared by the drainer that runs it and whoever may
/// claim its reply first (the supervisor at its deadline, or `Shutdown::Kill`).
pub(crate) trait Task: Send + Sync {
    /// Runs the chunk on this thread (unless `cancelled`, or its reply refuses to start) and
    /// answers its reply: with [`JobError::Expired`] if it returned past `limit`'s deadline.
    /// Returns `true` when the reply was claimed before the run could answer it: the drainer
    /// running it was abandoned.
    fn run(&self, cancelled: bool, limit: Option<Limit>) -> bool;

    /// Answers the reply with `error` (or `Cancelled`, if the chunk had not started) unless
    /// the run answered it already; `true` if this call answered it.
    fn claim(&self, error: JobError) -> bool;
}

/// A running task's time limit and the deadline it sets.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limit {
    limit: Duration,
    deadline: Instant,
}

/// The [`Task`] of a chunk of inputs of one job: `P` is one input ([`One`], what the trait's
/// chunks hold) or several (a `Vec`).
struct Chunk<J, P, O> {
    job: Arc<J>,
    parts: Mutex<Parts<P, O>>,
}

struct Parts<P, O> {
    inputs: Option<P>,
    reply: Option<Reply<O>>,
}

/// The inputs of a chunk, run by the job `J`.
trait Inputs<J>: Send + 'static {
    type Output;

    /// Runs the job on every input, each panic caught as that input's result.
    fn run(self, job: &J) -> Batch<Result<Self::Output, JobError>>;
}

/// The one input of a chunk. Stored alone rather than as a [`Batch`], it keeps the task of a
/// small input within 120 bytes, the allocator's fast size classes (glibc's fastbins): the task
/// is allocated by the caller and freed by a drainer thread, and a larger one made every job
/// take the allocator's slow path.
struct One<I>(I);

impl<J: Job<I>, I: Send + 'static> Inputs<J> for One<I> {
    type Output = J::Output;

    #[inline]
    fn run(self, job: &J) -> Batch<Result<J::Output, JobError>> {
        run_chunk(Batch::One(self.0), |input| job.call(input))
    }
}

impl<J: Job<I>, I: Send + 'static> Inputs<J> for Vec<I> {
    type Output = J::Output;

    fn run(self, job: &J) -> Batch<Result<J::Output, JobError>> {
        run_chunk(Batch::Many(self), |input| job.call(input))
    }
}

/// A task that runs `job` over `inputs` and answers `reply`.
pub(crate) fn task<J, I>(job: Arc<J>, inputs: Batch<I>, reply: Reply<J::Output>) -> Arc<dyn Task>
where
    J: Job<I>,
    I: Send + 'static,
    J::Output: Send + 'static,
{
    fn new<J, P: Inputs<J>>(job: Arc<J>, inputs: P, reply: Reply<P::Output>) -> Arc<dyn Task>
    where
        J: Send + Sync + 'static,
        P::Output: Send + 'static,
    {
        Arc::new(Chunk { job, parts: Mutex::new(Parts { inputs: Some(inputs), reply: Some(reply) }) })
    }
    match inputs {
        Batch::One(input) => new(job, One(input), reply),
        Batch::Many(inputs) => new(job, inputs, reply),
    }
}

impl<J, P> Task for Chunk<J, P, P::Output>
where
    J: Send + Sync + 'static,
    P: Inputs<J>,
    P::Output: Send + 'static,
{
    fn run(&self, cancelled: bool, limit: Option<Limit>) -> bool {
        let inputs = {
            let mut parts = lock(&self.parts);
            let Some(reply) = &parts.reply else { return true };
            if cancelled || !reply.start() {
                // Dropped outside the lock: it answers `Cancelled`.
                let reply = parts.reply.take();
                drop(parts);
                drop(reply);
                return false;
            }
            parts.inputs.take()
        };
        let Some(inputs) = inputs else { return false };
        let results = inputs.run(&self.job);
        let reply = lock(&self.parts).reply.take();
        match (reply, limit) {
            // Claimed while it ran: the late results are dropped here.
            (None, _) => true,
            // It stopped itself after its deadline (`deadline::expired`), before the
            // supervisor came: it expired all the same, whoever noticed first.
            (Some(reply), Some(Limit { limit, deadline })) if Instant::now() >= deadline => {
                drop(results);
                reply.fail(JobError::Expired { limit });
                false
            }
            (Some(reply), _) => {
                reply.send(results);
                false
            }
        }
    }

    fn claim(&self, error: JobError) -> bool {
        let reply = lock(&self.parts).reply.take();
        match reply {
            Some(reply) if reply.is_started() => reply.fail(error),
            Some(reply) => drop(reply),
            None => return false,
        }
        true
    }
}

/// A live drainer's place in the queue's state.
struct Slot {
    /// Keeps the executor's shutdown waiting for this drainer; released with the slot.
    tracker: Tracker,
    /// The drainer's stop flag (its thread's [`StopGuard`]): set when it is abandoned.
    stop: Arc<AtomicBool>,
    /// The task it runs, if any.
    running: Option<Running>,
}

struct Running {
    task: Arc<dyn Task>,
    /// When the task's time limit runs out; `None` without a limit, or once the supervisor
    /// has seen the task answered.
    deadline: Option<Instant>,
}

/// A drainer about to be started: its slot and its stop flag.
struct Start {
    slot: usize,
    stop: Arc<AtomicBool>,
}

#[derive(Default)]
struct State {
    tasks: VecDeque<Arc<dyn Task>>,
    /// Live drainers: started or being started, not abandoned. At most `workers`.
    drainers: usize,
    /// Drainers waiting for a task.
    idle: usize,
    /// The executor is stopping: idle drainers leave at once.
    closed: bool,
    /// One per live drainer, by slot index; `None` for a free index (listed in `free`).
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    /// The supervisor waits without a deadline: wake it when a job starts.
    supervisor_waiting: bool,
    /// The supervisor must leave.
    supervisor_exit: bool,
}

impl State {
    /// Takes a slot for a drainer about to start.
    fn occupy(&mut self, tracker: Tracker) -> Start {
        let stop = Arc::new(AtomicBool::new(false));
        let slot = Slot { tracker, stop: Arc::clone(&stop), running: None };
        let index = match self.free.pop() {
            Some(index) => {
                self.slots[index] = Some(slot);
                index
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        };
        self.drainers += 1;
        Start { slot: index, stop }
    }

    /// Slot `index`, if it is still the drainer's whose flag is `stop`.
    fn mine(&mut self, index: usize, stop: &Arc<AtomicBool>) -> Option<&mut Slot> {
        self.slots.get_mut(index)?.as_mut().filter(|slot| Arc::ptr_eq(&slot.stop, stop))
    }

    /// Frees slot `index` if it is still the drainer's whose flag is `stop`.
    fn release(&mut self, index: usize, stop: &Arc<AtomicBool>) -> Option<Slot> {
        self.mine(index, stop)?;
        self.drainers -= 1;
        self.free.push(index);
        self.slots[index].take()
    }

    /// Gives up on the drainer in slot `index`, whose task's reply was just claimed: frees its
    /// slot and sets its stop flag. Returns its tracker.
    fn abandon(&mut self, index: usize, shared: &Shared) -> Option<Tracker> {
        let slot = self.slots.get_mut(index)?.take()?;
        self.drainers -= 1;
        self.free.push(index);
        slot.stop.store(true, Ordering::Relaxed);
        shared.abandoned_one();
        Some(slot.tracker)
    }

    /// Claims the reply of the task in slot `index`, if one runs there and its reply is still
    /// unanswered, and abandons its drainer; returns the drainer's tracker.
    fn claim(&mut self, index: usize, error: JobError, shared: &Shared) -> Option<Tracker> {
        let running = self.slots.get(index)?.as_ref()?.running.as_ref()?;
        if running.task.claim(error) { self.abandon(index, shared) } else { None }
    }

    /// A drainer to start in the place of an abandoned one whose tracker this is, if queued
    /// tasks would otherwise wait; otherwise the tracker is dropped. A closed queue too: a
    /// `Finish` shutdown still runs what is queued (a kill has emptied the queue).
    fn replace(&mut self, tracker: Tracker, workers: usize) -> Option<Start> {
        let needed = self.idle == 0 && self.drainers < workers && !self.tasks.is_empty();
        needed.then(|| self.occupy(tracker))
    }
}

/// The queue of the trait's blocking jobs of one executor.
pub(crate) struct BlockingQueue {
    state: Mutex<State>,
    /// Idle drainers wait here for a task.
    more: Condvar,
    /// The supervisor waits here for the next deadline.
    deadlines: Condvar,
    workers: usize,
    runtime: Handle,
    shared: Arc<Shared>,
}

impl BlockingQueue {
    pub(crate) fn new(workers: usize, runtime: Handle, shared: Arc<Shared>) -> Self {
        Self {
            state: Mutex::new(State::default()),
            more: Condvar::new(),
            deadlines: Condvar::new(),
            workers,
            runtime,
            shared,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Lets idle drainers leave at once (the executor is stopping); queued tasks still run.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.more.notify_all();
    }

    /// `Shutdown::Kill`: drops every queued task (each answers `Cancelled`), answers the
    /// running ones [`JobError::Killed`] and abandons their drainers, and stops the supervisor.
    pub(crate) fn kill(&self) {
        let (queued, trackers) = {
            let mut state = self.lock();
            state.closed = true;
            state.supervisor_exit = true;
            let queued = std::mem::take(&mut state.tasks);
            let trackers: Vec<Tracker> = (0..state.slots.len())
                .filter_map(|index| state.claim(index, JobError::Killed, &self.shared))
                .collect();
            (queued, trackers)
        };
        self.more.notify_all();
        self.deadlines.notify_all();
        drop(queued);
        drop(trackers);
    }

    /// Tells the supervisor to leave.
    pub(crate) fn stop_supervisor(&self) {
        self.lock().supervisor_exit = true;
        self.deadlines.notify_all();
    }

    /// Queues a task, and starts a drainer on the runtime's blocking pool when fewer than
    /// `workers` run. `tracker` keeps the executor's shutdown waiting for the drainer.
    pub(crate) fn push(self: &Arc<Self>, task: Arc<dyn Task>, tracker: &Tracker) {
        let start = {
            let mut state = self.lock();
            state.tasks.push_back(task);
            if state.idle > 0 {
                // An idle drainer takes the task.
                self.more.notify_one();
                None
            } else if state.drainers < self.workers {
                Some(state.occupy(tracker.clone()))
            } else {
                None
            }
        };
        if let Some(start) = start {
            self.start(start);
        }
    }

    /// Starts a drainer in its slot, on the runtime's blocking pool.
    fn start(self: &Arc<Self>, start: Start) {
        let lease = Lease { queue: Arc::clone(self), slot: start.slot, stop: start.stop, released: false };
        // A runtime that is shutting down drops the closure unrun: the lease frees the slot.
        drop(self.runtime.spawn_blocking(move || {
            let mut lease = lease;
            lease.queue.drain(lease.slot, &lease.stop);
            lease.released = true;
        }));
    }

    /// A drainer's life: run tasks until the queue stays empty for [`IDLE`], then leave; or
    /// until it is abandoned, then leave as soon as its task returns. Either way its slot is
    /// freed when this returns (by itself, or by whoever abandoned it).
    fn drain(&self, slot: usize, stop: &Arc<AtomicBool>) {
        let _stop = StopGuard::install(Arc::clone(stop));
        let limit = self.shared.job_timeout;
        loop {
            let (task, deadline, finished) = {
                let mut state = self.lock();
                // The task just run, answered, leaves the slot (and is dropped outside the
                // lock) when the next one takes its place, or before the drainer waits. The
                // slot is still ours: it is freed by someone else only while our task's reply
                // is unanswered.
                let mut finished = None;
                let mut waited = false;
                let next = loop {
                    if let Some(task) = state.tasks.pop_front() {
                        break Some(task);
                    }
                    if finished.is_none() {
                        finished = state.mine(slot, stop).and_then(|mine| mine.running.take());
                    }
                    if waited || state.closed {
                        break None;
                    }
                    state.idle += 1;
                    let (next, _) =
                        self.more.wait_timeout(state, IDLE).unwrap_or_else(PoisonError::into_inner);
                    state = next;
                    state.idle -= 1;
                    waited = true;
                };
                let Some(task) = next else {
                    let mine = state.release(slot, stop);
                    drop(state);
                    drop((mine, finished));
                    return;
                };
                let deadline = limit.and_then(|limit| {
                    Instant::now().checked_add(limit).map(|deadline| Limit { limit, deadline })
                });
                if deadline.is_some() && state.supervisor_waiting {
                    self.deadlines.notify_one();
                }
                let running =
                    Running { task: Arc::clone(&task), deadline: deadline.map(|limit| limit.deadline) };
                let replaced = state.mine(slot, stop).and_then(|mine| mine.running.replace(running));
                (task, deadline, finished.or(replaced))
            };
            drop(finished);
            let cancelled = self.shared.is_cancelled();
            let abandoned = match deadline {
                None => task.run(cancelled, None),
                Some(limit) => {
                    let _deadline = DeadlineGuard::start(Some(limit.limit));
                    task.run(cancelled, Some(limit))
                }
            };
            if abandoned {
                return;
            }
        }
    }

    /// The supervisor's life (only with a time limit): sleeps until the earliest deadline of
    /// the running tasks, claims the replies of those past it ([`JobError::Expired`]),
    /// abandons their drainers and starts fresh ones in their place when tasks are queued.
    pub(crate) fn supervise(self: &Arc<Self>, limit: Duration) {
        let mut state = self.lock();
        loop {
            if state.supervisor_exit {
                return;
            }
            let now = Instant::now();
            let mut next: Option<Instant> = None;
            let mut starts = Vec::new();
            for index in 0..state.slots.len() {
                let Some(running) = state.slots[index].as_mut().and_then(|slot| slot.running.as_mut()) else {
                    continue;
                };
                let Some(deadline) = running.deadline else { continue };
                if deadline > now {
                    next = Some(next.map_or(deadline, |next| next.min(deadline)));
                    continue;
                }
                // Looked at once: if it was answered already, the drainer only has to clear
                // its slot.
                running.deadline = None;
                if let Some(tracker) = state.claim(index, JobError::Expired { limit }, &self.shared)
                    && let Some(start) = state.replace(tracker, self.workers)
                {
                    starts.push(start);
                }
            }
            if !starts.is_empty() {
                // Drainers start outside the lock.
                drop(state);
                for start in starts {
                    self.start(start);
                }
                state = self.lock();
                continue;
            }
            state = match next {
                None => {
                    state.supervisor_waiting = true;
                    let mut state = self.deadlines.wait(state).unwrap_or_else(PoisonError::into_inner);
                    state.supervisor_waiting = false;
                    state
                }
                Some(deadline) => {
                    let timeout = deadline.saturating_duration_since(now);
                    self.deadlines.wait_timeout(state, timeout).unwrap_or_else(PoisonError::into_inner).0
                }
            };
        }
    }
}

/// A drainer's hold on its slot: frees it if the drainer never ran (its closure was dropped
/// by a runtime shutting down) or unwound.
struct Lease {
    queue: Arc<BlockingQueue>,
    slot: usize,
    stop: Arc<AtomicBool>,
    released: bool,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.released {
            let mine = self.queue.lock().release(self.slot, &self.stop);
            drop(mine);
        }
    }
}
