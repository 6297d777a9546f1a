//! The engine every executor shares: lazy input pulls, chunking, a bounded window of chunks in
//! flight, and results in completion order ([`Unordered`]) or in input order ([`Ordered`]).
//!
//! An executor says only how a chunk is packed ([`Pack`]) and launched on its workers
//! ([`Launch`]); everything about order, bounds and exactly-once answers is here, once.
//!
//! **Bounds.** The window counts chunks. In completion order a chunk leaves the window when its
//! answer arrives; in input order when it is yielded, so that the chunks held back behind a
//! slow one are part of the window too: at most `window` chunks of results exist out of order,
//! whatever the input's length.
//!
//! **Exactly once.** Every chunk carries a [`Reply`] that answers once, even when dropped, so
//! waiting for "as many answers as chunks launched" never waits for an answer that cannot come.
//! An input that cannot be packed (it does not serialize, or is over the message limit) is
//! answered at once with its error, through the same channel, in its place.

use std::collections::VecDeque;
use std::fmt;
use std::vec;

use super::reply::{Answer, Reply, Ticket};
use crate::JobError;
use crate::progress::ProgressCounters;
use crate::sync::Arc;
use crate::sync::channel::{self, Receiver, Sender};

/// The values of one chunk. A chunk of one, the default, needs no allocation.
#[derive(Debug)]
pub enum Batch<T> {
    /// One value.
    One(T),
    /// Any number of values, in input order.
    Many(Vec<T>),
}

impl<T> Batch<T> {
    /// How many values the batch holds.
    pub fn len(&self) -> usize {
        match self {
            Self::One(_) => 1,
            Self::Many(values) => values.len(),
        }
    }

    /// Whether the batch holds no value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A batch of these values; one value needs no `Vec` afterwards.
    pub fn from_vec(mut values: Vec<T>) -> Self {
        if values.len() == 1
            && let Some(value) = values.pop()
        {
            return Self::One(value);
        }
        Self::Many(values)
    }

    /// Applies `f` to every value, in order.
    pub fn map<U>(self, mut f: impl FnMut(T) -> U) -> Batch<U> {
        match self {
            Self::One(value) => Batch::One(f(value)),
            Self::Many(values) => Batch::Many(values.into_iter().map(f).collect()),
        }
    }
}

impl<O> Batch<Result<O, JobError>> {
    /// `len` copies of `error`: the answer of a chunk that failed as a whole.
    pub(crate) fn errors(error: JobError, len: usize) -> Self {
        match len {
            1 => Self::One(Err(error)),
            _ => Self::Many((0..len).map(|_| Err(error.clone())).collect()),
        }
    }
}

impl<T> IntoIterator for Batch<T> {
    type Item = T;
    type IntoIter = BatchIter<T>;

    fn into_iter(self) -> BatchIter<T> {
        match self {
            Self::One(value) => BatchIter { one: Some(value), many: Vec::new().into_iter() },
            Self::Many(values) => BatchIter { one: None, many: values.into_iter() },
        }
    }
}

/// The iterator over a [`Batch`].
#[derive(Debug)]
pub struct BatchIter<T> {
    one: Option<T>,
    many: vec::IntoIter<T>,
}

impl<T> Iterator for BatchIter<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        self.one.take().or_else(|| self.many.next())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let len = usize::from(self.one.is_some()) + self.many.len();
        (len, Some(len))
    }
}

impl<T> ExactSizeIterator for BatchIter<T> {}

/// What happened to an input offered to a chunk.
#[derive(Debug)]
pub enum Pushed<I> {
    /// It is in the chunk, and the chunk has room for more.
    Room,
    /// It is in the chunk, and the chunk is full: launch it.
    Full,
    /// It does not fit (the message would grow past its limit): launch the chunk and offer
    /// the input to the next one. Never answered for an empty chunk.
    Refused(I),
    /// The input cannot travel at all: it gets this error as its result, alone.
    Failed(JobError),
}

/// How an executor packs inputs into a chunk.
pub trait Pack<I> {
    /// A packed chunk, as [`Launch::launch`] takes it.
    type Chunk;

    /// Offers one input to the chunk being packed.
    fn push(&mut self, input: I) -> Pushed<I>;

    /// Takes the chunk packed so far, leaving the packer empty for the next one.
    fn take(&mut self) -> Self::Chunk;
}

