//! A worker: reads job entries of a queue in its consumer group, checks them, runs them, stores
//! each result once and acknowledges; reclaims the entries of dead workers; renews its claim on
//! the entry it runs. Also the marker argument caught before `main` and the supervisor of
//! `--workers N`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::{CStr, c_char, c_int};
use std::process::{Child, Command};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use fanout_core::plumbing::{Outcome, catch_panic, check_message_size};
use fanout_core::{Direction, JobError, PayloadPart, WorkerExit};
use redis::{Connection, Value};

use crate::protocol::{COMPLETE, GROUP, Keys, VERSION, build_id, entry_at};
use crate::wire::{Entry, Reply, Wire, WireError};
use crate::{RedisError, RedisUrl};

/// The first argument that turns a start of a program linking fanout-redis into a worker.
pub const MARKER: &str = "--fanout-redis-worker";

/// The default visibility timeout: an entry held this long by a worker that does not renew its
/// claim is taken over by another.
pub(crate) const DEFAULT_VISIBILITY: Duration = Duration::from_secs(30);

/// How long a worker's read of the next entry blocks before it looks for reclaimable entries
/// again (and the read is sent anew).
const READ_BLOCK_MS: u64 = 200;

/// The default largest entry or result, as the process pool's message limit.
pub(crate) const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Runs before `main` in every process of the executable; returns at once unless the process
/// was started with [`MARKER`] as its first argument.
#[used]
#[unsafe(link_section = ".init_array")]
static HOOK: extern "C" fn(c_int, *const *const c_char, *const *const c_char) = work_if_asked;

extern "C" fn work_if_asked(argc: c_int, argv: *const *const c_char, _envp: *const *const c_char) {
    if argc < 2 || argv.is_null() {
        return;
    }
    let argc = usize::try_from(argc).unwrap_or(0);
    let args: Vec<String> = (1..argc)
        .map(|index| {
            // SAFETY: `argv` comes from the C runtime and holds `argc` pointers, and `index` is
            // below `argc`.
            let pointer = unsafe { *argv.wrapping_add(index) };
            // SAFETY: each of those pointers is a NUL-terminated string that the C runtime
            // keeps alive, unchanged, for the whole process.
            unsafe { CStr::from_ptr(pointer) }.to_string_lossy().into_owned()
        })
        .collect();
    if args.first().map(String::as_str) != Some(MARKER) {
        return;
    }
    let status = match std::panic::catch_unwind(|| WorkerOptions::from_args(&args[1..]).and_then(run_workers))
    {
        Ok(Ok(())) => 0,
        Ok(Err(error)) => {
            eprintln!("fanout-redis worker: {error}");
            2
        }
        Err(_) => 3,
    };
    // SAFETY: `_exit` ends the process without returning into the C runtime, which would run
    // the program's `main` (or a test harness) after the worker.
    unsafe { libc::_exit(status) }
}

/// How a worker process runs: the queue it serves, how many processes, its limits.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub(crate) url: RedisUrl,
    pub(crate) queue: String,
    pub(crate) workers: usize,
    pub(crate) visibility: Duration,
    pub(crate) max_message_bytes: usize,
    /// Started by a pool of this host: dies with it.
    pub(crate) local: bool,
}

impl WorkerOptions {
    /// Workers of `queue` on the Redis at `url`, one process, default limits.
    pub fn new(url: RedisUrl, queue: &str) -> Self {
        Self {
            url,
            queue: queue.to_owned(),
            workers: 1,
            visibility: DEFAULT_VISIBILITY,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            local: false,
        }
    }

    /// How many worker processes (default 1).
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// The visibility timeout after which entries of a silent worker are reclaimed; use the
    /// pools' value (default 30 s).
    pub fn visibility_timeout(mut self, timeout: Duration) -> Self {
        self.visibility = timeout.max(Duration::from_millis(50));
        self
    }

