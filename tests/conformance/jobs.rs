//! The jobs the suite runs: plain `fn` items, as a user would write them.

use std::time::Duration;

pub(crate) fn square(x: u64) -> u64 {
    x * x
}

pub(crate) fn double_or_panic_at_500(x: u64) -> u64 {
    if x == 500 {
        panic!("input {x} fails on purpose");
    }
    x * 2
}

/// Input 0 takes 100 ms, every other input returns at once.
pub(crate) fn slow_first(x: u64) -> u64 {
    if x == 0 {
        std::thread::sleep(Duration::from_millis(100));
    }
    x
}

pub(crate) fn add((a, b): (u64, u64)) -> u64 {
    a + b
}

pub(crate) fn label((name, count): (String, u32)) -> String {
    format!("{name}x{count}")
}

pub(crate) fn reversed(mut bytes: Vec<u8>) -> Vec<u8> {
    bytes.reverse();
    bytes
}

pub(crate) fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Creates the file at `path` (the sign that the job has started), then sleeps.
pub(crate) fn mark_started_then_sleep((path, ms): (String, u64)) -> u64 {
    std::fs::write(&path, b"started").expect("the marker file can be written");
    sleep_ms(ms)
}

/// A fresh path for a marker file.
pub(crate) fn marker_path(test: &str) -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let name = format!("fanout-{test}-{}-{nanos}", std::process::id());
    std::env::temp_dir().join(name).to_string_lossy().into_owned()
}
