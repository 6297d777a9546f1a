//! [`Window`]: the caller's side of every `map`. It pulls inputs lazily on the calling thread
//! (the input iterator never leaves it, so it need not be `Send`), keeps at most a window of
//! jobs launched on the runtime, and yields their results in completion order.
//! [`collect_ordered`] puts them back in input order.
//!
//! Memory stays bounded by the window whatever the length of the input: a new input is pulled
//! only when a result has come back (backpressure on the input iterator).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, Sender};
use fanout_core::JobError;

use crate::launch::Reply;

/// The results of one `map` call as they complete, with their input indices.
pub(crate) struct Window<It, O, L> {
    /// `None` once the inputs are exhausted.
    inputs: Option<std::iter::Enumerate<It>>,
    /// Launches one job whose result goes to the given reply.
    launch: L,
    sender: Sender<(usize, Result<O, JobError>)>,
    receiver: Receiver<(usize, Result<O, JobError>)>,
    in_flight: usize,
    window: usize,
    /// Launch the next input as soon as a result arrives, before yielding it (keeps the
    /// runtime busy while the caller handles the result). Off for inline execution, where
    /// launching runs the job.
    eager: bool,
    /// Set when the iterator is dropped: queued jobs of this call are skipped.
    abandoned: Arc<AtomicBool>,
}

impl<I, O, It, L> Window<It, O, L>
where
    It: Iterator<Item = I>,
    L: FnMut(I, Reply<O>),
{
    /// A window of at most `window` (at least 1) jobs at once.
    pub(crate) fn new(inputs: It, window: usize, eager: bool, abandoned: Arc<AtomicBool>, launch: L) -> Self {
        let (sender, receiver) = crossbeam_channel::unbounded();
        Self {
            inputs: Some(inputs.enumerate()),
            launch,
            sender,
            receiver,
            in_flight: 0,
            window: window.max(1),
            eager,
            abandoned,
        }
    }

    /// Tops the window up with new jobs while inputs remain.
    ///
    /// Each job is spawned on its own, as it is pulled. Spawning a batch from inside the
    /// runtime instead (one wake-up of the loop for many tasks) was measured slower for 200
    /// requests: the loop then opens every connection before it writes any request, and the
    /// server gets all the requests late.
    fn fill(&mut self) {
        while self.in_flight < self.window {
            let Some(inputs) = &mut self.inputs else { return };
            match inputs.next() {
                Some((index, input)) => {
                    self.in_flight += 1;
                    (self.launch)(input, Reply::new(index, self.sender.clone()));
                }
                None => self.inputs = None,
            }
        }
    }
}

impl<I, O, It, L> Iterator for Window<It, O, L>
where
    It: Iterator<Item = I>,
    L: FnMut(I, Reply<O>),
{
    type Item = (usize, Result<O, JobError>);

    fn next(&mut self) -> Option<Self::Item> {
        self.fill();
        if self.in_flight == 0 {
            return None;
        }
        // Every launched job answers exactly once (a `Reply` dropped unanswered reports
        // `Cancelled`), and the window holds a sender, so this returns once per job.
        let answer = self.receiver.recv().ok()?;
        self.in_flight -= 1;
        if self.eager {
            self.fill();
        }
        Some(answer)
    }
}

impl<It, O, L> Drop for Window<It, O, L> {
    fn drop(&mut self) {
        self.abandoned.store(true, Ordering::Release);
    }
}

/// Puts `(index, result)` pairs back in index order.
pub(crate) fn collect_ordered<O>(
    results: impl Iterator<Item = (usize, Result<O, JobError>)>,
) -> Vec<Result<O, JobError>> {
    let mut slots: Vec<Option<Result<O, JobError>>> = Vec::new();
    for (index, result) in results {
        if index >= slots.len() {
            slots.resize_with(index + 1, || None);
        }
        slots[index] = Some(result);
    }
    // Every index answers exactly once (see `Window::next`); a gap could only be an input
    // that never ran.
    slots.into_iter().map(|slot| slot.unwrap_or(Err(JobError::Cancelled))).collect()
}
