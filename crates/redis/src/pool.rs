//! [`RedisPool`]: the caller's side. Its launcher adds each chunk as a stream entry (the
//! engine keeps a window of them in flight). The run's result stream is read by whoever holds
//! the `Reader`: a caller waiting in `map`/`imap` (so that its answers wake it straight from
//! the socket), else the collector thread; each round trip of it adds the chunks that fit,
//! trims what was read and blocks for results, and hands each first result to its reply.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::marker::PhantomData;
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fanout_core::plumbing::{
    EncodedPacker, EncodedReply, JobState, Launch, Ordered, Outcome, ProgressCounters, Reply, Unordered,
    entry_point, job_handle, launch_one,
};
use fanout_core::{Executor, Job, JobError, JobHandle, Payload, ProgressWatch, Shutdown, WorkerExit};
use redis::Value;

use crate::protocol::{CANCEL_UNREAD, GROUP, Keys, VERSION, build_id, new_run_key, offset_of_entry};
use crate::wire::{self, Entry, Wire, WireError};
use crate::worker::{
    DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_VISIBILITY, WorkerOptions, ensure_group, spawn_worker,
};
use crate::{RedisError, RedisUrl};

/// Chunks of one `map` in flight per worker.
const CHUNKS_PER_WORKER: usize = 2;

/// Configures a [`RedisPool`].
#[derive(Debug, Clone)]
pub struct RedisPoolBuilder {
    url: Result<RedisUrl, String>,
    queue: String,
    workers: Option<usize>,
    local_workers: usize,
    chunk_size: usize,
    max_message_bytes: usize,
    visibility: Duration,
    max_deliveries: u32,
    prefetch: usize,
    job_timeout: Option<Duration>,
}

impl RedisPoolBuilder {
    /// The job time limit, as on the process pool: a chunk that runs longer on its worker
    /// (counted from when it starts there) has its worker process killed and replaced, and its
    /// inputs answer [`JobError::Expired`], stored once like any result (never redelivered).
    /// Kept to whole milliseconds; zero is refused at [`build`](Self::build).
    pub fn job_timeout(mut self, limit: Duration) -> Self {
        self.job_timeout = Some(limit);
        self
    }

    /// Entries kept in Redis beyond one per worker (default 0). The rest of the engine's
    /// window (two chunks per worker, or one per worker more than Redis may hold, whichever is
    /// more) waits in this process, where a cancelled handle or a `CancelQueued` stops it for
    /// sure; a prefetch saves the workers the wait for the caller's next entry (a worker reads
    /// its next entry in the round trip that stores its last result when one is there).
    pub fn prefetch(mut self, entries: usize) -> Self {
        self.prefetch = entries;
        self
    }

    /// The queue (stream) name the workers serve (default `fanout`).
    pub fn queue(mut self, queue: &str) -> Self {
        self.queue = queue.to_owned();
        self
    }

