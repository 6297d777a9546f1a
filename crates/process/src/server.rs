//! The fork server: a fresh, single-threaded copy of the executable that forks the workers of
//! every pool of the program.
//!
//! Forking the caller's process directly would be hazardous: only the forking thread survives
//! in the child, and a lock that another thread held at that moment (in the allocator's arenas,
//! `stdout`, a tokio runtime, the user's own mutexes) stays locked there forever. Tokio says it
//! cannot be used in a forked child at all, and rayon refuses fork. So the program starts a fork
//! server the way Python 3.14's default `forkserver` does: it *executes* the program again
//! (`/proc/self/exe`) with a marker argument. A constructor in `.init_array` ([`HOOK`]) sees the
//! marker before `main` (or the test harness) runs, serves the program's pools, and leaves with
//! `_exit`. The server has one thread and a small heap, so forking from it is both sound and
//! cheap, and the workers it forks inherit none of the caller's threads, locks or memory.
//!
//! **One server per program.** The first pool starts it ([`Root`]); every pool of the process
//! attaches to it while it runs, each with a *session* of its own ([`ServerLink`]: its own
//! channels, its own workers, its own shutdown), and the last pool's going ends it. The
//! server's workers inherit the channel pools attach on, so a pool built inside a worker is a
//! session of the same server: its workers cost a fork, not an exec, and they are forked by
//! the single-threaded server, never by the worker (which may run threads).
//!
//! **Spares.** A pool that reuses workers (the default for one built inside a worker, see
//! `ProcessPoolBuilder::reuse_workers`) does not end its idle workers at its stop: each one
//! answers `Released`, closes its pool's channels and waits on its *spare channels*, and the
//! dispatcher names them to the server in a `ServerRequest::Keep`. The server made those two
//! channels before it forked the worker ([`SpareEnds`] in the worker, [`SpareChannels`] here:
//! `rebind`, where a next pool's ends come, and `alive`, which closes when the worker dies),
//! so that a worker leaves a pool without a descriptor on the move: descriptors queued in a
//! socket that is itself in flight make the kernel's AF_UNIX garbage collector run at every
//! socket close in the system, which cost a third of a reusing pool's time when the spares
//! sent their channels that way. The server keeps at most [`MAX_SPARES`] and gives them,
//! newest first, to the next pool that reuses workers instead of forking (`rebind`). A spare
//! stays a child of the server, so the rule below holds for it as for any worker: it dies with
//! the server, and one that dies while it waits is reaped at once.
//!
//! **No orphans, no zombies.** The server reaps every worker it forks. A session that ends
//! (its pool stopped, or the process holding the pool died, which closes the session's
//! channel) has what is left of its workers killed and reaped at once, so a nested pool's
//! workers die with the worker that owns them. The server exits when the program's last pool
//! says so or when the program dies (its control channel closes), killing and reaping every
//! worker first; workers also set `PR_SET_PDEATHSIG(SIGKILL)` against the server. The program
//! reaps the server.
//!
//! This module holds both sides: [`ServerLink`] and [`Root`] in the program, [`serve`] in the
//! server process.

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, c_char, c_int};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::thread;
use std::time::{Duration, Instant};

use fanout_core::{BuildError, ForkServerError, WorkerExit};
use ipc_channel::ipc::{self, IpcOneShotServer, IpcReceiver, IpcReceiverSet, IpcSelectionResult, IpcSender};
use ipc_channel::{IpcError, TryRecvError};
use nix::sys::signal::{self, SigHandler, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};

use crate::protocol::{
    Attach, Control, Forked, Hello, Rebind, ServerReply, ServerRequest, SpareEnds, WorkerEnds,
    WorkerSettings, probe_offset,
};
use crate::worker;

/// The first argument that turns a start of the executable into a fork server.
const MARKER: &str = "--fanout-fork-server-v1";

/// How long a pool waits for its fork server to start or to answer.
const SERVER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the last pool waits for the server to exit before it kills it.
const EXIT_GRACE: Duration = Duration::from_secs(1);

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

/// The fork server's side of one pool.
struct Client {
    replies: IpcSender<ServerReply>,
    forked: IpcSender<Forked>,
    /// The pool's workers that are not reaped yet.
    workers: HashSet<Pid>,
}

