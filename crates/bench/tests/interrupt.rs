//! Ctrl-C during `fanout bench`: it stops at once, leaves no process behind, says which
//! tickets were migrated, and a second run against the same server migrates the rest without
//! duplicates. Its own test binary: it checks the process table for descendants of its own
//! (it is a child subreaper, so that leftovers are reparented to it, not to init), and no
//! other test of its own may run pools beside it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The parent of `pid`, from `/proc/PID/stat` (the field after the parenthesized name).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

/// Whether `pid` is a descendant of this test process. The test is a child subreaper, so a
/// process its bench left behind is reparented here, never to init.
fn ours(mut pid: u32) -> bool {
    let me = std::process::id();
    for _ in 0..64 {
        match parent_of(pid) {
            Some(parent) if parent == me => return true,
            Some(parent) if parent > 1 => pid = parent,
            _ => return false,
        }
    }
    false
}

/// Processes descending from this test whose command line contains `needle` (other tests
/// or programs on the machine may run pools of their own).
fn processes_with(needle: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let pid = path.file_name()?.to_str()?.parse::<u32>().ok()?;
            let cmdline = std::fs::read(path.join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (cmdline.contains(needle) && ours(pid)).then_some(cmdline)
        })
        .collect()
}

#[test]
fn ctrl_c_stops_cleanly_and_a_second_run_migrates_the_rest() {
    // SAFETY: `prctl(PR_SET_CHILD_SUBREAPER)` takes integers and only sets a flag of this
    // process: orphans of its descendants are reparented to it (see `ours`).
    assert_eq!(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) }, 0);
    let fanout = env!("CARGO_BIN_EXE_fanout");
    let mut server = Command::new(fanout)
        .args(["mock-api", "--time-scale", "0.01", "--exit-on-stdin-eof"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the mock API starts");
    let mut line = String::new();
    BufReader::new(server.stdout.take().expect("stdout")).read_line(&mut line).expect("its address");
    let url = line.trim().strip_prefix("listening on ").expect("an address").to_owned();
    let migrate = |url: &str| {
        let mut command = Command::new(fanout);
        command.args(["bench", "--scenario", "ticket-migration", "--executor", "process", "--workers", "4"]);
        command.args(["--url", url]);
        command
    };

    // At time scale 0.01 the migration takes about 3 s: interrupt it after some tickets.
    let bench = migrate(&url).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("bench starts");
    std::thread::sleep(Duration::from_millis(1200));
    let signalled = Instant::now();
    let pid = i32::try_from(bench.id()).expect("a pid");
    // SAFETY: `kill` takes no pointers; `pid` is our child, not yet reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let output = bench.wait_with_output().expect("bench exits");
    let stopped_after = signalled.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("stopped {stopped_after:?} after SIGINT: {stderr}");
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stopped_after < Duration::from_secs(5), "a hang, not a stop: {stopped_after:?}");
    assert!(stderr.contains("jobs finished") && stderr.contains("tickets migrated"), "{stderr}");
    // Neither the run child (its command line holds the URL) nor a fork server or worker
    // outlived the interrupted bench.
    assert_eq!(processes_with(&url), Vec::<String>::new());
    assert_eq!(processes_with("--fanout-fork-server-v1"), Vec::<String>::new());

    // The second run finds the interrupted one's tickets already there and adds the rest.
    let output = migrate(&url).output().expect("bench runs");
    let row: Value = serde_json::from_slice(&output.stdout).expect("a JSON line");
    assert_eq!(
        (row["ok"].as_u64(), row["lost"].as_u64(), row["duplicated"].as_u64()),
        (Some(80), Some(0), Some(0)),
        "{row}"
    );
    assert_eq!(row["verified"], true, "{row}");

    drop(server.stdin.take());
    let _ = server.wait();
}