/// The packer of executors whose workers take inputs as they are: up to `chunk_size` inputs in
/// a [`Batch`].
#[derive(Debug)]
pub struct BatchPacker<I> {
    chunk_size: usize,
    inputs: Vec<I>,
    one: Option<I>,
}

impl<I> BatchPacker<I> {
    /// Chunks of `chunk_size` inputs (at least 1).
    pub fn new(chunk_size: usize) -> Self {
        Self { chunk_size: chunk_size.max(1), inputs: Vec::new(), one: None }
    }
}

impl<I> Pack<I> for BatchPacker<I> {
    type Chunk = Batch<I>;

    fn push(&mut self, input: I) -> Pushed<I> {
        if self.chunk_size == 1 {
            self.one = Some(input);
            return Pushed::Full;
        }
        if self.inputs.capacity() == 0 {
            self.inputs.reserve_exact(self.chunk_size);
        }
        self.inputs.push(input);
        if self.inputs.len() == self.chunk_size { Pushed::Full } else { Pushed::Room }
    }

    fn take(&mut self) -> Batch<I> {
        match self.one.take() {
            Some(input) => Batch::One(input),
            None => Batch::Many(std::mem::take(&mut self.inputs)),
        }
    }
}

/// How an executor launches chunks on its workers: the seam between the engine and an
/// execution model.
///
/// The engine calls [`launch`](Self::launch) with each packed chunk and the [`Reply`] that
/// must answer it. The launcher hands both to a worker and returns at once; the worker calls
/// [`Reply::start`] before it runs the chunk and [`Reply::send`] after. Dropping the reply
/// instead (a cancelled queue, a stopped executor) answers [`JobError::Cancelled`].
pub trait Launch {
    /// The inputs of the job.
    type Input;
    /// The outputs of the job.
    type Output;
    /// How this executor packs inputs.
    type Packer: Pack<Self::Input>;

    /// A packer for this call's chunks.
    fn packer(&mut self) -> Self::Packer;

    /// How many chunks of one call may be in flight (at least 1).
    fn window(&self) -> usize;

    /// Hands one chunk to the workers.
    fn launch(&mut self, chunk: <Self::Packer as Pack<Self::Input>>::Chunk, reply: Reply<Self::Output>);

    /// The executor's progress counters, if it keeps them: the engine counts the call's inputs
    /// as submitted there, and their replies count starts and results. The default keeps none.
    fn progress(&self) -> Option<std::sync::Arc<ProgressCounters>> {
        None
    }

    /// Called while the caller waits for answers: a launcher whose caller may be one of its own
    /// workers (a job that maps over its own pool) runs one queued task here and says `true`,
    /// so that nested use cannot deadlock the pool. The default helps with nothing.
    fn help(&mut self) -> bool {
        false
    }
}

/// Launches one input outside any `map` (a submitted job): packs it and launches it, or answers
/// the reply with the input's error.
pub fn launch_one<L: Launch>(launcher: &mut L, input: L::Input, mut reply: Reply<L::Output>) {
    if let Some(progress) = launcher.progress() {
        reply.count_in(&progress);
    }
    let mut packer = launcher.packer();
    match packer.push(input) {
        Pushed::Room | Pushed::Full => launcher.launch(packer.take(), reply),
        Pushed::Failed(error) => reply.send_one(Err(error)),
        // An empty packer takes any input that can travel at all.
        Pushed::Refused(_) => reply.send_one(Err(JobError::Cancelled)),
    }
}

/// The state of one call: the launcher, the inputs and the window. Shared by [`Unordered`] and
/// [`Ordered`], which differ only in when a chunk leaves the window.
struct Engine<L: Launch, It> {
    launcher: L,
    packer: L::Packer,
    /// `None` once the inputs are exhausted.
    inputs: Option<It>,
    /// An input the previous chunk refused.
    carried: Option<L::Input>,
    /// The error of an input that could not travel, found while packing the previous chunk:
    /// the next cut answers it, in its place, so that one cut never takes two window slots.
    failed: Option<JobError>,
    /// Where the next input's index and the next chunk's sequence number start.
    next_index: usize,
    next_seq: usize,
    window: usize,
    /// Chunks in the window: launched, and not yet received (completion order) or yielded
    /// (input order).
    in_window: usize,
    /// Chunks launched whose answer has not arrived.
    in_flight: usize,
    sender: Sender<Answer<L::Output>>,
    receiver: Receiver<Answer<L::Output>>,
    /// Cancelled when the call is dropped: its chunks that have not started never run.
    call: Arc<Ticket>,
    /// Wait for every answer when dropped (the chunks borrow the caller's stack).
    wait_on_drop: bool,
    progress: Option<std::sync::Arc<ProgressCounters>>,
}

