//! What happens to a process pool's workers: deaths, recycling, initializers, nesting, bad
//! messages, and the fork-with-threads hazard the fork server exists for.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fanout_core::{Direction, Executor, JobError, PayloadPart, WorkerExit};
use fanout_process::ProcessPool;
use fanout_thread::ThreadPool;
use nix::sys::signal::{Signal, raise};
use serde::{Deserialize, Serialize};

fn pool(workers: usize) -> ProcessPool {
    ProcessPool::new(workers).expect("the pool starts")
}

/// The pool's workers once `count` are listed: they start on demand, and one forked for a
/// waiting job is listed once the fork server has announced it, which may come just after the
/// results that no longer needed it.
fn settled_workers(pool: &ProcessPool, count: usize) -> usize {
    let since = std::time::Instant::now();
    while pool.worker_pids().len() < count && since.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(5));
    }
    pool.worker_pids().len()
}

fn dies_at_3(how: &str, x: u64) -> u64 {
    if x == 3 {
        match how {
            "sigkill" => drop(raise(Signal::SIGKILL)),
            "sigsegv" => drop(raise(Signal::SIGSEGV)),
            "abort" => std::process::abort(),
            "exit" => std::process::exit(7),
            _ => unreachable!(),
        }
    }
    x * 10
}

fn assert_only_input_3_lost(results: &[Result<u64, JobError>], expected: &WorkerExit) {
    assert_eq!(results.len(), 8);
    for (x, result) in results.iter().enumerate() {
        if x == 3 {
            assert_eq!(*result, Err(JobError::WorkerLost { exit: expected.clone() }), "input 3");
        } else {
            assert_eq!(*result, Ok(x as u64 * 10), "input {x}");
        }
    }
}

fn signaled(signal: Signal) -> WorkerExit {
    WorkerExit::Signaled { signal: signal as i32, name: signal.as_str().to_owned() }
}

#[test]
fn a_worker_killed_by_sigkill_loses_only_its_job_and_is_replaced() {
    let pool = pool(2);
    let results = pool.map(|x: u64| dies_at_3("sigkill", x), 0..8);
    assert_only_input_3_lost(&results, &signaled(Signal::SIGKILL));
    // The pool is whole again: two workers, and they work.
    assert_eq!(settled_workers(&pool, 2), 2);
    assert_eq!(pool.map(|x: u64| x + 1, [1, 2]), [Ok(2), Ok(3)]);
}

#[test]
fn a_segfaulting_worker_loses_only_its_job() {
    let pool = pool(2);
    assert_only_input_3_lost(&pool.map(|x: u64| dies_at_3("sigsegv", x), 0..8), &signaled(Signal::SIGSEGV));
}

#[test]
fn an_aborting_worker_loses_only_its_job() {
    let pool = pool(2);
    assert_only_input_3_lost(&pool.map(|x: u64| dies_at_3("abort", x), 0..8), &signaled(Signal::SIGABRT));
}

