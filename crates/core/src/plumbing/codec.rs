//! The process boundary: how payloads become bytes (postcard), the one message-size check, the
//! packer of encoded chunks, the encoded entry point a worker process calls, and panic capture.

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::engine::{Batch, Pack, Pushed};
use crate::{Direction, Job, JobError, Payload, PayloadPart};

/// Serializes a payload with the format of fanout's process boundary (postcard).
pub fn encode_payload<T: Serialize + ?Sized>(part: PayloadPart, value: &T) -> Result<Vec<u8>, JobError> {
    postcard::to_stdvec(value).map_err(|error| serialization(part, Direction::Encode, error.to_string()))
}

/// Deserializes a payload written by [`encode_payload`].
pub fn decode_payload<T: DeserializeOwned>(part: PayloadPart, bytes: &[u8]) -> Result<T, JobError> {
    postcard::from_bytes(bytes).map_err(|error| serialization(part, Direction::Decode, error.to_string()))
}

fn serialization(part: PayloadPart, direction: Direction, message: String) -> JobError {
    JobError::Serialization { part, direction, message }
}

/// The one check of a message against an executor's size limit, wherever bytes cross a process
/// boundary: inputs on their way out, outputs in the worker, replies on their way in.
pub fn check_message_size(
    part: PayloadPart,
    direction: Direction,
    len: usize,
    limit: usize,
) -> Result<(), JobError> {
    if len <= limit {
        return Ok(());
    }
    let advice = match part {
        PayloadPart::Input => "pass a smaller input, or raise the executor's max_message_bytes",
        _ => "use a smaller chunk size, or raise the executor's max_message_bytes",
    };
    Err(serialization(
        part,
        direction,
        format!("the {part} takes {len} bytes, over the message limit of {limit} bytes; {advice}"),
    ))
}

/// The packer of executors whose workers take encoded chunks: postcard's encoding of a
/// `Vec<Input>` (the element count as a varint, then each element), written one input at a
/// time, so that an input that does not serialize or is too large alone fails alone, and no
/// chunk grows past the message limit.
#[derive(Debug)]
pub struct EncodedPacker {
    body: Vec<u8>,
    count: usize,
    chunk_size: usize,
    limit: usize,
}

/// The most bytes postcard's varint count of a `Vec` takes.
const MAX_COUNT_BYTES: usize = 10;

impl EncodedPacker {
    /// Chunks of at most `chunk_size` inputs and `limit` bytes.
    pub fn new(chunk_size: usize, limit: usize) -> Self {
        Self { body: Vec::new(), count: 0, chunk_size: chunk_size.max(1), limit }
    }
}

impl<I: Serialize> Pack<I> for EncodedPacker {
    type Chunk = Vec<u8>;

    fn push(&mut self, input: I) -> Pushed<I> {
        let before = self.body.len();
        if let Err(error) = postcard::to_io(&input, &mut self.body) {
            self.body.truncate(before);
            return Pushed::Failed(serialization(PayloadPart::Input, Direction::Encode, error.to_string()));
        }
        let size = self.body.len() - before;
        if self.body.len() + MAX_COUNT_BYTES > self.limit {
            self.body.truncate(before);
            // An input that fits a chunk of its own goes into the next one (this one is not
            // empty, or it would have fitted); a larger one cannot travel at all.
            return match check_message_size(
                PayloadPart::Input,
                Direction::Encode,
                size + MAX_COUNT_BYTES,
                self.limit,
            ) {
                Ok(()) => Pushed::Refused(input),
                Err(error) => Pushed::Failed(error),
            };
        }
        self.count += 1;
        if self.count == self.chunk_size { Pushed::Full } else { Pushed::Room }
    }

    fn take(&mut self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(MAX_COUNT_BYTES + self.body.len());
        // A `usize` always encodes.
        bytes.extend_from_slice(&postcard::to_stdvec(&self.count).unwrap_or_default());
        bytes.extend_from_slice(&self.body);
        self.body.clear();
        self.count = 0;
        bytes
    }
}

/// Runs a chunk of encoded inputs through a job in the current process.
///
/// `state` comes from [`JobState::encode_state`](super::JobState::encode_state), `inputs` is an encoded `Vec<I>`; the answer
/// is an encoded `Vec<Result<Output, JobError>>` with one entry per input, in input order. An
/// `Err` means the whole chunk failed (the state or the inputs could not be decoded).
pub type EncodedEntry = fn(state: &[u8], inputs: &[u8]) -> Result<Vec<u8>, JobError>;