impl<L, It> Engine<L, It>
where
    L: Launch,
    It: Iterator<Item = L::Input>,
{
    fn new(mut launcher: L, inputs: It, wait_on_drop: bool) -> Self {
        let (sender, receiver) = channel::unbounded();
        let progress = launcher.progress();
        Self {
            packer: launcher.packer(),
            window: launcher.window().max(1),
            launcher,
            inputs: Some(inputs),
            carried: None,
            failed: None,
            next_index: 0,
            next_seq: 0,
            in_window: 0,
            in_flight: 0,
            sender,
            receiver,
            call: Arc::new(Ticket::new()),
            wait_on_drop,
            progress,
        }
    }

    fn reply(&mut self, start: usize, len: usize) -> Reply<L::Output> {
        if let Some(progress) = &self.progress {
            progress.submitted(len);
        }
        let reply = Reply::for_engine(
            self.next_seq,
            start,
            len,
            self.sender.clone(),
            Arc::clone(&self.call),
            self.progress.clone(),
        );
        self.next_seq += 1;
        self.in_window += 1;
        self.in_flight += 1;
        reply
    }

    /// Tops the window up with new chunks while inputs remain.
    fn fill(&mut self) {
        while self.in_window < self.window
            && (self.inputs.is_some() || self.carried.is_some() || self.failed.is_some())
        {
            self.cut();
        }
    }

    /// Packs and launches one chunk (or answers one input that cannot travel).
    fn cut(&mut self) {
        let start = self.next_index;
        if let Some(error) = self.failed.take() {
            self.next_index += 1;
            self.reply(start, 1).send_one(Err(error));
            return;
        }
        let mut len = 0;
        loop {
            let input = match self.carried.take() {
                Some(input) => input,
                None => match self.inputs.as_mut().and_then(Iterator::next) {
                    Some(input) => input,
                    None => {
                        self.inputs = None;
                        break;
                    }
                },
            };
            match self.packer.push(input) {
                Pushed::Room => len += 1,
                Pushed::Full => {
                    len += 1;
                    break;
                }
                Pushed::Refused(input) if len > 0 => {
                    self.carried = Some(input);
                    break;
                }
                // An empty chunk refuses only what cannot travel at all; a packer that says
                // otherwise would loop forever here.
                Pushed::Refused(_) => {
                    self.next_index += 1;
                    self.reply(start, 1).fail(JobError::Cancelled);
                    return;
                }
                Pushed::Failed(error) if len == 0 => {
                    self.next_index += 1;
                    self.reply(start, 1).send_one(Err(error));
                    return;
                }
                Pushed::Failed(error) => {
                    // Launch what was packed; the next cut answers the failed input.
                    self.failed = Some(error);
                    break;
                }
            }
        }
        if len > 0 {
            self.next_index = start + len;
            let chunk = self.packer.take();
            let reply = self.reply(start, len);
            self.launcher.launch(chunk, reply);
        }
    }

    /// Waits for the next answer; `None` when nothing is in flight.
    fn receive(&mut self) -> Option<Answer<L::Output>> {
        if self.in_flight == 0 {
            return None;
        }
        let answer = loop {
            if let Ok(answer) = self.receiver.try_recv() {
                break answer;
            }
            if !self.launcher.help() {
                // The engine holds a sender, so this only ever returns with an answer.
                break self.receiver.recv().ok()?;
            }
        };
        self.in_flight -= 1;
        Some(answer)
    }

    fn remaining_inputs(&self) -> usize {
        let pending = self.inputs.as_ref().map_or(0, |inputs| inputs.size_hint().0);
        pending.saturating_add(usize::from(self.carried.is_some()) + usize::from(self.failed.is_some()))
    }
}

