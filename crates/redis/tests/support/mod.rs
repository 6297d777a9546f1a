//! A redis-server of the test's own: a free loopback port, no persistence, stopped on drop.
//! Without `redis-server` on the PATH the tests are skipped (and say so), unless
//! `FANOUT_REQUIRE_REDIS` is set, which `.ci/run` does: then a missing server fails.

#![allow(dead_code, unreachable_pub)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct TestRedis {
    child: Child,
    pub port: u16,
    pub password: Option<String>,
    dir: std::path::PathBuf,
}

impl TestRedis {
    /// A fresh server, or `None` (test skipped) when redis-server is missing.
    pub fn start(password: Option<&str>) -> Option<Self> {
        let found = Command::new("redis-server").arg("--version").stdout(Stdio::null()).status().is_ok();
        if !found {
            if std::env::var_os("FANOUT_REQUIRE_REDIS").is_some() {
                panic!(
                    "FANOUT_REQUIRE_REDIS is set but redis-server is not on the PATH: apt-get install redis-server"
                );
            }
            eprintln!(
                "SKIPPED: redis-server is not installed; install it (apt-get install redis-server) \
                 and set FANOUT_REQUIRE_REDIS=1 to run the fanout-redis tests"
            );
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = std::env::temp_dir().join(format!("fanout-redis-test-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(password) = password {
            command.args(["--requirepass", password]);
        }
        let child = command.spawn().expect("start redis-server");
        let server = Self { child, port, password: password.map(str::to_owned), dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ok = redis::Client::open(server.url().as_str())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok();
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "redis-server did not answer within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(server)
    }

    pub fn url(&self) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}/0", self.port),
            None => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }

    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url().as_str()).unwrap().get_connection().unwrap()
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits (bounded) until `ready` holds.
pub fn wait_until(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
pub mod netns;
pub mod require;
