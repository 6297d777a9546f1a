//! Whether the Redis tests can run here: redis-server on the PATH. Without it they say
//! SKIPPED and how to enable them, unless `FANOUT_REQUIRE_REDIS` is set (as `.ci/run` does):
//! then a missing server fails the test.
//!
//! No dependencies, so that fanout-bench's tests share it (`#[path]`).

#![allow(dead_code, unreachable_pub)]

use std::process::{Command, Stdio};

/// `true` when redis-server runs here; otherwise says SKIPPED (or panics under
/// `FANOUT_REQUIRE_REDIS`).
pub fn redis_found() -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("FANOUT_REQUIRE_REDIS").is_none(),
            "FANOUT_REQUIRE_REDIS is set but redis-server is not on the PATH: apt-get install redis-server"
        );
        eprintln!(
            "SKIPPED: redis-server is not installed (apt-get install redis-server; set FANOUT_REQUIRE_REDIS=1 to make this a failure)"
        );
    }
    found
}
