//! What a run costs the machine: CPU time from `getrusage`/`wait4`, and the peaks of the
//! **summed** resident memory (RSS) and proportional set size (PSS) of a process tree, sampled
//! from `/proc` ([`RssSampler`]).
//!
//! CPU time of descendants only reaches a process's `RUSAGE_CHILDREN` once they are reaped, and
//! only through their parents: a pool worker's time counts for the run child when the pool
//! reaps it at shutdown, and a nested pool's workers count for the worker that reaped them.
//!
//! `ru_maxrss` is the peak of the single largest process, not of a tree: eight forked workers
//! of 10 MiB each use about 80 MiB, not 10. So the orchestrator samples the tree itself: every
//! [`SAMPLE_INTERVAL`] it sums `/proc/PID/statm`'s resident pages over the run child and all its
//! descendants, found by following parent pids through `/proc/*/stat`. The sum counts pages
//! shared between processes (a fork's copy-on-write pages, the executable) once per process, so
//! it is an upper bound of the memory really used; pages that come and go between two samples
//! are missed, and `ru_maxrss` of the run child serves as a floor for runs shorter than a
//! sample.
//!
//! The PSS sum counts each shared page once, split between the processes that map it (the
//! kernel's `Pss:` of `/proc/PID/smaps_rollup`): the memory the tree really uses. A pool of 32
//! forked workers sums to about 33 times one process's RSS, but to little more than one
//! process's PSS plus what each worker wrote. `smaps_rollup` costs the kernel a walk of the
//! process's page tables, several times a `statm` read, so the sampler reads it on a sample
//! that sets a new RSS peak (at most every [`PSS_MIN_GAP`]th sample, unless the RSS has grown
//! by a quarter since the last PSS sum) and on every [`PSS_EVERY`]th: the peak of a pool's PSS
//! comes with the peak of its RSS, when all its workers run.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often [`RssSampler`] sums the tree's resident memory.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(10);

/// The tree is re-discovered ([`descendants`]: a read of each known process's child lists) on
/// each of the first [`EAGER_SCANS`] samples, while pools fork their workers, then on every
/// [`RESCAN_EVERY`]th; in between only the known processes' `statm` is read. (A `SCHED_IDLE`
/// sampler, tried, missed short runs on a busy machine altogether: a run of 15 ms ended before
/// it had a first sample.)
const RESCAN_EVERY: u64 = 10;
const EAGER_SCANS: u64 = 5;

/// The PSS of the tree is summed on every [`PSS_EVERY`]th sample, and on a sample whose RSS
/// sum is a new peak if the last PSS sum is at least [`PSS_MIN_GAP`] samples old, or if the RSS
/// sum has grown by more than a quarter ([`PSS_REGROWTH`]) since it: a run of 90 ms is 9
/// samples, and a tree that forks its workers within the gap after the first sum (taken as the
/// run child starts, at a fraction of a MiB) would otherwise keep that first sum as its peak.
const PSS_EVERY: u64 = 20;
const PSS_MIN_GAP: u64 = 5;
const PSS_REGROWTH: (u64, u64) = (5, 4);

/// The peaks an [`RssSampler`] saw, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryPeaks {
    /// The peak of the summed RSS of the tree.
    pub rss_bytes: u64,
    /// The peak of the summed PSS of the tree (0 if it was never sampled).
    pub pss_bytes: u64,
}