/// The server's ends of the spare channels of a worker that may become a spare (one forked for
/// a pool that reuses workers), made before its fork and kept for its whole life.
struct SpareChannels {
    /// Where its next pool comes, when it waits as a spare; closing it unread lets it go.
    rebind: IpcSender<Rebind>,
    /// The id in the server's set of the channel that closes when the worker dies.
    alive: u64,
}

/// A worker that left its pool as a spare, waiting in the fork server for its next pool.
struct SpareWorker {
    pid: Pid,
    channels: SpareChannels,
}

/// The most spares the fork server keeps; a pool that leaves more lets the rest exit. Spares
/// come from pools that ran at once, so the server never holds more processes than the program
/// already ran; this bounds what a program that once ran a very large pool keeps afterwards.
const MAX_SPARES: usize = 64;

/// The fork server's state.
struct Server {
    pid: Pid,
    /// What the server waits on: the control channel, the attach channel and every session's
    /// requests. An `Option` so that a forked worker can close all of it.
    set: Option<IpcReceiverSet>,
    control: u64,
    attach: u64,
    /// The sessions, by the id of their requests in `set`.
    clients: HashMap<u64, Client>,
    /// The attach channel's sender, which every worker inherits for the pools it may build.
    inherit: IpcSender<Attach>,
    /// Workers that left their pools, most recently released last.
    spares: Vec<SpareWorker>,
    /// The spare channels of the workers in a pool that may become spares, by pid.
    reusable: HashMap<Pid, SpareChannels>,
}

/// The fork server's life: serve the program's pools until it says stop or goes away.
fn serve(name: String) -> Result<(), IpcError> {
    // A write to a channel whose reader died must be an error here, not a signal that kills
    // the server; `main` has not run, so Rust's own `SIGPIPE` setting is not in place yet.
    // SAFETY: setting a signal's disposition to "ignore" installs no handler code at all.
    let _ = unsafe { signal::signal(Signal::SIGPIPE, SigHandler::SigIgn) };

    let hello = IpcSender::<Hello>::connect(name)?;
    let (control_sender, control) = ipc::channel::<Control>()?;
    let (attach_sender, attach) = ipc::channel::<Attach>()?;
    let mut set = IpcReceiverSet::new()?;
    let control = set.add(control)?;
    let attach = set.add(attach)?;
    // The control sender travels to the program and is closed here once sent: the program's
    // process alone holds it, so its death closes the channel.
    hello.send(Hello::Ready {
        control: control_sender,
        attach: attach_sender.clone(),
        probe: probe_offset(),
    })?;
    drop(hello);

    // What every worker's exit path uses, set up once here (`stdout` and its lock's owner,
    // the thread's id): a worker then only writes those pages, instead of faulting in the code
    // and data to set them up, each of which costs a page fault per worker. So is the standard
    // library's cache of CPU features (`memchr` and friends consult it): in a virtual machine
    // each `cpuid` that fills it is a trap to the hypervisor, which every worker would repeat.
    let _ = std::io::Write::flush(&mut std::io::stdout().lock());
    #[cfg(target_arch = "x86_64")]
    let _ = std::hint::black_box(std::arch::is_x86_feature_detected!("avx2"));

    let mut server = Server {
        pid: nix::unistd::getpid(),
        set: Some(set),
        control,
        attach,
        clients: HashMap::new(),
        inherit: attach_sender,
        spares: Vec::new(),
        reusable: HashMap::new(),
    };
    server.run();
    // No worker outlives its server.
    for client in server.clients.into_values() {
        client.workers.into_iter().for_each(|pid| drop(kill_and_reap(pid)));
    }
    server.spares.into_iter().for_each(|spare| drop(kill_and_reap(spare.pid)));
    Ok(())
}

impl Server {
    fn run(&mut self) {
        loop {
            let Some(set) = self.set.as_mut() else { return };
            // An error would repeat forever: end everything instead.
            let Ok(events) = set.select() else { return };
            let mut events = events.into_iter();
            while let Some(event) = events.next() {
                if !self.handle(event, &mut events) {
                    return;
                }
            }
        }
    }