impl<L: Launch, It> Drop for Engine<L, It> {
    fn drop(&mut self) {
        // Chunks of this call that have not started never will.
        self.call.cancel();
        if self.wait_on_drop {
            while self.in_flight > 0 {
                if self.receiver.recv().is_err() {
                    break;
                }
                self.in_flight -= 1;
            }
        }
    }
}

/// `(input index, result)` pairs in completion order: `map_unordered`.
pub struct Unordered<L: Launch, It> {
    engine: Engine<L, It>,
    ready: BatchIter<Result<L::Output, JobError>>,
    ready_index: usize,
}

impl<L, It> Unordered<L, It>
where
    L: Launch,
    It: Iterator<Item = L::Input>,
{
    /// Runs `inputs` through `launcher`; results as they complete.
    pub fn new(launcher: L, inputs: It) -> Self {
        Self {
            engine: Engine::new(launcher, inputs, false),
            ready: Batch::Many(Vec::new()).into_iter(),
            ready_index: 0,
        }
    }
}

impl<L, It> Iterator for Unordered<L, It>
where
    L: Launch,
    It: Iterator<Item = L::Input>,
{
    type Item = (usize, Result<L::Output, JobError>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(result) = self.ready.next() {
                self.ready_index += 1;
                return Some((self.ready_index - 1, result));
            }
            self.engine.fill();
            let answer = self.engine.receive()?;
            self.engine.in_window -= 1;
            // Keep the workers busy while the caller handles these results.
            self.engine.fill();
            self.ready_index = answer.start;
            self.ready = answer.results.into_iter();
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.ready.len().saturating_add(self.engine.remaining_inputs()), None)
    }
}

impl<L: Launch, It> fmt::Debug for Unordered<L, It> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unordered").field("in_flight", &self.engine.in_flight).finish_non_exhaustive()
    }
}

/// One chunk's results.
type Results<O> = Batch<Result<O, JobError>>;

/// Results in input order, each as soon as every input before it has one: `imap`, and `map`
/// as its collect.
pub struct Ordered<L: Launch, It> {
    engine: Engine<L, It>,
    /// Answers that overtook the next chunk; slot `k` holds the chunk `k` places after the one
    /// being waited for.
    held: VecDeque<Option<Results<L::Output>>>,
    /// The sequence number of `held`'s first slot.
    next_seq: usize,
    ready: BatchIter<Result<L::Output, JobError>>,
}

impl<L, It> Ordered<L, It>
where
    L: Launch,
    It: Iterator<Item = L::Input>,
{
    /// Runs `inputs` through `launcher`; results in input order.
    pub fn new(launcher: L, inputs: It) -> Self {
        Self::with_wait(launcher, inputs, false)
    }

    /// As [`new`](Self::new), for chunks that borrow from the caller: dropping the iterator
    /// waits until every launched chunk has answered.
    ///
    /// # Safety
    /// The caller must not leak the iterator (`mem::forget`): its `Drop` is what waits.
    pub unsafe fn new_scoped(launcher: L, inputs: It) -> Self {
        Self::with_wait(launcher, inputs, true)
    }

    fn with_wait(launcher: L, inputs: It, wait_on_drop: bool) -> Self {
        Self {
            engine: Engine::new(launcher, inputs, wait_on_drop),
            held: VecDeque::new(),
            next_seq: 0,
            ready: Batch::Many(Vec::new()).into_iter(),
        }
    }
}

impl<L, It> Iterator for Ordered<L, It>
where
    L: Launch,
    It: Iterator<Item = L::Input>,
{
    type Item = Result<L::Output, JobError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(result) = self.ready.next() {
                return Some(result);
            }
            if self.held.front().is_some_and(Option::is_some)
                && let Some(results) = self.held.pop_front().flatten()
            {
                self.next_seq += 1;
                self.engine.in_window -= 1;
                self.engine.fill();
                self.ready = results.into_iter();
                continue;
            }
            self.engine.fill();
            let answer = self.engine.receive()?;
            let offset = answer.seq - self.next_seq;
            if offset >= self.held.len() {
                self.held.resize_with(offset + 1, || None);
            }
            self.held[offset] = Some(answer.results);
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let held: usize = self.held.iter().flatten().map(Batch::len).sum();
        (self.ready.len().saturating_add(held).saturating_add(self.engine.remaining_inputs()), None)
    }
}