    /// Parses the arguments after [`MARKER`]: `URL --queue NAME [--workers N]
    /// [--visibility-ms MS] [--max-message-bytes N]`, where `URL` may be `env:VAR` (the
    /// URL is read from that variable, so that a password never appears on a command line).
    pub fn from_args(args: &[String]) -> Result<Self, RedisError> {
        let bad = |what: &str| RedisError::BadArguments { message: what.to_owned() };
        let url = args.first().ok_or_else(|| bad("the Redis URL (or env:VAR) is missing"))?;
        let url = match url.strip_prefix("env:") {
            Some(name) => RedisUrl::from_env(name)?,
            None => RedisUrl::new(url.as_str())?,
        };
        let mut options = Self::new(url, "");
        let mut rest = args[1..].iter();
        while let Some(flag) = rest.next() {
            let mut value = || rest.next().ok_or_else(|| bad(&format!("{flag} needs a value")));
            match flag.as_str() {
                "--queue" => options.queue = value()?.clone(),
                "--workers" => {
                    options.workers = value()?.parse().map_err(|_| bad("--workers takes a number"))?
                }
                "--visibility-ms" => {
                    let ms: u64 = value()?.parse().map_err(|_| bad("--visibility-ms takes a number"))?;
                    options = options.visibility_timeout(Duration::from_millis(ms));
                }
                "--max-message-bytes" => {
                    options.max_message_bytes =
                        value()?.parse().map_err(|_| bad("--max-message-bytes takes a number"))?;
                }
                "--local" => options.local = true,
                other => return Err(bad(&format!("unknown worker argument `{other}`"))),
            }
        }
        if options.queue.is_empty() {
            return Err(bad("--queue NAME is missing"));
        }
        Ok(options)
    }

    /// The arguments [`from_args`](Self::from_args) reads back, the URL as `env:VAR`.
    pub(crate) fn to_args(&self, env: &str) -> Vec<String> {
        let mut args = vec![
            MARKER.to_owned(),
            format!("env:{env}"),
            "--queue".to_owned(),
            self.queue.clone(),
            "--workers".to_owned(),
            self.workers.to_string(),
            "--visibility-ms".to_owned(),
            self.visibility.as_millis().to_string(),
            "--max-message-bytes".to_owned(),
            self.max_message_bytes.to_string(),
        ];
        if self.local {
            args.push("--local".to_owned());
        }
        args
    }
}

/// The environment variable through which a pool hands its local workers the URL.
pub(crate) const URL_ENV: &str = "FANOUT_REDIS_URL";

/// Starts one worker process of this executable.
pub(crate) fn spawn_worker(options: &WorkerOptions) -> Result<Child, RedisError> {
    Command::new("/proc/self/exe")
        .args(&options.to_args(URL_ENV)[..])
        .env(URL_ENV, options.url.secret())
        .spawn()
        .map_err(|source| RedisError::Spawn { source })
}

/// Runs workers until killed: this process itself for one, or a supervisor that keeps
/// `workers` worker processes of this executable running. The library call behind the
/// marker argument, for a program that parses its own command line.
pub fn run_workers(options: WorkerOptions) -> Result<(), RedisError> {
    if options.local {
        // SAFETY: `prctl(PR_SET_PDEATHSIG)` only sets a flag of this process.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    }
    if options.workers <= 1 && options.local {
        return serve(&options);
    }
    // Otherwise a supervisor, even of one: a worker process ends itself on an overdue job or
    // a killed run, and is replaced here. A Redis that cannot be reached, or a queue that
    // cannot be set up, is one error here, before any worker starts.
    ensure_group(&mut options.url.connect()?, &Keys::new(&options.queue), &options.url)?;
    let single = WorkerOptions { workers: 1, local: true, ..options.clone() };
    let mut supervised: Vec<Supervised> = (0..options.workers)
        .map(|_| Ok(Supervised { child: Some(spawn_worker(&single)?), ..Supervised::default() }))
        .collect::<Result<_, RedisError>>()?;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        for worker in &mut supervised {
            if let Some(child) = &mut worker.child {
                match child.try_wait() {
                    Ok(None) => continue,
                    Ok(Some(status)) => worker.exited(status.code()),
                    Err(_) => worker.exited(None),
                }
                worker.child = None;
            }
            if Instant::now() >= worker.restart_at {
                worker.child = Some(spawn_worker(&single)?);
                worker.started = Instant::now();
            }
        }
    }
}

/// The first wait before a failed worker is started again, doubled while they keep failing.
const RESTART_BACKOFF: Duration = Duration::from_millis(250);
/// The longest wait: a Redis that went away is retried this often, one error line each.
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(10);

/// One worker process of a supervisor, and when to start it again once it has exited.
#[derive(Debug)]
struct Supervised {
    child: Option<Child>,
    started: Instant,
    /// The wait after its next failure.
    backoff: Duration,
    restart_at: Instant,
}

