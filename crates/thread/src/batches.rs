//! [`Batches`]: the bounded, streaming engine behind `map`, `map_unordered` and `scoped_map`.
//!
//! It pulls inputs lazily, groups them into chunks, keeps at most a window of chunks in
//! flight, and yields `(index, result)` pairs as chunks complete. Memory stays bounded by the
//! window whatever the length of the input.

use std::marker::PhantomData;
use std::vec;

use crossbeam_channel::{Receiver, Sender, select};
use fanout_core::{Executor, JobError};

use crate::ThreadPool;

/// Results of one chunk: `(input index, result)` pairs.
type Chunk<O> = Vec<(usize, Result<O, JobError>)>;

/// Chunks in flight per worker: enough that a worker finds the next chunk queued when it
/// finishes one, while the caller is still busy with the previous results.
const CHUNKS_PER_WORKER: usize = 4;

pub(crate) struct Batches<'p, 'env, O, C, It> {
    pool: &'p ThreadPool,
    call: C,
    inputs: std::iter::Enumerate<It>,
    inputs_done: bool,
    /// `None` once the inputs are exhausted, so the channel disconnects when the last task
    /// holding a sender is dropped.
    sender: Option<Sender<Chunk<O>>>,
    receiver: Receiver<Chunk<O>>,
    ready: vec::IntoIter<(usize, Result<O, JobError>)>,
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
    C: Fn(I) -> Result<O, JobError> + Clone + Send + 'static,
    It: Iterator<Item = I>,
{
    /// Batches whose tasks own everything they use.
    pub(crate) fn new(pool: &'p ThreadPool, call: C, inputs: It) -> Self {
        // SAFETY: every borrow the tasks hold is `'static`.
        unsafe { Self::with_wait(pool, call, inputs, false) }
    }
}

impl<'p, 'env, I, O, C, It> Batches<'p, 'env, O, C, It>
where
    I: Send + 'env,
    O: Send + 'env,
    C: Fn(I) -> Result<O, JobError> + Clone + Send + 'env,
    It: Iterator<Item = I>,
{
    /// Batches whose tasks borrow from `'env`: they wait for every task when they end.
    ///
    /// # Safety
    /// The caller must not end `'env` before the batches are dropped, and must not leak them
    /// (`mem::forget`): their `Drop` is what waits for the tasks.
    pub(crate) unsafe fn new_scoped(pool: &'p ThreadPool, call: C, inputs: It) -> Self {
        // SAFETY: forwarded to our caller, with `wait_on_drop` making `Drop` wait.
        unsafe { Self::with_wait(pool, call, inputs, true) }
    }

    /// # Safety
    /// Either every borrow of the tasks is `'static`, or `wait_on_drop` is set and the
    /// caller keeps the contract of `new_scoped`.
    unsafe fn with_wait(pool: &'p ThreadPool, call: C, inputs: It, wait_on_drop: bool) -> Self {
        let (sender, receiver) = crossbeam_channel::unbounded();
        Self {
            pool,
            call,
            inputs: inputs.enumerate(),
            inputs_done: false,
            sender: Some(sender),
            receiver,
            ready: Vec::new().into_iter(),
            in_flight: 0,
            window: pool.workers() * CHUNKS_PER_WORKER,
            wait_on_drop,
            _env: PhantomData,
        }
    }

    /// Tops the window up with new chunks while inputs remain.
    fn fill(&mut self) {
        while !self.inputs_done && self.in_flight < self.window {
            let chunk: Vec<(usize, I)> = self.inputs.by_ref().take(self.pool.chunk_size()).collect();
            if chunk.len() < self.pool.chunk_size() {
                self.inputs_done = true;
            }
            if !chunk.is_empty() {
                self.spawn_chunk(chunk);
            }
        }
        if self.inputs_done {
            self.sender = None;
        }
    }

    fn spawn_chunk(&mut self, chunk: Vec<(usize, I)>) {
        let Some(sender) = self.sender.clone() else { return };
        let call = self.call.clone();
        let task = Box::new(move |cancelled: bool| {
            let results: Chunk<O> = if cancelled {
                chunk.into_iter().map(|(index, _)| (index, Err(JobError::Cancelled))).collect()
            } else {
                chunk.into_iter().map(|(index, input)| (index, call(input))).collect()
            };
            // The caller may have stopped listening (a dropped `map_unordered`): that is fine.
            let _ = sender.send(results);
        });
        // SAFETY: the task borrows from `'env` at most; `Self::with_wait`'s contract makes
        // sure that either `'env` is `'static` or `Drop` waits for the task to be dropped.
        unsafe { self.pool.spawn_unchecked(task) };
        self.in_flight += 1;
    }
}

impl<'env, I, O, C, It> Iterator for Batches<'_, 'env, O, C, It>
where
    I: Send + 'env,
    O: Send + 'env,
    C: Fn(I) -> Result<O, JobError> + Clone + Send + 'env,
    It: Iterator<Item = I>,
{
    type Item = (usize, Result<O, JobError>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.fill();
            if let Some(result) = self.ready.next() {
                return Some(result);
            }
            if self.in_flight == 0 {
                return None;
            }
            let chunk = self.receive()?;
            self.in_flight -= 1;
            self.ready = chunk.into_iter();
        }
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

impl<O, C, It> Drop for Batches<'_, '_, O, C, It> {
    fn drop(&mut self) {
        if self.wait_on_drop {
            self.sender = None;
            // Every task holds a sender: the channel disconnects once the last one is dropped.
            while self.receive().is_some() {}
        }
    }
}