impl<L: Launch, It> fmt::Debug for Ordered<L, It> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ordered")
            .field("in_flight", &self.engine.in_flight)
            .field("held", &self.held.len())
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::plumbing::EncodedPacker;

    /// Answers every chunk at once, on the caller's thread; drops the replies of the chunks
    /// whose first input is in `drop_at`.
    struct Inline<P> {
        packer: fn() -> P,
        window: usize,
        drop_at: Vec<usize>,
        launched: Vec<usize>,
    }

    impl<P: Pack<u64, Chunk = Batch<u64>>> Launch for Inline<P> {
        type Input = u64;
        type Output = u64;
        type Packer = P;

        fn packer(&mut self) -> P {
            (self.packer)()
        }

        fn window(&self) -> usize {
            self.window
        }

        fn launch(&mut self, chunk: Batch<u64>, reply: Reply<u64>) {
            self.launched.push(reply.first_index());
            if !self.drop_at.contains(&reply.first_index()) {
                reply.send(chunk.map(|x| Ok(x * 10)));
            }
        }
    }

    fn inline(chunk_size: usize, drop_at: Vec<usize>) -> Inline<BatchPacker<u64>> {
        let packer = match chunk_size {
            1 => || BatchPacker::new(1),
            _ => || BatchPacker::new(3),
        };
        Inline { packer, window: 2, drop_at, launched: Vec::new() }
    }

    #[test]
    fn ordered_and_unordered_answer_every_input_once() {
        for chunk_size in [1, 3] {
            let ordered: Vec<_> = Ordered::new(inline(chunk_size, vec![]), 0..10).collect();
            assert_eq!(ordered, (0..10).map(|x| Ok(x * 10)).collect::<Vec<_>>());
            let mut unordered: Vec<_> = Unordered::new(inline(chunk_size, vec![]), 0..10).collect();
            unordered.sort_by_key(|(index, _)| *index);
            assert_eq!(unordered, (0..10).map(|x| (x as usize, Ok(x * 10))).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_dropped_reply_answers_cancelled_for_its_inputs_alone() {
        let results: Vec<_> = Ordered::new(inline(3, vec![3]), 0..7).collect();
        let expected: Vec<Result<u64, JobError>> =
            (0..7).map(|x| if (3..6).contains(&x) { Err(JobError::Cancelled) } else { Ok(x * 10) }).collect();
        assert_eq!(results, expected);
    }

    #[test]
    fn inputs_are_pulled_only_as_the_window_frees() {
        let mut launcher = inline(1, vec![]);
        launcher.window = 4;
        let pulled = std::cell::Cell::new(0);
        let mut results = Ordered::new(launcher, (0..).inspect(|_| pulled.set(pulled.get() + 1)));
        assert_eq!(results.next(), Some(Ok(0)));
        assert!(pulled.get() <= 5, "pulled {}", pulled.get());
    }

    /// Launches encoded chunks, answering each input with its byte length in the chunk.
    struct Encoded;

    impl Launch for Encoded {
        type Input = Vec<u8>;
        type Output = usize;
        type Packer = EncodedPacker;

        fn packer(&mut self) -> EncodedPacker {
            EncodedPacker::new(4, 64)
        }

        fn window(&self) -> usize {
            8
        }

        fn launch(&mut self, chunk: Vec<u8>, reply: Reply<usize>) {
            let inputs: Vec<Vec<u8>> = postcard::from_bytes(&chunk).expect("a chunk decodes");
            reply.send(Batch::from_vec(inputs.into_iter().map(|input| Ok(input.len())).collect()));
        }
    }

    #[test]
    fn an_input_that_cannot_travel_fails_in_its_place() {
        // 20-byte inputs: two fit a 64-byte message, the third goes to the next chunk; the
        // 100-byte input fits no message and fails alone, between its neighbours.
        let sizes = [20, 20, 20, 100, 20, 5];
        let results: Vec<_> = Ordered::new(Encoded, sizes.map(|n| vec![0_u8; n]).into_iter()).collect();
        for (size, result) in sizes.into_iter().zip(results) {
            match result {
                Ok(len) => assert_eq!(len, size),
                Err(JobError::Serialization { part: crate::PayloadPart::Input, .. }) => assert_eq!(size, 100),
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
    }
}
