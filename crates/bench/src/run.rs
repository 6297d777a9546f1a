//! The orchestrator's side of `fanout bench`: the mock API in its own process
//! ([`MockServerProcess`]), each measured repetition in a fresh run child ([`measure`]), and
//! with `--hosts K` the Redis pool's worker hosts ([`WorkerHosts`]).
//!
//! Both children are this same executable (`std::env::current_exe()`): `fanout mock-api` and
//! the hidden `fanout __run SPEC`. Keeping the server out of the measured process means the
//! client's CPU time and memory are the client's alone, and that a process pool built in the
//! run child never forks from a process running tokio's threads. A fresh server per repetition
//! starts every run from an empty new system (the migration's POSTs are not idempotent across
//! runs) and with no connection left over.
//!
//! The token reaches both children through the `FANOUT_TOKEN` environment variable, never on a
//! command line (which `ps` shows to everyone). Children still running when the orchestrator
//! stops are killed: by the guards' `Drop` on every return path, by [`kill_live_children`] from
//! a Ctrl-C handler, and the server also exits when its standard input closes, which covers an
//! orchestrator killed with no chance to clean up.

use std::io::{self, BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Mutex, PoisonError};

use crate::http::Secret;
use crate::scenario::progress::Progress;
use crate::scenario::{ChildMessage, RunOutcome, RunSpec};
use crate::usage::{self, RssSampler};

/// The environment variable that carries the token to `fanout` and its children.
pub const TOKEN_ENV: &str = "FANOUT_TOKEN";

/// The first line `fanout mock-api` prints, before the URL.
pub const LISTENING_PREFIX: &str = "listening on ";

