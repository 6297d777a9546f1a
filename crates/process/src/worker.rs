//! A worker process: runs chunks of jobs until its channel closes, then leaves with `_exit`.

use std::io::Write;
use std::panic::AssertUnwindSafe;

use fanout_core::{JobError, PayloadPart, catch_panic};
use ipc_channel::ipc::{IpcReceiver, IpcSender};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::protocol::{WorkerReply, WorkerRequest, WorkerSettings, entry_at, initializer_at};

/// The whole life of a worker, from just after `fork` to `_exit`.
pub(crate) fn run(
    server: Pid,
    jobs: IpcReceiver<WorkerRequest>,
    replies: IpcSender<WorkerReply>,
    settings: WorkerSettings,
) -> ! {
    // The worker dies with its server, and the server ends when its pool goes away, so no
    // worker outlives the program that started it. The check after `prctl` covers a server
    // that died before the request took effect.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    let status = if nix::unistd::getppid() != server {
        1
    } else {
        // Nothing may unwind past the fork: the frames above belong to the fork server.
        match std::panic::catch_unwind(AssertUnwindSafe(|| serve(&jobs, &replies, settings))) {
            Ok(()) => 0,
            Err(_) => 1,
        }
    };
    // What the jobs printed is this process's own buffered output, written once.
    let _ = std::io::stdout().flush();
    // SAFETY: `_exit` ends the process without running exit handlers or destructors. Those
    // belong to the program this process was copied from (via the fork server) and already
    // run there; running them twice would flush its buffers twice or tear down its state.
    unsafe { libc::_exit(status) }
}

fn serve(jobs: &IpcReceiver<WorkerRequest>, replies: &IpcSender<WorkerReply>, settings: WorkerSettings) {
    if let Some(offset) = settings.initializer {
        // SAFETY: the offset was taken from a `fn()` by a pool running this same executable,
        // which the fork server's handshake checked (see `protocol::entry_at`).
        let initializer = unsafe { initializer_at(offset) };
        if let Err(error) = catch_panic(initializer) {
            let message = match error {
                JobError::Panicked { message } => message,
                other => other.to_string(),
            };
            let _ = replies.send(WorkerReply::InitFailed { message });
            return;
        }
    }
    let mut tasks: u64 = 0;
    while let Ok(WorkerRequest::Run { entry, state, inputs }) = jobs.recv() {
        // SAFETY: calling job code by address is sound here because the address names the same
        // code as in the pool: `entry` is the offset of a monomorphized `EncodedEntry` taken
        // by the pool from this very executable (the fork server is `/proc/self/exe` started
        // afresh, its code offsets checked by the handshake), and this process is a fork of
        // that single-threaded server, so no lock is held by a thread that fork left behind.
        // The entry point itself is safe Rust: it decodes, runs each input under
        // `catch_unwind` and encodes, reporting bad bytes as errors.
        let entry = unsafe { entry_at(entry) };
        let outcome = catch_panic(|| entry(&state, &inputs)).and_then(|outcome| outcome);
        let outcome = outcome.and_then(|bytes| {
            if bytes.len() > settings.max_message_bytes {
                Err(JobError::Serialization {
                    part: PayloadPart::Output,
                    encoding: true,
                    message: format!(
                        "the chunk's outputs take {} bytes, over the pool's message limit of {} bytes; \
                         use a smaller chunk size or raise ProcessPoolBuilder::max_message_bytes",
                        bytes.len(),
                        settings.max_message_bytes
                    ),
                })
            } else {
                Ok(bytes)
            }
        });
        tasks += 1;
        let last = settings.max_tasks.is_some_and(|max| tasks >= max);
        if replies.send(WorkerReply::Done { outcome, last }).is_err() || last {
            return;
        }
    }
}
