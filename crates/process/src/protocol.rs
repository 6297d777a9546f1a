//! The messages between a pool, its fork server and its workers, and how a job's code travels.
//!
//! Code travels as an offset from [`code_anchor`]: every process of a pool runs the same
//! executable (the fork server is that executable, started afresh), so the same offset from the
//! same function names the same code in each of them, whatever address-space layout randomization
//! did to the base address.

use std::time::Duration;

use fanout_core::limit::Scope;

use crate::permits::Grant;
use fanout_core::plumbing::{EncodedEntry, Outcome, StreamingEntry};
use fanout_core::{JobError, WorkerExit};
use ipc_channel::ipc::{IpcReceiver, IpcSender};
use serde::{Deserialize, Serialize};

/// The fork server's first message to the program that started it.
#[derive(Serialize, Deserialize)]
pub(crate) enum Hello {
    /// The server is up.
    Ready {
        /// The server's life line: it exits when it reads [`Control::Shutdown`] here or when
        /// this channel closes (the program died). Only the program's own process holds it.
        control: IpcSender<Control>,
        /// Where pools ask to be served ([`Attach`]). The server's workers inherit a copy, so
        /// that a pool built inside a worker is served by the same server.
        attach: IpcSender<Attach>,
        /// [`probe_offset`] as the server computes it; it must equal the pool's.
        probe: isize,
    },
    /// Sent by the pool to itself to stop waiting for a server that died before saying hello.
    Abort,
}

/// What the program tells its fork server on the control channel.
#[derive(Serialize, Deserialize)]
pub(crate) enum Control {
    /// Exit: the program's last pool is gone, and with it every worker.
    Shutdown,
}

/// A pool's request to be served: its own channels to the fork server. The server owns the
/// pool's workers until this session ends, when `requests` closes (the pool stopped, or the
/// process that holds it died): the server then kills and reaps whatever is left of them.
#[derive(Serialize, Deserialize)]
pub(crate) struct Attach {
    pub(crate) requests: IpcReceiver<ServerRequest>,
    pub(crate) replies: IpcSender<ServerReply>,
    /// Where the workers of a [`ServerRequest::SpawnEach`] are announced, one by one.
    pub(crate) forked: IpcSender<Forked>,
}

/// What a pool asks the fork server, on its session.
#[derive(Serialize, Deserialize)]
pub(crate) enum ServerRequest {
    /// Fork one worker per entry of `workers` (at most [`MAX_SPAWN_BATCH`]), then answer
    /// [`ServerReply::Spawned`].
    Spawn { workers: Vec<WorkerEnds>, settings: WorkerSettings },
    /// Fork one worker per entry of `workers`, announcing each on the session's `forked`
    /// channel as soon as it is forked, without a reply: the pool goes on meanwhile.
    SpawnEach { workers: Vec<WorkerEnds>, settings: WorkerSettings },
    /// Make sure these workers of the session are gone (kill those that are not) and reap
    /// them.
    Reap { pids: Vec<i32> },
    /// These workers of the session left its pool as spares ([`WorkerReply::Released`]): keep
    /// them for the `Spawn`s of later pools that take spares, or let them go if the server has
    /// spares enough. No reply. No descriptor travels: the server made each one's spare
    /// channels when it forked it ([`SpareEnds`]).
    Keep { pids: Vec<i32> },
}

/// A worker's ends of the channels it waits on as a spare, made by the fork server before the
/// fork of a worker that may become one (a worker of a pool that reuses workers) and
/// inherited through `fork`, never sent: the server keeps the other ends for the worker's
/// whole life.
pub(crate) struct SpareEnds {
    /// Where its next pool's channels and settings come ([`Rebind`]); the server closing its
    /// end unread tells the spare to exit.
    pub(crate) rebind: IpcReceiver<Rebind>,
    /// Held for the worker's life, never used: the server sees the channel close when the
    /// worker dies, in a pool or as a spare.
    #[expect(dead_code, reason = "held for the worker's life, so that its death closes the channel")]
    pub(crate) alive: IpcSender<()>,
}