    /// Handles one event; `false` when the server must stop. `rest` is what is left of the
    /// events of the same `select`, which a forked worker must close too.
    fn handle(
        &mut self,
        event: IpcSelectionResult,
        rest: &mut std::vec::IntoIter<IpcSelectionResult>,
    ) -> bool {
        match event {
            IpcSelectionResult::MessageReceived(id, _) | IpcSelectionResult::ChannelClosed(id)
                if id == self.control =>
            {
                // `Shutdown`, or the program died.
                false
            }
            IpcSelectionResult::MessageReceived(id, message) if id == self.attach => {
                if let (Ok(attach), Some(set)) = (message.to::<Attach>(), self.set.as_mut())
                    && let Ok(id) = set.add(attach.requests)
                {
                    let client =
                        Client { replies: attach.replies, forked: attach.forked, workers: HashSet::new() };
                    self.clients.insert(id, client);
                }
                true
            }
            IpcSelectionResult::MessageReceived(id, message) => {
                // A request that does not decode gets no answer: its pool gives up waiting.
                if let Ok(request) = message.to::<ServerRequest>() {
                    self.request(id, request, rest);
                }
                true
            }
            IpcSelectionResult::ChannelClosed(id) => {
                // A session ended: its pool stopped, or the process that held it died.
                if let Some(client) = self.clients.remove(&id) {
                    for pid in client.workers {
                        self.reusable.remove(&pid);
                        drop(kill_and_reap(pid));
                    }
                } else if let Some(index) = self.spares.iter().position(|spare| spare.channels.alive == id) {
                    // A spare died while it waited (it was killed: spares exit only when told).
                    drop(kill_and_reap(self.spares.swap_remove(index).pid));
                } else {
                    // A worker that could become a spare died in its pool, which reaps it.
                    self.reusable.retain(|_, channels| channels.alive != id);
                }
                true
            }
        }
    }

    fn request(
        &mut self,
        id: u64,
        request: ServerRequest,
        rest: &mut std::vec::IntoIter<IpcSelectionResult>,
    ) {
        match request {
            ServerRequest::Spawn { workers, settings } => {
                let pids = self.fork_workers(id, workers, settings, false, rest);
                if let Some(client) = self.clients.get(&id) {
                    let _ = client.replies.send(ServerReply::Spawned { pids });
                }
            }
            ServerRequest::SpawnEach { workers, settings } => {
                self.fork_workers(id, workers, settings, true, rest);
            }
            ServerRequest::Reap { pids } => {
                let Some(client) = self.clients.get_mut(&id) else { return };
                let exits = pids
                    .into_iter()
                    .map(|pid| {
                        let pid = Pid::from_raw(pid);
                        // Only the session's own workers: a pid it does not own may belong to
                        // another pool, or to nobody.
                        match client.workers.remove(&pid) {
                            true => {
                                self.reusable.remove(&pid);
                                kill_and_reap(pid)
                            }
                            false => WorkerExit::ReapFailed { errno: nix::errno::Errno::ECHILD as i32 },
                        }
                    })
                    .collect();
                let _ = client.replies.send(ServerReply::Reaped { exits });
            }
            ServerRequest::Keep { pids } => self.keep(id, pids),
        }
    }

    /// Keeps the spares a session's pool released, as far as there is room: the others are
    /// told to exit (their `rebind` closes unread) and reaped.
    fn keep(&mut self, id: u64, pids: Vec<i32>) {
        for pid in pids {
            let pid = Pid::from_raw(pid);
            // Only the session's own workers: a pid it does not own is not the server's to keep.
            let Some(client) = self.clients.get_mut(&id) else { return };
            if !client.workers.remove(&pid) {
                continue;
            }
            match self.reusable.remove(&pid) {
                Some(channels) if self.spares.len() < MAX_SPARES => {
                    self.spares.push(SpareWorker { pid, channels });
                }
                channels => {
                    drop(channels);
                    drop(kill_and_reap(pid));
                }
            }
        }
    }

