//! Stuck jobs on a process pool: the job time limit (`job_timeout`), which kills and replaces a
//! stuck worker, and `Shutdown::Kill`, which stops a pool at once whatever its jobs do.
//!
//! No test here measures speed: the limits are generous, and the guards only turn a hang into a
//! failure (the machines that run these tests may be small and loaded).

use std::path::Path;
use std::time::{Duration, Instant};

use fanout_core::{Executor, JobError, Progress, Shutdown, WorkerExit, deadline};
use fanout_process::ProcessPool;
use nix::sys::signal::Signal;

/// The job time limit of most tests: long enough that a fast input never reaches it on a busy
/// machine, short enough to keep the tests quick.
const LIMIT: Duration = Duration::from_secs(1);

/// Against hangs only, far above what any test needs.
const GUARD: Duration = Duration::from_secs(60);

fn sleeps_on_3(x: u64) -> u64 {
    if x == 3 {
        std::thread::sleep(Duration::from_secs(3600));
    }
    x * 10
}

fn spins_on_3(x: u64) -> u64 {
    if x == 3 {
        loop {
            std::hint::spin_loop();
        }
    }
    x * 10
}

fn pool_with_limit(workers: usize, chunk_size: usize) -> ProcessPool {
    ProcessPool::builder().workers(workers).chunk_size(chunk_size).job_timeout(LIMIT).build().expect("pool")
}

/// Runs `f` on a thread of its own and returns its value; fails the test if it hangs.
fn guarded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (sender, receiver) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let _ = sender.send(f());
    });
    receiver.recv_timeout(GUARD).unwrap_or_else(|_| panic!("{what} did not return within {GUARD:?}"))
}

