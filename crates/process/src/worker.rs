//! A worker process: runs chunks of jobs until its channel closes, then leaves with `_exit`.

use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use fanout_core::limit::{AmbientGuard, PermitHandle};

use fanout_core::plumbing::{catch_panic, check_message_size};
use fanout_core::{Direction, JobError, PayloadPart};
use ipc_channel::ipc::{IpcReceiver, IpcSender};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::permits::RemoteSource;
use crate::protocol::{
    Rebind, SpareEnds, WorkerEnds, WorkerReply, WorkerRequest, WorkerSettings, entry_at, initializer_at,
    streaming_entry_at,
};

/// The whole life of a worker, from just after `fork` to `_exit`: its pool, then (if that
/// pool reuses its workers, which gave it `spare`) the pools the fork server hands it to as a
/// spare.
pub(crate) fn run(server: Pid, ends: WorkerEnds, settings: WorkerSettings, spare: Option<SpareEnds>) -> ! {
    // The worker dies with its server, and the server ends when its pool goes away, so no
    // worker outlives the program that started it. The check after `prctl` covers a server
    // that died before the request took effect.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    let status = if nix::unistd::getppid() != server {
        1
    } else {
        let mut binding = Some((ends, settings));
        let mut status = 0;
        while let Some((ends, settings)) = binding.take() {
            // Nothing may unwind past the fork: the frames above belong to the fork server.
            let spare = spare.as_ref();
            match std::panic::catch_unwind(AssertUnwindSafe(|| serve_pool(ends, settings, spare))) {
                Ok(Ended::Released) => binding = spare.and_then(next_pool),
                Ok(Ended::Closed) => {}
                Err(_) => status = 1,
            }
        }
        status
    };
    // What the jobs printed is this process's own buffered output, written once.
    let _ = std::io::stdout().flush();
    // SAFETY: `_exit` ends the process without running exit handlers or destructors. Those
    // belong to the program this process was copied from (via the fork server) and already
    // run there; running them twice would flush its buffers twice or tear down its state.
    unsafe { libc::_exit(status) }
}

/// How a worker's service of one pool ended.
enum Ended {
    /// Its channel closed, or it broke off (a refused frame, its task limit, a failed
    /// initializer): the worker exits.
    Closed,
    /// It left the pool as a spare of the fork server, every end of the pool's channels
    /// closed.
    Released,
}

/// Waits as a spare for the next pool; `None` when the server lets the spare go (it closes
/// its end of `rebind` unread: it has spares enough, or it is ending).
fn next_pool(spare: &SpareEnds) -> Option<(WorkerEnds, WorkerSettings)> {
    spare.rebind.recv().ok().map(|Rebind { ends, settings }| (ends, settings))
}

/// Serves one pool, with its permits set up for its jobs, and closes every end of its
/// channels before it returns.
fn serve_pool(ends: WorkerEnds, settings: WorkerSettings, spare: Option<&SpareEnds>) -> Ended {
    let WorkerEnds { jobs, replies, grants } = ends;
    // Jobs of a rate-limited pool take their permits from the pool's limit, in the parent.
    let source = settings
        .permits
        .zip(grants)
        .map(|(scope, grants)| Arc::new(RemoteSource::new(replies.clone(), grants, scope)) as PermitHandle);
    // Only then: the thread-local's first use registers its destructor, page faults that
    // every worker of a pool without a limit would pay.
    let permits = source.map(|source| AmbientGuard::install(Some(source)));
    let ended = serve(&jobs, &replies, settings, spare.is_some());
    drop(permits);
    ended
}