/// Why a repetition could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A child process could not be started.
    #[error("could not start {what}: {source}")]
    Spawn {
        /// Which child.
        what: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The worker hosts (`--hosts`) could not be started.
    #[error("{0}")]
    Hosts(String),
    /// The mock API did not announce its address.
    #[error("the mock API process did not start: {0}")]
    ServerStart(String),
    /// The run child ended without a result.
    #[error("the measured run ended without a result ({0}); its error, if any, is printed above")]
    ChildDied(String),
    /// The run child reported that the run could not be carried out.
    #[error("{0}")]
    Run(String),
    /// Talking to a child failed.
    #[error("could not {action}: {source}")]
    Io {
        /// What the orchestrator was doing.
        action: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// Pids of the children alive right now, for [`kill_live_children`].
static LIVE: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Process groups of the worker hosts alive right now ([`WorkerHosts`]), for
/// [`kill_live_children`]: each host is a supervisor and its workers, which a kill of the
/// supervisor alone would leave running until their next poll.
static LIVE_GROUPS: Mutex<Vec<libc::pid_t>> = Mutex::new(Vec::new());

fn register(pid: u32) {
    LIVE.lock().unwrap_or_else(PoisonError::into_inner).push(pid);
}

fn unregister(pid: u32) {
    LIVE.lock().unwrap_or_else(PoisonError::into_inner).retain(|&live| live != pid);
}

/// Kills every child this module started that is still running (for a Ctrl-C handler; the
/// caller exits right after, and the system reaps what remains).
pub fn kill_live_children() {
    let live = LIVE.lock().unwrap_or_else(PoisonError::into_inner);
    for &pid in live.iter() {
        if let Ok(pid) = libc::pid_t::try_from(pid) {
            // SAFETY: `kill` takes no pointers and touches no memory of this process. `pid` is a
            // child of ours that has not been reaped (the server's pid leaves the list before
            // it is waited for, the run child's right after `wait4`, long before the system
            // could reuse it), so the signal reaches no unrelated process.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    drop(live);
    for &group in LIVE_GROUPS.lock().unwrap_or_else(PoisonError::into_inner).iter() {
        // SAFETY: as above; `-group` names the process group of a worker host whose leader
        // (our child) is not reaped yet, so the group id cannot have been reused.
        unsafe { libc::kill(-group, libc::SIGKILL) };
    }
}

/// Set once `fanout bench` is being interrupted: the Ctrl-C handler owns the exit from then on.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Marks the process as interrupted (see [`interrupted`]).
pub fn set_interrupted() {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Whether the process is being interrupted: a failure seen now (a child killed by the
/// handler, reaped by it before `wait4`) is the interruption's, and the handler reports it.
pub fn interrupted() -> bool {
    INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst)
}

/// Makes this process the reaper of its orphaned descendants (`PR_SET_CHILD_SUBREAPER`): a
/// run child's fork server and workers, orphaned when the run child is killed, then come to
/// this process, which [`reap_descendants`] waits for instead of leaving them to `init`.
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: `prctl(PR_SET_CHILD_SUBREAPER, 1)` takes integer arguments only and changes one
    // attribute of this process; it touches no memory of this process.
    let status = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if status == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Reaps every child (and, as a subreaper, every orphaned descendant) until none is left or
/// `within` has passed; how many were reaped.
pub fn reap_descendants(within: std::time::Duration) -> usize {
    let deadline = std::time::Instant::now() + within;
    let mut reaped = 0;
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid, writable `c_int` for the duration of the call; `-1`
        // waits for any child, `WNOHANG` makes the call return at once.
        let pid = unsafe { libc::waitpid(-1, &raw mut status, libc::WNOHANG) };
        match pid {
            pid if pid > 0 => reaped += 1,
            // Children left, none exited yet: they are dying (killed, or their channel closed).
            0 if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5))
            }
            // No child at all (ECHILD), or out of time.
            _ => return reaped,
        }
    }
}

/// `fanout mock-api` running as a child process; killed and reaped on drop.
#[derive(Debug)]
pub struct MockServerProcess {
    child: Child,
    url: String,
}

impl MockServerProcess {
    /// Starts `exe mock-api` on a free loopback port and waits for its address; `extra` are
    /// more flags of `fanout mock-api` (its fault injection).
    pub fn start(
        exe: &Path,
        time_scale: f64,
        seed: u64,
        token: &Secret,
        extra: &[String],
    ) -> Result<Self, RunError> {
        let child = Command::new(exe)
            .args(["mock-api", "--addr", "127.0.0.1:0", "--exit-on-stdin-eof"])
            .args(["--time-scale", &time_scale.to_string(), "--seed", &seed.to_string()])
            .args(extra)
            .env(TOKEN_ENV, token.expose())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|source| RunError::Spawn { what: "the mock API process", source })?;
        register(child.id());
        let mut server = Self { child, url: String::new() };
        let stdout = server.child.stdout.take();
        let mut line = String::new();
        if let Some(stdout) = stdout {
            BufReader::new(stdout)
                .read_line(&mut line)
                .map_err(|source| RunError::Io { action: "read the mock API's address", source })?;
        }
        match line.trim().strip_prefix(LISTENING_PREFIX) {
            Some(url) if url.starts_with("http://") => server.url = url.to_owned(),
            _ if line.is_empty() => {
                return Err(RunError::ServerStart("it exited before printing its address".to_owned()));
            }
            _ => return Err(RunError::ServerStart(format!("unexpected first line {:?}", line.trim()))),
        }
        Ok(server)
    }

    /// The server's base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server process's id (for reading its CPU time from `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for MockServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        unregister(self.child.id());
        let _ = self.child.wait();
    }
}

/// One measured repetition: the run child's outcome plus what the orchestrator observed.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// What the run child measured and verified.
    pub outcome: RunOutcome,
    /// Peak of the summed RSS of the run child and its descendants, in bytes.
    pub peak_rss_bytes: u64,
    /// Peak of the summed PSS of the run child and its descendants, in bytes: shared pages
    /// counted once (sampled less often than RSS: see [`usage`](crate::usage)).
    pub peak_pss_bytes: u64,
    /// CPU time of the whole run child (setup and verification included) and its reaped
    /// descendants, from `wait4`.
    pub process_cpu_seconds: f64,
    /// CPU time the mock server spent while the run child lived (it is idle otherwise), from
    /// its CPU-time clock; `None` for a server of the user's (`--url`) or where it cannot be
    /// read. Set by the caller, who owns the server: see [`measure`].
    pub server_cpu_seconds: Option<f64>,
    /// With worker hosts (`--hosts`): what they were seen doing. Set by the caller, who owns
    /// them.
    pub hosts: Option<HostsSeen>,
}