/// Whether process `pid` is gone: not running and not a zombie (reaped processes leave
/// `/proc` at once; a zombie would still be listed).
fn is_gone(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

fn expired() -> JobError {
    JobError::Expired { limit: LIMIT }
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

fn signaled(signal: Signal) -> WorkerExit {
    WorkerExit::Signaled { signal: signal as i32, name: signal.as_str().to_owned() }
}

#[test]
fn a_stuck_job_expires_and_its_worker_is_replaced_so_the_next_job_runs() {
    let pool = pool_with_limit(1, 1);
    assert_eq!(pool.job_timeout(), Some(LIMIT));
    let before = pool.worker_pids();
    assert_eq!(before.len(), 1);
    let mut stuck = pool.submit(sleeps_on_3, 3);
    let mut next = pool.submit(sleeps_on_3, 4);
    assert_eq!(stuck.wait_timeout(GUARD), Err(expired()));
    assert_eq!(next.wait_timeout(GUARD), Ok(40));
    let after = pool.worker_pids();
    assert_eq!(after.len(), 1);
    assert_ne!(after, before, "the stuck worker was not replaced");
    assert!(is_gone(before[0]), "the stuck worker {} was not reaped", before[0]);
    let progress = pool.progress();
    assert_eq!((progress.submitted, progress.succeeded, progress.failed), (2, 1, 1));
    assert_eq!(progress.expired, 1);
}

#[test]
fn a_spinning_job_expires_too_and_the_others_run() {
    let (pool, results) = guarded("map", || {
        let pool = pool_with_limit(2, 1);
        let results = pool.map(spins_on_3, 0..6);
        (pool, results)
    });
    assert_eq!(results, [Ok(0), Ok(10), Ok(20), Err(expired()), Ok(40), Ok(50)]);
    assert_eq!(settled_workers(&pool, 2), 2);
    assert_eq!(pool.progress().expired, 1);
}

fn assert_only_3_expired(results: &[Result<u64, JobError>]) {
    assert_eq!(results.len(), 8);
    for (x, result) in results.iter().enumerate() {
        if x == 3 {
            assert_eq!(*result, Err(expired()), "input 3");
        } else {
            assert_eq!(*result, Ok(x as u64 * 10), "input {x}");
        }
    }
}

#[test]
fn a_stuck_input_in_a_chunk_of_8_fails_alone_in_map() {
    let (pool, results) = guarded("map", || {
        let pool = pool_with_limit(2, 8);
        let results = pool.map(sleeps_on_3, 0..8);
        (pool, results)
    });
    assert_only_3_expired(&results);
    let progress = pool.progress();
    // Inputs 0 to 2 finished and kept their results; 4 to 7 ran again, on another worker.
    assert_eq!(progress.retried, 4);
    assert_eq!((progress.submitted, progress.succeeded, progress.failed, progress.expired), (8, 7, 1, 1));
    // The job after the chunk runs: the pool is whole (one chunk needed one worker: workers
    // start on demand, and the stopped one was replaced).
    assert_eq!(pool.worker_pids().len(), 1);
    assert_eq!(pool.submit(sleeps_on_3, 9).wait_timeout(GUARD), Ok(90));
}

#[test]
fn a_stuck_input_in_a_chunk_of_8_fails_alone_in_map_unordered() {
    let (pool, mut results) = guarded("map_unordered", || {
        let pool = pool_with_limit(2, 8);
        let results: Vec<(usize, Result<u64, JobError>)> = pool.map_unordered(spins_on_3, 0..8).collect();
        (pool, results)
    });
    results.sort_by_key(|(index, _)| *index);
    let indices: Vec<usize> = results.iter().map(|(index, _)| *index).collect();
    assert_eq!(indices, (0..8).collect::<Vec<_>>(), "every index exactly once");
    assert_only_3_expired(&results.into_iter().map(|(_, result)| result).collect::<Vec<_>>());
    assert_eq!(pool.progress().retried, 4);
}

#[test]
fn a_worker_that_dies_while_streaming_loses_only_its_input() {
    fn aborts_on_3(x: u64) -> u64 {
        if x == 3 {
            std::process::abort();
        }
        x * 10
    }
    let (pool, results) = guarded("map", || {
        let pool = pool_with_limit(2, 8);
        let results = pool.map(aborts_on_3, 0..8);
        (pool, results)
    });
    for (x, result) in results.iter().enumerate() {
        if x == 3 {
            assert_eq!(*result, Err(JobError::WorkerLost { exit: signaled(Signal::SIGABRT) }));
        } else {
            assert_eq!(*result, Ok(x as u64 * 10), "input {x}");
        }
    }
    // Without retries, only the inputs that never started run again.
    assert_eq!(pool.progress().retried, 4);
    assert_eq!(pool.retried_tasks(), 0);
}

#[test]
fn dropping_a_pool_with_a_time_limit_is_bounded_by_it() {
    let pool = pool_with_limit(1, 1);
    let mut stuck = pool.submit(sleeps_on_3, 3);
    let mut queued = pool.submit(sleeps_on_3, 5);
    // The fork server is the program's, shared with the pools of the tests that run meanwhile:
    // it ends with the last of them (`tests/servers.rs`), so only the workers are checked here.
    let pids: Vec<u32> = pool.worker_pids();
    // `Drop` finishes every job: the stuck one expires, the queued one runs after it.
    guarded("drop", move || drop(pool));
    assert_eq!(stuck.wait_timeout(GUARD), Err(expired()));
    assert_eq!(queued.wait_timeout(GUARD), Ok(50));
    for pid in pids {
        assert!(is_gone(pid), "process {pid} is still there");
    }
}

fn forever(x: u64) -> u64 {
    match x {
        0 => std::thread::sleep(Duration::from_secs(3600)),
        1 => loop {
            std::hint::spin_loop();
        },
        _ => {}
    }
    x
}

/// Two jobs stuck for good on a pool of 2, three queued behind them, then `Shutdown::Kill`.
fn kill_with_stuck_jobs(pool: ProcessPool) {
    let running: Vec<_> = (0..2).map(|x| pool.submit(forever, x)).collect();
    let waiting_since = Instant::now();
    while pool.progress().started < 2 {
        assert!(waiting_since.elapsed() < GUARD, "the stuck jobs never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    let queued: Vec<_> = (2..5).map(|x| pool.submit(forever, x)).collect();
    let watch = pool.progress_watch();
    // The pool's workers; the fork server is shared with the other tests' pools.
    let pids = pool.worker_pids();
    assert_eq!(pids.len(), 2);

    let start = Instant::now();
    guarded("shutdown(Kill)", move || pool.shutdown(Shutdown::Kill));
    let took = start.elapsed();
    println!("shutdown(Kill) with 2 stuck jobs took {took:?}");
    // The target is 1 s; the bound is generous for a loaded machine. Not a benchmark.
    assert!(took < Duration::from_secs(5), "shutdown(Kill) took {took:?}");

    for mut handle in running {
        assert_eq!(handle.wait_timeout(GUARD), Err(JobError::Killed));
    }
    for mut handle in queued {
        assert_eq!(handle.wait_timeout(GUARD), Err(JobError::Cancelled));
    }
    for pid in pids {
        assert!(is_gone(pid), "process {pid} is still there after shutdown(Kill)");
        assert_eq!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None),
            Err(nix::errno::Errno::ESRCH)
        );
    }
    let progress = watch.snapshot();
    assert_eq!((progress.submitted, progress.killed, progress.cancelled, progress.failed), (5, 2, 3, 2));
    assert_eq!(progress.pending(), 0);
}

#[test]
fn kill_stops_stuck_jobs_at_once_and_leaves_no_process() {
    kill_with_stuck_jobs(ProcessPool::new(2).expect("pool"));
}

#[test]
fn kill_stops_stuck_jobs_at_once_under_a_time_limit_too() {
    // A limit far away: `Kill` must not wait for it.
    let pool =
        ProcessPool::builder().workers(2).job_timeout(Duration::from_secs(3600)).build().expect("pool");
    kill_with_stuck_jobs(pool);
}

/// Panics on inputs ending in 1, loses its worker on inputs ending in 5 (abort below 20, exit
/// above), sleeps for good on input 17.
fn troubled(x: u64) -> u64 {
    match x % 10 {
        // Without the panic hook: a hook that prints a backtrace (RUST_BACKTRACE=1) can take
        // longer than the time limit to resolve a test binary's symbols in a fresh worker, and
        // a job that returns past its limit is expired, panic or not.
        1 => std::panic::resume_unwind(Box::new(format!("input {x}"))),
        5 if x < 20 => std::process::abort(),
        5 => std::process::exit(3),
        _ if x == 17 => std::thread::sleep(Duration::from_secs(3600)),
        _ => {}
    }
    x
}

fn troubled_map(pool: ProcessPool) -> (Vec<Result<u64, JobError>>, Progress) {
    guarded("map", move || {
        let results = pool.map(troubled, 0..40);
        (results, pool.progress())
    })
}

fn assert_counts_add_up(results: &[Result<u64, JobError>], progress: &Progress) {
    let count = |f: &dyn Fn(&Result<u64, JobError>) -> bool| results.iter().filter(|r| f(r)).count() as u64;
    assert_eq!(progress.submitted, 40);
    assert_eq!(progress.started, 40);
    assert_eq!(progress.submitted, progress.succeeded + progress.failed + progress.cancelled);
    assert_eq!(progress.succeeded, count(&|r| r.is_ok()));
    assert_eq!(progress.failed, count(&|r| r.is_err()));
    assert_eq!(progress.cancelled, 0);
    assert_eq!(progress.expired, count(&|r| matches!(r, Err(JobError::Expired { .. }))));
    assert_eq!(progress.killed, 0);
    assert_eq!(progress.pending(), 0);
}

#[test]
fn progress_adds_up_with_panics_losses_retries_and_expiries() {
    let pool = ProcessPool::builder()
        .workers(2)
        .chunk_size(4)
        .retry_lost(1)
        .job_timeout(LIMIT)
        .build()
        .expect("pool");
    let (results, progress) = troubled_map(pool);
    for (x, result) in results.iter().enumerate() {
        let x = x as u64;
        let expected = match x % 10 {
            1 => Err(JobError::Panicked { message: format!("input {x}") }),
            5 if x < 20 => Err(JobError::WorkerLost { exit: signaled(Signal::SIGABRT) }),
            5 => Err(JobError::WorkerLost { exit: WorkerExit::Exited { status: 3 } }),
            _ if x == 17 => Err(expired()),
            _ => Ok(x),
        };
        assert_eq!(*result, expected, "input {x}");
    }
    assert_counts_add_up(&results, &progress);
    assert_eq!((progress.succeeded, progress.failed, progress.expired), (31, 9, 1));
    // Runs again, counted per input sent to a worker again. Chunks are 4 inputs long; an input
    // at place p of its chunk that kills its worker twice (it is retried once) sends the 4 - p
    // inputs from it on again, then the 3 - p after it: 5, 15, 25 and 35 sit at places 1, 3,
    // 1 and 3, so 5 + 1 + 5 + 1. Input 17 (place 1) expires, and the 2 inputs after it run
    // again: 12 + 2.
    assert_eq!(progress.retried, 14);
}

#[test]
fn progress_adds_up_with_panics_losses_and_retries_without_a_limit() {
    fn troubled_but_never_stuck(x: u64) -> u64 {
        if x == 17 { x } else { troubled(x) }
    }
    let pool = ProcessPool::builder().workers(2).chunk_size(4).retry_lost(1).build().expect("pool");
    let (results, progress) = guarded("map", move || {
        let results = pool.map(troubled_but_never_stuck, 0..40);
        (results, pool.progress())
    });
    for (x, result) in results.iter().enumerate() {
        let x = x as u64;
        // Without a limit a chunk is one message: a lost worker loses its whole chunk. The
        // chunks of 4 that hold 5, 15, 25 and 35 are the 2nd, 4th, 7th and 9th.
        let expected = match x / 4 {
            1 | 3 => Err(JobError::WorkerLost { exit: signaled(Signal::SIGABRT) }),
            6 | 8 => Err(JobError::WorkerLost { exit: WorkerExit::Exited { status: 3 } }),
            _ if x % 10 == 1 => Err(JobError::Panicked { message: format!("input {x}") }),
            _ => Ok(x),
        };
        assert_eq!(*result, expected, "input {x}");
    }
    assert_counts_add_up(&results, &progress);
    assert_eq!((progress.succeeded, progress.failed), (20, 20));
    // Each of the four losing chunks ran twice: 4 chunks of 4 inputs sent again.
    assert_eq!(progress.retried, 16);
    assert_eq!(progress.expired, 0);
}

/// Waits for its deadline by polling it, writes what it saw to `path`, and returns.
fn waits_for_its_deadline(path: String) -> u64 {
    let start = Instant::now();
    let left = deadline::time_left();
    while !deadline::expired() {
        std::thread::sleep(Duration::from_millis(2));
    }
    let seen = format!("{} {}", left.map_or(u128::MAX, |left| left.as_millis()), start.elapsed().as_millis());
    std::fs::write(path, seen).expect("write the scratch file");
    1
}

#[test]
fn a_job_in_a_worker_sees_its_deadline_pass() {
    let limit = Duration::from_secs(2);
    let pool = ProcessPool::builder().workers(1).job_timeout(limit).build().expect("pool");
    let path = std::env::temp_dir().join(format!("fanout-process-{}-deadline", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let result = pool.submit(waits_for_its_deadline, path.to_string_lossy().into_owned()).wait_timeout(GUARD);
    // A job that returns past its limit is expired all the same.
    assert_eq!(result, Err(JobError::Expired { limit }));
    let seen = std::fs::read_to_string(&path).expect("the job saw its deadline pass and wrote so");
    let _ = std::fs::remove_file(&path);
    let (left, waited) = seen.split_once(' ').expect("two numbers");
    let (left, waited): (u128, u128) = (left.parse().unwrap(), waited.parse().unwrap());
    assert!(left <= limit.as_millis(), "time_left() at the start was {left} ms");
    assert!(waited >= limit.as_millis() - 1, "expired() was true after {waited} ms");
    // Outside a job there is no deadline.
    assert_eq!(deadline::time_left(), None);
}

/// Kills its worker the first time it runs on an input (counted in a scratch file per input),
/// on inputs 1 and 2.
fn dies_once_on_1_and_2((dir, x): (String, u64)) -> u64 {
    use std::io::Write;
    let path = Path::new(&dir).join(x.to_string());
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path).unwrap();
    file.write_all(b"x").unwrap();
    drop(file);
    let attempts = std::fs::metadata(&path).unwrap().len();
    if (x == 1 || x == 2) && attempts == 1 {
        let _ = nix::sys::signal::raise(Signal::SIGKILL);
    }
    attempts
}

#[test]
fn under_a_time_limit_retries_count_per_input_and_only_unfinished_inputs_run_again() {
    let dir = std::env::temp_dir().join(format!("fanout-process-{}-per-input", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let dir_name = dir.to_string_lossy().into_owned();
    let (pool, results) = guarded("map", move || {
        let pool = ProcessPool::builder()
            .workers(1)
            .chunk_size(4)
            .retry_lost(1)
            .job_timeout(Duration::from_secs(60))
            .build()
            .expect("pool");
        let results = pool.map(dies_once_on_1_and_2, (0..4).map(|x| (dir_name.clone(), x)));
        (pool, results)
    });
    let _ = std::fs::remove_dir_all(&dir);
    // Inputs 1 and 2 each had their one retry; input 0 ran once, not again with them.
    assert_eq!(results, [Ok(1), Ok(2), Ok(2), Ok(1)]);
    assert_eq!(pool.retried_tasks(), 2);
    // 3 inputs (1 to 3) sent again after the first death, 2 (2 and 3) after the second.
    assert_eq!(pool.progress().retried, 5);
}
