//! [`map_in_place`]: the ordered `map` of an input whose length is known, with every result
//! written by its worker straight into its final slot of the output.
//!
//! No result travels through a channel and none is copied: a worker runs a chunk, writes its
//! results where they belong, and counts the chunk done. The caller only feeds chunks, waits
//! when a window of them is in flight, and sets the output's length once all are done. This is
//! the caller's cost that matters with tiny jobs (see `benches/overhead.rs`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::{self, Thread};

use fanout_core::{JobError, catch_panic};

use crate::ThreadPool;
use crate::batches::{Batch, Batches, window_chunks};

/// Jobs in flight at least. Deeper than the streaming window: results take no memory in
/// flight here (their slots exist already), and the queue must outlast the caller's wake-up
/// after it parked on a full window, or the workers run dry and park too.
const IN_PLACE_JOBS_IN_FLIGHT: usize = 16384;

/// The start of the output's buffer, shared with the tasks that fill it.
struct Slots<O>(*mut Result<O, JobError>);

// SAFETY: the pointer is only used to move `Result<O, JobError>` values into disjoint slots,
// one task per slot range, so sharing it is sharing those values across threads: sound
// exactly when `O: Send` (`JobError` is `Send`).
unsafe impl<O: Send> Send for Slots<O> {}
// SAFETY: as above; no slot is ever read through a shared `Slots`.
unsafe impl<O: Send> Sync for Slots<O> {}

/// Counts finished chunks and wakes the caller when the count it waits for is reached.
struct Progress {
    done: AtomicUsize,
    /// The count the caller is parked for; `usize::MAX` when it is not waiting.
    wake_at: AtomicUsize,
    caller: Thread,
}

impl Progress {
    fn finish_one(&self) {
        // `SeqCst` on both sides: either the caller sees this count before it parks, or this
        // sees its `wake_at` and unparks it.
        let done = self.done.fetch_add(1, Ordering::SeqCst) + 1;
        if done >= self.wake_at.load(Ordering::SeqCst) {
            self.caller.unpark();
        }
    }

    /// Blocks the caller until `target` chunks are done.
    fn wait_for(&self, target: usize) {
        while self.done.load(Ordering::SeqCst) < target {
            self.wake_at.store(target, Ordering::SeqCst);
            if self.done.load(Ordering::SeqCst) >= target {
                break;
            }
            thread::park();
        }
        self.wake_at.store(usize::MAX, Ordering::SeqCst);
    }
}

/// Waits for every submitted task when dropped, also while unwinding: the tasks write into
/// the caller's output and borrow its job, which must outlive them.
struct TasksGuard<'a> {
    progress: &'a Progress,
    submitted: usize,
}

impl Drop for TasksGuard<'_> {
    fn drop(&mut self) {
        self.progress.wait_for(self.submitted);
    }
}

/// Runs `f` over the first `len` inputs with results written in place, then any inputs past
/// `len` (an iterator whose size hint was wrong) the general way. Results are in input order.
///
/// The caller must not be one of `pool`'s own workers: it parks while it waits, and a worker
/// that parked could leave the pool without the worker its tasks need.
pub(crate) fn map_in_place<I, O, F, It>(
    pool: &ThreadPool,
    f: F,
    mut inputs: It,
    len: usize,
) -> Vec<Result<O, JobError>>
where
    I: Send,
    O: Send,
    F: Fn(I) -> O + Send + Sync,
    It: Iterator<Item = I>,
{
    let chunk_size = pool.chunk_size();
    let window = window_chunks(pool, IN_PLACE_JOBS_IN_FLIGHT);
    let mut out: Vec<Result<O, JobError>> = Vec::with_capacity(len);
    let slots = Slots(out.as_mut_ptr());
    let progress = Progress {
        done: AtomicUsize::new(0),
        wake_at: AtomicUsize::new(usize::MAX),
        caller: thread::current(),
    };
    let (f, slots, progress_ref) = (&f, &slots, &progress);
    let mut guard = TasksGuard { progress: &progress, submitted: 0 };
    let mut produced = 0;
    while produced < len {
        let wanted = chunk_size.min(len - produced);
        let chunk = if wanted == 1 {
            inputs.next().map(Batch::One)
        } else {
            let chunk: Vec<I> = inputs.by_ref().take(wanted).collect();
            (!chunk.is_empty()).then_some(Batch::Many(chunk))
        };
        let Some(chunk) = chunk else { break };
        let start = produced;
        produced += chunk.len();
        if guard.submitted - progress.done.load(Ordering::SeqCst) >= window {
            progress.wait_for(guard.submitted - window / 2);
        }
        let task = Box::new(move |cancelled: bool| {
            // SAFETY: slots `start..start + chunk.len()` lie inside the output's capacity
            // (`produced <= len`), belong to this task alone (chunks do not overlap), and
            // nothing reads them before the caller has seen this task finish.
            unsafe { write_results(chunk, f, slots.0.wrapping_add(start), cancelled) };
            progress_ref.finish_one();
        });
        // SAFETY: the task borrows `f`, `slots` (the output) and `progress`, all of which live
        // until `guard` has waited for every submitted task, on return and on unwind alike.
        unsafe { pool.spawn_unchecked(task) };
        guard.submitted += 1;
    }
    drop(guard);
    // SAFETY: every task has finished (the guard waited, with `SeqCst` ordering after their
    // writes), and the chunks covered slots `0..produced` contiguously, each slot written once.
    unsafe { out.set_len(produced) };
    if let Some(next) = inputs.next() {
        // SAFETY: `Batches` waits for its tasks when it is dropped, which `collect_ordered`
        // does before returning; `f` outlives this call.
        let rest = unsafe { Batches::new_scoped(pool, f, std::iter::once(next).chain(inputs)) };
        out.extend(rest.collect_ordered());
    }
    out
}

/// Writes the results of a chunk into consecutive slots from `slot`, a panic becoming that
/// input's [`JobError::Panicked`].
///
/// # Safety
/// The `chunk.len()` slots from `slot` must be valid for writes and written by no one else.
unsafe fn write_results<I, O>(
    chunk: Batch<I>,
    f: &impl Fn(I) -> O,
    slot: *mut Result<O, JobError>,
    cancelled: bool,
) {
    let mut written = 0;
    let mut inputs = chunk.into_iter();
    loop {
        let finished = catch_panic(|| {
            for input in inputs.by_ref() {
                let result = if cancelled { Err(JobError::Cancelled) } else { Ok(f(input)) };
                // SAFETY: `written < chunk.len()`, inside the caller's range.
                unsafe { slot.wrapping_add(written).write(result) };
                written += 1;
            }
        });
        match finished {
            Ok(()) => return,
            Err(panicked) => {
                // The input that panicked is the next slot's: `written` did not move past it.
                // SAFETY: as above.
                unsafe { slot.wrapping_add(written).write(Err(panicked)) };
                written += 1;
            }
        }
    }
}
