//! Loom models of the engine's hand-rolled synchronization: the [`Ticket`] race between a
//! chunk's start and its cancellation, and the window of [`Ordered`] and [`Unordered`] with
//! chunks answered (or dropped) on threads of their own.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test --release -p fanout-core --lib loom_models`;
//! `crate::sync` swaps the atomics, `Arc` and the answer channel for loom's.

use std::cell::RefCell;
use std::rc::Rc;

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::thread::{self, JoinHandle};

use super::reply::Ticket;
use super::{Batch, BatchPacker, Launch, Ordered, Reply, Unordered};
use crate::JobError;
use crate::sync::Arc;

/// Explores `f` with at most `preemptions` preemptions per execution (unless
/// `LOOM_MAX_PREEMPTIONS` says otherwise): a call with three chunks in flight has too many
/// interleavings to explore them all in CI's time, and bugs need few preemptions.
fn model(preemptions: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = builder.preemption_bound.or(Some(preemptions));
    builder.check(f);
}

/// One thread starts the job while another cancels it: exactly one of them wins, and every
/// later look at the ticket agrees with the winner.
#[test]
fn ticket_start_races_cancel() {
    loom::model(|| {
        let ticket = Arc::new(Ticket::new());
        let worker = {
            let ticket = Arc::clone(&ticket);
            thread::spawn(move || ticket.start())
        };
        let cancelled = ticket.cancel();
        let started = worker.join().unwrap();
        assert_ne!(started, cancelled, "exactly one of start and cancel wins");
        assert_eq!(ticket.is_cancelled(), cancelled);
        // Asking again (a job that runs again, a second cancel) does not change the verdict.
        assert_eq!(ticket.start(), started);
        assert_eq!(ticket.cancel(), cancelled);
    });
}

/// A job whose worker died runs again: two starts race one cancel. Both starts agree, and
/// they agree with the cancel.
#[test]
fn ticket_restart_races_cancel() {
    loom::model(|| {
        let ticket = Arc::new(Ticket::new());
        let workers: Vec<JoinHandle<bool>> = (0..2)
            .map(|_| {
                let ticket = Arc::clone(&ticket);
                thread::spawn(move || ticket.start())
            })
            .collect();
        let cancelled = ticket.cancel();
        for worker in workers {
            assert_ne!(worker.join().unwrap(), cancelled);
        }
        assert_eq!(ticket.is_cancelled(), cancelled);
    });
}

/// What the test launcher does with a chunk.
#[derive(Clone, Copy, Debug)]
enum Fate {
    /// A thread starts it and sends its result (`input * 10`).
    Answer,
    /// A thread starts it, then drops its reply unanswered.
    DropInThread,
    /// The launcher drops the reply at once (a refused or cancelled queue).
    DropInLaunch,
}

/// Launches every chunk (of one input) on a loom thread of its own, window 2.
struct ThreadPerChunk {
    fate: fn(u64) -> Fate,
    /// Set by the model once the call's iterator is dropped.
    dropped: Arc<AtomicBool>,
    /// The chunks' threads; each says whether its `start` let it run.
    threads: Rc<RefCell<Vec<JoinHandle<bool>>>>,
}

impl ThreadPerChunk {
    fn new(fate: fn(u64) -> Fate) -> Self {
        Self { fate, dropped: Arc::new(AtomicBool::new(false)), threads: Rc::default() }
    }

    /// Joins every chunk's thread (they must all end: loom reports one that hangs).
    fn join(threads: &RefCell<Vec<JoinHandle<bool>>>) -> Vec<bool> {
        threads.borrow_mut().drain(..).map(|thread| thread.join().unwrap()).collect()
    }
}

impl Launch for ThreadPerChunk {
    type Input = u64;
    type Output = u64;
    type Packer = BatchPacker<u64>;

    fn packer(&mut self) -> BatchPacker<u64> {
        BatchPacker::new(1)
    }

    fn window(&self) -> usize {
        2
    }