/// The [`EncodedEntry`] of job type `J` with input `I`.
///
/// A process pool sends this function's address to a worker forked from the same executable,
/// where the same address holds the same code.
pub fn entry_point<J, I>() -> EncodedEntry
where
    J: Job<I>,
    I: Payload,
    J::Output: Payload,
{
    run_encoded_chunk::<J, I>
}

fn run_encoded_chunk<J, I>(state: &[u8], inputs: &[u8]) -> Result<Vec<u8>, JobError>
where
    J: Job<I>,
    I: Payload,
    J::Output: Payload,
{
    let inputs: Vec<I> = decode_payload(PayloadPart::Input, inputs)?;
    let outputs: Vec<Result<J::Output, JobError>> =
        J::with_decoded_state(state, |job| inputs.into_iter().map(|input| run_caught(job, input)).collect())?;
    match encode_payload(PayloadPart::Message, &outputs) {
        Ok(bytes) => Ok(bytes),
        // Some output refused to serialize: report that output alone and keep the others.
        Err(_) => {
            let outputs: Vec<Result<J::Output, JobError>> = outputs
                .into_iter()
                .map(|output| {
                    let output = output?;
                    encode_payload(PayloadPart::Output, &output).map(|_| output)
                })
                .collect();
            encode_payload(PayloadPart::Message, &outputs)
        }
    }
}

/// Runs the inputs of a chunk through a job one by one, handing each input's encoded result to
/// `emit` as soon as it is known: the entry point of a worker process whose executor must hear
/// of every finished input (to enforce a per-input time limit without losing the others).
///
/// `inputs` is an encoded `Vec<I>`, as for [`EncodedEntry`]; the first `skip` inputs are
/// skipped (they ran before). Each call of `emit` receives postcard's encoding of one input's
/// `Result<Output, JobError>`, in input order, so that the varint count of the chunk followed by
/// the emitted results, concatenated, is the encoding of the chunk's `Vec<Result<..>>` that
/// [`Reply::encoded`](super::Reply::encoded) decodes. An `Err` result encodes the same whatever
/// the output type is (the variant's tag, then the error), so an executor may emit errors of
/// its own in an input's place. `limit` is the job time limit: each input runs under a
/// [`DeadlineGuard`](crate::deadline::DeadlineGuard) of that length, and an input that returns
/// after its deadline passed (one that stopped itself when it saw
/// [`deadline::expired`](crate::deadline::expired)) is answered
/// [`JobError::Expired`], as if it had been stopped. `emit` returning `false`
/// stops the chunk (nobody listens any more). An `Err` means the state or the inputs could not
/// be decoded, before any input ran.
pub type StreamingEntry = fn(
    state: &[u8],
    inputs: &[u8],
    skip: usize,
    limit: Option<std::time::Duration>,
    emit: &mut dyn FnMut(Vec<u8>) -> bool,
) -> Result<(), JobError>;

/// The [`StreamingEntry`] of job type `J` with input `I`: [`entry_point`]'s counterpart for
/// executors that take the results of a chunk one input at a time.
pub fn entry_point_streaming<J, I>() -> StreamingEntry
where
    J: Job<I>,
    I: Payload,
    J::Output: Payload,
{
    run_encoded_stream::<J, I>
}

fn run_encoded_stream<J, I>(
    state: &[u8],
    inputs: &[u8],
    skip: usize,
    limit: Option<std::time::Duration>,
    emit: &mut dyn FnMut(Vec<u8>) -> bool,
) -> Result<(), JobError>
where
    J: Job<I>,
    I: Payload,
    J::Output: Payload,
{
    let inputs: Vec<I> = decode_payload(PayloadPart::Input, inputs)?;
    J::with_decoded_state(state, |job| {
        for input in inputs.into_iter().skip(skip) {
            let result = {
                let _deadline = crate::deadline::DeadlineGuard::start(limit);
                let result = run_caught(job, input);
                match limit {
                    // It returned, but past its limit (it stopped itself once it saw its
                    // deadline pass, or just finished late): expired all the same.
                    Some(limit) if crate::deadline::expired() => Err(JobError::Expired { limit }),
                    _ => result,
                }
            };
            let bytes = match encode_payload(PayloadPart::Message, &result) {
                Ok(bytes) => bytes,
                // The output refused to serialize: its input fails alone.
                Err(_) => {
                    let error = result
                        .and_then(|output| encode_payload(PayloadPart::Output, &output).map(|_| output));
                    match encode_payload(PayloadPart::Message, &error) {
                        Ok(bytes) => bytes,
                        Err(error) => encode_error(error),
                    }
                }
            };
            if !emit(bytes) {
                break;
            }
        }
    })
}