/// A scratch file unique to this test process and `name`, removed first.
fn scratch_file(name: &str) -> String {
    let path = std::env::temp_dir().join(format!("fanout-process-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path.to_string_lossy().into_owned()
}

/// Appends one byte to `path` (counting the attempts), then kills its worker while the file
/// has fewer than `deaths` bytes.
fn dies_first((path, deaths): (String, u64)) -> u64 {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path).unwrap();
    file.write_all(b"x").unwrap();
    drop(file);
    let attempts = std::fs::metadata(&path).unwrap().len();
    if attempts <= deaths {
        let _ = raise(Signal::SIGKILL);
    }
    attempts
}

fn attempts(path: &str) -> u64 {
    std::fs::metadata(path).map(|meta| meta.len()).unwrap_or(0)
}

#[test]
fn a_task_whose_worker_died_runs_again_when_retries_are_on() {
    let pool = ProcessPool::builder().workers(2).retry_lost(2).build().unwrap();
    let path = scratch_file("retry-twice");
    // Two deaths, then the third attempt succeeds.
    assert_eq!(pool.submit(dies_first, (path.clone(), 2)).wait(), Ok(3));
    assert_eq!(pool.retried_tasks(), 2);
    // Workers start on demand: one job needed one worker, and each dead one was replaced.
    assert_eq!(pool.worker_pids().len(), 1);
    let _ = std::fs::remove_file(path);
}

#[test]
fn retries_are_bounded_and_then_the_task_is_lost() {
    let pool = ProcessPool::builder().workers(1).retry_lost(2).build().unwrap();
    let path = scratch_file("retry-bounded");
    let results = pool.map(dies_first, [(path.clone(), u64::MAX), (scratch_file("retry-bounded-ok"), 0)]);
    assert_eq!(results[0], Err(JobError::WorkerLost { exit: signaled(Signal::SIGKILL) }));
    assert_eq!(results[1], Ok(1));
    // 1 + 2 retries, each on a fresh worker.
    assert_eq!(attempts(&path), 3);
    assert_eq!(pool.retried_tasks(), 2);
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(scratch_file("retry-bounded-ok"));
}

#[test]
fn without_retries_a_dead_workers_task_runs_once() {
    let pool = pool(2);
    let path = scratch_file("no-retry");
    assert_eq!(
        pool.submit(dies_first, (path.clone(), 1)).wait(),
        Err(JobError::WorkerLost { exit: signaled(Signal::SIGKILL) })
    );
    assert_eq!(attempts(&path), 1);
    assert_eq!(pool.retried_tasks(), 0);
    let _ = std::fs::remove_file(path);
}

#[test]
fn a_retry_pending_at_shutdown_still_runs() {
    // The pool is dropped while its only worker dies: the retry needs a replacement worker
    // even though the queue is closed.
    let path = scratch_file("retry-at-shutdown");
    let pool = ProcessPool::builder().workers(1).retry_lost(1).build().unwrap();
    let handle = pool.submit(dies_first, (path.clone(), 1));
    drop(pool);
    assert_eq!(handle.wait(), Ok(2));
    let _ = std::fs::remove_file(path);
}

#[test]
fn exit_inside_a_job_loses_only_that_job_with_its_status() {
    let pool = pool(2);
    assert_only_input_3_lost(
        &pool.map(|x: u64| dies_at_3("exit", x), 0..8),
        &WorkerExit::Exited { status: 7 },
    );
}

#[test]
fn a_dead_worker_fails_its_submitted_job_without_a_hang() {
    let pool = pool(1);
    let handle = pool.submit(|x: u64| dies_at_3("sigkill", x), 3);
    assert_eq!(handle.wait(), Err(JobError::WorkerLost { exit: signaled(Signal::SIGKILL) }));
    assert_eq!(pool.submit(|x: u64| dies_at_3("sigkill", x), 4).wait(), Ok(40));
}

#[test]
fn workers_retire_after_their_task_limit() {
    let pool = ProcessPool::builder().workers(2).max_tasks_per_worker(2).build().expect("pool");
    let pids: Vec<u32> =
        pool.map(|_: u64| std::process::id(), 0..20).into_iter().map(|r| r.expect("job")).collect();
    let mut distinct = pids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    // 20 tasks at two per worker at most: ten different workers at least.
    assert!(distinct.len() >= 10, "{pids:?}");
    for pid in distinct {
        assert!(pids.iter().filter(|&&p| p == pid).count() <= 2, "{pid} ran more than two tasks: {pids:?}");
    }
    assert_eq!(settled_workers(&pool, 2), 2);
}

static INITIALIZED_IN: OnceLock<u32> = OnceLock::new();

fn remember_pid() {
    INITIALIZED_IN.get_or_init(std::process::id);
}

#[test]
fn each_worker_runs_the_initializer_once_before_its_jobs() {
    let pool = ProcessPool::builder().workers(2).initializer(remember_pid).build().expect("pool");
    let results = pool.map(|_: u64| (INITIALIZED_IN.get().copied(), std::process::id()), 0..10);
    for result in results {
        let (initialized_in, pid) = result.expect("job");
        assert_eq!(initialized_in, Some(pid));
    }
    // The caller's own process never ran it.
    assert_eq!(INITIALIZED_IN.get(), None);
}

fn broken_initializer() {
    panic!("no configuration found");
}

#[test]
fn a_panicking_initializer_fails_the_jobs_instead_of_restarting_forever() {
    let pool = ProcessPool::builder().workers(2).initializer(broken_initializer).build().expect("pool");
    for result in pool.map(|x: u64| x, 0..4) {
        let Err(JobError::WorkerLost { exit: WorkerExit::InitializerPanicked { message } }) = &result else {
            panic!("expected the initializer's failure, got {result:?}");
        };
        assert!(message.contains("no configuration found"), "{message}");
        assert!(result.unwrap_err().to_string().contains("initializer"));
    }
}

fn thread_pool_inside(n: u64) -> u64 {
    let inner = ThreadPool::new(3).expect("an inner thread pool");
    inner.map(|x: u64| x * x, 0..n).into_iter().map(|r| r.expect("inner job")).sum()
}

#[test]
fn a_job_in_a_worker_can_run_a_thread_pool() {
    let expected: u64 = (0..50).map(|x| x * x).sum();
    assert_eq!(pool(2).map(thread_pool_inside, [50, 50]), [Ok(expected), Ok(expected)]);
}

fn process_pool_inside(n: u64) -> (u64, u32) {
    let inner = ProcessPool::new(2).expect("an inner process pool, in a worker");
    let sum = inner.map(|x: u64| x + 1, 0..n).into_iter().map(|r| r.expect("inner job")).sum();
    (sum, inner.fork_server_pid())
}

#[test]
fn a_job_in_a_worker_can_run_its_own_process_pool() {
    let outer = pool(2);
    let results = outer.map(process_pool_inside, [10, 20]);
    assert_eq!(results[0].as_ref().map(|r| r.0), Ok(55));
    assert_eq!(results[1].as_ref().map(|r| r.0), Ok(210));
}

/// An output that serializes fine but refuses to deserialize when it holds 13.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "u64")]
struct Picky(u64);

impl TryFrom<u64> for Picky {
    type Error = String;
    fn try_from(value: u64) -> Result<Self, String> {
        if value == 13 { Err("13 is refused".to_owned()) } else { Ok(Picky(value)) }
    }
}

#[test]
fn a_result_that_fails_to_deserialize_fails_its_job_only() {
    let results = pool(2).map(Picky, 10..16);
    for (x, result) in (10..16).zip(results) {
        if x == 13 {
            // postcard reports a custom serde error without its text, so the part is what is
            // checked: the output failed to decode, in the caller.
            let Err(JobError::Serialization { direction: Direction::Decode, part, .. }) = result else {
                panic!("expected a decoding error, got {result:?}");
            };
            assert_eq!(part, PayloadPart::Output);
        } else {
            assert_eq!(result, Ok(Picky(x)));
        }
    }
}

#[test]
fn oversized_inputs_and_outputs_fail_alone() {
    let pool = ProcessPool::builder().workers(2).max_message_bytes(4096).build().expect("pool");
    let inputs = vec![vec![1_u8; 10], vec![2_u8; 10_000], vec![3_u8; 10]];
    let results = pool.map(|v: Vec<u8>| v.len(), inputs);
    assert_eq!(results[0], Ok(10));
    assert!(
        matches!(results[1], Err(JobError::Serialization { direction: Direction::Encode, .. })),
        "{:?}",
        results[1]
    );
    assert_eq!(results[2], Ok(10));

    let results = pool.map(|n: usize| vec![0_u8; n], [10, 10_000, 10]);
    assert_eq!(results[0], Ok(vec![0; 10]));
    assert!(matches!(results[1], Err(JobError::Serialization { .. })), "{:?}", results[1]);
    assert_eq!(results[2], Ok(vec![0; 10]));
}

fn print_and_double(x: u64) -> u64 {
    println!("job {x} prints to the locked stdout");
    x * 2
}

/// The hazard the fork server exists for: a thread of the caller holds a lock (here stdout's)
/// while the pool starts. A worker forked from the caller would inherit the lock held forever
/// and hang at its first `println!`.
#[test]
fn workers_do_not_inherit_locks_held_by_the_callers_threads() {
    let (locked_tx, locked_rx) = crossbeam_channel::bounded(0);
    let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(0);
    let holder = std::thread::spawn(move || {
        let _stdout = std::io::stdout().lock();
        locked_tx.send(()).expect("signal");
        let _ = release_rx.recv_timeout(Duration::from_secs(60));
    });
    locked_rx.recv().expect("the lock is held");
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let pool = pool(2);
        let _ = done_tx.send(pool.map(print_and_double, 0..4));
    });
    let results = done_rx.recv_timeout(Duration::from_secs(30)).expect("the workers did not hang");
    assert_eq!(results, [Ok(0), Ok(2), Ok(4), Ok(6)]);
    drop(release_tx);
    holder.join().expect("holder");
}

static CALLS: AtomicU64 = AtomicU64::new(0);

#[test]
fn jobs_run_in_other_processes_not_in_the_caller() {
    let pids = pool(2).map(|_: u64| std::process::id(), 0..4);
    for pid in pids {
        assert_ne!(pid.expect("job"), std::process::id());
    }
    // A job's side effects stay in its worker.
    pool(1).map(|_: u64| CALLS.fetch_add(1, Ordering::SeqCst), 0..3);
    assert_eq!(CALLS.load(Ordering::SeqCst), 0);
}