/// A spare's next pool: its ends of that pool's channels, and that pool's settings.
#[derive(Serialize, Deserialize)]
pub(crate) struct Rebind {
    pub(crate) ends: WorkerEnds,
    pub(crate) settings: WorkerSettings,
}

/// The fork server's answers to `Spawn` and `Reap`, one per request, in order.
#[derive(Serialize, Deserialize)]
pub(crate) enum ServerReply {
    /// One entry per requested worker: its pid, or the `errno` of a failed `fork`.
    Spawned { pids: Vec<Result<i32, i32>> },
    /// One entry per reaped pid, in order.
    Reaped { exits: Vec<WorkerExit> },
}

/// One worker of a `SpawnEach`, in the order of the request: its pid, or the `errno` of a
/// failed `fork`.
#[derive(Serialize, Deserialize)]
pub(crate) struct Forked(pub(crate) Result<i32, i32>);

/// A worker's ends of its channels: it takes jobs from `jobs` and answers on `replies`; a
/// worker of a rate-limited pool also gets the permits its jobs ask for on `grants`.
#[derive(Serialize, Deserialize)]
pub(crate) struct WorkerEnds {
    pub(crate) jobs: IpcReceiver<WorkerRequest>,
    pub(crate) replies: IpcSender<WorkerReply>,
    pub(crate) grants: Option<IpcReceiver<Grant>>,
}

/// The most descriptors one message may carry (ipc-channel's limit).
pub(crate) const MAX_DESCRIPTORS: usize = 64;

/// The most workers one `Spawn` may carry: each brings two descriptors (three with `grants`).
pub(crate) const MAX_SPAWN_BATCH: usize = MAX_DESCRIPTORS / 2;

/// Settings every worker of a pool starts with.
#[derive(Clone, Copy, Serialize, Deserialize)]
pub(crate) struct WorkerSettings {
    /// Code offset of a `fn()` to run once when the worker starts.
    pub(crate) initializer: Option<isize>,
    /// The worker retires after this many tasks.
    pub(crate) max_tasks: Option<u64>,
    /// The largest reply the worker may send, in bytes.
    pub(crate) max_message_bytes: usize,
    /// A random number only this pool and its workers know, carried by every `Run`: a worker
    /// calls code by address, so it runs only requests that prove they come from its pool,
    /// and a malformed or stray frame that happens to decode as a `Run` is refused.
    pub(crate) key: u64,
    /// The pool's job time limit. With one, the pool sends `Stream` requests, and each input
    /// runs under a deadline of this length that the job can poll.
    pub(crate) job_timeout: Option<Duration>,
    /// Whether the pool has a rate limit (and who takes its permits): the worker's jobs then
    /// ask the pool for permits (`limit::acquire`) over `Acquire` and `grants`.
    pub(crate) permits: Option<Scope>,
    /// The pool takes the server's spare workers before it forks new ones, and its workers
    /// leave as spares when it ends ([`WorkerRequest::Release`]). Never with an initializer or
    /// a task limit: those ask for fresh processes.
    pub(crate) reuse: bool,
}

impl WorkerSettings {
    /// A fresh random key for a new pool (from the OS-seeded hasher keys of the standard
    /// library: 64 unpredictable bits, no extra dependency).
    pub(crate) fn new_key() -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(0x6661_6e6f_7574);
        hasher.finish()
    }
}

/// What a pool sends a worker.
#[derive(Serialize, Deserialize)]
pub(crate) enum WorkerRequest {
    /// Run a chunk of inputs through the job at code offset `entry`.
    Run { key: u64, entry: isize, state: Vec<u8>, inputs: Vec<u8> },
    /// Run the inputs of a chunk after the first `skip` through the job whose
    /// [`StreamingEntry`] is at code offset `entry`, answering one [`WorkerReply::Result`] per
    /// input as it finishes, then [`WorkerReply::Streamed`]. Only pools with a job time limit
    /// send it: the pool then knows which input runs and since when.
    Stream { key: u64, entry: isize, state: Vec<u8>, inputs: Vec<u8>, skip: u64 },
    /// The pool is done with the worker, which leaves it as a spare of the fork server: it
    /// flushes what its jobs printed, answers [`WorkerReply::Released`], closes its ends of the
    /// pool's channels and waits for a [`Rebind`]. Sent only to idle workers of a pool that
    /// reuses them, and carries the pool's key like any request.
    Release { key: u64 },
}