impl Default for Supervised {
    fn default() -> Self {
        let now = Instant::now();
        Self { child: None, started: now, backoff: RESTART_BACKOFF, restart_at: now }
    }
}

impl Supervised {
    /// Its worker exited with `code` (`None`: a signal). One that ended itself (0: an overdue
    /// job, a killed run) or was killed is replaced at once; one that failed (it printed why:
    /// Redis unreachable, say) after a wait that doubles while its successors fail within
    /// [`RESTART_BACKOFF_MAX`] of their start, so that a Redis that went away costs a line
    /// every few seconds, not ten a second.
    fn exited(&mut self, code: Option<i32>) {
        let now = Instant::now();
        if matches!(code, Some(code) if code != 0) {
            if now.duration_since(self.started) > RESTART_BACKOFF_MAX {
                self.backoff = RESTART_BACKOFF;
            }
            self.restart_at = now + self.backoff;
            self.backoff = (self.backoff * 2).min(RESTART_BACKOFF_MAX);
        } else {
            self.backoff = RESTART_BACKOFF;
            self.restart_at = now;
        }
    }
}

/// A worker that has read `queue` (a consumer of its group), as `XINFO CONSUMERS` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    /// Its name, `HOSTNAME-PID`.
    pub name: String,
    /// The process id in its name.
    pub pid: Option<u32>,
    /// Entries it holds unacknowledged.
    pub pending: u64,
}

/// The workers of `queue` on the Redis at `url` that were given an entry (Redis 7.0 lists a
/// consumer only from then on): for an operator, or a harness that checks which processes
/// served a run.
pub fn consumers(url: &RedisUrl, queue: &str) -> Result<Vec<Consumer>, RedisError> {
    let keys = Keys::new(queue);
    let mut con = url.connect()?;
    let listed: redis::RedisResult<Vec<HashMap<String, Value>>> =
        redis::cmd("XINFO").arg("CONSUMERS").arg(keys.jobs()).arg(GROUP).query(&mut con);
    let listed = match listed {
        Ok(listed) => listed,
        // No stream or no group yet: nobody has read it.
        Err(error) if error.code() == Some("ERR") || error.code() == Some("NOGROUP") => Vec::new(),
        Err(error) => return Err(url.error("list the queue's workers", &error)),
    };
    Ok(listed
        .into_iter()
        .filter_map(|fields| {
            let name: String = redis::from_redis_value(fields.get("name")?).ok()?;
            let pending = fields.get("pending").and_then(|v| redis::from_redis_value(v).ok()).unwrap_or(0);
            let pid = name.rsplit('-').next().and_then(|pid| pid.parse().ok());
            Some(Consumer { name, pid, pending })
        })
        .collect())
}

/// Connections of the Redis at `url` whose last command was `XREADGROUP`: workers (of any
/// queue) that have started reading, which [`consumers`] lists only once they were given an
/// entry. For a harness that waits for its workers before it times a run.
pub fn readers(url: &RedisUrl) -> Result<usize, RedisError> {
    let mut con = url.connect()?;
    let clients: String =
        redis::cmd("CLIENT").arg("LIST").query(&mut con).map_err(|e| url.error("list the clients", &e))?;
    Ok(clients.lines().filter(|line| line.split(' ').any(|field| field == "cmd=xreadgroup")).count())
}

/// Creates the queue's stream and consumer group if they do not exist.
pub(crate) fn ensure_group(con: &mut Connection, keys: &Keys, url: &RedisUrl) -> Result<(), RedisError> {
    let created: redis::RedisResult<Value> =
        redis::cmd("XGROUP").arg("CREATE").arg(keys.jobs()).arg(GROUP).arg("0").arg("MKSTREAM").query(con);
    match created {
        Ok(_) => Ok(()),
        Err(error) if error.code() == Some("BUSYGROUP") => Ok(()),
        Err(error) => Err(url.error("create the consumer group", &error)),
    }
}

/// The bytes of a field of an entry.
fn field<'a>(entry: &'a Entry, name: &str) -> Option<&'a [u8]> {
    entry.field(name)
}

fn parse<T: std::str::FromStr>(entry: &Entry, name: &str) -> Option<T> {
    std::str::from_utf8(field(entry, name)?).ok()?.parse().ok()
}

