//! What a job is: the [`Job`] trait, the [`Payload`] bound on inputs and outputs, and stateful
//! jobs ([`Stateful`]); and [`JobState`], how a job's state crosses a process boundary.

use std::ptr::NonNull;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::plumbing::{decode_payload, encode_payload};
use crate::{JobError, PayloadPart};

/// A value that can travel to a worker and back: a serde type that owns its data.
///
/// Every job input and output is a `Payload`, for every executor, so that any job that runs on
/// one executor runs on all of them. Multiple arguments are a tuple: `(String, u64)` is a
/// `Payload` when its parts are.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot travel to a worker: job inputs and outputs must be serde types that own their data",
    label = "not `Serialize + DeserializeOwned + Send + 'static`",
    note = "derive `serde::Serialize` and `serde::Deserialize` for it and replace borrowed fields (`&str`, `&[T]`) with owned ones (`String`, `Vec<T>`)",
    note = "state that cannot be serialized (a client, a file, a lock) belongs inside the job: build it there, or use `ThreadPool::scoped_map`, which runs borrowing closures"
)]
pub trait Payload: Serialize + DeserializeOwned + Send + 'static {}

impl<T: Serialize + DeserializeOwned + Send + 'static> Payload for T {}

/// A function from an input `I` to an [`Output`](Job::Output) that any executor can run.
///
/// Two kinds of values are jobs:
/// - a `fn` item or a closure that captures nothing: `fn fetch(id: u64) -> Item`, `|x: u64| x + 1`;
/// - a serde struct implementing [`StatefulJob`], wrapped in [`Stateful`]: its state travels
///   to the worker in its serialized fields.
///
/// A closure that captures its environment is refused when the job is used, with a message that
/// says to move the state into the input or into a `Stateful` job. That is Rust's answer to
/// Python's "Can't pickle": a process pool has to rebuild the job in another process, and
/// captured references cannot make that trip. The rule holds for every executor, so that
/// swapping one executor for another never breaks a build.
///
/// ```compile_fail,E0080
/// use fanout_core::{Executor, Serial};
///
/// let offset = 10_u64;
/// // error: "this job captures its environment ..."
/// Serial::new().map(move |x: u64| x + offset, 0..3);
/// ```
///
/// Multiple arguments are a tuple input:
///
/// ```
/// use fanout_core::{Executor, Serial};
///
/// let sums = Serial::new().map(|(a, b): (u64, u64)| a + b, [(1, 2), (3, 4)]);
/// assert_eq!(sums, [Ok(3), Ok(7)]);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a fanout job taking `{I}`",
    label = "not a job",
    note = "a job is a `fn` item, a closure that captures nothing, or a serde struct implementing `StatefulJob<{I}>` wrapped in `Stateful(..)`"
)]
pub trait Job<I>: JobState<I> + Send + Sync + 'static {
    /// What the job returns.
    type Output;

    /// Runs the job on one input, in the current thread.
    fn call(&self, input: I) -> Self::Output;
}

/// How a job's state crosses a process boundary: the half of a [`Job`] that only executors
/// use.
///
/// Sealed: it is implemented for exactly the two kinds of jobs (zero-sized functions and
/// [`Stateful`] serde structs), so no job can claim a state it cannot rebuild. Executors that
/// run jobs in other processes call it; see [`plumbing`](crate::plumbing).
pub trait JobState<I>: sealed::Sealed<I> {
    /// Serializes the job's own state for a worker process.
    fn encode_state(&self) -> Result<Vec<u8>, JobError>;

    /// Rebuilds the job from [`encode_state`](Self::encode_state)'s bytes in a worker process
    /// and lends it to `f`.
    fn with_decoded_state<R>(state: &[u8], f: impl FnOnce(&Self) -> R) -> Result<R, JobError>
    where
        Self: Sized;
}

