//! The conformance suite: one set of behaviours, checked against every executor.
//!
//! Each executor gets a module from [`conformance_suite!`]; an executor that runs jobs inline
//! (`Serial`) has no queue, so the tests about queued jobs check its inline behaviour instead.

mod jobs;
#[macro_use]
mod suite;

use fanout::{AnyExecutor, AsyncExecutor, ExecutorKind, ProcessPool, Serial, ThreadPool};

conformance_suite!(serial, Serial, |_workers| Ok(Serial::new()), inline = true);
conformance_suite!(thread, ThreadPool, ThreadPool::new, inline = false);
conformance_suite!(
    thread_chunked,
    ThreadPool,
    |workers| ThreadPool::builder().workers(workers).chunk_size(7).build(),
    inline = false
);
conformance_suite!(process, ProcessPool, ProcessPool::new, inline = false);
conformance_suite!(
    process_chunked,
    ProcessPool,
    |workers| ProcessPool::builder().workers(workers).chunk_size(7).build(),
    inline = false
);
// Spares: pools of this binary run at once, so their workers move from one to the next.
conformance_suite!(
    process_spares,
    ProcessPool,
    |workers| ProcessPool::builder().workers(workers).reuse_workers(true).build(),
    inline = false
);
conformance_suite!(async_current, AsyncExecutor, AsyncExecutor::new, inline = false);
conformance_suite!(
    async_multi,
    AsyncExecutor,
    |workers| AsyncExecutor::builder().workers(workers).worker_threads(2).build(),
    inline = false
);

// The run-time choice keeps the trait: `AnyExecutor` passes the whole suite for every kind.
conformance_suite!(any_serial, AnyExecutor, |w| AnyExecutor::new(ExecutorKind::Serial, w), inline = true);
conformance_suite!(any_thread, AnyExecutor, |w| AnyExecutor::new(ExecutorKind::Thread, w), inline = false);
conformance_suite!(any_process, AnyExecutor, |w| AnyExecutor::new(ExecutorKind::Process, w), inline = false);
conformance_suite!(any_async, AnyExecutor, |w| AnyExecutor::new(ExecutorKind::Async, w), inline = false);

// RedisPool against a redis-server of this test process (local workers, a queue per pool).
conformance_suite!(redis, AnyExecutor, |w| redis_server::pool(w, 1), inline = false);
conformance_suite!(redis_chunked, AnyExecutor, |w| redis_server::pool(w, 7), inline = false);
conformance_suite!(any_redis, AnyExecutor, redis_server::any, inline = false);

mod redis_server {
    //! One redis-server for the whole test process (a free loopback port, no persistence),
    //! killed when the process exits; worker processes (and pools built inside jobs) find it
    //! in `FANOUT_REDIS_URL`. Without `redis-server` and without `FANOUT_REQUIRE_REDIS`, the
    //! redis suites say so and run on the thread pool in its place.

    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    use fanout::{AnyExecutor, BuildError, ExecutorKind, RedisPool, ThreadPool};

    const URL: &str = "FANOUT_REDIS_URL";

    fn server() -> bool {
        static STARTED: OnceLock<bool> = OnceLock::new();
        *STARTED.get_or_init(|| {
            if std::env::var_os(URL).is_some() {
                return true; // a worker of this test, or a server the user gave
            }
            if std::process::Command::new("redis-server").arg("--version").output().is_err() {
                assert!(
                    std::env::var_os("FANOUT_REQUIRE_REDIS").is_none(),
                    "FANOUT_REQUIRE_REDIS is set but redis-server is missing: apt-get install redis-server"
                );
                eprintln!(
                    "SKIPPED redis conformance: redis-server is not installed (apt-get install \
                     redis-server, then FANOUT_REQUIRE_REDIS=1); the thread pool runs in its place"
                );
                return false;
            }
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            // The server is started by a thread that never ends, and dies with this process
            // (PR_SET_PDEATHSIG fires when the thread that started it exits).
            let (sender, receiver) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                use std::os::unix::process::CommandExt;
                let mut command = std::process::Command::new("redis-server");
                command
                    .args([
                        "--port",
                        &port.to_string(),
                        "--bind",
                        "127.0.0.1",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                    ])
                    .stdout(std::process::Stdio::null());
                let in_child = || {
                    // SAFETY: `prctl` is async-signal-safe and only sets a flag of the child.
                    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
                    Ok(())
                };
                // SAFETY: the closure calls only `prctl`, which is safe between fork and exec.
                unsafe { command.pre_exec(in_child) };
                let child = command.spawn();
                let _ = sender.send(child.is_ok());
                let _child = child;
                loop {
                    std::thread::park();
                }
            });
            assert!(receiver.recv().unwrap_or(false), "redis-server did not start");
            let url = format!("redis://127.0.0.1:{port}/0");
            for _ in 0..500 {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            // SAFETY: set once, before any pool of this process reads it (they all come here
            // first); the tests' other threads do not write the environment.
            unsafe { std::env::set_var(URL, &url) };
            true
        })
    }

    fn queue() -> String {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        format!("conformance-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
    }

    pub(super) fn pool(workers: usize, chunk_size: usize) -> Result<AnyExecutor, BuildError> {
        if !server() {
            return ThreadPool::builder()
                .workers(workers)
                .chunk_size(chunk_size)
                .build()
                .map(AnyExecutor::from);
        }
        if workers == 0 {
            return Err(BuildError::ZeroWorkers);
        }
        let pool = RedisPool::builder_from_env(URL)
            .queue(&queue())
            .local_workers(workers)
            .chunk_size(chunk_size)
            .build()?;
        Ok(AnyExecutor::from(pool))
    }

    pub(super) fn any(workers: usize) -> Result<AnyExecutor, BuildError> {
        if !server() {
            return AnyExecutor::new(ExecutorKind::Thread, workers);
        }
        AnyExecutor::new(ExecutorKind::Redis, workers)
    }
}