    /// How many workers serve the queue, for the window of chunks in flight (default: the
    /// local workers, or 1).
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = Some(workers);
        self
    }

    /// Starts `n` worker processes of this executable on this host, stopped with the pool.
    pub fn local_workers(mut self, n: usize) -> Self {
        self.local_workers = n;
        self
    }

    /// Inputs per entry (default 1).
    pub fn chunk_size(mut self, chunk_size: usize) -> Self {
        self.chunk_size = chunk_size;
        self
    }

    /// The largest entry or result in bytes (default 64 MiB, as the process pool).
    pub fn max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes;
        self
    }

    /// How long an entry may sit with a worker that does not renew its claim before another
    /// worker takes it over (default 30 s). Live workers renew every third of it.
    pub fn visibility_timeout(mut self, timeout: Duration) -> Self {
        self.visibility = timeout.max(Duration::from_millis(50));
        self
    }

    /// After this many deliveries without a result an entry goes to the dead-letter stream and
    /// its inputs answer [`JobError::WorkerLost`] (default 3).
    pub fn max_deliveries(mut self, deliveries: u32) -> Self {
        self.max_deliveries = deliveries.max(1);
        self
    }

    /// Connects, registers the run and starts the local workers and the collector.
    pub fn build(self) -> Result<RedisPool, RedisError> {
        let url = self.url.map_err(|name| RedisError::MissingEnv { name })?;
        if self.chunk_size == 0 {
            return Err(RedisError::BadArguments { message: "the chunk size must be at least 1".to_owned() });
        }
        if self.job_timeout.is_some_and(|limit| limit.as_millis() == 0) {
            return Err(RedisError::BadArguments {
                message: "the job time limit must be at least 1 ms; pass a positive `job_timeout`".to_owned(),
            });
        }
        let workers = self.workers.unwrap_or(self.local_workers).max(1);
        let keys = Keys::new(&self.queue);
        let run = new_run_key();
        let mut con = url.connect()?;
        ensure_group(&mut con, &keys, &url)?;
        redis::cmd("SADD")
            .arg(keys.runs())
            .arg(&run)
            .query::<Value>(&mut con)
            .map_err(|e| url.error("register the run", &e))?;
        let options = WorkerOptions {
            url: url.clone(),
            queue: self.queue.clone(),
            workers: 1,
            visibility: self.visibility,
            max_message_bytes: self.max_message_bytes,
            local: true,
        };
        let mut children = Vec::new();
        for _ in 0..self.local_workers {
            children.push(spawn_worker(&options)?);
        }
        let shared = Arc::new(Shared {
            con: Mutex::new(con),
            dispatch: Mutex::new(Dispatch { queue: VecDeque::new(), in_redis: 0 }),
            bound: workers + self.prefetch,
            keys: keys.clone(),
            run: run.clone(),
            max_deliveries: self.max_deliveries,
            job_timeout_ms: self
                .job_timeout
                .map_or(0, |limit| u64::try_from(limit.as_millis()).unwrap_or(u64::MAX)),
            outstanding: Mutex::new(HashMap::new()),
            closing: AtomicBool::new(false),
            children: Mutex::new(children),
            options,
            late: AtomicU64::new(0),
            next_chunk: AtomicU64::new(0),
            reader: Mutex::new(Reader {
                con: Wire::connect(&url)?,
                done: keys.done(&run),
                last: "0-0".to_owned(),
                trim: Vec::new(),
                failures: 0,
            }),
            helping: AtomicUsize::new(0),
            epoch: Instant::now(),
            // Long ago: nobody has helped yet.
            last_help: AtomicU64::new(0),
        });
        let collector = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("fanout-redis-collector".to_owned())
                .spawn(move || collect(&shared))
                .map_err(|source| RedisError::Spawn { source })?
        };
        Ok(RedisPool {
            url,
            keys,
            run,
            shared,
            collector: Some(collector),
            progress: Arc::new(ProgressCounters::new()),
            workers,
            chunk_size: self.chunk_size,
            max_message_bytes: self.max_message_bytes,
        })
    }
}

/// A chunk whose result has not arrived.
struct Pending {
    reply: EncodedReply,
    entry: String,
    /// The answer count of the `map` it belongs to, if any (see `RedisLaunch::help`).
    answered: Option<Arc<AtomicU64>>,
}

/// A chunk waiting in this process for room in Redis.
struct Queued {
    state: Arc<[u8]>,
    entry: i64,
    inputs: Vec<u8>,
    reply: EncodedReply,
    answered: Option<Arc<AtomicU64>>,
}

/// The chunks waiting here, and how many entries are in Redis.
struct Dispatch {
    queue: VecDeque<Queued>,
    in_redis: usize,
}