/// What a worker sends back.
#[derive(Serialize, Deserialize)]
pub(crate) enum WorkerReply {
    /// The answer to one `Run`: an encoded `Vec<Result<Output, JobError>>`, or why the whole
    /// chunk failed. `last` says the worker reached its task limit and exits now, so that it
    /// is never handed another task.
    Done { outcome: Outcome, last: bool },
    /// The initializer panicked; the worker exits after this message.
    InitFailed { message: String },
    /// The result of one input of a `Stream`: postcard's encoding of its
    /// `Result<Output, JobError>`.
    Result { bytes: Vec<u8> },
    /// The end of a `Stream`: every input not skipped sent its `Result`, or the chunk failed
    /// with this error before the inputs that did not send one (its state or inputs did not
    /// decode). `last` as for `Done`.
    Streamed { outcome: Result<(), JobError>, last: bool },
    /// A job asks for a permit of the pool's rate limit; the grant comes on `grants`.
    Acquire,
    /// A job pauses the pool's rate limit (a server's `Retry-After`) for this long.
    Pause { nanos: u64 },
    /// The answer to `Release`: the worker wrote out its jobs' output and leaves the pool, to
    /// wait in the fork server as a spare ([`ServerRequest::Keep`]). Its last message to the
    /// pool.
    Released,
}

/// The function every code offset is taken from.
#[inline(never)]
pub(crate) fn code_anchor() {
    std::hint::black_box(());
}

/// A second function, whose offset the pool and its fork server compare to prove they run the
/// same executable.
#[inline(never)]
fn code_probe() -> u8 {
    std::hint::black_box(7)
}

/// The offset of `code_probe` from `code_anchor` in this process.
pub(crate) fn probe_offset() -> isize {
    offset_of_code(code_probe as fn() -> u8 as usize)
}

/// The offset of the code at `address` from [`code_anchor`].
pub(crate) fn offset_of_code(address: usize) -> isize {
    address.wrapping_sub(code_anchor as fn() as usize) as isize
}

/// The offset of a job's entry point.
pub(crate) fn offset_of_entry(entry: EncodedEntry) -> isize {
    offset_of_code(entry as usize)
}

/// The job entry point at `offset`, in a worker.
///
/// # Safety
/// `offset` must come from [`offset_of_entry`] in a process running the same executable (the
/// fork server's handshake checks that), so that it names an [`EncodedEntry`] here too.
pub(crate) unsafe fn entry_at(offset: isize) -> EncodedEntry {
    let address = (code_anchor as fn() as usize).wrapping_add(offset as usize);
    // SAFETY: by the caller's contract, `address` is where this executable keeps the same
    // `EncodedEntry` function the pool named, and a function pointer is an address.
    unsafe { std::mem::transmute::<usize, EncodedEntry>(address) }
}

/// The offset of a job's streaming entry point.
pub(crate) fn offset_of_streaming_entry(entry: StreamingEntry) -> isize {
    offset_of_code(entry as usize)
}

/// The streaming job entry point at `offset`, in a worker.
///
/// # Safety
/// As for [`entry_at`], with an offset from [`offset_of_streaming_entry`].
pub(crate) unsafe fn streaming_entry_at(offset: isize) -> StreamingEntry {
    let address = (code_anchor as fn() as usize).wrapping_add(offset as usize);
    // SAFETY: by the caller's contract, `address` is where this executable keeps the same
    // `StreamingEntry` function the pool named, and a function pointer is an address.
    unsafe { std::mem::transmute::<usize, StreamingEntry>(address) }
}

/// The initializer at `offset`, in a worker.
///
/// # Safety
/// As for [`entry_at`], with a `fn()` named by [`offset_of_code`].
pub(crate) unsafe fn initializer_at(offset: isize) -> fn() {
    let address = (code_anchor as fn() as usize).wrapping_add(offset as usize);
    // SAFETY: by the caller's contract, `address` is where this executable keeps the `fn()`
    // that the pool named.
    unsafe { std::mem::transmute::<usize, fn()>(address) }
}
