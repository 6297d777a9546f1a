//! The fork server: a fresh, single-threaded copy of the executable that forks the workers.
//!
//! Forking the caller's process directly would be hazardous: only the forking thread survives
//! in the child, and a lock that another thread held at that moment (in the allocator's arenas,
//! `stdout`, a tokio runtime, the user's own mutexes) stays locked there forever. Tokio says it
//! cannot be used in a forked child at all, and rayon refuses fork. So each pool starts its own
//! fork server the way Python 3.14's default `forkserver` does: it *executes* the program again
//! (`/proc/self/exe`) with a marker argument. A constructor in `.init_array` ([`HOOK`]) sees the
//! marker before `main` (or the test harness) runs, serves the pool, and leaves with `_exit`.
//! The server has one thread and a small heap, so forking from it is both sound and cheap, and
//! the workers it forks inherit none of the caller's threads, locks or memory.
//!
//! This module holds both sides: [`ServerLink`] in the pool, [`serve`] in the server process.

use std::collections::HashSet;
use std::ffi::{CStr, c_char, c_int};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use fanout_core::{BuildError, ForkServerError, WorkerExit};
use ipc_channel::ipc::{self, IpcOneShotServer, IpcReceiver, IpcSender};
use ipc_channel::{IpcError, TryRecvError};
use nix::sys::signal::{self, SigHandler, Signal};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};

use crate::protocol::{Hello, ServerReply, ServerRequest, probe_offset};
use crate::worker;

/// The first argument that turns a start of the executable into a fork server.
const MARKER: &str = "--fanout-fork-server-v1";

/// How long a pool waits for its fork server to start or to answer.
const SERVER_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs before `main` in every process of the executable; returns at once unless the process
/// was started as a fork server.
///
/// glibc calls `.init_array` functions with `argc`, `argv` and `envp`, as `main` gets them.
#[used]
#[unsafe(link_section = ".init_array")]
pub(crate) static HOOK: extern "C" fn(c_int, *const *const c_char, *const *const c_char) = serve_if_asked;

extern "C" fn serve_if_asked(argc: c_int, argv: *const *const c_char, _envp: *const *const c_char) {
    if argc != 3 || argv.is_null() {
        return;
    }
    // SAFETY: `argv` comes from the C runtime and `argc == 3`, so index 1 is an argument.
    let first = unsafe { argument(argv, 1) };
    if first.to_bytes() != MARKER.as_bytes() {
        return;
    }
    // SAFETY: as above, for index 2.
    let second = unsafe { argument(argv, 2) };
    let name = second.to_string_lossy().into_owned();
    // Unwinding out of an `extern "C"` function would abort; a failed server just exits.
    let status = match std::panic::catch_unwind(move || serve(name)) {
        Ok(Ok(())) => 0,
        _ => 1,
    };
    // SAFETY: `_exit` ends the process at once. That is the point: the fork server must never
    // return into the C runtime, which would go on to run `main` (the user's program, or a test
    // harness) a second time, nor run exit handlers that belong to the program it copies.
    unsafe { libc::_exit(status) }
}

/// Argument `index` of the process.
///
/// # Safety
/// `argv` must be the argument vector the C runtime passed, and `index` below its `argc`.
unsafe fn argument(argv: *const *const c_char, index: usize) -> &'static CStr {
    // SAFETY: by the caller's contract the slot is inside `argv`, and the C runtime keeps
    // `argv` alive for the whole process.
    let pointer = unsafe { *argv.wrapping_add(index) };
    // SAFETY: each of the first `argc` slots holds a NUL-terminated string that the C runtime
    // keeps alive, unchanged, for the whole process.
    unsafe { CStr::from_ptr(pointer) }
}

/// The fork server's loop: fork workers and reap them until the pool says stop or goes away.
fn serve(name: String) -> Result<(), IpcError> {
    // A write to a channel whose reader died must be an error here, not a signal that kills
    // the server; `main` has not run, so Rust's own `SIGPIPE` setting is not in place yet.
    // SAFETY: setting a signal's disposition to "ignore" installs no handler code at all.
    let _ = unsafe { signal::signal(Signal::SIGPIPE, SigHandler::SigIgn) };

    let hello = IpcSender::<Hello>::connect(name)?;
    let (requests_sender, requests) = ipc::channel::<ServerRequest>()?;
    let (replies, replies_receiver) = ipc::channel::<ServerReply>()?;
    hello.send(Hello::Ready {
        requests: requests_sender,
        replies: replies_receiver,
        probe: probe_offset(),
    })?;
    drop(hello);

    let server = nix::unistd::getpid();
    let mut workers: HashSet<Pid> = HashSet::new();
    loop {
        // An error means the pool is gone (it exited or was killed): end everything.
        let Ok(request) = requests.recv() else { break };
        let reply = match request {
            ServerRequest::Spawn { workers: requested, settings } => {
                let mut pids = Vec::with_capacity(requested.len());
                let mut requested = requested.into_iter();
                while let Some(ends) = requested.next() {
                    // SAFETY: the fork server has a single thread (it runs before `main`, and
                    // nothing here starts a thread), so the child is a complete copy with no
                    // lock held by a vanished thread. The child runs `worker::run` only, which
                    // never returns: it leaves with `_exit`.
                    match unsafe { fork() } {
                        Ok(ForkResult::Child) => {
                            // The worker keeps its own channel ends only: copies of the
                            // server's, or of the workers forked after it, would keep those
                            // channels open after their owners died.
                            drop(requested);
                            drop(requests);
                            drop(replies);
                            worker::run(server, ends, settings)
                        }
                        Ok(ForkResult::Parent { child }) => {
                            workers.insert(child);
                            pids.push(Ok(child.as_raw()));
                        }
                        Err(errno) => pids.push(Err(errno as i32)),
                    }
                    // The server's copies of this worker's ends are dropped here, so that only
                    // the worker holds them and its death closes the pool's side of its
                    // channel (ipc-channel issue 281).
                }
                ServerReply::Spawned { pids }
            }
            ServerRequest::Reap { pids } => {
                let exits = pids
                    .into_iter()
                    .map(|pid| {
                        let pid = Pid::from_raw(pid);
                        workers.remove(&pid);
                        kill_and_reap(pid)
                    })
                    .collect();
                ServerReply::Reaped { exits }
            }
            ServerRequest::Shutdown => break,
        };
        if replies.send(reply).is_err() {
            break;
        }
    }
    // No worker outlives its server.
    for pid in workers {
        kill_and_reap(pid);
    }
    Ok(())
}