    /// Hands `ends` to a spare, if the server has one that is alive: its pid.
    fn rebind(&mut self, ends: WorkerEnds, settings: WorkerSettings) -> Result<Pid, WorkerEnds> {
        while let Some(SpareWorker { pid, channels }) = self.spares.pop() {
            // A spare killed since it was kept is reaped here (its watch's event may still be
            // on its way, and then names no worker), rather than handed a pool.
            match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => {}
                // Reaped by this very call (or not ours to reap): its pid may be reused now,
                // so it is never signalled again.
                _ => continue,
            }
            // If the send fails, the spare died after the look above and the ends went with
            // the message: the pool sees this worker's channel close and reaps it (it is a
            // zombie until then, so its pid is not reused) and replaces it as any dead worker.
            let _ = channels.rebind.send(Rebind { ends, settings });
            self.reusable.insert(pid, channels);
            return Ok(pid);
        }
        Err(ends)
    }

    /// Forks one worker per entry of `requested` for session `id`; each one's pid (or the
    /// `errno` of its failed fork), also announced on the session's `forked` channel when
    /// `announce`.
    fn fork_workers(
        &mut self,
        id: u64,
        requested: Vec<WorkerEnds>,
        settings: WorkerSettings,
        announce: bool,
        rest: &mut std::vec::IntoIter<IpcSelectionResult>,
    ) -> Vec<Result<i32, i32>> {
        let mut pids = Vec::with_capacity(requested.len());
        if !self.clients.contains_key(&id) {
            return pids;
        }
        let mut requested = requested.into_iter();
        while let Some(ends) = requested.next() {
            // A pool that reuses workers takes spares first: a message instead of a fork.
            let ends = match settings.reuse {
                true => match self.rebind(ends, settings) {
                    Ok(pid) => {
                        if let Some(client) = self.clients.get_mut(&id) {
                            client.workers.insert(pid);
                            if announce {
                                let _ = client.forked.send(Forked(Ok(pid.as_raw())));
                            }
                        }
                        pids.push(Ok(pid.as_raw()));
                        continue;
                    }
                    Err(ends) => ends,
                },
                false => ends,
            };
            // A worker that may become a spare gets its spare channels through the fork, so
            // that leaving its pool later moves no descriptor at all. Without them (the
            // channels could not be made) it simply exits when its pool ends.
            let spare = match settings.reuse {
                true => spare_channels().ok(),
                false => None,
            };
            // SAFETY: the fork server has a single thread (it runs before `main`, and nothing
            // here starts a thread), so the child is a complete copy with no lock held by a
            // vanished thread. The child runs `worker::run` only, which never returns: it
            // leaves with `_exit`.
            let pid = match unsafe { fork() } {
                Ok(ForkResult::Child) => {
                    // The worker keeps its own channel ends and the attach sender only: copies
                    // of the server's, of other sessions' or of the workers forked after it
                    // (in this request or in messages not handled yet) would keep those
                    // channels open after their owners died.
                    drop(requested);
                    rest.for_each(|event| self.discard(event));
                    self.clients.clear();
                    self.spares.clear();
                    self.reusable.clear();
                    self.set = None;
                    let spare = spare.map(|(server_side, worker_side)| {
                        drop(server_side);
                        worker_side
                    });
                    let _ = INHERITED
                        .set(Inherited { attach: Mutex::new(self.inherit.clone()), server: self.pid });
                    worker::run(self.pid, ends, settings, spare)
                }
                Ok(ForkResult::Parent { child }) => {
                    if let Some(client) = self.clients.get_mut(&id) {
                        client.workers.insert(child);
                    }
                    if let (Some((ServerSpareEnds { rebind, alive }, worker_side)), Some(set)) =
                        (spare, self.set.as_mut())
                    {
                        // Only the worker holds its ends, so that its death closes `alive`.
                        drop(worker_side);
                        if let Ok(alive) = set.add(alive) {
                            self.reusable.insert(child, SpareChannels { rebind, alive });
                        }
                    }
                    Ok(child.as_raw())
                }
                Err(errno) => Err(errno as i32),
            };
            // The server's copies of this worker's ends are dropped here, so that only the
            // worker holds them and its death closes the pool's side of its channel
            // (ipc-channel issue 281).
            if announce && let Some(client) = self.clients.get(&id) {
                let _ = client.forked.send(Forked(pid));
            }
            pids.push(pid);
        }
        pids
    }
}

impl Server {
    /// Closes the descriptors an event carries. A message's channels must be decoded into
    /// their types to be closed: ipc-channel treats an undecoded one as a leak (and asserts so
    /// in debug builds).
    fn discard(&self, event: IpcSelectionResult) {
        if let IpcSelectionResult::MessageReceived(id, message) = event {
            match id {
                id if id == self.attach => drop(message.to::<Attach>()),
                id if id == self.control => drop(message.to::<Control>()),
                _ => drop(message.to::<ServerRequest>()),
            }
        }
    }
}