/// What the worker hosts of a repetition were seen doing ([`WorkerHosts`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HostsSeen {
    /// Consumers of the run's queue by where they ran, after the run.
    pub consumers: Consumers,
    /// CPU time of the hosts' processes while the run child lived.
    pub cpu_seconds: f64,
}

/// Runs `spec` in a fresh `exe __run` child, sampling its memory when `sample_memory`
/// ([`RssSampler`]; otherwise the peaks are `ru_maxrss` and 0), and reaps it with `wait4`.
/// Its progress lines are recorded for [`interrupted_report`] as they arrive.
pub fn measure(
    exe: &Path,
    spec: &RunSpec,
    token: &Secret,
    sample_memory: bool,
) -> Result<Measured, RunError> {
    let spec_json = serde_json::to_string(spec).unwrap_or_default();
    let mut child = Command::new(exe)
        .args(["__run", &spec_json])
        .env(TOKEN_ENV, token.expose())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|source| RunError::Spawn { what: "the measured run", source })?;
    let pid = child.id();
    register(pid);
    let sampler = if sample_memory { RssSampler::start(pid).map(Some) } else { Ok(None) };
    let output = read_lines(child.stdout.take());
    let reaped = usage::wait4(pid);
    unregister(pid);
    let sampled = sampler.ok().flatten().map(RssSampler::finish).unwrap_or_default();
    let reaped = reaped.map_err(|source| RunError::Io { action: "wait for the measured run", source })?;
    let last_line =
        output.map_err(|source| RunError::Io { action: "read the measured run's result", source })?;
    match serde_json::from_str::<ChildMessage>(&last_line) {
        Ok(ChildMessage::Done(outcome)) if reaped.success() => Ok(Measured {
            outcome: *outcome,
            peak_rss_bytes: sampled.rss_bytes.max(reaped.max_rss_bytes),
            peak_pss_bytes: sampled.pss_bytes,
            process_cpu_seconds: reaped.cpu.as_secs_f64(),
            server_cpu_seconds: None,
            hosts: None,
        }),
        Ok(ChildMessage::Failed(message)) => Err(RunError::Run(message)),
        _ => Err(RunError::ChildDied(reaped.describe())),
    }
}

/// What the run children reported so far: finished tickets, migrated or not.
static PROGRESS: Mutex<Vec<(u64, bool)>> = Mutex::new(Vec::new());

/// Reads the run child's output line by line, recording progress lines; returns the last
/// other non-empty line (the result).
fn read_lines(stdout: Option<ChildStdout>) -> io::Result<String> {
    let mut last = String::new();
    let Some(stdout) = stdout else { return Ok(last) };
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        match Progress::parse(&line) {
            Some(Progress::TicketDone { ticket, migrated }) => {
                PROGRESS.lock().unwrap_or_else(PoisonError::into_inner).push((ticket, migrated));
            }
            None if !line.trim().is_empty() => last = line,
            None => {}
        }
    }
    Ok(last)
}

/// What to tell a user who interrupted `fanout bench`: how many jobs finished and which
/// tickets were migrated (only the migration reports progress). Safe to call from a signal
/// handler thread.
pub fn interrupted_report() -> String {
    let progress = PROGRESS.lock().unwrap_or_else(PoisonError::into_inner);
    if progress.is_empty() {
        return "interrupted: no job had reported finishing".to_owned();
    }
    let mut migrated: Vec<u64> = progress.iter().filter(|(_, ok)| *ok).map(|(id, _)| *id).collect();
    migrated.sort_unstable();
    migrated.dedup();
    let ids: Vec<String> = migrated.iter().map(u64::to_string).collect();
    format!(
        "interrupted: {} jobs finished; {} tickets migrated: {}\nrun the same command with --url pointing at the same server to migrate the rest (the idempotency keys prevent duplicates)",
        progress.len(),
        migrated.len(),
        ids.join(", ")
    )
}

