//! When the process that owns a pool is killed outright, everything the program's fork server
//! runs exits too: the pool's workers, the workers of a pool nested in one of them, and the
//! server.
//!
//! Like `orphans.rs`, the test starts this binary again as the owner, SIGKILLs it and watches
//! its processes go; it is alone in its binary because it makes the test process a child
//! subreaper, so that the orphans are reparented to it and can be reaped here.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fanout_core::Executor;
use fanout_process::ProcessPool;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

const OWNER: &str = "FANOUT_TEST_NESTED_POOL_OWNER";

/// Against hangs only: the processes normally go within milliseconds.
const GUARD: Duration = Duration::from_secs(10);

/// Waits (within [`GUARD`]) until `pool` lists `count` workers: they start on demand, and each
/// is listed once the fork server has announced it.
fn wait_for_workers(pool: &ProcessPool, count: usize) {
    let since = Instant::now();
    while pool.worker_pids().len() < count && since.elapsed() < GUARD {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// In a worker: starts a pool of two, prints its pids to this worker's stdout (the owner's,
/// inherited), then blocks.
fn nest_and_block(_: u64) -> u64 {
    let inner = ProcessPool::new(2).expect("an inner pool");
    let slow = |x: u64| {
        std::thread::sleep(Duration::from_millis(100));
        x
    };
    assert_eq!(inner.map(slow, 0..2).len(), 2);
    wait_for_workers(&inner, 2);
    let pids: Vec<String> = inner.worker_pids().iter().map(u32::to_string).collect();
    println!("inner {}", pids.join(" "));
    use std::io::Write;
    let _ = std::io::stdout().flush();
    std::thread::sleep(Duration::from_secs(3600));
    0
}

/// Not a test of its own: the body of the pool's owner, run in a child process.
#[test]
#[ignore = "runs only as the child of a_killed_owner_takes_nested_workers_and_the_server_with_it"]
fn nested_pool_owner() {
    if std::env::var_os(OWNER).is_none() {
        return;
    }
    let pool = ProcessPool::new(2).expect("pool");
    let _blocked = pool.submit(nest_and_block, 0);
    assert_eq!(pool.map(|x: u64| x, 0..4).len(), 4);
    wait_for_workers(&pool, 2);
    let pids: Vec<String> =
        pool.worker_pids().into_iter().chain([pool.fork_server_pid()]).map(|p| p.to_string()).collect();
    println!("outer {}", pids.join(" "));
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn a_killed_owner_takes_nested_workers_and_the_server_with_it() {
    nix::sys::prctl::set_child_subreaper(true).expect("become a subreaper");
    let mut owner = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "nested_pool_owner", "--include-ignored", "--nocapture", "--test-threads=1"])
        .env(OWNER, "1")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the owner");
    let stdout = BufReader::new(owner.stdout.take().expect("stdout"));
    let mut pids: Vec<Pid> = Vec::new();
    let (mut outer, mut inner) = (false, false);
    for line in stdout.lines().map_while(Result::ok) {
        let words = match (line.split_once("outer "), line.split_once("inner ")) {
            (Some((_, words)), _) => {
                outer = true;
                words.to_owned()
            }
            (_, Some((_, words))) => {
                inner = true;
                words.to_owned()
            }
            _ => continue,
        };
        pids.extend(words.split(' ').map(|pid| Pid::from_raw(pid.parse().expect("a pid"))));
        if outer && inner {
            break;
        }
    }
    assert!(outer && inner, "the owner reports its pools' processes");
    // Two outer workers, the server, two inner workers.
    assert_eq!(pids.len(), 5, "{pids:?}");

    owner.kill().expect("SIGKILL the owner");
    let killed_at = Instant::now();
    owner.wait().expect("reap the owner");

    let mut alive = pids.clone();
    while !alive.is_empty() && killed_at.elapsed() < GUARD {
        // Orphans are reparented to this subreaper; reap each as it exits. One that is not
        // our child (yet) is alive while `/proc` lists it.
        alive.retain(|&pid| match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => true,
            Ok(_) => false,
            Err(_) => std::path::Path::new(&format!("/proc/{pid}")).exists(),
        });
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(alive.is_empty(), "still running {GUARD:?} after their owner was killed: {alive:?}");
    println!("all {} processes gone {:?} after the owner was killed", pids.len(), killed_at.elapsed());
}
