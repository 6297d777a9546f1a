//! One fork server per program: every pool of the process is a session of it, it ends with the
//! last pool, pools nested in workers are served by it too, and their workers die with the
//! worker that owns them.
//!
//! The tests of this binary take turns ([`alone`]): whether the server runs depends on every
//! pool of the process.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use fanout_core::{Executor, JobError, WorkerExit};
use fanout_process::ProcessPool;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Against hangs only.
const GUARD: Duration = Duration::from_secs(30);

static TURN: Mutex<()> = Mutex::new(());

/// Holds the turn of this binary's tests.
fn alone() -> MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(PoisonError::into_inner)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd is readable").count()
}

/// The state letter and the parent of a process, or `None` once it is gone (reaped processes
/// leave `/proc` at once; a zombie would still be listed, with `Z`).
fn stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let parent = fields.next()?.parse().ok()?;
    Some((state, parent))
}

fn is_gone(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// Waits (within [`GUARD`]) until every process of `pids` is gone.
fn wait_gone(pids: &[u32], what: &str) {
    let start = Instant::now();
    while !pids.iter().all(|&pid| is_gone(pid)) {
        let left: Vec<_> = pids.iter().filter(|&&pid| !is_gone(pid)).map(|&pid| (pid, stat(pid))).collect();
        assert!(start.elapsed() < GUARD, "{what}: still there after {GUARD:?}: {left:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn plus_one(x: u64) -> u64 {
    x + 1
}

fn works(pool: &ProcessPool) {
    let expected: Vec<_> = (1..=16).map(Ok).collect();
    assert_eq!(pool.map(plus_one, 0..16), expected);
}

fn all_orders(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![Vec::new()];
    }
    let mut orders = Vec::new();
    for order in all_orders(n - 1) {
        for at in 0..=order.len() {
            let mut longer = order.clone();
            longer.insert(at, n - 1);
            orders.push(longer);
        }
    }
    orders
}

#[test]
fn pools_alive_at_once_share_one_server_that_ends_with_the_last_whatever_the_order() {
    let _turn = alone();
    let baseline = open_fds();
    let orders = all_orders(3);
    assert_eq!(orders.len(), 6);
    for order in orders {
        let mut pools: Vec<Option<ProcessPool>> =
            [2, 3, 1].into_iter().map(|n| Some(ProcessPool::new(n).expect("pool"))).collect();
        let server = pools[0].as_ref().map(ProcessPool::fork_server_pid).expect("pool");
        let mut workers = Vec::new();
        for pool in pools.iter().flatten() {
            assert_eq!(pool.fork_server_pid(), server, "one server per program");
            works(pool);
            let pids = pool.worker_pids();
            for &pid in &pids {
                assert_eq!(stat(pid).map(|(_, parent)| parent), Some(server), "worker {pid} of the server");
            }
            workers.push(pids);
        }
        for (step, &index) in order.iter().enumerate() {
            drop(pools[index].take());
            // The dropped pool's workers are reaped at once, whatever the others do.
            for &pid in &workers[index] {
                assert!(is_gone(pid), "order {order:?}: worker {pid} of pool {index} is still there");
            }
            if step + 1 < order.len() {
                assert!(stat(server).is_some_and(|(state, _)| state != 'Z'), "the server ended early");
                for pool in pools.iter().flatten() {
                    works(pool);
                }
            }
        }
        // The last pool's drop ended the server and reaped it.
        assert!(is_gone(server), "order {order:?}: the server {server} is still there");
    }
    assert_eq!(open_fds(), baseline, "descriptors leaked");
}

#[test]
fn the_next_pool_after_the_last_one_starts_a_new_server() {
    let _turn = alone();
    let first = ProcessPool::new(1).expect("pool");
    let server = first.fork_server_pid();
    drop(first);
    assert!(is_gone(server));
    let second = ProcessPool::new(1).expect("pool");
    assert_ne!(second.fork_server_pid(), server);
    works(&second);
}

#[test]
fn workers_start_on_demand_up_to_the_pools_size() {
    let _turn = alone();
    let pool = ProcessPool::new(6).expect("pool");
    // One at build, so that a pool that cannot fork fails to build.
    assert_eq!(pool.worker_pids().len(), 1);
    assert_eq!(pool.submit(plus_one, 1).wait(), Ok(2));
    assert_eq!(pool.worker_pids().len(), 1, "one job at a time needs one worker");
    // Six jobs that overlap need six workers; never more than the pool's size.
    let slow = |x: u64| {
        std::thread::sleep(Duration::from_millis(300));
        x
    };
    assert_eq!(pool.map(slow, 0..12).len(), 12);
    assert_eq!(pool.worker_pids().len(), 6);
    let distinct: std::collections::HashSet<_> =
        pool.map(|_: u64| std::process::id(), 0..60).into_iter().map(|pid| pid.expect("job")).collect();
    assert!(distinct.len() <= 6, "{distinct:?}");
}

/// A scratch file unique to this test process and `name`, removed first.
fn scratch_file(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("fanout-servers-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// Waits for `path` to hold a line, and returns its words.
fn read_report(path: &Path) -> Vec<u32> {
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && text.ends_with('\n')
        {
            return text.split_whitespace().map(|word| word.parse().expect("a number")).collect();
        }
        assert!(start.elapsed() < GUARD, "no report in {}", path.display());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// In a worker: builds a pool of three, starts its workers, writes `own pid, inner server,
/// inner workers...` to `path`, then blocks until killed.
fn nest_and_block(path: String) -> u64 {
    let inner = ProcessPool::new(3).expect("an inner pool");
    let slow = |x: u64| {
        std::thread::sleep(Duration::from_millis(100));
        x
    };
    assert_eq!(inner.map(slow, 0..3).len(), 3);
    // Each worker is listed once the fork server has announced it.
    let since = Instant::now();
    while inner.worker_pids().len() < 3 && since.elapsed() < GUARD {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut words = vec![std::process::id(), inner.fork_server_pid()];
    words.extend(inner.worker_pids());
    let line = words.iter().map(u32::to_string).collect::<Vec<_>>().join(" ") + "\n";
    std::fs::write(&path, line).expect("write the report");
    std::thread::sleep(Duration::from_secs(3600));
    0
}

#[test]
fn a_nested_pools_workers_are_forked_by_the_programs_server_and_die_with_their_owner() {
    let _turn = alone();
    let outer = ProcessPool::new(1).expect("pool");
    let path = scratch_file("nested");
    let handle = outer.submit(nest_and_block, path.to_string_lossy().into_owned());
    let report = read_report(&path);
    let (owner, inner_server, inner_workers) = (report[0], report[1], &report[2..]);
    assert_eq!(outer.worker_pids(), [owner]);
    assert_eq!(inner_server, outer.fork_server_pid(), "the inner pool is a session of the program's server");
    assert_eq!(inner_workers.len(), 3);
    for &pid in inner_workers {
        assert_eq!(
            stat(pid).map(|(_, parent)| parent),
            Some(inner_server),
            "forked by the server, not the worker"
        );
    }

    kill(Pid::from_raw(owner as i32), Signal::SIGKILL).expect("kill the owner");
    // Its inner workers are killed and reaped by the server as the owner's session closes.
    wait_gone(inner_workers, "the inner workers of a killed worker");
    let signaled = WorkerExit::Signaled { signal: Signal::SIGKILL as i32, name: "SIGKILL".to_owned() };
    assert_eq!(handle.wait(), Err(JobError::WorkerLost { exit: signaled }));
    works(&outer);
    let server = outer.fork_server_pid();
    drop(outer);
    assert!(is_gone(server));
    let _ = std::fs::remove_file(path);
}

fn inner_sum(n: u64) -> (u64, u32) {
    let inner = ProcessPool::new(2).expect("an inner pool");
    let sum = inner.map(plus_one, 0..n).into_iter().map(|r| r.expect("inner job")).sum();
    (sum, inner.fork_server_pid())
}

fn nested_twice(n: u64) -> (u64, u32, u32) {
    let middle = ProcessPool::new(2).expect("a middle pool");
    let results = middle.map(inner_sum, [n, n]);
    let (sum, innermost) = results.into_iter().fold((0, 0), |(sum, _), r| {
        let (s, server) = r.expect("middle job");
        (sum + s, server)
    });
    (sum, middle.fork_server_pid(), innermost)
}

#[test]
fn pools_nest_two_deep_on_the_one_server() {
    let _turn = alone();
    let outer = ProcessPool::new(2).expect("pool");
    let server = outer.fork_server_pid();
    for result in outer.map(nested_twice, [10, 20]) {
        let (sum, middle, innermost) = result.expect("outer job");
        assert!(sum == 2 * 55 || sum == 2 * 210, "{sum}");
        assert_eq!((middle, innermost), (server, server));
    }
}

/// The descriptors a job's worker holds.
fn descriptors(_: u64) -> usize {
    std::fs::read_dir("/proc/self/fd").map(|dir| dir.count()).unwrap_or(0)
}

#[test]
fn a_worker_holds_its_own_channels_only_whatever_other_pools_run() {
    let _turn = alone();
    let alone_pool = ProcessPool::new(1).expect("pool");
    let by_itself = alone_pool.submit(descriptors, 0).wait().expect("job");
    let others: Vec<ProcessPool> = (0..3).map(|_| ProcessPool::new(4).expect("pool")).collect();
    for other in &others {
        works(other);
    }
    // A new pool's workers are forked while the server serves the others' sessions: they
    // inherit none of those channels, nor the ends of workers forked with them.
    let pool = ProcessPool::new(4).expect("pool");
    let slow = |_: u64| {
        std::thread::sleep(Duration::from_millis(50));
        descriptors(0)
    };
    for count in pool.map(slow, 0..8) {
        assert_eq!(count, Ok(by_itself), "a worker holds descriptors of others");
    }
    for other in &others {
        assert_eq!(other.submit(descriptors, 0).wait(), Ok(by_itself));
    }
    assert_eq!(alone_pool.submit(descriptors, 0).wait(), Ok(by_itself));
}

#[test]
fn a_pool_built_after_the_server_died_gets_a_new_one_and_the_old_pools_fail_cleanly() {
    let _turn = alone();
    let old = ProcessPool::new(2).expect("pool");
    works(&old);
    let (server, workers) = (old.fork_server_pid(), old.worker_pids());
    kill(Pid::from_raw(server as i32), Signal::SIGKILL).expect("kill the server");
    // Its workers die with it (PR_SET_PDEATHSIG).
    wait_gone(&workers, "the workers of a killed server");
    // A new pool gets a new server while the old pool still holds the dead one.
    let new = ProcessPool::new(2).expect("a pool after the server died");
    assert_ne!(new.fork_server_pid(), server);
    works(&new);
    // The old pool cannot start workers any more: its jobs fail, it does not hang.
    for result in old.map(plus_one, 0..4) {
        assert!(matches!(result, Err(JobError::WorkerLost { .. })), "{result:?}");
    }
    drop(old);
    // The dead server was reaped by the old pool's drop; the new one runs on.
    assert!(is_gone(server));
    works(&new);
    let new_server = new.fork_server_pid();
    drop(new);
    assert!(is_gone(new_server));
}
