//! [`Batches`]: the bounded, streaming engine behind `map`, `map_unordered` and `scoped_map`.
//!
//! It pulls inputs lazily, cuts them into chunks of consecutive inputs, keeps at most a window
//! of chunks in flight, and hands back each chunk's results as one message. Memory stays
//! bounded by the window whatever the length of the input.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::Arc;
use std::vec;

use crossbeam_channel::{Receiver, Sender, select};
use fanout_core::{Executor, JobError, catch_panic};

use crate::ThreadPool;

/// The results of one chunk: the index of its first input, then one result per input.
pub(crate) struct Chunk<O> {
    pub(crate) start: usize,
    pub(crate) results: Batch<Result<O, JobError>>,
}

/// The values of one chunk. A chunk of one, the default, needs no allocation.
pub(crate) enum Batch<T> {
    One(T),
    Many(Vec<T>),
}

type BatchIter<T> = std::iter::Chain<std::option::IntoIter<T>, vec::IntoIter<T>>;

impl<T> Batch<T> {
    fn map<U>(self, mut f: impl FnMut(T) -> U) -> Batch<U> {
        match self {
            Self::One(value) => Batch::One(f(value)),
            Self::Many(values) => Batch::Many(values.into_iter().map(f).collect()),
        }
    }
}

impl<T> Batch<T> {
    /// Moves the values to the end of `out`; a whole chunk is one copy.
    fn append_to(self, out: &mut Vec<T>) {
        match self {
            Self::One(value) => out.push(value),
            Self::Many(mut values) => out.append(&mut values),
        }
    }
}

impl<T> IntoIterator for Batch<T> {
    type Item = T;
    type IntoIter = BatchIter<T>;

    fn into_iter(self) -> BatchIter<T> {
        match self {
            Self::One(value) => Some(value).into_iter().chain(Vec::new()),
            Self::Many(values) => None.into_iter().chain(values),
        }
    }
}

/// Chunks in flight per worker at least: a worker finds the next chunk queued when it
/// finishes one, while the caller is still busy with the previous results.
const MIN_CHUNKS_PER_WORKER: usize = 4;

/// Jobs in flight at least, whatever the chunk size: with tiny jobs the caller, which both
/// feeds and drains, is the bottleneck, and a deep queue keeps it from parking and waking
/// workers on every chunk (one futex call costs more than a hundred empty jobs).
const MIN_JOBS_IN_FLIGHT: usize = 4096;

/// How many chunks of one call may be in flight at once, for a call that keeps at least
/// `min_jobs` jobs in flight.
pub(crate) fn window_chunks(pool: &ThreadPool, min_jobs: usize) -> usize {
    (pool.workers() * MIN_CHUNKS_PER_WORKER).max(min_jobs.div_ceil(pool.chunk_size()))
}

/// What every task of one call shares: the code to run and the way back. One reference count
/// per task instead of one per field.
struct Call<C, O> {
    run: C,
    results: Sender<Chunk<O>>,
}

pub(crate) struct Batches<'p, 'env, O, C, It> {
    pool: &'p ThreadPool,
    /// `None` once the inputs are exhausted, so that the results channel disconnects when the
    /// last task is dropped.
    call: Option<Arc<Call<C, O>>>,
    inputs: It,
    next_index: usize,
    receiver: Receiver<Chunk<O>>,
    /// The chunk being yielded item by item by `Iterator::next`.
    ready: BatchIter<Result<O, JobError>>,
    ready_index: usize,
    in_flight: usize,
    window: usize,
    /// Scoped batches must outlive every task before they let the borrow of `'env` end.
    wait_on_drop: bool,
    _env: PhantomData<&'env ()>,
}