/// What a worker decided about an entry before running it.
enum Verdict {
    /// Not an entry of a live run, or malformed: never run, dead-lettered.
    Refuse(String),
    /// A run's entry that fails without running: its result is this error.
    Fail { run: String, chunk: u64, error: JobError, dead: Option<String> },
    /// Run it.
    Run { run: String, chunk: u64, entry: i64, state: Vec<u8>, inputs: Vec<u8>, limit: Option<Duration> },
}

struct Worker<'o> {
    options: &'o WorkerOptions,
    keys: Keys,
    /// For everything but the hot path: reclaims, dead letters, run checks.
    con: Connection,
    /// The hot path: reads of entries and completions (see [`crate::wire`]).
    wire: Wire,
    me: String,
    /// `keys.jobs()`, formatted once.
    jobs: String,
    /// The run of the last completion and its result stream and duplicate counter keys,
    /// formatted once per run rather than per job.
    run_keys: Option<(String, String, String)>,
    known_runs: HashSet<String>,
    complete: redis::Script,
}

/// One worker process's loop.
fn serve(options: &WorkerOptions) -> Result<(), RedisError> {
    let keys = Keys::new(&options.queue);
    let mut con = options.url.connect()?;
    ensure_group(&mut con, &keys, &options.url)?;
    let me = format!("{}-{}", hostname(), std::process::id());
    let renewer = renewer(options, &keys, &me)?;
    let wire = Wire::connect(&options.url)?;
    let jobs = keys.jobs();
    let mut worker = Worker {
        options,
        keys,
        con,
        wire,
        me,
        jobs,
        run_keys: None,
        known_runs: HashSet::new(),
        complete: redis::Script::new(COMPLETE),
    };
    let mut last_reclaim = Instant::now();
    let reclaim_due = |last: Instant| last.elapsed() >= options.visibility / 2;
    // Entries read for this worker and not yet run: the one a completion read along (at most
    // one, and only while no reclaim is due, so that nothing here waits unrenewed behind a
    // reclaimed job).
    let mut ready: VecDeque<Entry> = VecDeque::new();
    loop {
        if ready.is_empty() {
            if reclaim_due(last_reclaim) {
                last_reclaim = Instant::now();
                for (entry, deliveries) in worker.reclaim()? {
                    worker.handle(&entry, deliveries, &renewer, false)?;
                }
            }
            worker.pack_read();
            let read = worker.wire.send().and_then(|()| worker.wire.recv());
            match read {
                Ok(reply) if reply.error_code() == Some("NOGROUP") => {
                    ensure_group(&mut worker.con, &worker.keys, &options.url)?;
                    continue;
                }
                Ok(Reply::Error(error)) => return Err(options.url.failed("read jobs", &error)),
                Ok(reply) => ready.extend(Entry::from_read(reply)),
                Err(error) => return Err(options.url.failed("read jobs", &error)),
            }
        }
        let Some(entry) = ready.pop_front() else { continue };
        // The completion reads the next entry along (one round trip for both) unless one is
        // waiting here already or a reclaim is due.
        let fetch = ready.is_empty() && !reclaim_due(last_reclaim);
        if let Some(next) = worker.handle(&entry, 1, &renewer, fetch)? {
            ready.push_back(next);
        }
    }
}

