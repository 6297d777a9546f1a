//! [`map_in_place`]: the ordered `map` of an input whose length is known, with every input
//! and every result in its final slot from the start.
//!
//! No result travels through a channel and none is copied, and a chunk costs no allocation:
//! the caller moves each input into its slot of one input buffer and sends a [`RangeTask`]
//! (a pointer to the map's state on the caller's stack and a range of slots); a worker moves
//! the range's inputs out, writes their results into the same slots of the output, and counts
//! the range done. The caller only feeds ranges, waits when a window of them is in flight, and
//! sets the output's length once all are done. This is the caller's cost that matters with
//! tiny jobs (see `benches/overhead.rs`).

use std::ptr::NonNull;

use fanout_core::JobError;
use fanout_core::plumbing::{Ordered, ProgressCounters, catch_panic};

use crate::ThreadPool;
use crate::latch::Progress;
use crate::launch::{PoolLaunch, window_chunks};
use crate::pool::Task;

/// Jobs in flight at least. Deeper than the streaming window: results take no memory in
/// flight here (their slots exist already), and the queue must outlast the caller's wake-up
/// after it parked on a full window, or the workers run dry and park too.
const IN_PLACE_JOBS_IN_FLIGHT: usize = 16384;

/// The part of an in-place map that its range tasks run.
pub(crate) trait RunRange: Sync {
    /// Runs the inputs in slots `start..end` (or reports them cancelled), writes their
    /// results, then counts the range done; after that it never touches `self` again.
    ///
    /// # Safety
    /// `start..end` must be a range of filled input slots that was handed to this call alone.
    unsafe fn run_range(&self, start: usize, end: usize, cancelled: bool);
}

/// A task for the slots `start..end` of an in-place map.
pub(crate) struct RangeTask {
    /// The map's state, its lifetime erased: see [`map_in_place`] for why it outlives the task.
    map: NonNull<dyn RunRange>,
    start: usize,
    end: usize,
}

// SAFETY: the task only lends its worker a shared reference to the map's state, which is
// `Sync` (a bound of `RunRange`) and outlives the task (the map's caller waits for every
// range to be released before its state goes away).
unsafe impl Send for RangeTask {}

impl RangeTask {
    pub(crate) fn run(self, cancelled: bool) {
        // SAFETY: the state is alive until this range is released, which `run_range` does as
        // its very last access, so the reference is valid for the whole call.
        let map = unsafe { self.map.as_ref() };
        // SAFETY: the caller filled the slots `start..end` before it sent this task, and made
        // one task per range, so the range is this call's alone.
        unsafe { map.run_range(self.start, self.end, cancelled) };
    }
}

/// The state of one in-place map, shared by its range tasks.
struct InPlace<'f, I, O, F> {
    f: &'f F,
    /// The input slots (a buffer of capacity `len` whose `Vec` never holds them).
    inputs: *mut I,
    /// The output slots (the output's buffer).
    slots: *mut Result<O, JobError>,
    progress: Progress,
    /// The pool's counts.
    counters: &'f ProgressCounters,
}

// SAFETY: the tasks that share an `InPlace` move inputs out of disjoint slots (they cross
// threads: `I: Send`), write results into disjoint slots (`O: Send`; `JobError` is `Send`),
// call `f` through a shared reference (`F: Sync`) and touch `progress` only through atomics
// and `Thread::unpark` (`Thread` is `Sync`).
unsafe impl<I: Send, O: Send, F: Sync> Sync for InPlace<'_, I, O, F> {}

impl<I: Send, O: Send, F: Fn(I) -> O + Sync> RunRange for InPlace<'_, I, O, F> {
    unsafe fn run_range(&self, start: usize, end: usize, cancelled: bool) {
        if !cancelled {
            self.counters.started(end - start);
        }
        let mut next = start;
        // One unwinding guard for the range; a panic costs a new one for the inputs after it.
        while next < end {
            let finished = catch_panic(|| {
                while next < end {
                    // SAFETY: slot `next` is in this call's range (the caller's contract),
                    // filled before the task was sent, and read only here, once.
                    let input = unsafe { self.inputs.wrapping_add(next).read() };
                    let result = if cancelled { Err(JobError::Cancelled) } else { Ok((self.f)(input)) };
                    // SAFETY: output slot `next` lies in the output's capacity (`next < len`)
                    // and belongs to this range alone; nothing reads it before the range is done.
                    unsafe { self.slots.wrapping_add(next).write(result) };
                    next += 1;
                }
            });
            if let Err(panicked) = finished {
                // `f` took input `next` and panicked: `next` did not move past its slot.
                // SAFETY: as above.
                unsafe { self.slots.wrapping_add(next).write(Err(panicked)) };
                next += 1;
            }
        }
        // SAFETY: slots `start..end` are this range's, all written just above, and nothing
        // else reads or writes them before `finish_one` below.
        let results = unsafe { std::slice::from_raw_parts(self.slots.wrapping_add(start), end - start) };
        self.counters.finished_all(results);
        self.progress.finish_one();
    }
}