/// Kills the worker if it still runs, then reaps it and says how it ended.
fn kill_and_reap(pid: Pid) -> WorkerExit {
    // A worker that already exited is a zombie: the signal does nothing and its status stays.
    let _ = signal::kill(pid, Signal::SIGKILL);
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, status)) => return WorkerExit::Exited { status },
            Ok(WaitStatus::Signaled(_, signal, _)) => {
                return WorkerExit::Signaled { signal: signal as i32, name: signal.as_str().to_owned() };
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(errno) => return WorkerExit::ReapFailed { errno: errno as i32 },
        }
    }
}

/// The pool's end of its fork server.
pub(crate) struct ServerLink {
    child: Child,
    requests: IpcSender<ServerRequest>,
    replies: IpcReceiver<ServerReply>,
}

impl ServerLink {
    /// Starts a fork server: this executable again, with the marker argument.
    pub(crate) fn start() -> Result<Self, BuildError> {
        // Referencing the hook keeps the linker from dropping it with an unused object file.
        std::hint::black_box(&HOOK);
        let os = |action, source| BuildError::Os { action, source };
        let (one_shot, name) = IpcOneShotServer::<Hello>::new()
            .map_err(|e| os("create the fork server's rendezvous socket", e))?;
        let child = Command::new("/proc/self/exe")
            .arg(MARKER)
            .arg(&name)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| os("start the fork server (/proc/self/exe)", e))?;
        let mut link = PendingLink { child: Some(child) };
        let hello = link.accept(one_shot, name)?;
        let (Hello::Ready { requests, replies, probe }, Some(child)) = (hello, link.child.take()) else {
            return Err(ForkServerError::DidNotStart(SERVER_TIMEOUT).into());
        };
        let link = ServerLink { child, requests, replies };
        if probe != probe_offset() {
            return Err(ForkServerError::DifferentExecutable.into());
        }
        Ok(link)
    }

    /// Sends a request and waits for its answer, for at most [`SERVER_TIMEOUT`].
    pub(crate) fn call(&self, request: ServerRequest) -> Result<ServerReply, ForkServerError> {
        let gone = |message: String| ForkServerError::Gone { message };
        self.requests.send(request).map_err(|e| gone(e.to_string()))?;
        match self.replies.try_recv_timeout(SERVER_TIMEOUT) {
            Ok(reply) => Ok(reply),
            Err(TryRecvError::Empty) => Err(gone(format!("it did not answer in {SERVER_TIMEOUT:?}"))),
            Err(TryRecvError::IpcError(e)) => Err(gone(e.to_string())),
        }
    }

    /// The fork server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServerLink {
    /// Tells the server to exit and reaps it; kills it if it does not go within a second.
    fn drop(&mut self) {
        let _ = self.requests.send(ServerRequest::Shutdown);
        reap_within(&mut self.child, Duration::from_secs(1));
    }
}

/// A started server that has not said hello yet; dropping it kills and reaps the server.
struct PendingLink {
    child: Option<Child>,
}

impl PendingLink {
    /// Waits for the server's hello, unless the server dies first or takes too long.
    fn accept(&mut self, one_shot: IpcOneShotServer<Hello>, name: String) -> Result<Hello, BuildError> {
        let (sender, receiver) = crossbeam_channel::bounded(1);
        let acceptor = thread::Builder::new()
            .name("fanout-fork-server-accept".to_owned())
            .spawn(move || {
                let _ = sender.send(one_shot.accept().map(|(_, hello)| hello));
            })
            .map_err(|source| BuildError::Os { action: "spawn a thread", source })?;
        let deadline = Instant::now() + SERVER_TIMEOUT;
        let outcome = loop {
            if let Ok(outcome) = receiver.recv_timeout(Duration::from_millis(5)) {
                break Some(outcome);
            }
            let exited = self.child.as_mut().is_some_and(|child| !matches!(child.try_wait(), Ok(None)));
            if exited || Instant::now() > deadline {
                break None;
            }
        };
        let hello = match outcome {
            Some(Ok(hello)) => hello,
            Some(Err(error)) => return Err(ForkServerError::Hello { message: error.to_string() }.into()),
            None => {
                // Unblock the acceptor by saying hello ourselves.
                if let Ok(sender) = IpcSender::<Hello>::connect(name) {
                    let _ = sender.send(Hello::Abort);
                }
                let _ = acceptor.join();
                return Err(ForkServerError::DidNotStart(SERVER_TIMEOUT).into());
            }
        };
        let _ = acceptor.join();
        Ok(hello)
    }
}

impl Drop for PendingLink {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn reap_within(child: &mut Child, grace: Duration) {
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        thread::sleep(Duration::from_millis(1));
    }
    let _ = child.kill();
    let _ = child.wait();
}