impl Worker<'_> {
    /// Takes over entries that other consumers held past the visibility timeout, with their
    /// delivery counts.
    fn reclaim(&mut self) -> Result<Vec<(Entry, u64)>, RedisError> {
        let idle = u64::try_from(self.options.visibility.as_millis()).unwrap_or(u64::MAX);
        let claimed: Value = redis::cmd("XAUTOCLAIM")
            .arg(self.keys.jobs())
            .arg(GROUP)
            .arg(&self.me)
            .arg(idle)
            .arg("0-0")
            // One at a time: entries claimed together would wait, unrenewed, behind each other.
            .arg("COUNT")
            .arg(1)
            .query(&mut self.con)
            .map_err(|e| self.options.url.error("reclaim entries", &e))?;
        let entries: Vec<redis::streams::StreamId> = match claimed {
            Value::Array(mut parts) if parts.len() >= 2 => {
                let list = parts.swap_remove(1);
                redis::from_redis_value::<redis::streams::StreamRangeReply>(&list)
                    .map(|r| r.ids)
                    .unwrap_or_default()
            }
            _ => Vec::new(),
        };
        let mut out = Vec::new();
        for entry in entries {
            let pending: Value = redis::cmd("XPENDING")
                .arg(self.keys.jobs())
                .arg(GROUP)
                .arg(&entry.id)
                .arg(&entry.id)
                .arg(1)
                .query(&mut self.con)
                .map_err(|e| self.options.url.error("read a delivery count", &e))?;
            let deliveries = match &pending {
                Value::Array(rows) => match rows.first() {
                    Some(Value::Array(row)) => match row.get(3) {
                        Some(Value::Int(n)) => u64::try_from(*n).unwrap_or(1),
                        _ => 1,
                    },
                    _ => continue,
                },
                _ => continue,
            };
            out.push((Entry::from_stream_id(entry), deliveries));
        }
        Ok(out)
    }

    fn is_live_run(&mut self, run: &str) -> Result<bool, RedisError> {
        if self.known_runs.contains(run) {
            return Ok(true);
        }
        let live: bool = redis::cmd("SISMEMBER")
            .arg(self.keys.runs())
            .arg(run)
            .query(&mut self.con)
            .map_err(|e| self.options.url.error("check a run key", &e))?;
        if live {
            self.known_runs.insert(run.to_owned());
        }
        Ok(live)
    }

    fn judge(&mut self, entry: &Entry, deliveries: u64) -> Result<Verdict, RedisError> {
        let run = match field(entry, "k").and_then(|k| std::str::from_utf8(k).ok()) {
            Some(run) if run.len() == 32 && run.bytes().all(|b| b.is_ascii_hexdigit()) => run.to_owned(),
            _ => return Ok(Verdict::Refuse("foreign entry: it carries no run key".to_owned())),
        };
        if !self.is_live_run(&run)? {
            return Ok(Verdict::Refuse("foreign entry: its run key is not a live run's".to_owned()));
        }
        if field(entry, "v") != Some(VERSION) {
            return Ok(Verdict::Refuse("malformed entry: unknown format version".to_owned()));
        }
        let (Some(chunk), Some(code), Some(max), Some(build), Some(state), Some(inputs)) = (
            parse::<u64>(entry, "c"),
            parse::<i64>(entry, "e"),
            parse::<u64>(entry, "m"),
            field(entry, "b"),
            field(entry, "s"),
            field(entry, "i"),
        ) else {
            return Ok(Verdict::Refuse("malformed entry: a field is missing".to_owned()));
        };
        if deliveries > max {
            let reason = format!("delivered {deliveries} times without a result (the limit is {max})");
            let error = JobError::WorkerLost {
                exit: WorkerExit::ChannelsFailed {
                    reason: format!("{reason}: its workers died or stalled; moved to {}", self.keys.dead()),
                },
            };
            return Ok(Verdict::Fail { run, chunk, error, dead: Some(reason) });
        }
        if build != build_id().as_bytes() {
            let error = RedisError::BuildMismatch {
                job: String::from_utf8_lossy(build).into_owned(),
                worker: build_id().to_owned(),
            };
            let error = JobError::WorkerLost { exit: WorkerExit::SpawnFailed { reason: error.to_string() } };
            return Ok(Verdict::Fail { run, chunk, error, dead: None });
        }
        let limit = self.options.max_message_bytes;
        if let Err(error) =
            check_message_size(PayloadPart::Input, Direction::Decode, inputs.len() + state.len(), limit)
        {
            return Ok(Verdict::Fail { run, chunk, error, dead: None });
        }
        // The job time limit in milliseconds; absent or 0: none.
        let limit = parse::<u64>(entry, "t").filter(|&ms| ms > 0).map(Duration::from_millis);
        Ok(Verdict::Run { run, chunk, entry: code, state: state.to_vec(), inputs: inputs.to_vec(), limit })
    }

    /// Judges and runs (or refuses) one entry and completes it; with `fetch`, the completion
    /// also reads the next unread entry, returned here to be run next.
    fn handle(
        &mut self,
        entry: &Entry,
        deliveries: u64,
        renewer: &Renewer,
        fetch: bool,
    ) -> Result<Option<Entry>, RedisError> {
        match self.judge(entry, deliveries)? {
            Verdict::Refuse(reason) => {
                self.dead_letter(entry, &reason)?;
                let _: redis::RedisResult<Value> = redis::pipe()
                    .cmd("XACK")
                    .arg(self.keys.jobs())
                    .arg(GROUP)
                    .arg(&entry.id)
                    .cmd("XDEL")
                    .arg(self.keys.jobs())
                    .arg(&entry.id)
                    .query(&mut self.con);
                Ok(None)
            }
            Verdict::Fail { run, chunk, error, dead } => {
                if let Some(reason) = dead {
                    self.dead_letter(entry, &reason)?;
                }
                self.complete(&entry.id, &run, chunk, &Err(error), fetch)
            }
            Verdict::Run { run, chunk, entry: code, state, inputs, limit } => {
                let running = Running {
                    id: entry.id.clone(),
                    run: run.clone(),
                    chunk,
                    started: Instant::now(),
                    limit: limit.map(|limit| (limit, Instant::now() + limit)),
                };
                renewer.start(running);
                // SAFETY: the entry carries the key of a live run on this queue and this
                // executable's own build id, so `code` is the offset of a monomorphized
                // `EncodedEntry` that a caller took from this very build (`offset_of_entry`).
                // The entry point is safe Rust: it decodes, runs each input under
                // `catch_unwind` and encodes, reporting bad bytes as errors.
                let run_entry = unsafe { entry_at(code) };
                let outcome = catch_panic(|| run_entry(&state, &inputs)).and_then(|outcome| outcome);
                let limit = self.options.max_message_bytes;
                let outcome = outcome.and_then(|bytes| {
                    check_message_size(PayloadPart::Output, Direction::Encode, bytes.len(), limit)
                        .map(|()| bytes)
                });
                renewer.finish();
                self.complete(&entry.id, &run, chunk, &outcome, fetch)
            }
        }
    }

    fn dead_letter(&mut self, entry: &Entry, reason: &str) -> Result<(), RedisError> {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(self.keys.dead()).arg("MAXLEN").arg("~").arg(10_000).arg("*");
        cmd.arg("id").arg(&entry.id).arg("reason").arg(reason).arg("worker").arg(&self.me);
        for name in ["k", "c"] {
            if let Some(value) = field(entry, name) {
                cmd.arg(name).arg(value);
            }
        }
        cmd.query::<Value>(&mut self.con).map_err(|e| self.options.url.error("dead-letter an entry", &e))?;
        Ok(())
    }

    /// Stores a result and acknowledges its entry (once: see [`store`]); with `fetch`, in the
    /// same round trip, reads the next unread entry for this worker: the script and an
    /// `XREADGROUP COUNT 1 BLOCK` are sent in one write, so the read runs after the
    /// acknowledgement (the worker holds one entry at a time) and its reply is read here
    /// whatever the script's (an entry read is never left unseen). The entry travels straight
    /// back, not through the script (which would convert it to Lua and back).
    ///
    /// The read blocks (as the worker's own read would, [`READ_BLOCK_MS`]) rather than
    /// answering "nothing yet" at once: at chunk 1 the caller's next entry often lands just
    /// after a completion, and a non-blocking read then cost a second command and a second
    /// round trip (the blocking read after it) for about every other job, measured.
    fn complete(
        &mut self,
        id: &str,
        run: &str,
        chunk: u64,
        outcome: &Outcome,
        fetch: bool,
    ) -> Result<Option<Entry>, RedisError> {
        let bytes = postcard::to_stdvec(outcome).unwrap_or_default();
        if self.run_keys.as_ref().is_none_or(|(known, _, _)| known != run) {
            self.run_keys = Some((run.to_owned(), self.keys.done(run), self.keys.dups(run)));
        }
        let Some((_, done, dups)) = &self.run_keys else { unreachable!("set just above") };
        let chunk_text = chunk.to_string();
        self.wire.pack(&[
            b"EVALSHA",
            self.complete.get_hash().as_bytes(),
            b"3",
            done.as_bytes(),
            self.jobs.as_bytes(),
            dups.as_bytes(),
            chunk_text.as_bytes(),
            &bytes,
            GROUP.as_bytes(),
            id.as_bytes(),
        ]);
        if fetch {
            self.pack_read();
        }
        let failed = |e: &dyn std::fmt::Display| self.options.url.failed("store a result", e);
        self.wire.send().map_err(|e| failed(&e))?;
        let stored = self.wire.recv();
        let next = if fetch {
            // No group any more (or a broken connection): the blocking read (or the next
            // command) meets that again and handles it.
            self.wire.recv().ok().and_then(|reply| Entry::from_read(reply).into_iter().next())
        } else {
            None
        };
        match stored {
            Ok(Reply::Int(_)) => {}
            // The server lost the script (restarted, `SCRIPT FLUSH`): nothing ran; once more
            // by its text (the entry read along is kept).
            Ok(reply) if reply.error_code() == Some("NOSCRIPT") => {
                complete_cmd(&self.complete, true, &self.keys, id, run, chunk, outcome)
                    .query::<i64>(&mut self.con)
                    .map_err(|e| self.options.url.error("store a result", &e))?;
            }
            Ok(Reply::Error(error)) => return Err(failed(&error)),
            Ok(_) => return Err(failed(&WireError::Protocol("the script did not answer a number"))),
            Err(e) => return Err(failed(&e)),
        }
        Ok(next)
    }

    /// Packs this worker's blocking read of its next unread entry.
    fn pack_read(&mut self) {
        let block = READ_BLOCK_MS.to_string();
        self.wire.pack(&[
            b"XREADGROUP",
            b"GROUP",
            GROUP.as_bytes(),
            self.me.as_bytes(),
            b"COUNT",
            b"1",
            b"BLOCK",
            block.as_bytes(),
            b"STREAMS",
            self.jobs.as_bytes(),
            b">",
        ]);
    }
}