/// What the pool and its collector share.
struct Shared {
    /// The connection that adds entries.
    con: Mutex<redis::Connection>,
    dispatch: Mutex<Dispatch>,
    /// At most this many entries of the run in Redis.
    bound: usize,
    keys: Keys,
    run: String,
    max_deliveries: u32,
    /// The job time limit in milliseconds, 0 for none.
    job_timeout_ms: u64,
    outstanding: Mutex<HashMap<u64, Pending>>,
    closing: AtomicBool,
    children: Mutex<Vec<Child>>,
    options: WorkerOptions,
    /// Results for chunks that had one already, or that nobody waits for.
    late: AtomicU64,
    next_chunk: AtomicU64,
    /// The reading side; see [`Reader`].
    reader: Mutex<Reader>,
    /// Callers waiting for the reader or reading now.
    helping: AtomicUsize,
    /// When a caller last finished a round, in nanoseconds after `epoch` (0: never).
    epoch: Instant,
    last_help: AtomicU64,
}

/// fanout's [`Executor`] on Redis Streams: jobs run on worker processes on any host that can
/// reach the Redis server. See the crate documentation for the delivery semantics.
pub struct RedisPool {
    url: RedisUrl,
    keys: Keys,
    run: String,
    shared: Arc<Shared>,
    collector: Option<JoinHandle<()>>,
    progress: Arc<ProgressCounters>,
    workers: usize,
    chunk_size: usize,
    max_message_bytes: usize,
}

impl RedisPool {
    /// A builder for a pool on the Redis at `url` (a password in it never prints).
    pub fn builder(url: &str) -> RedisPoolBuilder {
        Self::builder_with(RedisUrl::new(url).map_err(|_| "the URL given to RedisPool::builder".to_owned()))
    }

    /// A builder for a pool on the Redis whose URL is in the environment variable `name`.
    pub fn builder_from_env(name: &str) -> RedisPoolBuilder {
        Self::builder_with(RedisUrl::from_env(name).map_err(|_| name.to_owned()))
    }

    fn builder_with(url: Result<RedisUrl, String>) -> RedisPoolBuilder {
        RedisPoolBuilder {
            url,
            queue: "fanout".to_owned(),
            workers: None,
            local_workers: 0,
            chunk_size: 1,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            visibility: DEFAULT_VISIBILITY,
            max_deliveries: 3,
            prefetch: 0,
            job_timeout: None,
        }
    }

    /// The process ids of this pool's local workers.
    pub fn local_worker_pids(&self) -> Vec<u32> {
        self.shared.children.lock().map(|c| c.iter().map(Child::id).collect()).unwrap_or_default()
    }

