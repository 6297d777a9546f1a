//! The network-namespace drill: three hosts as network namespaces of this test's own
//! (`support::netns`), redis-server on host 1, two worker processes of this test binary on
//! each of hosts 2 and 3, the pool (no local workers) in the root namespace. Mid-run every
//! process of host 2 is SIGKILLed; the run must still answer all 80 inputs exactly once, with
//! no duplicate counted, and the fault-free checksum.
//!
//! Needs root and `ip`: without them it says SKIPPED, unless `FANOUT_REQUIRE_NETNS` is set
//! (then it fails). A missing redis-server skips or fails as in the other tests
//! (`FANOUT_REQUIRE_REDIS`).

mod support;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use fanout_core::Executor;
use fanout_redis::RedisPool;
use support::{netns, require};

const INPUTS: u64 = 80;

/// Appends a line to the progress file, sleeps a little, answers a checksum term.
fn migrate((path, x): (String, u64)) -> u64 {
    use std::io::Write;
    if let Ok(mut file) = std::fs::OpenOptions::new().append(true).create(true).open(&path) {
        let _ = writeln!(file, "{x}");
    }
    std::thread::sleep(Duration::from_millis(40));
    x.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) ^ x
}

/// A child killed and reaped on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_host_killed_mid_run_loses_and_duplicates_nothing() {
    if !require::redis_found() {
        return;
    }
    let Some(hosts) = netns::hosts_or_skip(3) else { return };
    let redis_host = hosts.addr(1);
    let dir = std::env::temp_dir().join(format!("fanout-netns-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let _redis = Reaped(hosts.start_redis(1, &dir).expect("start redis-server in host 1"));
    let url = format!("redis://{redis_host}:6379/0");
    support::wait_until("redis-server in host 1", Duration::from_secs(10), || {
        redis::Client::open(url.as_str())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(500)))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
    });
    let queue = format!("netns{}", std::process::id());
    let exe = std::env::current_exe().unwrap();
    let start_workers = |n: u8| {
        Reaped(
            hosts
                .command(n, &exe)
                .args([
                    fanout_redis::MARKER,
                    "env:FANOUT_TEST_WORKER_URL",
                    "--queue",
                    &queue,
                    "--workers",
                    "2",
                    // The workers' own visibility timeout: the pool's applies to local ones only.
                    "--visibility-ms",
                    "2000",
                ])
                .env("FANOUT_TEST_WORKER_URL", &url)
                .stdin(Stdio::null())
                .spawn()
                .expect("start workers"),
        )
    };
    let mut doomed = start_workers(2);
    let _survivor = start_workers(3);

    let progress = dir.join("progress").to_string_lossy().into_owned();
    let pool = RedisPool::builder(&url)
        .queue(&queue)
        .workers(4)
        .visibility_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let expected: u64 = (0..INPUTS).map(|x| migrate((String::new(), x))).fold(0, u64::wrapping_add);

    let killer = std::thread::scope(|scope| {
        let killer = scope.spawn(|| {
            // Bounded: a run that never reaches a quarter still kills, after 30 s.
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                let done = std::fs::read_to_string(&progress).map_or(0, |s| s.lines().count());
                if done >= usize::try_from(INPUTS / 4).unwrap() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let victims = hosts.pids(2);
            for &pid in &victims {
                // SAFETY: kill(2) on the processes of host 2, which this test started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            let _ = doomed.0.wait();
            victims.len()
        });
        let guard = Instant::now();
        let answers = pool.map(migrate, (0..INPUTS).map(|x| (progress.clone(), x)));
        assert!(guard.elapsed() < Duration::from_secs(120), "the drill took over 2 minutes");
        let killed = killer.join().unwrap();
        (answers, killed)
    });
    let (answers, killed) = killer;
    assert!(killed >= 3, "host 2 had {killed} processes; expected its supervisor and two workers");
    let ok = answers.iter().filter(|a| a.is_ok()).count();
    let lost = answers.len() - ok;
    let checksum = answers.iter().filter_map(|a| a.as_ref().ok()).fold(0u64, |s, v| s.wrapping_add(*v));
    let duplicated = pool.duplicates();
    eprintln!("netns drill: ok {ok}, lost {lost}, duplicated {duplicated}, checksum {checksum:#x}");
    assert_eq!((ok, lost, duplicated), (80, 0, 0));
    assert_eq!(checksum, expected);
    drop(pool);
    let _ = std::fs::remove_dir_all(&dir);
}