/// The `EVALSHA` of the [`COMPLETE`] script for entry `id`'s result, or with `by_code` its
/// `EVAL` (the script's text: it runs even when the server has lost the script, and caches it
/// again for the next `EVALSHA`).
fn complete_cmd(
    complete: &redis::Script,
    by_code: bool,
    keys: &Keys,
    id: &str,
    run: &str,
    chunk: u64,
    outcome: &Outcome,
) -> redis::Cmd {
    let bytes = postcard::to_stdvec(outcome).unwrap_or_default();
    let mut cmd = if by_code {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(COMPLETE);
        cmd
    } else {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(complete.get_hash());
        cmd
    };
    cmd.arg(3)
        .arg(keys.done(run))
        .arg(keys.jobs())
        .arg(keys.dups(run))
        .arg(chunk)
        .arg(bytes)
        .arg(GROUP)
        .arg(id);
    cmd
}

/// Stores entry `id`'s result and acknowledges it, once (the [`COMPLETE`] script: a second
/// result for the same chunk is counted as a duplicate, never stored).
fn store(
    complete: &redis::Script,
    con: &mut redis::Connection,
    keys: &Keys,
    id: &str,
    run: &str,
    chunk: u64,
    outcome: &Outcome,
) -> redis::RedisResult<i64> {
    match complete_cmd(complete, false, keys, id, run, chunk, outcome).query(con) {
        // The server lost the script (restarted, `SCRIPT FLUSH`): nothing ran; by its text.
        Err(e) if e.kind() == redis::ErrorKind::NoScriptError => {
            complete_cmd(complete, true, keys, id, run, chunk, outcome).query(con)
        }
        stored => stored,
    }
}