    /// Duplicate results of this run so far: a chunk that ran twice (its worker was taken over
    /// while alive) has its second result counted here and dropped.
    pub fn duplicates(&self) -> u64 {
        let mut con = self.shared.con.lock().unwrap_or_else(|p| p.into_inner());
        redis::cmd("GET")
            .arg(self.keys.dups(&self.run))
            .query::<Option<u64>>(&mut *con)
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    /// Entries in the queue's dead-letter stream (of every run on the queue).
    pub fn dead_letters(&self) -> u64 {
        let mut con = self.shared.con.lock().unwrap_or_else(|p| p.into_inner());
        redis::cmd("XLEN").arg(self.keys.dead()).query::<u64>(&mut *con).unwrap_or(0)
    }

    /// Queues a chunk. A `map`'s chunk (`answered` given) waits for its caller's next round
    /// (`RedisLaunch::help`, which adds it in the same write as its read), or the collector's
    /// when the caller does not come back soon; any other (a submitted job) is added at once.
    fn add(
        &self,
        state: &Arc<[u8]>,
        entry: i64,
        inputs: Vec<u8>,
        reply: EncodedReply,
        answered: Option<Arc<AtomicU64>>,
    ) {
        let defer = answered.is_some();
        let queued = Queued { state: Arc::clone(state), entry, inputs, reply, answered };
        self.shared.dispatch.lock().unwrap_or_else(|p| p.into_inner()).queue.push_back(queued);
        if !defer {
            self.shared.pump();
        }
    }

    fn outstanding(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Pending>> {
        self.shared.outstanding.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn stop(&mut self, mode: Shutdown) {
        if self.collector.is_none() {
            return;
        }
        if mode != Shutdown::Finish {
            // Chunks still here are dropped: their replies answer `Cancelled`.
            let queued =
                std::mem::take(&mut self.shared.dispatch.lock().unwrap_or_else(|p| p.into_inner()).queue);
            drop(queued);
            // Entries no worker has read are deleted; their replies answer `Cancelled`.
            let script = redis::Script::new(CANCEL_UNREAD);
            let chunks: Vec<(u64, String)> =
                self.outstanding().iter().map(|(chunk, pending)| (*chunk, pending.entry.clone())).collect();
            let mut con = self.shared.con.lock().unwrap_or_else(|p| p.into_inner());
            for (chunk, entry) in chunks {
                let deleted: i64 =
                    script.key(self.keys.jobs()).arg(GROUP).arg(&entry).invoke(&mut *con).unwrap_or(0);
                if deleted == 1 {
                    drop(self.outstanding().remove(&chunk));
                }
            }
        }
        if mode == Shutdown::Kill {
            let running: Vec<Pending> = self.outstanding().drain().map(|(_, pending)| pending).collect();
            for pending in running {
                pending.reply.send(Err(JobError::Killed));
            }
            // The run is no longer live: a worker on any host running one of its jobs sees
            // that within its poll period, deletes the entry and ends itself (its supervisor
            // starts a fresh one).
            let mut con = self.shared.con.lock().unwrap_or_else(|p| p.into_inner());
            let _: redis::RedisResult<Value> =
                redis::cmd("SREM").arg(self.keys.runs()).arg(&self.run).query(&mut *con);
        }
        self.shared.closing.store(true, Ordering::SeqCst);
        if let Some(collector) = self.collector.take() {
            let _ = collector.join();
        }
        for mut child in std::mem::take(&mut *self.shared.children.lock().unwrap_or_else(|p| p.into_inner()))
        {
            let _ = child.kill();
            let _ = child.wait();
        }
        let mut con = self.shared.con.lock().unwrap_or_else(|p| p.into_inner());
        let _: redis::RedisResult<Value> = redis::pipe()
            .cmd("SREM")
            .arg(self.keys.runs())
            .arg(&self.run)
            .cmd("DEL")
            .arg(self.keys.done(&self.run))
            .arg(self.keys.dups(&self.run))
            .query(&mut *con);
    }
}

/// The reading side of the pool: the connection that reads the run's result stream, where it
/// is, and the results read but not yet trimmed. Whoever holds it reads: the collector thread,
/// or a caller waiting in `map`/`imap` for its own answers (`RedisLaunch::help`), who then
/// is woken by the socket itself instead of by the collector thread.
struct Reader {
    /// Its own lean connection (see [`crate::wire`]): at chunk 1 redis-rs's parser of the
    /// replies cost the caller about 3 us a job.
    con: Wire,
    done: String,
    last: String,
    trim: Vec<String>,
    failures: u32,
}

/// How long a caller's round blocks for results: its own arrive sooner.
const HELP_BLOCK_MS: u64 = 100;

/// The collector thread's block while callers have helped lately (short: a caller that comes
/// back waits at most this long for the reader), and otherwise.
const COLLECT_BLOCK_BUSY_MS: u64 = 10;
const COLLECT_BLOCK_IDLE_MS: u64 = 100;

/// How long after a caller's last round the collector thread stays out.
const HELPER_GRACE: Duration = Duration::from_millis(10);

/// What one round did.
enum Round {
    Read,
    Failed,
    /// Redis is gone for good: every outstanding chunk was answered `WorkerLost`.
    Gone,
}

/// One round trip of the reader: the waiting chunks that fit in Redis now are added (their
/// `XADD`s), the results read last time are trimmed (`XDEL`), then the blocking `XREAD`, all in
/// one write. The `XADD` replies come back at once (the entry ids, read before the `XREAD`
/// blocks). Reading from `last` is idempotent, so a failed round trip only repeats the trim and
/// the read. Each first result goes to its chunk's reply.
fn round(shared: &Shared, reader: &mut Reader, block_ms: u64) -> Round {
    let Reader { con, done, last, trim, failures } = reader;
    let adds = shared.take_room();
    for (_, add) in &adds {
        con.pack_raw(&add.get_packed_command());
    }
    if !trim.is_empty() {
        let mut xdel: Vec<&[u8]> = Vec::with_capacity(trim.len() + 2);
        xdel.extend([&b"XDEL"[..], done.as_bytes()]);
        xdel.extend(trim.iter().map(String::as_bytes));
        con.pack(&xdel);
    }
    let block = block_ms.to_string();
    con.pack(&[
        b"XREAD",
        b"COUNT",
        b"256",
        b"BLOCK",
        block.as_bytes(),
        b"STREAMS",
        done.as_bytes(),
        last.as_bytes(),
    ]);
    let sent = con.send();
    shared.receive_added(
        adds,
        match &sent {
            Ok(()) => Ok(con),
            Err(error) => Err(error.to_string()),
        },
    );
    let read: Result<wire::Reply, WireError> = sent.and_then(|()| {
        if !trim.is_empty() {
            con.recv()?;
        }
        con.recv()
    });
    let read = match read {
        Ok(wire::Reply::Error(error)) => Err(error),
        Ok(read) => Ok(read),
        Err(error) => Err(error.to_string()),
    };
    let read = match read {
        Ok(read) => {
            *failures = 0;
            trim.clear();
            read
        }
        Err(error) => {
            *failures += 1;
            if *failures >= 50 {
                // Redis is gone: nothing can answer any more.
                let reason = shared.options.url.failed("read results", &error).to_string();
                let lost: Vec<Pending> = shared
                    .outstanding
                    .lock()
                    .map(|mut o| o.drain().map(|(_, p)| p).collect())
                    .unwrap_or_default();
                for pending in lost {
                    pending.reply.send(Err(JobError::WorkerLost {
                        exit: WorkerExit::ChannelsFailed { reason: reason.clone() },
                    }));
                }
                return Round::Gone;
            }
            return Round::Failed;
        }
    };
    for entry in Entry::from_read(read) {
        last.clone_from(&entry.id);
        let chunk = entry.field("c").and_then(|c| std::str::from_utf8(c).ok()?.parse::<u64>().ok());
        let result = match entry.field("r") {
            Some(bytes) => postcard::from_bytes::<Outcome>(bytes).map_err(|error| JobError::WorkerLost {
                exit: WorkerExit::ProtocolViolation(fanout_core::Violation::MalformedMessage {
                    message: error.to_string(),
                }),
            }),
            None => Err(JobError::WorkerLost {
                exit: WorkerExit::ProtocolViolation(fanout_core::Violation::UnrequestedAnswer),
            }),
        };
        trim.push(entry.id);
        let pending = chunk.and_then(|chunk| shared.outstanding.lock().ok()?.remove(&chunk));
        match pending {
            Some(pending) => {
                if let Some(answered) = &pending.answered {
                    answered.fetch_add(1, Ordering::SeqCst);
                }
                pending.reply.send(result.and_then(|outcome| outcome));
                // The room this frees is filled by the next round, in its round trip.
                shared.done();
            }
            None => {
                shared.late.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Round::Read
}

/// The collector thread: reads results whenever no caller does, until the pool closes and
/// nothing is outstanding; replaces dead local workers.
fn collect(shared: &Shared) {
    let mut last_check = Instant::now();
    loop {
        if shared.closing.load(Ordering::SeqCst)
            && shared.outstanding.lock().map_or(true, |o| o.is_empty())
            && shared.dispatch.lock().map_or(true, |d| d.queue.is_empty())
        {
            return;
        }
        if !shared.closing.load(Ordering::SeqCst) && last_check.elapsed() >= Duration::from_millis(200) {
            last_check = Instant::now();
            respawn(shared);
        }
        let since_help = shared.since_help();
        if shared.helping.load(Ordering::SeqCst) > 0 || since_help < HELPER_GRACE {
            // A caller reads for itself: stay out of its way.
            std::thread::sleep(HELPER_GRACE / 2);
            continue;
        }
        let Ok(mut reader) = shared.reader.try_lock() else {
            std::thread::sleep(HELPER_GRACE / 2);
            continue;
        };
        let block =
            if since_help < Duration::from_secs(1) { COLLECT_BLOCK_BUSY_MS } else { COLLECT_BLOCK_IDLE_MS };
        match round(shared, &mut reader, block) {
            Round::Read => {}
            Round::Failed => {
                drop(reader);
                std::thread::sleep(Duration::from_millis(100));
            }
            Round::Gone => return,
        }
    }
}

/// Replaces local workers that died.
fn respawn(shared: &Shared) {
    let Ok(mut children) = shared.children.lock() else { return };
    for child in children.iter_mut() {
        if !matches!(child.try_wait(), Ok(None))
            && let Ok(fresh) = spawn_worker(&shared.options)
        {
            *child = fresh;
        }
    }
}

impl Executor for RedisPool {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn workers(&self) -> usize {
        self.workers
    }

    fn progress_watch(&self) -> ProgressWatch {
        ProgressWatch::new(&self.progress)
    }

    fn map_unordered<'a, J, I>(
        &'a self,
        job: J,
        inputs: impl IntoIterator<Item = I, IntoIter: 'a>,
    ) -> impl Iterator<Item = (usize, Result<J::Output, JobError>)> + 'a
    where
        J: Job<I>,
        I: Payload,
        J::Output: Payload,
    {
        Unordered::new(RedisLaunch::helped(self, &job), inputs.into_iter())
    }

    fn imap<'a, J, I>(
        &'a self,
        job: J,
        inputs: impl IntoIterator<Item = I, IntoIter: 'a>,
    ) -> impl Iterator<Item = Result<J::Output, JobError>> + 'a
    where
        J: Job<I>,
        I: Payload,
        J::Output: Payload,
    {
        Ordered::new(RedisLaunch::helped(self, &job), inputs.into_iter())
    }

    fn submit<J, I>(&self, job: J, input: I) -> JobHandle<J::Output>
    where
        J: Job<I>,
        I: Payload,
        J::Output: Payload,
    {
        let (reply, handle) = job_handle();
        launch_one(&mut RedisLaunch::new(self, &job), input, reply);
        handle
    }

    fn shutdown(mut self, mode: Shutdown) {
        self.stop(mode);
    }
}

impl Drop for RedisPool {
    fn drop(&mut self) {
        self.stop(Shutdown::Finish);
    }
}

impl fmt::Debug for RedisPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPool")
            .field("url", &self.url)
            .field("queue", &self.keys)
            .field("workers", &self.workers)
            .field("chunk_size", &self.chunk_size)
            .finish_non_exhaustive()
    }
}

/// The launcher of one call: chunks encoded by [`EncodedPacker`], added as entries with the
/// job's code offset and state.
struct RedisLaunch<'p, I, O> {
    pool: &'p RedisPool,
    entry: i64,
    state: Result<Arc<[u8]>, JobError>,
    /// For a `map` (whose caller helps): how many of its chunks were answered by a result.
    answered: Option<Arc<AtomicU64>>,
    _types: PhantomData<fn(I) -> O>,
}

impl<'p, I: Payload, O: Payload> RedisLaunch<'p, I, O> {
    /// The launcher of a `submit` (whose caller waits on its handle, never helps).
    fn new<J: Job<I, Output = O>>(pool: &'p RedisPool, job: &J) -> Self {
        let entry = offset_of_entry(entry_point::<J, I>());
        Self {
            pool,
            entry,
            state: JobState::encode_state(job).map(Arc::from),
            answered: None,
            _types: PhantomData,
        }
    }