mod sealed {
    /// Implemented by the two kinds of jobs only, in this module's parent.
    pub trait Sealed<I> {}
}

/// The one check behind "capturing closures do not compile". It is evaluated when a job type is
/// used, so the message names the job's call site.
struct AssertStateless<F>(F);

impl<F> AssertStateless<F> {
    const OK: () = assert!(
        size_of::<F>() == 0,
        "this job captures its environment, and a job must be rebuildable in another process: \
         move the captured values into the job's input (a tuple input works), or put them in \
         the fields of a serde struct that implements `StatefulJob` and pass it as \
         `Stateful(your_struct)`; use `ThreadPool::scoped_map` to run a closure that borrows"
    );
}

impl<F, I, O> sealed::Sealed<I> for F where F: Fn(I) -> O + Send + Sync + 'static {}

impl<F, I, O> Job<I> for F
where
    F: Fn(I) -> O + Send + Sync + 'static,
{
    type Output = O;

    fn call(&self, input: I) -> O {
        let () = AssertStateless::<F>::OK;
        self(input)
    }
}

impl<F, I, O> JobState<I> for F
where
    F: Fn(I) -> O + Send + Sync + 'static,
{
    fn encode_state(&self) -> Result<Vec<u8>, JobError> {
        let () = AssertStateless::<F>::OK;
        Ok(Vec::new())
    }

    fn with_decoded_state<R>(_state: &[u8], f: impl FnOnce(&Self) -> R) -> Result<R, JobError> {
        let () = AssertStateless::<F>::OK;
        // SAFETY: `F` is zero-sized (checked at compile time just above), and for a zero-sized
        // type every non-null, aligned pointer is valid for reads, so the reference is valid.
        // It is also a legitimate value of `F`: `F` is a `fn` item or a closure whose captures
        // are all zero-sized, so it holds no data and no bytes distinguish one of its values
        // from another. The caller of this function is a worker acting for an executor that
        // holds a live `&F` for the whole run, so this borrow stands for that one: no value of
        // `F` is created, dropped or duplicated, only lent for the duration of `f`.
        let job = unsafe { NonNull::<F>::dangling().as_ref() };
        Ok(f(job))
    }
}

/// A job whose state lives in the serialized fields of a struct.
///
/// Wrap it in [`Stateful`] to pass it to an executor. A process pool serializes the struct once
/// per message and rebuilds it in the worker.
///
/// ```
/// use fanout_core::{Executor, Serial, Stateful, StatefulJob};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Scale {
///     factor: u64,
/// }
///
/// impl StatefulJob<u64> for Scale {
///     type Output = u64;
///     fn call(&self, x: u64) -> u64 {
///         x * self.factor
///     }
/// }
///
/// let out = Serial::new().map(Stateful(Scale { factor: 3 }), [1, 2]);
/// assert_eq!(out, [Ok(3), Ok(6)]);
/// ```
pub trait StatefulJob<I>: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// What the job returns.
    type Output;

    /// Runs the job on one input.
    fn call(&self, input: I) -> Self::Output;
}

/// Makes a [`StatefulJob`] a [`Job`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stateful<S>(pub S);

impl<S: StatefulJob<I>, I> sealed::Sealed<I> for Stateful<S> {}

impl<S, I> Job<I> for Stateful<S>
where
    S: StatefulJob<I>,
{
    type Output = S::Output;

    fn call(&self, input: I) -> S::Output {
        self.0.call(input)
    }
}

impl<S, I> JobState<I> for Stateful<S>
where
    S: StatefulJob<I>,
{
    fn encode_state(&self) -> Result<Vec<u8>, JobError> {
        encode_payload(PayloadPart::Job, &self.0)
    }

    fn with_decoded_state<R>(state: &[u8], f: impl FnOnce(&Self) -> R) -> Result<R, JobError> {
        let job = Stateful(decode_payload::<S>(PayloadPart::Job, state)?);
        Ok(f(&job))
    }
}