impl<'p, I, O, C, It> Batches<'p, 'static, O, C, It>
where
    I: Send + 'static,
    O: Send + 'static,
    C: Fn(I) -> O + Send + Sync + 'static,
    It: Iterator<Item = I>,
{
    /// Batches whose tasks own everything they use.
    pub(crate) fn new(pool: &'p ThreadPool, run: C, inputs: It) -> Self {
        // SAFETY: every borrow the tasks hold is `'static`.
        unsafe { Self::with_wait(pool, run, inputs, false) }
    }
}

impl<'p, 'env, I, O, C, It> Batches<'p, 'env, O, C, It>
where
    I: Send + 'env,
    O: Send + 'env,
    C: Fn(I) -> O + Send + Sync + 'env,
    It: Iterator<Item = I>,
{
    /// Batches whose tasks borrow from `'env`: they wait for every task when they end.
    ///
    /// # Safety
    /// The caller must not end `'env` before the batches are dropped, and must not leak them
    /// (`mem::forget`): their `Drop` is what waits for the tasks.
    pub(crate) unsafe fn new_scoped(pool: &'p ThreadPool, run: C, inputs: It) -> Self {
        // SAFETY: forwarded to our caller, with `wait_on_drop` making `Drop` wait.
        unsafe { Self::with_wait(pool, run, inputs, true) }
    }

    /// # Safety
    /// Either every borrow of the tasks is `'static`, or `wait_on_drop` is set and the
    /// caller keeps the contract of `new_scoped`.
    unsafe fn with_wait(pool: &'p ThreadPool, run: C, inputs: It, wait_on_drop: bool) -> Self {
        let (results, receiver) = crossbeam_channel::unbounded();
        let window = window_chunks(pool, MIN_JOBS_IN_FLIGHT);
        Self {
            pool,
            call: Some(Arc::new(Call { run, results })),
            inputs,
            next_index: 0,
            receiver,
            ready: Batch::Many(Vec::new()).into_iter(),
            ready_index: 0,
            in_flight: 0,
            window,
            wait_on_drop,
            _env: PhantomData,
        }
    }

    /// Tops the window up with new chunks while inputs remain.
    fn fill(&mut self) {
        while self.in_flight < self.window {
            let Some(call) = &self.call else { return };
            let chunk_size = self.pool.chunk_size();
            let (chunk, len) = if chunk_size == 1 {
                self.inputs.next().map_or((Batch::Many(Vec::new()), 0), |input| (Batch::One(input), 1))
            } else {
                let inputs: Vec<I> = self.inputs.by_ref().take(chunk_size).collect();
                let len = inputs.len();
                (Batch::Many(inputs), len)
            };
            let exhausted = len < chunk_size;
            if len > 0 {
                let start = self.next_index;
                self.next_index += len;
                let task = Box::new(run_chunk(Arc::clone(call), start, chunk));
                // SAFETY: the task borrows from `'env` at most; `Self::with_wait`'s contract
                // makes sure that either `'env` is `'static` or `Drop` waits for the task.
                unsafe { self.pool.spawn_unchecked(task) };
                self.in_flight += 1;
            }
            if exhausted {
                self.call = None;
            }
        }
    }

    /// The next chunk of results, in completion order; `None` when all are in.
    pub(crate) fn next_chunk(&mut self) -> Option<Chunk<O>> {
        self.fill();
        if self.in_flight == 0 {
            return None;
        }
        let chunk = self.receive()?;
        self.in_flight -= 1;
        self.fill();
        Some(chunk)
    }

    /// Runs all inputs and returns the results in input order.
    ///
    /// Chunks that arrive in order are appended at once, while their results are still in
    /// the cache; those that overtake wait in a reorder ring, bounded by the window.
    pub(crate) fn collect_ordered(mut self) -> Vec<Result<O, JobError>> {
        let chunk_size = self.pool.chunk_size();
        let mut ordered = Vec::with_capacity(self.inputs.size_hint().0);
        // Slot `k` holds the chunk `k` places after the next one `ordered` expects.
        let mut early: VecDeque<Option<Batch<Result<O, JobError>>>> = VecDeque::new();
        while let Some(Chunk { start, results }) = self.next_chunk() {
            let offset = (start - ordered.len()) / chunk_size;
            if offset >= early.len() {
                early.resize_with(offset + 1, || None);
            }
            early[offset] = Some(results);
            while let Some(Some(next)) = early.front_mut().map(Option::take) {
                early.pop_front();
                next.append_to(&mut ordered);
            }
        }
        // Every task reports its chunk, so nothing is left waiting; were a chunk missing, the
        // later results must still land at their own positions.
        let base = ordered.len();
        for (offset, results) in early.into_iter().enumerate() {
            if let Some(results) = results {
                ordered.resize_with(base + offset * chunk_size, || Err(JobError::Cancelled));
                results.append_to(&mut ordered);
            }
        }
        ordered
    }
}

