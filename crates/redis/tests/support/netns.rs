//! Hosts as network namespaces of the test's own: one bridge in the root namespace
//! (`fnd{pid}b`, 10.213.S.254/24, S from the pid) and per host a namespace
//! `fanout-nd-{pid}-hN` with a veth pair to it (10.213.S.N/24). Traffic stays between these
//! addresses. [`Hosts`] kills every process left in its namespaces and removes everything on
//! drop (also on panic): deleting a namespace alone would leave its processes running, unseen.
//! [`Hosts::create`] first removes leftovers of earlier runs (the same prefixes, of a test
//! process that is gone), and leaves alone those of a run still alive (another test binary
//! under `cargo nextest`).
//!
//! Shared by fanout-redis's drill and fanout-bench's (`#[path]`).

#![allow(dead_code, unreachable_pub)]

use std::process::{Command, Stdio};

pub const NS_PREFIX: &str = "fanout-nd-";
pub const LINK_PREFIX: &str = "fnd";

pub struct Hosts {
    pub names: Vec<String>,
    pub bridge: String,
    pub subnet: u8,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).stdin(Stdio::null()).output().map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn ip_output(args: &[&str]) -> String {
    Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Whether the test process `pid` that made a namespace or link is gone (`None`: not ours).
fn owner_gone(rest: &str) -> Option<bool> {
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let pid: u32 = digits.parse().ok()?;
    Some(pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists())
}

/// Kills every process in namespace `name` (SIGKILL; they are this test's).
fn kill_all_in(name: &str) {
    for pid in ip_output(&["netns", "pids", name]).lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        // SAFETY: kill(2) takes integers; the pids are those of a namespace this test (or an
        // earlier, dead run of it) made, so only its own processes are signalled.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// Removes namespaces and links left by earlier runs that are gone, and their processes.
pub fn remove_leftovers() {
    for line in ip_output(&["netns", "list"]).lines() {
        if let Some(name) = line.split_whitespace().next().filter(|n| n.starts_with(NS_PREFIX)) {
            if owner_gone(&name[NS_PREFIX.len()..]) == Some(true) {
                kill_all_in(name);
                let _ = ip(&["netns", "del", name]);
            }
        }
    }
    for line in ip_output(&["-o", "link", "show"]).lines() {
        // "12: fnd123b: <...", or "13: fnd123r1@if2: <..."
        if let Some(name) = line.split(": ").nth(1).map(|n| n.split('@').next().unwrap_or(n)) {
            if name.starts_with(LINK_PREFIX) && owner_gone(&name[LINK_PREFIX.len()..]) == Some(true) {
                let _ = ip(&["link", "del", name]);
            }
        }
    }
}

/// `count` hosts, or `None` after saying SKIPPED when they cannot be made here (no root, no
/// `ip`); under `FANOUT_REQUIRE_NETNS` (which `.ci/run` sets) that is a failure instead.
pub fn hosts_or_skip(count: u8) -> Option<Hosts> {
    match Hosts::create(count) {
        Ok(hosts) => Some(hosts),
        Err(reason) => {
            assert!(
                std::env::var_os("FANOUT_REQUIRE_NETNS").is_none(),
                "FANOUT_REQUIRE_NETNS is set but network namespaces could not be made: {reason}"
            );
            eprintln!("SKIPPED: the network-namespace drill needs root and `ip`: {reason}");
            None
        }
    }
}

impl Hosts {
    /// `count` hosts, or the reason they could not be made (no privilege, no `ip`).
    pub fn create(count: u8) -> Result<Self, String> {
        remove_leftovers();
        let pid = std::process::id();
        let subnet = u8::try_from(pid % 250).unwrap_or(0) + 1;
        let bridge = format!("{LINK_PREFIX}{pid}b");
        let mut hosts = Self { names: Vec::new(), bridge: bridge.clone(), subnet };
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("10.213.{subnet}.254/24"), "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        for n in 1..=count {
            let name = format!("{NS_PREFIX}{pid}-h{n}");
            ip(&["netns", "add", &name])?;
            hosts.names.push(name.clone());
            let root_end = format!("{LINK_PREFIX}{pid}r{n}");
            let ns_end = format!("{LINK_PREFIX}{pid}n{n}");
            ip(&["link", "add", &root_end, "type", "veth", "peer", "name", &ns_end])?;
            ip(&["link", "set", &ns_end, "netns", &name])?;
            ip(&["link", "set", &root_end, "master", &bridge])?;
            ip(&["link", "set", &root_end, "up"])?;
            ip(&["-n", &name, "addr", "add", &format!("10.213.{subnet}.{n}/24"), "dev", &ns_end])?;
            ip(&["-n", &name, "link", "set", &ns_end, "up"])?;
            ip(&["-n", &name, "link", "set", "lo", "up"])?;
        }
        Ok(hosts)
    }

    /// Host `n`'s address (1-based).
    pub fn addr(&self, n: u8) -> String {
        format!("10.213.{}.{n}", self.subnet)
    }

    /// The root namespace's address on the bridge.
    pub fn root_addr(&self) -> String {
        format!("10.213.{}.254", self.subnet)
    }

    /// A command run inside host `n`.
    pub fn command(&self, n: u8, program: &std::path::Path) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.names[usize::from(n) - 1]]).arg(program);
        command
    }

    /// Host `n`'s namespace name.
    pub fn name(&self, n: u8) -> &str {
        &self.names[usize::from(n) - 1]
    }

    /// Starts redis-server in host `n` on its address, port 6379, no persistence (files in
    /// `dir`), open to the other hosts (no protected mode: only the test's hosts reach it);
    /// its URL is `redis://ADDR:6379/0`.
    pub fn start_redis(&self, n: u8, dir: &std::path::Path) -> std::io::Result<std::process::Child> {
        self.command(n, std::path::Path::new("redis-server"))
            .args(["--port", "6379", "--bind", &self.addr(n), "--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
    }

    /// The pids of every process in host `n`.
    pub fn pids(&self, n: u8) -> Vec<i32> {
        ip_output(&["netns", "pids", &self.names[usize::from(n) - 1]])
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        let pid = std::process::id();
        for (n, name) in (1..).zip(&self.names) {
            kill_all_in(name);
            // The pair's root end by name: the kernel frees a deleted namespace (and the veth
            // ends in it) asynchronously, seconds later when sockets of its processes linger.
            let _ = ip(&["link", "del", &format!("{LINK_PREFIX}{pid}r{n}")]);
            let _ = ip(&["netns", "del", name]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}