/// How often a worker running a job checks that its run is still live (a killed pool's run
/// is not: the worker then ends itself, and its supervisor replaces it).
const KILL_POLL: Duration = Duration::from_millis(250);

/// The entry a worker runs, for its renewer thread.
#[derive(Clone)]
struct Running {
    id: String,
    run: String,
    chunk: u64,
    /// When it started here: its claim is renewed a renewal period after that, and so on.
    started: Instant,
    /// The job time limit and when it passes.
    limit: Option<(Duration, Instant)>,
}

/// What the worker thread and its renewer share: the entry running now.
#[derive(Default)]
struct RunningSlot {
    current: Option<Running>,
    /// The worker is gone: the renewer ends.
    closed: bool,
}

/// The worker's side of its renewer: it posts the entry it starts and clears it when done.
///
/// Posting wakes the renewer only for an entry with a job time limit (whose deadline it must
/// keep); otherwise the renewer finds the entry on its own tick, at most a tick later, which is
/// within the renewal period. A wake-up per job, for every job, cost an empty job more than
/// any Redis command (two thread hand-offs per job on the worker, measured).
struct Renewer {
    slot: std::sync::Arc<(Mutex<RunningSlot>, Condvar)>,
}

impl Renewer {
    fn start(&self, running: Running) {
        let wake = running.limit.is_some();
        let (slot, signal) = &*self.slot;
        slot.lock().unwrap_or_else(|p| p.into_inner()).current = Some(running);
        if wake {
            signal.notify_one();
        }
    }

    fn finish(&self) {
        self.slot.0.lock().unwrap_or_else(|p| p.into_inner()).current = None;
    }
}