/// Runs the pool's requests until it closes the channel or asks the worker to go; `spare`
/// says whether the worker can wait in the fork server (the server made it channels for
/// that).
fn serve(
    jobs: &IpcReceiver<WorkerRequest>,
    replies: &IpcSender<WorkerReply>,
    settings: WorkerSettings,
    spare: bool,
) -> Ended {
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
            return Ended::Closed;
        }
    }
    let mut tasks: u64 = 0;
    // A frame that does not decode, or a request without the pool's key, ends the worker: the
    // pool sees its channel close and reports the task lost, like any other worker death.
    while let Ok(request) = jobs.recv() {
        let reply = match request {
            WorkerRequest::Run { key, entry, state, inputs } => {
                if key != settings.key {
                    return Ended::Closed;
                }
                // SAFETY: calling job code by address is sound here because the address names
                // the same code as in the pool: the request carries the pool's key, so it is
                // the pool's, and `entry` is the offset of a monomorphized `EncodedEntry` taken
                // by the pool from this very executable (the fork server is `/proc/self/exe`
                // started afresh, its code offsets checked by the handshake), and this process
                // is a fork of that single-threaded server, so no lock is held by a thread that
                // fork left behind. The entry point itself is safe Rust: it decodes, runs each
                // input under `catch_unwind` and encodes, reporting bad bytes as errors.
                let entry = unsafe { entry_at(entry) };
                let outcome = catch_panic(|| entry(&state, &inputs)).and_then(|outcome| outcome);
                let outcome = outcome.and_then(|bytes| {
                    let limit = settings.max_message_bytes;
                    check_message_size(PayloadPart::Output, Direction::Encode, bytes.len(), limit)
                        .map(|()| bytes)
                });
                tasks += 1;
                let last = settings.max_tasks.is_some_and(|max| tasks >= max);
                (WorkerReply::Done { outcome, last }, last)
            }
            WorkerRequest::Stream { key, entry, state, inputs, skip } => {
                if key != settings.key {
                    return Ended::Closed;
                }
                // SAFETY: as for `Run` above: the request carries the pool's key, and the pool
                // sends `Stream` only with the offset of a monomorphized `StreamingEntry` taken
                // from this same executable (`PoolLaunch` picks the streaming entry point
                // exactly when the pool has a job time limit, which is when its dispatcher
                // sends `Stream`). The entry point is safe Rust as well.
                let entry = unsafe { streaming_entry_at(entry) };
                let mut emit = |bytes: Vec<u8>| {
                    replies.send(WorkerReply::Result { bytes: fit(bytes, &settings) }).is_ok()
                };
                let outcome = catch_panic(|| {
                    entry(
                        &state,
                        &inputs,
                        usize::try_from(skip).unwrap_or(usize::MAX),
                        settings.job_timeout,
                        &mut emit,
                    )
                })
                .and_then(|outcome| outcome);
                tasks += 1;
                let last = settings.max_tasks.is_some_and(|max| tasks >= max);
                (WorkerReply::Streamed { outcome, last }, last)
            }
            WorkerRequest::Release { key } => {
                if key != settings.key || !settings.reuse || !spare {
                    return Ended::Closed;
                }
                return release(replies);
            }
        };
        let (reply, last) = reply;
        if replies.send(reply).is_err() || last {
            return Ended::Closed;
        }
    }
    Ended::Closed
}

/// Leaves the pool as a spare: the output of its jobs written out first (before the pool's
/// drop returns, as if the worker had exited), then the answer; the caller closes the pool's
/// channels.
fn release(replies: &IpcSender<WorkerReply>) -> Ended {
    let _ = std::io::stdout().flush();
    match replies.send(WorkerReply::Released) {
        Ok(()) => Ended::Released,
        Err(_) => Ended::Closed,
    }
}