    /// The launcher of a `map`, `map_unordered` or `imap`, whose caller reads for itself.
    fn helped<J: Job<I, Output = O>>(pool: &'p RedisPool, job: &J) -> Self {
        Self { answered: Some(Arc::new(AtomicU64::new(0))), ..Self::new(pool, job) }
    }
}

impl<I: Payload, O: Payload> Launch for RedisLaunch<'_, I, O> {
    type Input = I;
    type Output = O;
    type Packer = EncodedPacker;

    fn packer(&mut self) -> EncodedPacker {
        EncodedPacker::new(self.pool.chunk_size, self.pool.max_message_bytes)
    }

    /// Two chunks per worker, and at least one per worker beyond what may be in Redis: those
    /// wait here ready, so that the collector adds a finished chunk's successor in its own
    /// next round trip instead of waiting for this caller to wake up and add it.
    fn window(&self) -> usize {
        (self.pool.workers * CHUNKS_PER_WORKER).max(self.pool.shared.bound + self.pool.workers)
    }

    fn progress(&self) -> Option<Arc<ProgressCounters>> {
        Some(Arc::clone(&self.pool.progress))
    }

    fn launch(&mut self, inputs: Vec<u8>, reply: Reply<O>) {
        match &self.state {
            Ok(state) => self.pool.add(state, self.entry, inputs, reply.encoded(), self.answered.clone()),
            Err(error) => reply.fail(error.clone()),
        }
    }