impl Drop for Renewer {
    fn drop(&mut self) {
        let (slot, signal) = &*self.slot;
        slot.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
        signal.notify_one();
    }
}

/// The thread that renews this worker's claim on the entry it runs (XCLAIM with JUSTID, which
/// resets the entry's idle time without counting a delivery) every third of the visibility
/// timeout, so that a live worker on a long job is never taken over. It ends the process when
/// the job's run is no longer live (its pool was killed), every [`KILL_POLL`]. It also keeps the job
/// time limit: past it, it stores the entry's result `Expired` (acknowledged, once, as any
/// result) and ends this worker process at once, job and all; its supervisor (the pool, or
/// `run_workers`) starts a fresh one.
///
/// It wakes on its own tick (the shorter of the renewal period and [`KILL_POLL`]), and at a
/// running job's deadline; an entry starts at most a tick before the renewer sees it, so its
/// first renewal comes at most two periods (two thirds of the timeout) after it started.
fn renewer(options: &WorkerOptions, keys: &Keys, me: &str) -> Result<Renewer, RedisError> {
    let mut con = options.url.connect()?;
    let slot = std::sync::Arc::new((Mutex::new(RunningSlot::default()), Condvar::new()));
    let period = options.visibility / 3;
    let tick = period.min(KILL_POLL);
    let (keys, me) = (keys.clone(), me.to_owned());
    let complete = redis::Script::new(COMPLETE);
    let shared = std::sync::Arc::clone(&slot);
    std::thread::Builder::new()
        .name("fanout-redis-renew".to_owned())
        .spawn(move || {
            let (slot, signal) = &*shared;
            // The entry last renewed (by id) and when.
            let mut renewed: Option<(String, Instant)> = None;
            let mut next_check = Instant::now() + KILL_POLL;
            let mut guard = slot.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if guard.closed {
                    return;
                }
                let now = Instant::now();
                let mut wake = now + tick;
                if let Some((_, deadline)) = guard.current.as_ref().and_then(|c| c.limit) {
                    wake = wake.min(deadline);
                }
                guard = signal
                    .wait_timeout(guard, wake.saturating_duration_since(now))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
                let Some(running) = guard.current.clone() else { continue };
                // The network calls below run without the lock: the worker thread posts and
                // clears its entries meanwhile, and the next round sees that.
                drop(guard);
                let now = Instant::now();
                if let Some((limit, deadline)) = running.limit
                    && now >= deadline
                {
                    let expired: Outcome = Err(JobError::Expired { limit });
                    let _ =
                        store(&complete, &mut con, &keys, &running.id, &running.run, running.chunk, &expired);
                    // SAFETY: `_exit` ends this worker process, the overdue job's
                    // thread with it; nothing of it needs unwinding or flushing (its
                    // result is stored, and its supervisor replaces the process).
                    unsafe { libc::_exit(0) }
                }
                if now >= next_check {
                    next_check = now + KILL_POLL;
                    let live: redis::RedisResult<bool> =
                        redis::cmd("SISMEMBER").arg(keys.runs()).arg(&running.run).query(&mut con);
                    if matches!(live, Ok(false)) {
                        // The run is over while its job runs here: its pool was killed
                        // (`Shutdown::Kill`) or is gone. Nobody waits for this result.
                        let _: redis::RedisResult<Value> = redis::pipe()
                            .cmd("XACK")
                            .arg(keys.jobs())
                            .arg(GROUP)
                            .arg(&running.id)
                            .cmd("XDEL")
                            .arg(keys.jobs())
                            .arg(&running.id)
                            .query(&mut con);
                        // SAFETY: as above: `_exit` ends this worker process and the
                        // killed run's job with it; its supervisor replaces it.
                        unsafe { libc::_exit(0) }
                    }
                }
                let since = match &renewed {
                    Some((id, at)) if *id == running.id => *at,
                    _ => running.started,
                };
                if now.saturating_duration_since(since) >= period {
                    let _: redis::RedisResult<Value> = redis::cmd("XCLAIM")
                        .arg(keys.jobs())
                        .arg(GROUP)
                        .arg(&me)
                        .arg(0)
                        .arg(&running.id)
                        .arg("JUSTID")
                        .query(&mut con);
                    renewed = Some((running.id, now));
                }
                guard = slot.lock().unwrap_or_else(|p| p.into_inner());
            }
        })
        .map_err(|source| RedisError::Spawn { source })?;
    Ok(Renewer { slot })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default()
}