/// `fanout bench --hosts K`: K worker hosts on this machine, each a `fanout worker` process
/// (a supervisor of its share of the workers) in a process group of its own, serving one
/// queue of the run's Redis. Killed, group and all, and reaped on drop; also by
/// [`kill_live_children`]; and each dies with this process (`PR_SET_PDEATHSIG`) if it is
/// killed with no chance to clean up.
#[derive(Debug)]
pub struct WorkerHosts {
    hosts: Vec<Child>,
    queue: String,
    url: fanout_redis::RedisUrl,
}

impl WorkerHosts {
    /// Starts `count` hosts of `exe worker env:URL_ENV --queue QUEUE --workers N/K
    /// --visibility-ms V` (the remainder spread over the first hosts), the URL in `url_env`
    /// (read by the hosts from the environment, never on a command line), host `i` inside
    /// network namespace `netns[i]` when `netns` is not empty (`ip netns exec`, which execs
    /// the worker in place: its pid, and so its process group, is the child's), and waits until
    /// every worker reads the queue, so that the run does not time their start-up (a cluster
    /// already running): a worker still starting leaves its entry to another, a round later
    /// (5 of 20 runs of api-calls at time scale 0.1 took 0.87-0.94 s instead of 0.75 s when
    /// this waited for the processes only). Redis 7.0 lists a consumer only once it was given
    /// an entry, so the wait counts the Redis clients blocked in `XREADGROUP`.
    pub fn start(
        exe: &Path,
        count: usize,
        workers: usize,
        queue: &str,
        url_env: &str,
        visibility: std::time::Duration,
        netns: &[String],
    ) -> Result<Self, RunError> {
        let url = fanout_redis::RedisUrl::from_env(url_env)
            .map_err(|error| RunError::Hosts(format!("the worker hosts' Redis: {error}")))?;
        let mut started = Self { hosts: Vec::with_capacity(count), queue: queue.to_owned(), url };
        for index in 0..count {
            let share = crate::scenario::Hosts::workers_of(workers, count, index);
            let mut command = match netns.get(index) {
                Some(name) => {
                    let mut command = Command::new("ip");
                    command.args(["netns", "exec", name]).arg(exe);
                    command
                }
                None => Command::new(exe),
            };
            command
                .args(["worker", &format!("env:{url_env}"), "--queue", queue])
                .args(["--workers", &share.to_string()])
                .args(["--visibility-ms", &visibility.as_millis().to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                // Its own group: one kill reaches the supervisor and its workers, and a
                // Ctrl-C on the terminal reaches only this process, whose handler kills them.
                .process_group(0);
            let die_with_parent = || {
                // SAFETY: `prctl(PR_SET_PDEATHSIG)` takes integers and only sets a flag of this
                // process.
                unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
                Ok(())
            };
            // SAFETY: the closure runs in the child between fork and exec, where only
            // async-signal-safe calls are allowed: it makes one, `prctl`, and allocates nothing.
            unsafe { command.pre_exec(die_with_parent) };
            let child =
                command.spawn().map_err(|source| RunError::Spawn { what: "a worker host", source })?;
            if let Ok(group) = libc::pid_t::try_from(child.id()) {
                LIVE_GROUPS.lock().unwrap_or_else(PoisonError::into_inner).push(group);
            }
            started.hosts.push(child);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let running = fanout_redis::readers(&started.url)
                .map_err(|error| RunError::Hosts(format!("the worker hosts' Redis: {error}")))?;
            if running >= workers {
                return Ok(started);
            }
            for host in &mut started.hosts {
                if let Ok(Some(status)) = host.try_wait() {
                    return Err(RunError::Hosts(format!(
                        "a worker host exited ({status}) before its workers started; its error is printed above"
                    )));
                }
            }
            if std::time::Instant::now() >= deadline {
                return Err(RunError::Hosts(format!(
                    "{running} of the worker hosts' {workers} workers were reading within 20 s"
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// The hosts' process groups (each led by the host process).
    fn groups(&self) -> Vec<u32> {
        self.hosts.iter().map(Child::id).collect()
    }

    /// The workers that were given entries of the queue so far (Redis lists no other), by
    /// where they run: in a worker host's process group, or elsewhere (a pool's own workers,
    /// which `--hosts` must not have).
    pub fn consumers(&self) -> Result<Consumers, String> {
        let listed = fanout_redis::consumers(&self.url, &self.queue).map_err(|error| error.to_string())?;
        let groups = self.groups();
        let mut counted = Consumers::default();
        let mut used = Vec::new();
        for consumer in listed {
            match consumer.pid.and_then(process_group) {
                Some(group) if groups.contains(&group) => {
                    counted.host += 1;
                    if !used.contains(&group) {
                        used.push(group);
                    }
                }
                _ => counted.other += 1,
            }
        }
        counted.hosts_used = used.len();
        Ok(counted)
    }

    /// CPU time so far of every live process of the hosts' groups, with their reaped
    /// children's (a nested pool's workers that its job's process waited for), in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        // SAFETY: `sysconf` takes no pointers and only reads a configuration value.
        let ticks = match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
            ticks if ticks > 0 => ticks as f64,
            _ => 100.0,
        };
        group_stats(&self.groups())
            .map(|(pid, fields)| {
                // A live process's own time from `schedstat` (nanoseconds: `stat`'s ticks of
                // 10 ms round a worker's few requests to 0); its reaped children's from
                // `stat`'s cutime and cstime, fields 16 and 17 of proc(5), 13 and 14 here.
                let own = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
                    .ok()
                    .and_then(|line| line.split_whitespace().next()?.parse::<u64>().ok())
                    .map_or(0.0, |ns| ns as f64 / 1e9);
                let children: u64 =
                    fields.get(13..15).unwrap_or_default().iter().filter_map(|f| f.parse::<u64>().ok()).sum();
                own + children as f64 / ticks
            })
            .sum()
    }
}

/// Consumers of a worker-host queue by where they run ([`WorkerHosts::consumers`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Consumers {
    /// In a worker host's process group.
    pub host: usize,
    /// Anywhere else.
    pub other: usize,
    /// Hosts with at least one of them.
    pub hosts_used: usize,
}

/// The pid and the `/proc/PID/stat` fields after the command name (state, ppid, pgrp, ...)
/// of every process in one of `groups`.
fn group_stats(groups: &[u32]) -> impl Iterator<Item = (u32, Vec<String>)> + '_ {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(move |pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let fields: Vec<String> =
                stat.rsplit_once(')')?.1.split_whitespace().map(str::to_owned).collect();
            let group: u32 = fields.get(2)?.parse().ok()?;
            groups.contains(&group).then_some((pid, fields))
        })
}

/// The process group of `pid`, from `/proc`.
fn process_group(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(2)?.parse().ok()
}

impl Drop for WorkerHosts {
    fn drop(&mut self) {
        for host in &mut self.hosts {
            let Ok(group) = libc::pid_t::try_from(host.id()) else { continue };
            // SAFETY: `kill` touches no memory; the group's leader is our unreaped child, so
            // the group id names its processes only.
            unsafe { libc::kill(-group, libc::SIGKILL) };
            let _ = host.wait();
            LIVE_GROUPS.lock().unwrap_or_else(PoisonError::into_inner).retain(|&live| live != group);
            // Its workers (and a nested pool's workers of theirs), orphaned, came to this
            // process as their subreaper: reap them, by group, so that none stays a zombie
            // and no other child of ours is waited for here.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            loop {
                let mut status = 0;
                // SAFETY: `status` is a valid, writable `c_int`; `-group` waits for a child in
                // that process group only; `WNOHANG` returns at once.
                let pid = unsafe { libc::waitpid(-group, &raw mut status, libc::WNOHANG) };
                match pid {
                    pid if pid > 0 => {}
                    0 if std::time::Instant::now() < deadline => {
                        std::thread::sleep(std::time::Duration::from_millis(5))
                    }
                    _ => break,
                }
            }
        }
    }
}
