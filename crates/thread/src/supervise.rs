//! Job time limits and [`Shutdown::Kill`](fanout_core::Shutdown::Kill) on a thread pool: a
//! *supervised* chunk, which either its worker or the pool completes, and the [`Watch`] of the
//! inputs running right now, read by the pool's watchdog thread.
//!
//! A thread cannot be killed, so a job is stopped by being *given up on*: the supervisor
//! claims the input that is running (its result is [`JobError::Expired`] or
//! [`JobError::Killed`]), answers the chunk's inputs that are done, and abandons the thread,
//! which runs the job to its end, finds its input claimed, drops the result and exits. A fresh
//! thread continues the chunk's other inputs, so the pool keeps its capacity.
//!
//! Who wins is decided under the chunk's mutex: the worker records its result only while its
//! input is still the chunk's running one, and a claim succeeds only while it is. The watch's
//! mutex is only ever taken inside the chunk's, or alone, never the other way round, so the
//! two cannot deadlock.
//!
//! Supervision costs two short critical sections per input, so the pool uses it only where it
//! is needed: every job of a pool with a time limit, and submitted jobs (whose handles a
//! `Kill` must answer); a `map` without a limit stays on the unsupervised fast path.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use fanout_core::JobError;
use fanout_core::plumbing::{Batch, BatchIter, DeadlineGuard, Reply, catch_panic};

use crate::pool::{Shared, Task, current_worker_flag};

/// Why a running input is claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// It ran past the pool's job time limit.
    Expired,
    /// The pool was killed.
    Killed,
}

/// A chunk the pool can supervise, whatever its input and output types.
pub(crate) trait RunSupervised: Send + Sync {
    /// Runs the chunk's next inputs on the calling worker until the chunk is done or the
    /// worker is given up on.
    fn run(self: Arc<Self>, shared: &Arc<Shared>, cancelled: bool);

    /// Claims the input registered as `id`, if it is still running: gives up on its thread
    /// (`flag`, [`Shared::give_up`]), then answers the input with `claim`'s error, and returns
    /// `Some` with the task that continues the chunk's other inputs (none for a `Kill`, which
    /// cancels them, or when nothing is left). `None`: the input had finished.
    fn claim(
        self: Arc<Self>,
        id: u64,
        claim: Claim,
        shared: &Shared,
        flag: &Arc<AtomicBool>,
    ) -> Option<Option<Task>>;
}

/// One chunk of inputs under supervision.
pub(crate) struct Supervised<I, O, C> {
    run: Arc<C>,
    limit: Option<Duration>,
    state: Mutex<ChunkState<I, O>>,
}

struct ChunkState<I, O> {
    /// The inputs that have not started.
    inputs: BatchIter<I>,
    /// The results so far, in input order.
    results: Vec<Result<O, JobError>>,
    /// `None` once the chunk is answered.
    reply: Option<Reply<O>>,
    /// Whether the reply said yes to `start`.
    started: bool,
    /// The watch id of the input running now.
    running: Option<u64>,
}

impl<I, O> ChunkState<I, O> {
    /// Answers the chunk: its results, and `Cancelled` for the inputs that never ran.
    fn finish(&mut self) {
        if let Some(reply) = self.reply.take() {
            let mut results = std::mem::take(&mut self.results);
            results.extend(self.inputs.by_ref().map(|_| Err(JobError::Cancelled)));
            reply.send(Batch::from_vec(results));
        }
    }
}

impl<I, O> Drop for ChunkState<I, O> {
    /// A chunk dropped unanswered (no thread could be started to continue it) keeps the
    /// results it has; only the inputs that never ran report `Cancelled`.
    fn drop(&mut self) {
        self.finish();
    }
}

impl<I, O, C> Supervised<I, O, C> {
    pub(crate) fn new(run: Arc<C>, limit: Option<Duration>, chunk: Batch<I>, reply: Reply<O>) -> Self {
        let results = Vec::with_capacity(chunk.len());
        let state = ChunkState {
            inputs: chunk.into_iter(),
            results,
            reply: Some(reply),
            started: false,
            running: None,
        };
        Self { run, limit, state: Mutex::new(state) }
    }