/// Postcard's encoding of `Err::<(), _>(error)`, which is that of `Err(error)` for every
/// output type; a `JobError` always encodes.
fn encode_error(error: JobError) -> Vec<u8> {
    postcard::to_stdvec(&Err::<(), JobError>(error)).unwrap_or_default()
}

/// Runs `job` on `input`, turning a panic into [`JobError::Panicked`].
///
/// Every executor runs jobs through this function, so a panic means the same everywhere.
#[inline]
pub fn run_caught<J: Job<I>, I>(job: &J, input: I) -> Result<J::Output, JobError> {
    catch_panic(|| job.call(input))
}

/// Runs `f`, turning a panic into [`JobError::Panicked`] with the panic's message.
///
/// For code that runs closures outside the [`Job`] rules (a thread pool's scoped API, a
/// future's poll); jobs go through [`run_caught`].
#[inline]
pub fn catch_panic<T>(f: impl FnOnce() -> T) -> Result<T, JobError> {
    // `AssertUnwindSafe`: the job is only borrowed shared, as every thread pool lends it, and a
    // job whose state a panic left inconsistent can only observe it through interior
    // mutability, which `UnwindSafe` does not track for `Sync` types anyway.
    panic::catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        let message = panic_message(payload.as_ref());
        // A payload whose destructor panics must not take the worker down with it.
        let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(payload)));
        JobError::Panicked { message }
    })
}

/// Runs `f` on every input, turning a panic into that input's [`JobError::Panicked`].
///
/// One unwinding guard covers the whole chunk; only a panic costs a new one, for the inputs
/// after it. The panicking input is the one whose result is missing, so positions stay right.
pub fn run_caught_all<I, O>(inputs: Vec<I>, f: impl Fn(I) -> O) -> Vec<Result<O, JobError>> {
    let mut results = Vec::with_capacity(inputs.len());
    let mut inputs = inputs.into_iter();
    while let Err(panicked) = catch_panic(|| results.extend(inputs.by_ref().map(|input| Ok(f(input))))) {
        results.push(Err(panicked));
    }
    results
}

/// Runs `f` on every input of a chunk, each panic caught as that input's error: what a worker
/// in the caller's process does with a [`Batch`].
pub fn run_chunk<I, O>(chunk: Batch<I>, f: impl Fn(I) -> O) -> Batch<Result<O, JobError>> {
    match chunk {
        Batch::One(input) => Batch::One(catch_panic(|| f(input))),
        Batch::Many(inputs) => Batch::Many(run_caught_all(inputs, f)),
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&'static str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "a panic whose payload is not a string".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_is_postcards_encoding_of_a_vec() {
        let inputs: Vec<(String, u64)> = (0..300).map(|i| (format!("input {i}"), i * 1_000_003)).collect();
        let mut packer = EncodedPacker::new(usize::MAX, usize::MAX);
        for input in &inputs {
            assert!(matches!(packer.push(input), Pushed::Room));
        }
        assert_eq!(Pack::<&(String, u64)>::take(&mut packer), postcard::to_stdvec(&inputs).unwrap());
    }

    #[test]
    fn a_full_chunk_refuses_more_and_an_oversized_input_fails_alone() {
        let mut packer = EncodedPacker::new(8, 64);
        assert!(matches!(packer.push(vec![1_u8; 30]), Pushed::Room));
        assert!(matches!(packer.push(vec![2_u8; 30]), Pushed::Refused(_)));
        assert!(matches!(
            packer.push(vec![3_u8; 100]),
            Pushed::Failed(JobError::Serialization { part: PayloadPart::Input, .. })
        ));
        let bytes = Pack::<Vec<u8>>::take(&mut packer);
        assert_eq!(postcard::from_bytes::<Vec<Vec<u8>>>(&bytes).unwrap(), vec![vec![1_u8; 30]]);
    }

    #[test]
    fn a_chunk_is_full_at_its_size() {
        let mut packer = EncodedPacker::new(2, usize::MAX);
        assert!(matches!(packer.push(1_u64), Pushed::Room));
        assert!(matches!(packer.push(2_u64), Pushed::Full));
        assert_eq!(postcard::from_bytes::<Vec<u64>>(&Pack::<u64>::take(&mut packer)).unwrap(), [1, 2]);
    }
}