/// The task for one chunk: runs it, or reports it cancelled, and sends its results back.
fn run_chunk<I, O, C>(call: Arc<Call<C, O>>, start: usize, chunk: Batch<I>) -> impl FnOnce(bool) + Send
where
    I: Send,
    O: Send,
    C: Fn(I) -> O + Send + Sync,
{
    move |cancelled: bool| {
        let results = match chunk {
            _ if cancelled => chunk.map(|_| Err(JobError::Cancelled)),
            Batch::One(input) => Batch::One(catch_panic(|| (call.run)(input))),
            Batch::Many(inputs) => Batch::Many(run_caught_all(inputs, &call.run)),
        };
        // The caller may have stopped listening (a dropped `map_unordered`): that is fine.
        let _ = call.results.send(Chunk { start, results });
    }
}

/// Runs `f` on every input, turning a panic into that input's [`JobError::Panicked`].
///
/// One unwinding guard covers the whole chunk; only a panic costs a new one, for the inputs
/// after it. The panicking input is the one whose result is missing, so positions stay right.
fn run_caught_all<I, O>(inputs: Vec<I>, f: &impl Fn(I) -> O) -> Vec<Result<O, JobError>> {
    let mut results = Vec::with_capacity(inputs.len());
    let mut inputs = inputs.into_iter();
    while let Err(panicked) = catch_panic(|| results.extend(inputs.by_ref().map(|input| Ok(f(input))))) {
        results.push(Err(panicked));
    }
    results
}

impl<O, C, It> Batches<'_, '_, O, C, It> {
    /// Waits for the next chunk of results; `None` when every task has been dropped.
    ///
    /// On one of the pool's own workers (a job that maps over its own pool) it runs queued
    /// tasks while it waits, so that nested use cannot deadlock the pool.
    fn receive(&self) -> Option<Chunk<O>> {
        if !self.pool.is_own_worker() {
            return self.receiver.recv().ok();
        }
        let tasks = &self.pool.shared().tasks;
        loop {
            select! {
                recv(self.receiver) -> chunk => return chunk.ok(),
                recv(tasks) -> task => match task {
                    Ok(task) => task.run(false),
                    Err(_) => return self.receiver.recv().ok(),
                },
            }
        }
    }
}

impl<'env, I, O, C, It> Iterator for Batches<'_, 'env, O, C, It>
where
    I: Send + 'env,
    O: Send + 'env,
    C: Fn(I) -> O + Send + Sync + 'env,
    It: Iterator<Item = I>,
{
    type Item = (usize, Result<O, JobError>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(result) = self.ready.next() {
                self.ready_index += 1;
                return Some((self.ready_index - 1, result));
            }
            let chunk = self.next_chunk()?;
            self.ready_index = chunk.start;
            self.ready = chunk.results.into_iter();
        }
    }
}

impl<O, C, It> Drop for Batches<'_, '_, O, C, It> {
    fn drop(&mut self) {
        if self.wait_on_drop {
            self.call = None;
            // Every task holds the sender: the channel disconnects once the last one is dropped.
            while self.receive().is_some() {}
        }
    }
}
