//! The killed-host drill on the real ticket migration (issue 16, must-have 6): three hosts as
//! network namespaces of this test's own (`support::netns`): redis-server and the mock API on
//! host 1, `fanout worker` processes on hosts 2 and 3 (`fanout bench --hosts 2
//! --hosts-netns`), the pool itself in the root namespace with no worker of its own. Every
//! ticket's GETs and POSTs, and its nested pool's attachment copies, cross the namespaces'
//! network. Once a quarter of the tickets are in the new system (the mock server's summary),
//! every process of host 2 is SIGKILLed: its workers, their tickets' nested pools, mid-request.
//! Host 3's workers reclaim the dead host's entries after the visibility timeout and migrate
//! those tickets again; the idempotency keys make the second attempt safe. The run must end
//! with ok 80, lost 0, duplicated 0 by the mock server's own count (its summary beside a
//! correct migration's) and the fault-free checksum (`verified`).
//!
//! `FANOUT_NETNS_DRILL_RUNS=N` repeats the drill N times in a row (1 by default).
//!
//! Needs root and `ip`: without them it says SKIPPED, unless `FANOUT_REQUIRE_NETNS` is set
//! (then it fails). A missing redis-server skips or fails likewise (`FANOUT_REQUIRE_REDIS`).

#[path = "../../redis/tests/support/netns.rs"]
mod netns;
#[path = "../../redis/tests/support/require.rs"]
mod require;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use fanout_bench::run::{LISTENING_PREFIX, TOKEN_ENV};
use fanout_bench::{Api, Secret};
use fanout_mock_api::Summary;
use netns::Hosts;
use serde_json::Value;

const TICKETS: u64 = 80;
const SEED: &str = "7";
const TOKEN: &str = "netns-drill-token";
/// A run's bound: the drill takes a few seconds; far above that on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(90);

/// A child killed and reaped on drop; its stdin (when piped) kept open until then.
struct Reaped(Child, Option<ChildStdin>);