    fn lock(&self) -> MutexGuard<'_, ChunkState<I, O>> {
        // Jobs run outside the lock; nothing that holds it panics.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<I, O, C> RunSupervised for Supervised<I, O, C>
where
    I: Send + 'static,
    O: Send + 'static,
    C: Fn(I) -> O + Send + Sync + 'static,
{
    fn run(self: Arc<Self>, shared: &Arc<Shared>, cancelled: bool) {
        let flag = current_worker_flag();
        loop {
            let mut state = self.lock();
            let Some(reply) = &state.reply else { return };
            if !state.started {
                let may_start = !cancelled && reply.start();
                if !may_start {
                    // Nothing ran: the reply, dropped, answers `Cancelled` for every input.
                    drop(state.reply.take());
                    return;
                }
                state.started = true;
            }
            let input = match state.inputs.next() {
                Some(input) if !cancelled => input,
                // Done, or a cancelled pool: the inputs left report `Cancelled`.
                other => {
                    drop(other);
                    state.finish();
                    return;
                }
            };
            drop(state);
            // The rate limit and `max_in_flight` first: the job's clock starts after them.
            let _pass = (!shared.gate.is_open()).then(|| shared.gate.enter());
            let mut state = self.lock();
            if shared.is_cancelled() {
                // The pool was shut down while this input waited: it never runs.
                state.results.push(Err(JobError::Cancelled));
                state.finish();
                return;
            }
            let id = shared.watch.register(self.limit, &flag, Arc::clone(&self) as Arc<dyn RunSupervised>);
            state.running = Some(id);
            drop(state);
            let started = Instant::now();
            let result = {
                let _deadline = DeadlineGuard::start(self.limit);
                catch_panic(|| (self.run)(input))
            };
            // A job that returns past its limit (one that polled `deadline::expired` and gave
            // up) is expired too, as on every executor, even if the watchdog had not noticed.
            let result = match self.limit {
                Some(limit) if started.elapsed() >= limit => Err(JobError::Expired { limit }),
                _ => result,
            };
            let mut state = self.lock();
            if state.running != Some(id) {
                // Claimed while it ran: this thread was given up on, the result is not wanted.
                return;
            }
            state.running = None;
            shared.watch.unregister(id);
            state.results.push(result);
        }
    }

    fn claim(
        self: Arc<Self>,
        id: u64,
        claim: Claim,
        shared: &Shared,
        flag: &Arc<AtomicBool>,
    ) -> Option<Option<Task>> {
        let mut state = self.lock();
        if state.running != Some(id) {
            return None;
        }
        state.running = None;
        // Counted before the error is delivered (lock order: a chunk's lock, then the pool's
        // threads lock; nothing holds the threads lock while it takes a chunk's).
        shared.give_up(flag);
        state.results.push(Err(match (claim, self.limit) {
            (Claim::Expired, Some(limit)) => JobError::Expired { limit },
            _ => JobError::Killed,
        }));
        if claim == Claim::Expired && state.inputs.len() > 0 {
            drop(state);
            return Some(Some(Task::Supervised(self)));
        }
        state.finish();
        Some(None)
    }
}

/// The inputs of supervised chunks running right now, each with its deadline and the stop
/// flag of the thread that runs it.
pub(crate) struct Watch {
    state: Mutex<WatchState>,
    /// Wakes the watchdog: a first input registered, or the pool stops.
    wake: Condvar,
}

#[derive(Default)]
struct WatchState {
    next_id: u64,
    running: HashMap<u64, Entry>,
    /// The watchdog waits with nothing to watch: the next registration must wake it. (With
    /// one limit per pool, a later registration never has an earlier deadline than those the
    /// watchdog already waits for.)
    idle: bool,
    stopping: bool,
}

/// One running input.
pub(crate) struct Entry {
    deadline: Option<Instant>,
    /// The stop flag of the thread that runs it.
    pub(crate) flag: Arc<AtomicBool>,
    pub(crate) chunk: Arc<dyn RunSupervised>,
}

impl Watch {
    pub(crate) fn new() -> Self {
        Self { state: Mutex::new(WatchState::default()), wake: Condvar::new() }
    }

    fn lock(&self) -> MutexGuard<'_, WatchState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn register(
        &self,
        limit: Option<Duration>,
        flag: &Arc<AtomicBool>,
        chunk: Arc<dyn RunSupervised>,
    ) -> u64 {
        let deadline = limit.and_then(|limit| Instant::now().checked_add(limit));
        let mut state = self.lock();
        let id = state.next_id;
        state.next_id += 1;
        state.running.insert(id, Entry { deadline, flag: Arc::clone(flag), chunk });
        if state.idle && deadline.is_some() {
            state.idle = false;
            self.wake.notify_one();
        }
        id
    }

    fn unregister(&self, id: u64) {
        self.lock().running.remove(&id);
    }

    /// Takes every running input out of the watch (for a `Kill`).
    pub(crate) fn drain(&self) -> Vec<(u64, Entry)> {
        self.lock().running.drain().collect()
    }

    /// Ends the watchdog's loop.
    pub(crate) fn stop(&self) {
        self.lock().stopping = true;
        self.wake.notify_all();
    }

    /// The watchdog's loop: sleeps until the earliest deadline, then claims what expired and
    /// has the pool give up on those threads. Returns once [`stop`](Self::stop) is called.
    pub(crate) fn watchdog(&self, shared: &Arc<Shared>) {
        let mut state = self.lock();
        loop {
            if state.stopping {
                return;
            }
            let now = Instant::now();
            let expired: Vec<u64> = state
                .running
                .iter()
                .filter(|(_, entry)| entry.deadline.is_some_and(|deadline| deadline <= now))
                .map(|(&id, _)| id)
                .collect();
            if !expired.is_empty() {
                let entries: Vec<(u64, Entry)> =
                    expired.into_iter().filter_map(|id| state.running.remove(&id).map(|e| (id, e))).collect();
                drop(state);
                for (id, entry) in entries {
                    if let Some(continuation) =
                        Arc::clone(&entry.chunk).claim(id, Claim::Expired, shared, &entry.flag)
                    {
                        shared.replace_abandoned(continuation);
                    }
                }
                state = self.lock();
                continue;
            }
            let next = state.running.values().filter_map(|entry| entry.deadline).min();
            state = match next {
                Some(deadline) => {
                    self.wake.wait_timeout(state, deadline - now).unwrap_or_else(PoisonError::into_inner).0
                }
                None => {
                    state.idle = true;
                    let mut state = self.wake.wait(state).unwrap_or_else(PoisonError::into_inner);
                    state.idle = false;
                    state
                }
            };
        }
    }
}