/// One streamed result, or in its place the error that it is over the message limit.
fn fit(bytes: Vec<u8>, settings: &WorkerSettings) -> Vec<u8> {
    let limit = settings.max_message_bytes;
    match check_message_size(PayloadPart::Output, Direction::Encode, bytes.len(), limit) {
        Ok(()) => bytes,
        Err(error) => postcard::to_stdvec(&Err::<(), JobError>(error)).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use ipc_channel::ipc;

    use super::*;

    fn settings() -> WorkerSettings {
        WorkerSettings {
            initializer: None,
            max_tasks: None,
            max_message_bytes: 1 << 20,
            key: 0x5eed,
            job_timeout: None,
            permits: None,
            reuse: true,
        }
    }

    /// Serves one frame of type `T` (re-typed on the way: the worker decodes it as a
    /// `WorkerRequest`) and says whether the worker answered anything before it stopped.
    fn serve_frame<T: serde::Serialize + for<'de> serde::Deserialize<'de>>(frame: T) -> bool {
        let (jobs_sender, jobs) = ipc::channel::<WorkerRequest>().unwrap();
        let (replies, replies_receiver) = ipc::channel::<WorkerReply>().unwrap();
        let frames: IpcSender<T> = jobs_sender.to_opaque().to();
        frames.send(frame).unwrap();
        drop(frames);
        // `serve` returns once the frame is refused or the channel is closed: no hang.
        serve(&jobs, &replies, settings(), true);
        drop(replies);
        replies_receiver.recv().is_ok()
    }

    /// xorshift64*: a fixed sequence of bytes, so a failure reproduces.
    fn bytes(seed: &mut u64) -> u8 {
        *seed ^= *seed >> 12;
        *seed ^= *seed << 25;
        *seed ^= *seed >> 27;
        (seed.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
    }

    #[test]
    fn malformed_frames_end_the_worker_without_running_anything() {
        let mut seed = 0x9e37_79b9_7f4a_7c15;
        for round in 0..300 {
            // Raw bytes with no length prefix: arbitrary first bytes, truncated varints,
            // lengths past the end, and (rarely) a well-formed `Run` with the wrong key.
            let mut raw = [0_u8; 32];
            raw.iter_mut().for_each(|byte| *byte = bytes(&mut seed));
            match round % 3 {
                0 => raw[0] = 0, // the `Run` variant, so that the fields are what is malformed
                1 => raw[0] = 1, // the `Stream` variant, likewise
                _ => {}
            }
            assert!(!serve_frame(raw), "raw frame {raw:?} was answered");
            // Length-prefixed bytes of every length class.
            let len = usize::from(bytes(&mut seed)) * (round % 5 + 1);
            let prefixed: Vec<u8> = (0..len).map(|_| bytes(&mut seed)).collect();
            assert!(!serve_frame(prefixed), "a {len}-byte frame was answered");
        }
    }

    #[test]
    fn a_well_formed_run_without_the_pools_key_is_refused() {
        // An entry offset of 0 would call `code_anchor` as a job: never reached without the key.
        let request = WorkerRequest::Run { key: 0xbad, entry: 0, state: Vec::new(), inputs: Vec::new() };
        assert!(!serve_frame(request));
        let request =
            WorkerRequest::Stream { key: 0xbad, entry: 0, state: Vec::new(), inputs: Vec::new(), skip: 0 };
        assert!(!serve_frame(request));
        // Nor does a release: a stray frame never turns a worker into a spare.
        assert!(!serve_frame(WorkerRequest::Release { key: 0xbad }));
    }

    #[test]
    fn a_release_with_the_pools_key_is_answered_then_the_spare_waits_for_its_next_pool() {
        let (jobs_sender, jobs) = ipc::channel::<WorkerRequest>().unwrap();
        let (replies, replies_receiver) = ipc::channel::<WorkerReply>().unwrap();
        jobs_sender.send(WorkerRequest::Release { key: settings().key }).unwrap();
        assert!(matches!(serve(&jobs, &replies, settings(), true), Ended::Released));
        drop(replies);
        assert!(matches!(replies_receiver.recv(), Ok(WorkerReply::Released)), "no `Released` answer");
        // The pool's channel closes after the answer: the worker holds no end of it.
        assert!(replies_receiver.recv().is_err());
        // The server's ends: a pool handed over arrives on `rebind`.
        let (rebind_sender, rebind) = ipc::channel::<Rebind>().unwrap();
        let (alive, alive_receiver) = ipc::channel::<()>().unwrap();
        let spare = SpareEnds { rebind, alive };
        let (_next_jobs, next_jobs_receiver) = ipc::channel::<WorkerRequest>().unwrap();
        let (next_replies, _next_replies_receiver) = ipc::channel::<WorkerReply>().unwrap();
        let ends = WorkerEnds { jobs: next_jobs_receiver, replies: next_replies, grants: None };
        rebind_sender.send(Rebind { ends, settings: WorkerSettings { key: 7, ..settings() } }).unwrap();
        let (_, next) = next_pool(&spare).expect("the next pool");
        assert_eq!(next.key, 7);
        // The server closing its end unread lets the spare go.
        drop(rebind_sender);
        assert!(next_pool(&spare).is_none());
        // The watch stays open while the worker lives, and closes with it.
        drop(spare);
        // A guard timer, not a timing: a watch left open would block `recv` forever.
        let watch = alive_receiver.try_recv_timeout(std::time::Duration::from_secs(30));
        assert!(matches!(watch, Err(ipc_channel::TryRecvError::IpcError(_))), "the watch stays open");
    }

    #[test]
    fn a_worker_without_spare_channels_never_releases_itself() {
        let (jobs_sender, jobs) = ipc::channel::<WorkerRequest>().unwrap();
        let (replies, replies_receiver) = ipc::channel::<WorkerReply>().unwrap();
        jobs_sender.send(WorkerRequest::Release { key: settings().key }).unwrap();
        assert!(matches!(serve(&jobs, &replies, settings(), false), Ended::Closed));
        drop(replies);
        assert!(replies_receiver.recv().is_err(), "it answered a release it cannot honour");
    }

    #[test]
    fn a_pool_that_does_not_reuse_workers_never_releases_one() {
        let (jobs_sender, jobs) = ipc::channel::<WorkerRequest>().unwrap();
        let (replies, _replies_receiver) = ipc::channel::<WorkerReply>().unwrap();
        jobs_sender.send(WorkerRequest::Release { key: settings().key }).unwrap();
        let settings = WorkerSettings { reuse: false, ..settings() };
        assert!(matches!(serve(&jobs, &replies, settings, true), Ended::Closed));
    }
}
