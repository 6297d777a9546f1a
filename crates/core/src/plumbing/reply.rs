//! [`Reply`]: the one way an executor answers a chunk of inputs, exactly once.
//!
//! A reply is created by the engine (for a chunk of a `map`) or by [`job_handle`] (for one
//! submitted job) and travels with the chunk to wherever it runs. Whatever path the chunk
//! takes, its caller hears exactly one answer per input: [`Reply::send`] delivers the results,
//! and a reply dropped unanswered (a cancelled queue, a dead dispatcher, a task dropped by a
//! runtime) answers [`JobError::Cancelled`] for every input. No executor writes that rule again.
//!
//! [`Reply::start`] is the gate before a chunk runs: it says no when the handle was cancelled
//! ([`JobHandle::cancel`]) or the call's iterator was dropped, so that a job that has not
//! started never runs once nobody waits for it.

use std::cell::Cell;
use std::fmt;

use crossbeam_channel as handle_channel;
use serde::de::DeserializeOwned;

use super::codec::decode_payload;
use super::engine::Batch;
use crate::progress::ProgressCounters;
use crate::sync::channel::Sender;
use crate::sync::{Arc, AtomicU8, Ordering};
use crate::{JobError, JobHandle, PayloadPart, Violation, WorkerExit};

/// Whether a job (or a call's chunks) may still start. The state a [`JobHandle`] shares with
/// the [`Reply`] of its job, and an engine with the replies of its chunks.
#[derive(Debug)]
pub(crate) struct Ticket {
    state: AtomicU8,
}

const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
const CANCELLED: u8 = 2;

impl Ticket {
    pub(crate) fn new() -> Self {
        Self { state: AtomicU8::new(QUEUED) }
    }

    /// Marks the job started, unless it was cancelled first; `true` if it may run. A job that
    /// runs again (its worker died) finds it started already, which is still a yes.
    pub(crate) fn start(&self) -> bool {
        // `AcqRel`/`Acquire`: the winner of the race with `cancel` is the only one that acts.
        match self.state.compare_exchange(QUEUED, RUNNING, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => true,
            Err(state) => state == RUNNING,
        }
    }

    /// Cancels the job unless it started; `true` if it will never run.
    pub(crate) fn cancel(&self) -> bool {
        match self.state.compare_exchange(QUEUED, CANCELLED, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => true,
            Err(state) => state == CANCELLED,
        }
    }

    /// Whether [`cancel`](Self::cancel) won.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.state.load(Ordering::Acquire) == CANCELLED
    }
}

/// One chunk's results on their way back to its engine.
#[derive(Debug)]
pub(crate) struct Answer<O> {
    /// The chunk's place in the order the engine cut chunks (0, 1, 2, ...).
    pub(crate) seq: usize,
    /// The input index of the chunk's first input.
    pub(crate) start: usize,
    /// One result per input of the chunk, in input order.
    pub(crate) results: Batch<Result<O, JobError>>,
}

enum Destination<O> {
    /// A chunk of a `map`: the answer goes to the engine; the ticket is the whole call's.
    Engine { sender: Sender<Answer<O>>, call: Arc<Ticket> },
    /// One submitted job: the answer goes to its handle.
    Handle { sender: handle_channel::Sender<Result<O, JobError>>, ticket: Arc<Ticket> },
}

/// The answer of one chunk, owed exactly once.
///
/// Executors receive one with every chunk they launch. They [`start`](Self::start) it when the
/// chunk is about to run, then [`send`](Self::send) one result per input, or
/// [`fail`](Self::fail) the whole chunk; a reply dropped unanswered answers
/// [`JobError::Cancelled`] for each of its inputs.
pub struct Reply<O> {
    seq: usize,
    start: usize,
    len: usize,
    destination: Option<Destination<O>>,
    /// The executor's counters, if it keeps them: starts and results are counted here.
    progress: Option<std::sync::Arc<ProgressCounters>>,
    /// Whether `start` said yes once already (a chunk that runs again is started once).
    started: Cell<bool>,
}

impl<O> Reply<O> {
    pub(crate) fn for_engine(
        seq: usize,
        start: usize,
        len: usize,
        sender: Sender<Answer<O>>,
        call: Arc<Ticket>,
        progress: Option<std::sync::Arc<ProgressCounters>>,
    ) -> Self {
        Self {
            seq,
            start,
            len,
            destination: Some(Destination::Engine { sender, call }),
            progress,
            started: Cell::new(false),
        }
    }

    /// Counts this reply's inputs as submitted to the executor that keeps `progress`, and its
    /// start and results there: for a reply made by [`job_handle`] (the engine does this for
    /// the replies it makes).
    pub fn count_in(&mut self, progress: &std::sync::Arc<ProgressCounters>) {
        progress.submitted(self.len);
        self.progress = Some(std::sync::Arc::clone(progress));
    }

    /// How many inputs this reply answers.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether this reply answers no input (never true for a reply an executor receives).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The input index of the chunk's first input (0 for a submitted job).
    pub fn first_index(&self) -> usize {
        self.start
    }