impl Drop for Reaped {
    fn drop(&mut self) {
        drop(self.1.take());
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_until(what: &str, within: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ready() {
        assert!(Instant::now() < deadline, "{what} was not ready within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a Redis server answers `PING` at `addr` (inline command, RESP reply).
fn ping(addr: &str) -> bool {
    use std::io::Write;
    let Ok(addr) = addr.parse() else { return false };
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0; 7];
    stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

/// What one drill saw.
struct Drill {
    row: Value,
    /// Processes of host 2 that were killed.
    killed: usize,
    /// Tickets in the new system when host 2 was killed.
    tickets_at_kill: u64,
    /// Entries host 2's workers held unacknowledged when they died.
    stranded: u64,
}

fn drill(hosts: &Hosts, run: usize) -> Drill {
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_fanout"));
    let host1 = hosts.addr(1);
    let dir = std::env::temp_dir().join(format!("fanout-bench-netns-{}-{run}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let _redis = Reaped(hosts.start_redis(1, &dir).expect("start redis-server in host 1"), None);
    let redis_url = format!("redis://{host1}:6379/0");
    wait_until("redis-server in host 1", Duration::from_secs(10), || ping(&format!("{host1}:6379")));

    // The mock API in host 1, at time scale 0.01: a ticket takes ~0.1 s with its attachments
    // copied 4 at a time, so the kill lands mid-run with room to spare.
    let mut server = hosts
        .command(1, exe)
        .args(["mock-api", "--addr", &format!("{host1}:0"), "--exit-on-stdin-eof"])
        .args(["--time-scale", "0.01", "--seed", SEED])
        .env(TOKEN_ENV, TOKEN)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the mock API in host 1");
    let stdin = server.stdin.take();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let _server = Reaped(server, stdin);
    let url = line
        .trim()
        .strip_prefix(LISTENING_PREFIX)
        .unwrap_or_else(|| panic!("mock API said {line:?}"))
        .to_owned();
    assert!(url.starts_with(&format!("http://{host1}:")), "{url}");
    let api = Api::new(url.clone(), Secret::new(TOKEN));

    let bench = Command::new(exe)
        .args(["bench", "--scenario", "ticket-migration", "--executor", "redis"])
        .args(["--workers", "4", "--inner-workers", "4", "--hosts", "2"])
        .args(["--hosts-netns", &format!("{},{}", hosts.name(2), hosts.name(3))])
        .args(["--host-visibility-ms", "1500", "--seed", SEED, "--url", &url, "--format", "json"])
        .env("FANOUT_REDIS_URL", &redis_url)
        .env(TOKEN_ENV, TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("fanout bench starts");
    // Killed on any panic below, so that no bench outlives a failed drill.
    let mut bench = Reaped(bench, None);
    // The queue of the bench's first (only) repetition (`run::WorkerHosts`).
    let queue = format!("fanout-bench-hosts-{}-1", bench.0.id());
    let redis = fanout_redis::RedisUrl::new(redis_url.as_str()).unwrap();

    // Kill host 2 once a quarter of the tickets are in; bounded by the run's deadline.
    let started = Instant::now();
    let mut kill = None;
    let status = loop {
        if let Some(status) = bench.0.try_wait().expect("fanout bench can be waited for") {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = bench.0.kill();
            let _ = bench.0.wait();
            let mut stderr = String::new();
            if let Some(pipe) = bench.0.stderr.as_mut() {
                let _ = pipe.read_to_string(&mut stderr);
            }
            let summary = api.get_json::<Summary>("/new/tickets/summary");
            let consumers = fanout_redis::consumers(&redis, &queue);
            let host3: Vec<String> = hosts
                .pids(3)
                .iter()
                .map(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default())
                .map(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " "))
                .collect();
            panic!(
                "fanout bench ran past {DEADLINE:?} (killed {kill:?}); the new system holds {summary:?}; \
                 consumers {consumers:?}; host 3 runs {host3:#?}; its stderr: {stderr}"
            );
        }
        if kill.is_none() {
            let tickets = api.get_json::<Summary>("/new/tickets/summary").map_or(0, |s| s.tickets);
            if tickets >= TICKETS / 4 {
                let victims = hosts.pids(2);
                for &pid in &victims {
                    // SAFETY: kill(2) takes integers; the pids are host 2's, which this test
                    // made and whose processes its bench started.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                // The entries the dead workers held unacknowledged: what the survivors must
                // reclaim.
                let stranded: u64 = fanout_redis::consumers(&redis, &queue)
                    .expect("the queue's consumers")
                    .iter()
                    .filter(|c| c.pid.is_some_and(|pid| victims.iter().any(|&v| u32::try_from(v) == Ok(pid))))
                    .map(|c| c.pending)
                    .sum();
                kill = Some((victims.len(), tickets, stranded));
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // It has exited: what it wrote (a JSON line, a short error) waits in the pipes.
    let (mut stdout, mut stderr) = (String::new(), String::new());
    if let Some(pipe) = bench.0.stdout.as_mut() {
        let _ = pipe.read_to_string(&mut stdout);
    }
    if let Some(pipe) = bench.0.stderr.as_mut() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    assert!(status.success(), "fanout bench failed: {stderr}");
    let row: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|error| panic!("{error}: {stdout}"));
    let (killed, tickets_at_kill, stranded) =
        kill.unwrap_or_else(|| panic!("the run ended before a quarter was in: {row}"));
    let _ = std::fs::remove_dir_all(&dir);
    Drill { row, killed, tickets_at_kill, stranded }
}

#[test]
fn the_migration_survives_a_killed_host_with_nothing_lost_or_duplicated() {
    if !require::redis_found() {
        return;
    }
    let Some(hosts) = netns::hosts_or_skip(3) else { return };
    let runs: usize = std::env::var("FANOUT_NETNS_DRILL_RUNS").ok().and_then(|n| n.parse().ok()).unwrap_or(1);
    for run in 1..=runs {
        let Drill { row, killed, tickets_at_kill, stranded } = drill(&hosts, run);
        eprintln!(
            "netns drill {run}/{runs}: killed {killed} processes of host 2 at {tickets_at_kill} tickets, {stranded} entries stranded; ok {}, lost {}, duplicated {}, verified {}, wall {} s",
            row["ok"], row["lost"], row["duplicated"], row["verified"], row["wall_seconds"]
        );
        // Host 2's supervisor, its two workers and the nested pools' workers of their tickets.
        assert!(killed >= 3, "host 2 had {killed} processes: {row}");
        assert!(tickets_at_kill < TICKETS, "host 2 was killed after the run's last ticket: {row}");
        assert!(stranded >= 1, "host 2's workers died holding no entry: nothing was reclaimed: {row}");
        assert_eq!(
            (&row["ok"], &row["errors"], &row["lost"], &row["duplicated"]),
            (&TICKETS.into(), &0.into(), &0.into(), &0.into()),
            "{row}"
        );
        assert_eq!(row["verified"], true, "the new system's checksum is a correct migration's: {row}");
        assert!(hosts.pids(2).is_empty(), "host 2 still runs processes after the kill");
        assert!(hosts.pids(3).is_empty(), "the bench left processes on host 3");
    }
}