    /// The caller waits for an answer of its `map`: it reads the results itself (one round:
    /// its queued chunks added, the blocking read), so that its answers wake it straight from
    /// the socket, not through the collector thread. While the collector (or another caller)
    /// holds the reader, it waits for it; answers that came in meanwhile end the wait.
    fn help(&mut self) -> bool {
        let Some(answered) = &self.answered else { return false };
        let shared = &self.pool.shared;
        // The engine calls this only when it has taken every answer sent so far.
        let seen = answered.load(Ordering::SeqCst);
        shared.helping.fetch_add(1, Ordering::SeqCst);
        let mut reader = match shared.reader.try_lock() {
            Ok(reader) => reader,
            Err(_) => {
                // The collector (or another caller) is in a round that did not add this
                // map's queued chunks: add them now, or the wait could last that round's whole
                // block with nothing of this map in Redis.
                shared.pump();
                shared.reader.lock().unwrap_or_else(|p| p.into_inner())
            }
        };
        shared.helping.fetch_sub(1, Ordering::SeqCst);
        if answered.load(Ordering::SeqCst) == seen {
            let done = round(shared, &mut reader, HELP_BLOCK_MS);
            drop(reader);
            if matches!(done, Round::Failed | Round::Gone) {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        shared.helped();
        true
    }
}

impl Shared {
    /// Adds waiting chunks to Redis while the run has room there, in one round trip.
    fn pump(&self) {
        let adds = self.take_room();
        if adds.is_empty() {
            return;
        }
        let mut packed = Vec::new();
        for (_, add) in &adds {
            add.write_packed_command(&mut packed);
        }
        let mut con = self.con.lock().unwrap_or_else(|p| p.into_inner());
        let sent = con.send_packed_command(&packed);
        self.receive_added(
            adds,
            match &sent {
                Ok(()) => Ok(&mut *con),
                Err(error) => Err(error.to_string()),
            },
        );
    }

    /// The `XADD` replies of `adds`, in order, from `con` once they were written (or the
    /// write's error); each chunk is then [`added`](Self::added), or failed with the error.
    fn receive_added(&self, adds: Vec<(u64, redis::Cmd)>, mut con: Result<&mut impl AddedReplies, String>) {
        for (chunk, _) in adds {
            let added = match &mut con {
                Ok(con) => con.added_reply(),
                Err(error) => Err(error.clone()),
            };
            self.added(chunk, added);
        }
    }

    /// Takes the waiting chunks that fit in Redis now (the gate: a cancelled handle or a
    /// dropped `map` never reaches Redis), registers them as outstanding (before their entry
    /// exists, so that a fast result finds its reply) and gives their `XADD`s.
    fn take_room(&self) -> Vec<(u64, redis::Cmd)> {
        let mut taken = Vec::new();
        {
            let mut dispatch = self.dispatch.lock().unwrap_or_else(|p| p.into_inner());
            while dispatch.in_redis < self.bound {
                let Some(queued) = dispatch.queue.pop_front() else { break };
                if !queued.reply.start() {
                    continue;
                }
                dispatch.in_redis += 1;
                taken.push(queued);
            }
        }
        if taken.is_empty() {
            return Vec::new();
        }
        let mut outstanding = self.outstanding.lock().unwrap_or_else(|p| p.into_inner());
        taken
            .into_iter()
            .map(|Queued { state, entry, inputs, reply, answered }| {
                let chunk = self.next_chunk.fetch_add(1, Ordering::Relaxed);
                outstanding.insert(chunk, Pending { reply, entry: String::new(), answered });
                let mut add = redis::cmd("XADD");
                add.arg(self.keys.jobs())
                    .arg("*")
                    .arg("v")
                    .arg(VERSION)
                    .arg("k")
                    .arg(&self.run)
                    .arg("b")
                    .arg(build_id())
                    .arg("e")
                    .arg(entry)
                    .arg("c")
                    .arg(chunk)
                    .arg("m")
                    .arg(self.max_deliveries)
                    .arg("t")
                    .arg(self.job_timeout_ms)
                    .arg("s")
                    .arg(&state[..])
                    .arg("i")
                    .arg(inputs);
                (chunk, add)
            })
            .collect()
    }

    /// A caller finished a round: the collector stays out for a while.
    fn helped(&self) {
        let nanos = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX).max(1);
        self.last_help.store(nanos, Ordering::SeqCst);
    }

    /// Since a caller last finished a round (long when none ever did).
    fn since_help(&self) -> Duration {
        match self.last_help.load(Ordering::SeqCst) {
            0 => Duration::MAX,
            at => self.epoch.elapsed().saturating_sub(Duration::from_nanos(at)),
        }
    }

    /// One result came in (or an entry left Redis another way).
    fn done(&self) {
        let mut dispatch = self.dispatch.lock().unwrap_or_else(|p| p.into_inner());
        dispatch.in_redis = dispatch.in_redis.saturating_sub(1);
    }

    /// The reply to chunk `chunk`'s `XADD`: its entry id, or the error that answers it.
    fn added(&self, chunk: u64, added: Result<String, String>) {
        let mut outstanding = self.outstanding.lock().unwrap_or_else(|p| p.into_inner());
        match added {
            Ok(id) => {
                if let Some(pending) = outstanding.get_mut(&chunk) {
                    pending.entry = id;
                }
            }
            Err(error) => {
                let pending = outstanding.remove(&chunk);
                drop(outstanding);
                self.done();
                if let Some(pending) = pending {
                    if let Some(answered) = &pending.answered {
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                    let reason = self.options.url.failed("add a job", &error).to_string();
                    pending
                        .reply
                        .send(Err(JobError::WorkerLost { exit: WorkerExit::ChannelsFailed { reason } }));
                }
            }
        }
    }
}

/// A connection the replies to `XADD`s are read from: redis-rs's (`pump`) or the reader's.
trait AddedReplies {
    /// The next reply, as an entry id or the error that answers its chunk.
    fn added_reply(&mut self) -> Result<String, String>;
}

impl AddedReplies for redis::Connection {
    fn added_reply(&mut self) -> Result<String, String> {
        self.recv_response()
            .and_then(Value::extract_error)
            .and_then(redis::from_owned_redis_value::<String>)
            .map_err(|error| error.to_string())
    }
}

impl AddedReplies for Wire {
    fn added_reply(&mut self) -> Result<String, String> {
        match self.recv() {
            Ok(wire::Reply::Bulk(id)) => {
                String::from_utf8(id).map_err(|_| "an entry id is not UTF-8".to_owned())
            }
            Ok(wire::Reply::Status(id)) => Ok(id),
            Ok(wire::Reply::Error(error)) => Err(error),
            Ok(_) => Err(WireError::Protocol("an XADD answered no entry id").to_string()),
            Err(error) => Err(error.to_string()),
        }
    }
}
