//! When the process that owns a pool is killed outright, its workers and fork server exit too.
//!
//! The test starts this test binary again as the pool's owner, SIGKILLs it, and watches the
//! pool's processes go. It is alone in its binary because it makes the test process a child
//! subreaper, so that the orphans are reparented to it and can be reaped here.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fanout_core::Executor;
use fanout_process::ProcessPool;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

const OWNER: &str = "FANOUT_TEST_POOL_OWNER";

/// Not a test of its own: the body of the pool's owner, run in a child process.
#[test]
#[ignore = "runs only as the child of workers_exit_when_the_pools_owner_is_killed"]
fn pool_owner() {
    if std::env::var_os(OWNER).is_none() {
        return;
    }
    let pool = ProcessPool::new(3).expect("pool");
    // Three jobs at once start all three workers (they start on demand), and each one is
    // listed once the fork server has announced it.
    let slow = |x: u64| {
        std::thread::sleep(Duration::from_millis(100));
        x
    };
    assert_eq!(pool.map(slow, 0..3).len(), 3);
    let since = Instant::now();
    while pool.worker_pids().len() < 3 && since.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let pids: Vec<String> =
        pool.worker_pids().into_iter().chain([pool.fork_server_pid()]).map(|p| p.to_string()).collect();
    println!("pids {}", pids.join(" "));
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn workers_exit_when_the_pools_owner_is_killed() {
    nix::sys::prctl::set_child_subreaper(true).expect("become a subreaper");
    let mut owner = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "pool_owner", "--include-ignored", "--nocapture", "--test-threads=1"])
        .env(OWNER, "1")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the owner");
    let stdout = BufReader::new(owner.stdout.take().expect("stdout"));
    let pids: Vec<Pid> = stdout
        .lines()
        .map_while(Result::ok)
        .find_map(|line| line.split_once("pids ").map(|(_, pids)| pids.to_owned()))
        .expect("the owner reports its pool's processes")
        .split(' ')
        .map(|pid| Pid::from_raw(pid.parse().expect("a pid")))
        .collect();
    assert_eq!(pids.len(), 4);

    owner.kill().expect("SIGKILL the owner");
    let killed_at = Instant::now();
    owner.wait().expect("reap the owner");

    let mut alive = pids.clone();
    while !alive.is_empty() && killed_at.elapsed() < Duration::from_secs(1) {
        // Orphans are reparented to this subreaper; reap each as it exits.
        alive.retain(|&pid| matches!(waitpid(pid, Some(WaitPidFlag::WNOHANG)), Ok(WaitStatus::StillAlive)));
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(alive.is_empty(), "still running 1 s after their owner was killed: {alive:?}");
}