    /// Call just before the chunk runs: `false` means nobody waits for it any more (its handle
    /// was cancelled, or its `map` was dropped), and the chunk must not run; drop the reply,
    /// which answers [`JobError::Cancelled`]. Calling it again for a chunk that runs again is
    /// fine.
    pub fn start(&self) -> bool {
        let may_start = match &self.destination {
            Some(Destination::Engine { call, .. }) => !call.is_cancelled(),
            Some(Destination::Handle { ticket, .. }) => ticket.start(),
            None => false,
        };
        if may_start && !self.started.replace(true) {
            if let Some(progress) = &self.progress {
                progress.started(self.len);
            }
        }
        may_start
    }

    /// Whether [`start`](Self::start) said yes already.
    pub fn is_started(&self) -> bool {
        self.started.get()
    }

    /// Delivers the chunk's results, one per input in input order. A batch of the wrong length
    /// is a protocol violation of the executor's worker, reported as such for every input.
    pub fn send(mut self, results: Batch<Result<O, JobError>>) {
        let results = if results.len() == self.len {
            results
        } else {
            let violation = Violation::WrongResultCount { expected: self.len, got: results.len() };
            Batch::errors(lost(violation), self.len)
        };
        self.deliver(results);
    }

    /// Delivers the result of a chunk of one input.
    pub fn send_one(self, result: Result<O, JobError>) {
        self.send(Batch::One(result));
    }

    /// Answers every input of the chunk with `error`.
    pub fn fail(mut self, error: JobError) {
        let len = self.len;
        self.deliver(Batch::errors(error, len));
    }

    fn deliver(&mut self, results: Batch<Result<O, JobError>>) {
        if let Some(progress) = &self.progress {
            match &results {
                Batch::One(result) => progress.finished(result),
                Batch::Many(results) => progress.finished_all(results),
            }
        }
        // The caller may have stopped listening (a dropped iterator or handle): that is fine.
        match self.destination.take() {
            Some(Destination::Engine { sender, .. }) => {
                let _ = sender.send(Answer { seq: self.seq, start: self.start, results });
            }
            Some(Destination::Handle { sender, .. }) => {
                if let Some(result) = results.into_iter().next() {
                    let _ = sender.send(result);
                }
            }
            None => {}
        }
    }

    /// This reply, for executors whose workers answer in bytes: it decodes the encoded
    /// `Vec<Result<O, JobError>>` that [`entry_point`](super::entry_point) produces.
    pub fn encoded(self) -> EncodedReply
    where
        O: DeserializeOwned + Send + 'static,
    {
        EncodedReply(Box::new(self))
    }
}

impl<O> Drop for Reply<O> {
    fn drop(&mut self) {
        if self.destination.is_some() {
            let len = self.len;
            self.deliver(Batch::errors(JobError::Cancelled, len));
        }
    }
}

impl<O> fmt::Debug for Reply<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply")
            .field("first_index", &self.start)
            .field("len", &self.len)
            .field("answered", &self.destination.is_none())
            .finish()
    }
}

fn lost(violation: Violation) -> JobError {
    JobError::WorkerLost { exit: WorkerExit::ProtocolViolation(violation) }
}

/// A chunk's outcome as a worker process reports it: an encoded `Vec<Result<Output, JobError>>`
/// (see [`entry_point`](super::entry_point)), or why the whole chunk failed.
pub type Outcome = Result<Vec<u8>, JobError>;

/// A [`Reply`] whose output type is erased: it takes an encoded [`Outcome`], so that a
/// dispatcher serving jobs of every type can hold the replies of all of them.
pub struct EncodedReply(Box<dyn ErasedReply>);

trait ErasedReply: Send {
    fn start(&self) -> bool;
    fn len(&self) -> usize;
    fn deliver(self: Box<Self>, outcome: Outcome);
}

impl<O: DeserializeOwned + Send + 'static> ErasedReply for Reply<O> {
    fn start(&self) -> bool {
        Reply::start(self)
    }

    fn len(&self) -> usize {
        self.len
    }

    fn deliver(self: Box<Self>, outcome: Outcome) {
        let decoded =
            outcome.and_then(|bytes| decode_payload::<Vec<Result<O, JobError>>>(PayloadPart::Output, &bytes));
        match decoded {
            Ok(results) => self.send(Batch::from_vec(results)),
            Err(error) => self.fail(error),
        }
    }
}

impl EncodedReply {
    /// As [`Reply::start`].
    pub fn start(&self) -> bool {
        self.0.start()
    }

    /// How many inputs this reply answers.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether this reply answers no input (never true for a reply an executor receives).
    pub fn is_empty(&self) -> bool {
        self.0.len() == 0
    }

    /// Decodes the outcome and delivers it (an error for every input if it does not decode or
    /// has the wrong number of results).
    pub fn send(self, outcome: Outcome) {
        self.0.deliver(outcome);
    }
}

impl fmt::Debug for EncodedReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncodedReply").field("len", &self.len()).finish_non_exhaustive()
    }
}

/// A connected pair for one submitted job: the executor keeps the [`Reply`] (of one input),
/// the caller gets the [`JobHandle`].
pub fn job_handle<O>() -> (Reply<O>, JobHandle<O>) {
    let (sender, receiver) = handle_channel::bounded(1);
    let ticket = Arc::new(Ticket::new());
    let reply = Reply {
        seq: 0,
        start: 0,
        len: 1,
        destination: Some(Destination::Handle { sender, ticket: Arc::clone(&ticket) }),
        progress: None,
        started: Cell::new(false),
    };
    (reply, JobHandle::new(receiver, ticket))
}