/// Waits for every sent range when dropped, also while unwinding (the tasks use the map's
/// state, the caller's output and its job), then drops the inputs that were moved into their
/// slots but not yet sent (the input iterator panicked).
struct TasksGuard<'a, I> {
    progress: &'a Progress,
    inputs: *mut I,
    /// Ranges sent.
    sent: usize,
    /// Input slots filled, and the end of the last range sent.
    filled: usize,
    sent_end: usize,
}

impl<I> Drop for TasksGuard<'_, I> {
    fn drop(&mut self) {
        self.progress.wait_for(self.sent);
        self.progress.wait_released(self.sent);
        let unsent = std::ptr::slice_from_raw_parts_mut(
            self.inputs.wrapping_add(self.sent_end),
            self.filled - self.sent_end,
        );
        // SAFETY: slots `sent_end..filled` hold inputs that no task was given, each once.
        unsafe { std::ptr::drop_in_place(unsent) };
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
    // The inputs' slots. The `Vec` keeps length 0: it only owns the memory, and the slots'
    // values are moved in by this function and out by the tasks (or the guard).
    let mut buffer: Vec<I> = Vec::with_capacity(len);
    let map = InPlace {
        f: &f,
        inputs: buffer.as_mut_ptr(),
        slots: out.as_mut_ptr(),
        progress: Progress::for_current_thread(),
        counters: &pool.shared().progress,
    };
    let state: NonNull<dyn RunRange + '_> = NonNull::from(&map as &dyn RunRange);
    // SAFETY: only the lifetime bound of the trait object changes (same layout and vtable).
    // The tasks that carry the pointer are all released before `map` (and `f`, `out` and
    // `buffer`, which it points into) go away: `guard` waits for them on return and unwind.
    let state = unsafe { std::mem::transmute::<NonNull<dyn RunRange + '_>, NonNull<dyn RunRange>>(state) };
    let mut guard =
        TasksGuard { progress: &map.progress, inputs: map.inputs, sent: 0, filled: 0, sent_end: 0 };
    // The count of done ranges as last read. It only grows, so a stale value is a lower bound:
    // the caller reads the latch again only when the stale value says the window may be full.
    // Reading it for every range pulled its cache line away from the workers, which update it
    // once a range: chunk-1 maps paid for that on every job (see `benches/overhead.rs`).
    let mut done = 0;
    while guard.filled < len {
        if guard.sent - done >= window {
            done = map.progress.done();
            if guard.sent - done >= window {
                map.progress.wait_for(guard.sent - window / 2);
                done = map.progress.done();
            }
        }
        let start = guard.filled;
        let end = start + chunk_size.min(len - start);
        while guard.filled < end {
            let Some(input) = inputs.next() else { break };
            // SAFETY: `filled < len`, the buffer's capacity, and no task was given this slot.
            unsafe { map.inputs.wrapping_add(guard.filled).write(input) };
            guard.filled += 1;
        }
        if guard.filled > start {
            pool.shared().progress.submitted(guard.filled - start);
            pool.spawn(Task::Range(RangeTask { map: state, start, end: guard.filled }));
            guard.sent += 1;
            guard.sent_end = guard.filled;
        }
        if guard.filled < end {
            break; // the iterator ended before its size hint said
        }
    }
    let produced = guard.filled;
    drop(guard);
    drop(map);
    // SAFETY: every range has finished (the guard waited, with `SeqCst` ordering after the
    // tasks' writes), and the ranges covered slots `0..produced` contiguously, each written
    // once.
    unsafe { out.set_len(produced) };
    drop(buffer);
    if let Some(next) = inputs.next() {
        let rest = std::iter::once(next).chain(inputs);
        // SAFETY: the launcher goes straight into a scoped engine (the next statement), which
        // waits for every chunk's answer before `f`, which outlives this call, goes away.
        let launcher = unsafe { PoolLaunch::new_scoped(pool, &f) };
        // SAFETY: the engine waits for every answer when it is dropped, which `extend` does
        // before this returns (or unwinds), and it is not leaked.
        out.extend(unsafe { Ordered::new_scoped(launcher, rest) });
    }
    out
}
