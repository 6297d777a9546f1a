//! [`Batches`]: the bounded, streaming engine behind `map`, `map_unordered` and `scoped_map`.
//!
//! It pulls inputs lazily, cuts them into chunks of consecutive inputs, keeps at most a window
//! of chunks in flight, and hands back each chunk's results as one message. Memory stays
//! bounded by the window whatever the length of the input.

use std::marker::PhantomData;
use std::sync::Arc;
use std::vec;

use crossbeam_channel::{Receiver, Sender, select};
use fanout_core::{Executor, JobError};

use crate::ThreadPool;

/// The results of one chunk: the index of its first input, then one result per input.
pub(crate) struct Chunk<O> {
    pub(crate) start: usize,
    pub(crate) results: Vec<Result<O, JobError>>,
}

/// Chunks in flight per worker at least: a worker finds the next chunk queued when it
/// finishes one, while the caller is still busy with the previous results.
const MIN_CHUNKS_PER_WORKER: usize = 4;

/// Jobs in flight at least, whatever the chunk size: with tiny jobs the caller, which both
/// feeds and drains, is the bottleneck, and a deep queue keeps it from parking and waking
/// workers on every chunk (one futex call costs more than a hundred empty jobs).
const MIN_JOBS_IN_FLIGHT: usize = 1024;

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
    ready: vec::IntoIter<Result<O, JobError>>,
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
    C: Fn(I) -> Result<O, JobError> + Send + Sync + 'static,
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
    C: Fn(I) -> Result<O, JobError> + Send + Sync + 'env,
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
        let window =
            (pool.workers() * MIN_CHUNKS_PER_WORKER).max(MIN_JOBS_IN_FLIGHT.div_ceil(pool.chunk_size()));
        Self {
            pool,
            call: Some(Arc::new(Call { run, results })),
            inputs,
            next_index: 0,
            receiver,
            ready: Vec::new().into_iter(),
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
            let chunk: Vec<I> = self.inputs.by_ref().take(self.pool.chunk_size()).collect();
            let exhausted = chunk.len() < self.pool.chunk_size();
            if !chunk.is_empty() {
                let start = self.next_index;
                self.next_index += chunk.len();
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
    pub(crate) fn collect_ordered(mut self) -> Vec<Result<O, JobError>> {
        let chunk_size = self.pool.chunk_size();
        // Chunks hold consecutive inputs, so chunk `k` starts at input `k * chunk_size`.
        let mut chunks: Vec<Option<Vec<Result<O, JobError>>>> = Vec::new();
        while let Some(Chunk { start, results }) = self.next_chunk() {
            let slot = start / chunk_size;
            if slot >= chunks.len() {
                chunks.resize_with(slot + 1, || None);
            }
            chunks[slot] = Some(results);
        }
        let mut ordered = Vec::with_capacity(self.next_index);
        for chunk in chunks {
            // Every task reports its chunk, so a gap cannot happen; were it to, the positions
            // of later results must still be right.
            ordered
                .extend(chunk.unwrap_or_else(|| (0..chunk_size).map(|_| Err(JobError::Cancelled)).collect()));
        }
        ordered
    }
}

/// The task for one chunk: runs it, or reports it cancelled, and sends its results back.
fn run_chunk<I, O, C>(call: Arc<Call<C, O>>, start: usize, chunk: Vec<I>) -> impl FnOnce(bool) + Send
where
    I: Send,
    O: Send,
    C: Fn(I) -> Result<O, JobError> + Send + Sync,
{
    move |cancelled: bool| {
        let results = if cancelled {
            chunk.into_iter().map(|_| Err(JobError::Cancelled)).collect()
        } else {
            chunk.into_iter().map(&call.run).collect()
        };
        // The caller may have stopped listening (a dropped `map_unordered`): that is fine.
        let _ = call.results.send(Chunk { start, results });
    }
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
                    Ok(task) => task(false),
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
    C: Fn(I) -> Result<O, JobError> + Send + Sync + 'env,
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
