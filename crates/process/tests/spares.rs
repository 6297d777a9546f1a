//! Spare workers: a pool that reuses workers leaves its idle ones to the program's fork server
//! when it ends, and the next such pool takes them instead of forking. Spares hold no channel
//! of the pool they left, a killed one is reaped at once, and they all end with the server.
//!
//! The tests of this binary take turns ([`alone`]): which spares the server holds depends on
//! every pool of the process.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use fanout_core::{Executor, Shutdown};
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
    std::fs::read_dir("/proc/self/fd").map(|dir| dir.count()).unwrap_or(0)
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
fn wait_gone(pids: &BTreeSet<u32>, what: &str) {
    let start = Instant::now();
    while !pids.iter().all(|&pid| is_gone(pid)) {
        let left: Vec<_> = pids.iter().filter(|&&pid| !is_gone(pid)).map(|&pid| (pid, stat(pid))).collect();
        assert!(start.elapsed() < GUARD, "{what}: still there after {GUARD:?}: {left:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The worker's pid and how many descriptors it holds, after a pause long enough that the
/// other jobs of a `map` start workers of their own.
fn pid_and_descriptors(_: u64) -> (u32, usize) {
    std::thread::sleep(Duration::from_millis(30));
    (std::process::id(), open_fds())
}

/// Runs two jobs at once on `pool`: the pids of its workers, and the descriptors each held.
fn use_pool(pool: &ProcessPool) -> (BTreeSet<u32>, Vec<usize>) {
    let (pids, descriptors): (Vec<u32>, Vec<usize>) =
        pool.map(pid_and_descriptors, 0..2).into_iter().map(|result| result.expect("a job")).unzip();
    (pids.into_iter().collect(), descriptors)
}

fn nothing() {}

/// The kinds of inner pools [`nested_pools`] builds, in its order.
const KINDS: [&str; 6] = ["default", "default", "fresh", "initializer", "task limit", "default"];

/// In a worker: builds one inner pool of two of each kind in [`KINDS`] after the other, and
/// says which pids each one's workers had and how many descriptors they held.
fn nested_pools(_: u64) -> Vec<(BTreeSet<u32>, Vec<usize>)> {
    KINDS
        .iter()
        .map(|&kind| {
            let builder = ProcessPool::builder().workers(2);
            let builder = match kind {
                "fresh" => builder.reuse_workers(false),
                "initializer" => builder.initializer(nothing),
                "task limit" => builder.max_tasks_per_worker(100),
                _ => builder,
            };
            use_pool(&builder.build().expect("an inner pool"))
        })
        .collect()
}

#[test]
fn nested_pools_take_the_spares_of_earlier_ones_which_hold_only_their_new_pools_channels() {
    let _turn = alone();
    let outer = ProcessPool::new(1).expect("pool");
    let rounds = outer.submit(nested_pools, 0).wait().expect("the nested pools");
    let [first, second, fresh, initialized, limited, last] = &rounds[..] else { panic!("{rounds:?}") };
    let (spares, descriptors) = (&first.0, &first.1);
    assert_eq!(spares.len(), 2, "two workers ran at once: {rounds:?}");
    // A nested pool reuses workers by default: the second and the last are the first's.
    assert_eq!(&second.0, spares, "the second inner pool forked instead of taking spares");
    assert_eq!(&last.0, spares, "the last inner pool forked instead of taking spares");
    // Those that ask for fresh processes get them, and do not give theirs back.
    for (kind, round) in [("reuse off", fresh), ("initializer", initialized), ("task limit", limited)] {
        assert!(round.0.is_disjoint(spares), "an inner pool with {kind} took a spare: {rounds:?}");
    }
    // A spare holds the channels of its new pool only, like a worker forked for it: the same
    // count in every reusing pool, and two more than a worker that can never be a spare (its
    // spare channels, which the server made at its fork: `rebind` and `alive`).
    for (kind, round) in KINDS.iter().zip(&rounds) {
        let expected: Vec<usize> = match *kind {
            "default" => descriptors.clone(),
            _ => descriptors.iter().map(|count| count - 2).collect(),
        };
        assert_eq!(round.1, expected, "descriptors of a worker of the {kind} inner pool: {rounds:?}");
    }
    let server = outer.fork_server_pid();
    let workers: BTreeSet<u32> = rounds.iter().flat_map(|round| round.0.iter().copied()).collect();
    drop(outer);
    // The last pool's going ends the server, and every spare with it.
    assert!(is_gone(server), "the server is still there");
    wait_gone(&workers, "the spares after the server ended");
}

#[test]
fn spares_wait_in_the_server_a_killed_one_is_reaped_and_all_end_with_the_server() {
    let _turn = alone();
    let baseline = open_fds();
    // The server lives while this pool does, so that the others' workers can wait in it.
    let keeper = ProcessPool::new(1).expect("pool");
    let server = keeper.fork_server_pid();
    let reusing = || ProcessPool::builder().workers(2).reuse_workers(true).build().expect("pool");
    let (spares, _) = use_pool(&reusing());
    // The dropped pool's workers wait as the server's children, not zombies.
    for &pid in &spares {
        assert!(stat(pid).is_some_and(|(state, parent)| state != 'Z' && parent == server), "spare {pid}");
    }
    let killed = *spares.first().expect("a spare");
    kill(Pid::from_raw(killed as i32), Signal::SIGKILL).expect("kill a spare");
    wait_gone(&BTreeSet::from([killed]), "a killed spare (reaped by the server)");

    // The next pool takes the spare that is left and forks one more worker.
    let next = reusing();
    let (pids, _) = use_pool(&next);
    assert_eq!(pids.len(), 2);
    assert!(pids.iter().all(|pid| *pid != killed));
    assert!(pids.iter().any(|pid| spares.contains(pid)), "the live spare was not taken: {pids:?} {spares:?}");
    // A pool that is killed leaves no spare: its workers are SIGKILLed and reaped.
    next.shutdown(Shutdown::Kill);
    wait_gone(&pids, "the workers of a killed pool");

    // A pool with spares off leaves none either, while the server still runs.
    let plain = ProcessPool::new(2).expect("pool");
    let (plain_pids, _) = use_pool(&plain);
    drop(plain);
    for pid in &plain_pids {
        assert!(is_gone(*pid), "worker {pid} of a pool without reuse outlived it");
    }

    let (last, _) = use_pool(&reusing());
    drop(keeper);
    assert!(is_gone(server), "the server is still there");
    wait_gone(&last, "the spares after the server ended");
    assert_eq!(open_fds(), baseline, "descriptors leaked");
}