/// The server's ends of a worker's spare channels, between their making and the fork.
struct ServerSpareEnds {
    rebind: IpcSender<Rebind>,
    alive: IpcReceiver<()>,
}

/// A worker's spare channels: the server's ends and the worker's.
fn spare_channels() -> Result<(ServerSpareEnds, SpareEnds), std::io::Error> {
    let (rebind_sender, rebind) = ipc::channel::<Rebind>()?;
    let (alive, alive_receiver) = ipc::channel::<()>()?;
    Ok((ServerSpareEnds { rebind: rebind_sender, alive: alive_receiver }, SpareEnds { rebind, alive }))
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

/// In a worker: how to reach the program's fork server, inherited from it at the fork.
struct Inherited {
    attach: Mutex<IpcSender<Attach>>,
    server: Pid,
}

/// Set in every worker (by the fork server, in the child, before the worker starts): a pool
/// built in a worker attaches to the program's server through it.
static INHERITED: OnceLock<Inherited> = OnceLock::new();

/// Whether this process is a worker of a process pool (pools built here are nested ones).
pub(crate) fn in_worker() -> bool {
    INHERITED.get().is_some()
}

/// The program's fork server, held by its pools in the process that started it; the last
/// one's drop stops it.
pub(crate) struct Root {
    child: Child,
    control: IpcSender<Control>,
    attach: Mutex<IpcSender<Attach>>,
}

/// The program's fork server while a pool of this process holds it.
static ROOT: Mutex<Weak<Root>> = Mutex::new(Weak::new());

impl Root {
    /// The running server, or a new one.
    fn get() -> Result<Arc<Self>, BuildError> {
        Self::get_unless(None)
    }

    /// The running server, or a new one if none runs or the one running is `dead` (it stopped
    /// taking sessions: it crashed or was killed, while pools still hold it).
    fn get_unless(dead: Option<&Arc<Self>>) -> Result<Arc<Self>, BuildError> {
        // The lock is held while a server starts, so that two first pools start one server.
        let mut root = ROOT.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(running) = root.upgrade()
            && !dead.is_some_and(|dead| Arc::ptr_eq(dead, &running))
        {
            return Ok(running);
        }
        let started = Arc::new(Self::start()?);
        *root = Arc::downgrade(&started);
        Ok(started)
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Starts a fork server: this executable again, with the marker argument.
    fn start() -> Result<Self, BuildError> {
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
        let mut pending = PendingServer { child: Some(child) };
        let hello = pending.accept(one_shot, name)?;
        let (Hello::Ready { control, attach, probe }, Some(child)) = (hello, pending.child.take()) else {
            return Err(ForkServerError::DidNotStart(SERVER_TIMEOUT).into());
        };
        let root = Self { child, control, attach: Mutex::new(attach) };
        if probe != probe_offset() {
            return Err(ForkServerError::DifferentExecutable.into());
        }
        Ok(root)
    }
}

impl Drop for Root {
    /// Tells the server to exit and reaps it; kills it if it does not go within a second.
    fn drop(&mut self) {
        let _ = self.control.send(Control::Shutdown);
        reap_within(&mut self.child, EXIT_GRACE);
    }
}

/// A pool's session with the program's fork server.
pub(crate) struct ServerLink {
    requests: IpcSender<ServerRequest>,
    replies: IpcReceiver<ServerReply>,
    /// Where the workers of a `SpawnEach` are announced; the dispatcher watches it.
    forked: Option<IpcReceiver<Forked>>,
    server: Pid,
    /// The program's server, in the process that started it (declared last: the session
    /// closes before the last pool stops the server).
    _root: Option<Arc<Root>>,
}

impl ServerLink {
    /// Attaches a new session to the program's fork server: the one this worker was forked
    /// by, or this process's own, started if no pool of the process runs one.
    pub(crate) fn attach() -> Result<Self, BuildError> {
        let gone = |e: IpcError| BuildError::from(ForkServerError::Gone { message: e.to_string() });
        if let Some(inherited) = INHERITED.get() {
            let (link, attach) = Self::new(inherited.server, None)?;
            let sender = inherited.attach.lock().unwrap_or_else(PoisonError::into_inner);
            sender.send(attach).map_err(gone)?;
            return Ok(link);
        }
        let root = Root::get()?;
        let (link, attach) = Self::new(root.pid(), Some(Arc::clone(&root)))?;
        if root.attach.lock().unwrap_or_else(PoisonError::into_inner).send(attach).is_ok() {
            return Ok(link);
        }
        drop(link);
        // The server died under the pools that hold it: a new one serves new pools.
        let root = Root::get_unless(Some(&root))?;
        let (link, attach) = Self::new(root.pid(), Some(Arc::clone(&root)))?;
        root.attach.lock().unwrap_or_else(PoisonError::into_inner).send(attach).map_err(gone)?;
        Ok(link)
    }

    /// A session's channels: the pool's ends, and the [`Attach`] that takes the server's.
    fn new(server: Pid, root: Option<Arc<Root>>) -> Result<(Self, Attach), BuildError> {
        let os = |source| BuildError::Os { action: "create a channel to the fork server", source };
        let (requests, requests_receiver) = ipc::channel::<ServerRequest>().map_err(os)?;
        let (replies_sender, replies) = ipc::channel::<ServerReply>().map_err(os)?;
        let (forked_sender, forked) = ipc::channel::<Forked>().map_err(os)?;
        // The server's ends travel inside the message and are closed here once sent.
        let attach = Attach { requests: requests_receiver, replies: replies_sender, forked: forked_sender };
        Ok((Self { requests, replies, forked: Some(forked), server, _root: root }, attach))
    }

    /// Sends a request and waits for its answer, for at most [`SERVER_TIMEOUT`].
    pub(crate) fn call(&self, request: ServerRequest) -> Result<ServerReply, ForkServerError> {
        self.send(request)?;
        match self.replies.try_recv_timeout(SERVER_TIMEOUT) {
            Ok(reply) => Ok(reply),
            Err(TryRecvError::Empty) => {
                Err(ForkServerError::Gone { message: format!("it did not answer in {SERVER_TIMEOUT:?}") })
            }
            Err(TryRecvError::IpcError(e)) => Err(ForkServerError::Gone { message: e.to_string() }),
        }
    }

    /// Sends a request that gets no reply.
    pub(crate) fn send(&self, request: ServerRequest) -> Result<(), ForkServerError> {
        self.requests.send(request).map_err(|e| ForkServerError::Gone { message: e.to_string() })
    }

    /// The receiver of the announcements of `SpawnEach` workers, once.
    pub(crate) fn take_forked(&mut self) -> Option<IpcReceiver<Forked>> {
        self.forked.take()
    }

    /// The fork server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.server.as_raw() as u32
    }
}

/// A started server that has not said hello yet; dropping it kills and reaps the server.
struct PendingServer {
    child: Option<Child>,
}

impl PendingServer {
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

impl Drop for PendingServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Reaps `child` once it exits, killing it if it has not within `grace`.
fn reap_within(child: &mut Child, grace: Duration) {
    if !exits_within(child, grace) {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// Whether `child` exits within `grace` (it may be reaped already).
fn exits_within(child: &mut Child, grace: Duration) -> bool {
    if let Some(exited) = pidfd_exits_within(child.id(), grace) {
        return exited;
    }
    // Without pidfds (Linux before 5.3): look every few hundred microseconds.
    let deadline = Instant::now() + grace;
    let mut pause = Duration::from_micros(50);
    loop {
        if !matches!(child.try_wait(), Ok(None)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(2));
    }
}

/// Whether process `pid` (a child not reaped yet) exits within `grace`, watched through a
/// pidfd; `None` if the kernel has no pidfds.
fn pidfd_exits_within(pid: u32, grace: Duration) -> Option<bool> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: `pidfd_open` takes a pid and flags and returns a new descriptor or -1; it reads
    // and writes no memory of this process. The child is not reaped yet, so `pid` is still
    // the child's.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` is a descriptor `pidfd_open` just returned, owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let deadline = Instant::now() + grace;
    loop {
        let mut poll = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let left = deadline.saturating_duration_since(Instant::now());
        let millis = i32::try_from(left.as_millis()).unwrap_or(i32::MAX).max(1);
        // SAFETY: `poll` points to one valid, writable `pollfd` for the length of the call.
        let ready = unsafe { libc::poll(&mut poll, 1, millis) };
        match ready {
            1.. => return Some(true),
            0 if Instant::now() >= deadline => return Some(false),
            _ => {} // EINTR, or woken a little early: wait again
        }
    }
}