/// User plus system CPU time of a `rusage`.
fn cpu_of(usage: &libc::rusage) -> Duration {
    let time = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

fn getrusage(who: libc::c_int) -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` points to writable memory of the size of a `rusage`, which is all
    // `getrusage` writes; an all-zero `rusage` is a valid value should the call fail.
    let code = unsafe { libc::getrusage(who, usage.as_mut_ptr()) };
    if code != 0 {
        return Duration::ZERO;
    }
    // SAFETY: zero-initialized above and filled by a successful `getrusage`.
    let usage = unsafe { usage.assume_init() };
    cpu_of(&usage)
}

/// CPU time (user + system) used so far by this process's threads and by every descendant it
/// has reaped.
pub fn cpu_time() -> Duration {
    getrusage(libc::RUSAGE_SELF) + getrusage(libc::RUSAGE_CHILDREN)
}

/// How a reaped child ended, with its resource usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reaped {
    /// The raw wait status.
    pub status: i32,
    /// User + system CPU time of the child and its reaped descendants.
    pub cpu: Duration,
    /// The child's `ru_maxrss`, in bytes: the peak of the largest single process.
    pub max_rss_bytes: u64,
}

impl Reaped {
    /// Whether the child exited with status 0.
    pub fn success(&self) -> bool {
        libc::WIFEXITED(self.status) && libc::WEXITSTATUS(self.status) == 0
    }

    /// A description of how the child ended, for error messages.
    pub fn describe(&self) -> String {
        if libc::WIFEXITED(self.status) {
            format!("exit status {}", libc::WEXITSTATUS(self.status))
        } else if libc::WIFSIGNALED(self.status) {
            format!("killed by signal {}", libc::WTERMSIG(self.status))
        } else {
            format!("wait status {}", self.status)
        }
    }
}

/// Waits for the child `pid` with `wait4`, which reports its resource usage.
pub fn wait4(pid: u32) -> io::Result<Reaped> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut status = 0;
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    loop {
        // SAFETY: both pointers point to writable, properly sized and aligned locals that
        // outlive the call; `wait4` writes nothing else.
        let reaped = unsafe { libc::wait4(pid, &mut status, 0, usage.as_mut_ptr()) };
        if reaped == pid {
            break;
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
    // SAFETY: zero-initialized above and filled by the successful `wait4`.
    let usage = unsafe { usage.assume_init() };
    let max_rss_kib = u64::try_from(usage.ru_maxrss).unwrap_or(0);
    Ok(Reaped { status, cpu: cpu_of(&usage), max_rss_bytes: max_rss_kib * 1024 })
}

/// Samples the summed resident memory (and proportional set size) of a process and its
/// descendants on a thread, until [`finish`](RssSampler::finish).
#[derive(Debug)]
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<MemoryPeaks>>,
}

impl RssSampler {
    /// Starts sampling the tree rooted at `root`.
    pub fn start(root: u32) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("fanout-rss-sampler".to_owned())
            .spawn(move || sample_until(root, &flag))?;
        Ok(Self { stop, thread: Some(thread) })
    }

    /// Stops sampling and returns the peaks of the sums.
    pub fn finish(mut self) -> MemoryPeaks {
        self.stop_thread()
    }

    fn stop_thread(&mut self) -> MemoryPeaks {
        self.stop.store(true, Ordering::Release);
        self.thread.take().and_then(|thread| thread.join().ok()).unwrap_or_default()
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

fn sample_until(root: u32, stop: &AtomicBool) -> MemoryPeaks {
    let page = page_size();
    let mut tree = vec![root];
    let mut peaks = MemoryPeaks::default();
    let mut last_pss: Option<u64> = None;
    let mut rss_at_last_pss = 0_u64;
    for sample in 0.. {
        if stop.load(Ordering::Acquire) {
            break;
        }
        if sample < EAGER_SCANS || sample % RESCAN_EVERY == 0 {
            tree = descendants(root);
        }
        let rss = tree.iter().filter_map(|&pid| resident_pages(pid)).sum::<u64>() * page;
        let new_peak = rss > peaks.rss_bytes;
        peaks.rss_bytes = peaks.rss_bytes.max(rss);
        let gap_ok = last_pss.is_none_or(|last| sample >= last + PSS_MIN_GAP);
        let regrown = rss.saturating_mul(PSS_REGROWTH.1) > rss_at_last_pss.saturating_mul(PSS_REGROWTH.0);
        if (new_peak && (gap_ok || regrown)) || sample % PSS_EVERY == 0 {
            let pss: u64 = tree.iter().filter_map(|&pid| proportional_bytes(pid)).sum();
            peaks.pss_bytes = peaks.pss_bytes.max(pss);
            last_pss = Some(sample);
            rss_at_last_pss = rss;
        }
        std::thread::sleep(SAMPLE_INTERVAL);
    }
    peaks
}

fn page_size() -> u64 {
    // SAFETY: `sysconf` takes no pointers and only reads a configuration value.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|&size| size > 0).unwrap_or(4096)
}

/// Resident pages of `pid` (the second field of `/proc/PID/statm`), `None` once it is gone.
fn resident_pages(pid: u32) -> Option<u64> {
    let statm = fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    statm.split_whitespace().nth(1)?.parse().ok()
}

/// The proportional set size of `pid` in bytes (the `Pss:` line of `/proc/PID/smaps_rollup`),
/// `None` once it is gone.
fn proportional_bytes(pid: u32) -> Option<u64> {
    let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let line = rollup.lines().find(|line| line.starts_with("Pss:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The parent pid in the text of `/proc/PID/stat`: the second field after the command name,
/// which is in parentheses and may itself hold spaces and parentheses.
fn parent_of(stat: &str) -> Option<u32> {
    let (_, after_name) = stat.rsplit_once(')')?;
    after_name.split_whitespace().nth(1)?.parse().ok()
}

/// `root` and every process descending from it: from the kernel's child lists
/// (`/proc/PID/task/TID/children`, which costs a read per process of the tree), or, on a kernel
/// without them, from one scan of all of `/proc`.
pub fn descendants(root: u32) -> Vec<u32> {
    let Some(children) = children_of(root) else {
        return descendants_by_scan(root);
    };
    let mut tree = vec![root];
    tree.extend(children);
    let mut next = 1;
    while let Some(&pid) = tree.get(next) {
        // A process that ended between the two reads has no children left to list.
        tree.extend(children_of(pid).unwrap_or_default());
        next += 1;
    }
    tree
}

/// The children of every thread of `pid`, or `None` when the kernel keeps no child lists (or
/// `pid` is gone).
fn children_of(pid: u32) -> Option<Vec<u32>> {
    let mut children = Vec::new();
    let mut listed = false;
    for task in fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let Ok(list) = fs::read_to_string(task.path().join("children")) else { continue };
        listed = true;
        children.extend(list.split_whitespace().filter_map(|child| child.parse::<u32>().ok()));
    }
    listed.then_some(children)
}

/// `root` and every process descending from it, from one scan of `/proc`.
fn descendants_by_scan(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some(parent) = parent_of(&stat) {
            children.entry(parent).or_default().push(pid);
        }
    }
    let mut tree = vec![root];
    let mut next = 0;
    while let Some(&pid) = tree.get(next) {
        tree.extend(children.get(&pid).into_iter().flatten());
        next += 1;
    }
    tree
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    #[test]
    fn forked_copies_share_their_pages_in_pss_but_not_in_rss() -> io::Result<()> {
        // Four `sleep`s: the same executable and libraries, mapped four times.
        let mut children: Vec<_> =
            (0..4).map(|_| Command::new("sleep").arg("5").spawn()).collect::<Result<_, _>>()?;
        std::thread::sleep(Duration::from_millis(50));
        let pids: Vec<u32> = children.iter().map(std::process::Child::id).collect();
        let page = page_size();
        let rss: u64 = pids.iter().filter_map(|&pid| resident_pages(pid)).sum::<u64>() * page;
        let pss: u64 = pids.iter().filter_map(|&pid| proportional_bytes(pid)).sum();
        for child in &mut children {
            child.kill()?;
            child.wait()?;
        }
        assert!(pss > 0 && pss < rss, "PSS {pss} against RSS {rss}");
        Ok(())
    }

    #[test]
    fn the_child_lists_find_what_a_scan_of_proc_finds() -> io::Result<()> {
        // A child with a grandchild: the shell waits for its own `sleep`.
        let mut child = Command::new("sh").args(["-c", "sleep 5 & wait"]).spawn()?;
        std::thread::sleep(Duration::from_millis(100));
        let root = std::process::id();
        let grandchildren = children_of(child.id());
        let by_lists = descendants(root);
        let by_scan = descendants_by_scan(root);
        let grandchildren = grandchildren.unwrap_or_default();
        for &pid in &grandchildren {
            // SAFETY: `kill` takes no pointers; `pid` is the shell's `sleep`, still unreaped by it.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        child.kill()?;
        child.wait()?;
        assert_eq!(grandchildren.len(), 1, "the shell's sleep: {grandchildren:?}");
        // The test harness's other children may come and go between the reads: compare this
        // child's branch.
        for tree in [&by_lists, &by_scan] {
            assert_eq!(tree.first(), Some(&root), "{tree:?}");
            assert!(tree.contains(&child.id()) && tree.contains(&grandchildren[0]), "{tree:?}");
        }
        Ok(())
    }

    #[test]
    fn parent_pid_parses_around_odd_command_names() {
        assert_eq!(parent_of("12 (a b) c) S 7 12 12 0"), Some(7));
        assert_eq!(parent_of("12 (x) R 1 2 3"), Some(1));
        assert_eq!(parent_of("garbage"), None);
    }

    #[test]
    fn a_child_is_in_our_tree_and_its_cpu_time_is_reaped() -> io::Result<()> {
        let child =
            Command::new("sh").args(["-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"]).spawn()?;
        assert!(descendants(std::process::id()).contains(&child.id()));
        assert!(resident_pages(child.id()).is_some_and(|pages| pages > 0));
        let reaped = wait4(child.id())?;
        assert!(reaped.success(), "{}", reaped.describe());
        assert!(reaped.max_rss_bytes > 0);
        assert!(cpu_time() > Duration::ZERO);
        Ok(())
    }

    #[test]
    fn a_tree_that_grows_just_after_the_first_pss_sum_is_summed_again() -> io::Result<()> {
        // The first sum comes as the shell starts; its eight children come 30 ms later, within
        // PSS_MIN_GAP samples, and then the tree stays as it is until the sampler stops, before
        // the next PSS_EVERY sample: only the regrowth rule sums the grown tree.
        let mut child = Command::new("sh")
            .args(["-c", "sleep 0.03; for i in 1 2 3 4 5 6 7 8; do sleep 5 & done; wait"])
            .spawn()?;
        let sampler = RssSampler::start(child.id())?;
        std::thread::sleep(Duration::from_millis(150));
        let tree = descendants(child.id());
        let pss_now: u64 = tree.iter().filter_map(|&pid| proportional_bytes(pid)).sum();
        let peaks = sampler.finish();
        for &pid in &tree {
            // SAFETY: `kill` takes no pointers; the pids are the shell's and its `sleep`s.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        child.wait()?;
        assert!(tree.len() >= 9, "{tree:?}");
        assert!(
            peaks.pss_bytes * 4 >= pss_now * 3,
            "the grown tree's PSS ({pss_now}) was not summed: {peaks:?}"
        );
        Ok(())
    }

    #[test]
    fn the_sampler_sees_a_sleeping_child() -> io::Result<()> {
        let mut child = Command::new("sleep").arg("0.2").spawn()?;
        let sampler = RssSampler::start(child.id())?;
        std::thread::sleep(Duration::from_millis(50));
        let peaks = sampler.finish();
        child.wait()?;
        assert!(peaks.rss_bytes > 0);
        assert!(peaks.pss_bytes > 0 && peaks.pss_bytes <= peaks.rss_bytes, "{peaks:?}");
        Ok(())
    }
}
