//! A dropped pool leaves nothing behind: no zombie, no process, no file descriptor.
//!
//! One test in its own binary, so that no other test opens descriptors or starts processes
//! while it counts them.

use std::path::Path;

use fanout_core::{Executor, Shutdown};
use fanout_process::ProcessPool;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd is readable").count()
}

/// The state letter of a process (`Z` for a zombie), or `None` once it is gone.
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The state follows the command name, which is in parentheses and may hold spaces.
    stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next())
}

fn use_and_drop(pool: ProcessPool, shutdown: Option<Shutdown>) -> Vec<u32> {
    assert_eq!(pool.map(|x: u64| x + 1, 0..100).len(), 100);
    // A worker that dies on the way must be reaped as well.
    let _ = pool.map(|x: u64| if x == 1 { std::process::abort() } else { x }, 0..4);
    let mut pids = pool.worker_pids();
    pids.push(pool.fork_server_pid());
    match shutdown {
        Some(mode) => pool.shutdown(mode),
        None => drop(pool),
    }
    pids
}

#[test]
fn a_dropped_pool_reaps_every_process_and_closes_every_descriptor() {
    let baseline = open_fds();
    let mut pids = Vec::new();
    pids.extend(use_and_drop(ProcessPool::new(3).expect("pool"), None));
    pids.extend(use_and_drop(ProcessPool::new(2).expect("pool"), Some(Shutdown::Finish)));
    pids.extend(use_and_drop(ProcessPool::new(2).expect("pool"), Some(Shutdown::CancelQueued)));
    assert_eq!(open_fds(), baseline, "descriptors leaked");
    for pid in pids {
        // Reaped processes vanish from /proc at once; a zombie would still be listed with `Z`.
        assert_eq!(process_state(pid), None, "process {pid} is still there");
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }
}