    fn launch(&mut self, chunk: Batch<u64>, reply: Reply<u64>) {
        let Batch::One(input) = chunk else { panic!("chunks of one input") };
        assert_eq!(reply.len(), 1);
        let fate = (self.fate)(input);
        if let Fate::DropInLaunch = fate {
            drop(reply);
            return;
        }
        let dropped = Arc::clone(&self.dropped);
        let thread = thread::spawn(move || {
            // Read before `start`: a chunk that starts after its call was dropped must hear no.
            let after_drop = dropped.load(Ordering::SeqCst);
            let started = reply.start();
            assert!(!(after_drop && started), "a chunk started after its call was dropped");
            if started && matches!(fate, Fate::Answer) {
                reply.send_one(Ok(input * 10));
            }
            started
        });
        self.threads.borrow_mut().push(thread);
    }
}

/// Input order over three inputs with a window of two: every input gets exactly one answer,
/// in order, `Cancelled` for the one whose reply was dropped, and the iterator never waits
/// for an answer that cannot come (loom reports a deadlock).
#[test]
fn ordered_answers_every_input_in_order() {
    model(3, || {
        let launcher =
            ThreadPerChunk::new(|input| if input == 1 { Fate::DropInThread } else { Fate::Answer });
        let threads = Rc::clone(&launcher.threads);
        let results: Vec<Result<u64, JobError>> = Ordered::new(launcher, 0..3_u64).collect();
        assert_eq!(results, [Ok(0), Err(JobError::Cancelled), Ok(20)]);
        assert_eq!(ThreadPerChunk::join(&threads), [true, true, true]);
    });
}

/// Input order when the launcher itself drops a reply, ahead of chunks still running.
#[test]
fn ordered_with_a_reply_dropped_at_launch() {
    loom::model(|| {
        let launcher =
            ThreadPerChunk::new(|input| if input == 0 { Fate::DropInLaunch } else { Fate::Answer });
        let threads = Rc::clone(&launcher.threads);
        let results: Vec<Result<u64, JobError>> = Ordered::new(launcher, 0..3_u64).collect();
        assert_eq!(results, [Err(JobError::Cancelled), Ok(10), Ok(20)]);
        assert_eq!(ThreadPerChunk::join(&threads), [true, true]);
    });
}

/// Completion order: every input exactly once, with its own result, whatever the order.
#[test]
fn unordered_answers_every_input_once() {
    loom::model(|| {
        let launcher = ThreadPerChunk::new(|input| match input {
            0 => Fate::DropInLaunch,
            1 => Fate::DropInThread,
            _ => Fate::Answer,
        });
        let threads = Rc::clone(&launcher.threads);
        let mut results: Vec<(usize, Result<u64, JobError>)> = Unordered::new(launcher, 0..3_u64).collect();
        results.sort_by_key(|(index, _)| *index);
        assert_eq!(results, [(0, Err(JobError::Cancelled)), (1, Err(JobError::Cancelled)), (2, Ok(20))]);
        assert_eq!(ThreadPerChunk::join(&threads), [true, true]);
    });
}

/// The caller takes one result and drops the iterator while chunks are in flight: their
/// threads race the cancellation in `Reply::start`. Each either runs and answers or hears no
/// (and never yes once the drop is over), none hangs, and no answer is left behind.
#[test]
fn dropped_unordered_never_hangs() {
    model(2, || {
        let launcher = ThreadPerChunk::new(|_| Fate::Answer);
        let threads = Rc::clone(&launcher.threads);
        let dropped = Arc::clone(&launcher.dropped);
        let mut results = Unordered::new(launcher, 0..3_u64);
        let (index, result) = results.next().expect("a first result");
        assert!(index < 2, "the first result is one of the first window's");
        assert_eq!(result, Ok(index as u64 * 10));
        drop(results);
        dropped.store(true, Ordering::SeqCst);
        let started = ThreadPerChunk::join(&threads);
        // The window was topped up after the first answer: all three chunks were launched.
        assert_eq!(started.len(), 3);
        assert!(started[index], "the chunk that answered had started");
    });
}
