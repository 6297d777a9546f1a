//! [`BlockingQueue`]: the trait's blocking jobs on tokio's blocking pool, at most `workers` at
//! once (asyncio's `run_in_executor`), without a hop through the event loop.
//!
//! Callers push chunks onto one queue; at most `workers` *drainers* run on the runtime's
//! blocking pool, each taking chunks until the queue is empty. A push starts a drainer when
//! fewer than `workers` run. A chunk therefore costs a queue operation and, when the pool is
//! busy, no wake-up at all: the drainer that finishes a chunk finds the next one queued, as the
//! threads of a thread pool do. The first version spawned one blocking task per job behind a
//! semaphore on the event loop: three cross-thread wake-ups a job (see `benches/overhead.rs`
//! for both against tokio's own `spawn_blocking`).
//!
//! One mutex guards the queue and the count of drainers together, so that "the queue holds a
//! chunk" implies "a drainer runs or is being started", and a drainer that finds the queue
//! empty leaves in the same critical section: no chunk is stranded, and no hand-rolled atomic
//! protocol needs a model. An idle drainer waits [`IDLE`] for more work before it leaves: with
//! many workers on few cores the queue runs dry between two refills of the caller, and a
//! drainer that left at once had to be started again through the blocking pool a moment later.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use tokio::runtime::Handle;

use crate::launch::{Shared, Tracker};

/// A chunk of blocking jobs, with its reply inside; its flag says whether the executor's queue
/// was cancelled (the task then drops its reply, which answers `Cancelled`).
pub(crate) type Task = Box<dyn FnOnce(bool) + Send>;

/// How long an idle drainer waits for another task before it leaves.
const IDLE: Duration = Duration::from_millis(20);

#[derive(Default)]
struct State {
    tasks: VecDeque<Task>,
    drainers: usize,
    /// Drainers waiting for a task.
    idle: usize,
    /// The executor is stopping: idle drainers leave at once.
    closed: bool,
}

/// The queue of the trait's blocking jobs of one executor.
pub(crate) struct BlockingQueue {
    state: Mutex<State>,
    more: Condvar,
    workers: usize,
}

impl BlockingQueue {
    pub(crate) fn new(workers: usize) -> Self {
        Self { state: Mutex::new(State::default()), more: Condvar::new(), workers }
    }

    /// Lets idle drainers leave at once (the executor is stopping); queued tasks still run.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.more.notify_all();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Tasks run outside the lock, so a poisoned lock still holds a consistent queue.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a task, and starts a drainer on `runtime`'s blocking pool when fewer than
    /// `workers` run. `tracker` keeps the executor's shutdown waiting for the drainer.
    pub(crate) fn push(
        self: &Arc<Self>,
        task: Task,
        runtime: &Handle,
        shared: &Arc<Shared>,
        tracker: &Tracker,
    ) {
        let start = {
            let mut state = self.lock();
            state.tasks.push_back(task);
            if state.idle > 0 {
                self.more.notify_one();
            }
            // An idle drainer takes the task; otherwise one more starts, up to `workers`.
            let start = state.idle == 0 && state.drainers < self.workers;
            state.drainers += usize::from(start);
            start
        };
        if start {
            let (queue, shared, tracker) = (Arc::clone(self), Arc::clone(shared), tracker.clone());
            // A runtime that is shutting down drops the closure unrun; the executor's own
            // drop of the queue then drops the tasks, whose replies answer `Cancelled`.
            drop(runtime.spawn_blocking(move || queue.drain(&shared, tracker)));
        }
    }

    /// A drainer's life: run tasks until the queue stays empty for [`IDLE`], then leave.
    fn drain(&self, shared: &Shared, tracker: Tracker) {
        loop {
            let task = {
                let mut state = self.lock();
                let mut waited = false;
                loop {
                    if let Some(task) = state.tasks.pop_front() {
                        break Some(task);
                    }
                    if waited || state.closed {
                        state.drainers -= 1;
                        break None;
                    }
                    state.idle += 1;
                    let (next, _) =
                        self.more.wait_timeout(state, IDLE).unwrap_or_else(PoisonError::into_inner);
                    state = next;
                    state.idle -= 1;
                    waited = true;
                }
            };
            match task {
                Some(task) => task(shared.is_cancelled()),
                None => break,
            }
        }
        drop(tracker);
    }
}
