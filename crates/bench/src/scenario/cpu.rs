//! `cpu`: a fixed amount of hashing per job (FNV-1a over a 4 KiB buffer, [`ROUNDS`] bytes,
//! ~20 ms in a release build on the reference machine), where threads and processes differ
//! from the HTTP scenarios: the work needs cores, not waiting. The time scale does not apply.
//!
//! The ideal comes from the per-job time measured serially in the run's own process just
//! before the run (the fastest of [`CALIBRATION_RUNS`]), times `ceil(jobs / min(workers,
//! cores))` with `cores` = [`std::thread::available_parallelism`]. Every output is checked
//! against a serial computation after the run.
//!
//! With `--executor async` the jobs go through the `Executor` trait, like every executor's: to
//! the async executor's blocking pool, at most `--workers` at a time (asyncio's
//! `run_in_executor`). That is a thread pool with one more hop per job, and the row shows it:
//! async cannot beat threads at CPU work. Hashing inside a future instead would hold the event
//! loop, one job at a time on one core whatever `--workers` says: the stall that
//! `--scenario blocking-on-loop` measures with blocking requests.

use std::hint::black_box;
use std::time::{Duration, Instant};

use fanout::Executor;
use fanout_core::JobError;

use super::{
    RunOutcome, RunSpec, ScenarioError, Tally, map_with, progress_bar, rerun_expired, timed_resilient,
};
use crate::ideal;

/// Jobs when `--jobs` is not given.
pub const DEFAULT_JOBS: usize = 32;

/// Bytes hashed by one job.
pub const ROUNDS: usize = 1 << 24;

/// Serial runs of one job before the run; the fastest is the per-job time.
pub const CALIBRATION_RUNS: usize = 3;

const BUFFER: usize = 4096;
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The job: hashes [`ROUNDS`] bytes of a buffer derived from `index`.
pub fn hash_job(index: u64) -> u64 {
    let mut state = index;
    let mut buffer = [0_u8; BUFFER];
    for chunk in buffer.chunks_exact_mut(8) {
        chunk.copy_from_slice(&splitmix64(&mut state).to_le_bytes());
    }
    let mut hash = FNV_OFFSET;
    for _ in 0..ROUNDS / BUFFER {
        for &byte in &buffer {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(FNV_PRIME);
        }
    }
    hash
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The fastest of a few serial runs of one job, in this process.
fn per_job_time() -> Duration {
    (0..CALIBRATION_RUNS)
        .map(|run| {
            let start = Instant::now();
            black_box(hash_job(black_box(u64::MAX - run as u64)));
            start.elapsed()
        })
        .min()
        .unwrap_or_default()
}

/// Runs `spec.jobs` hashing jobs and checks them against a serial computation.
pub(super) fn run(spec: &RunSpec) -> Result<RunOutcome, ScenarioError> {
    let per_job = per_job_time();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let inputs: Vec<u64> = (0..spec.jobs as u64).collect();
    let bar = progress_bar(spec);
    let (((results, reruns, progress), worker_retries), timing) = timed_resilient(spec, None, |executor| {
        let bar = bar.as_ref();
        let mut results = map_with(bar, executor, hash_job, inputs.clone());
        // Pure: a hash whose job expired is computed again (and expires again, if the limit
        // is shorter than a job: the rounds are bounded).
        let reruns = rerun_expired(&mut results, spec.rerun_rounds, |expired| {
            map_with(
                bar,
                executor,
                hash_job,
                expired.iter().filter_map(|&i| inputs.get(i).copied()).collect(),
            )
        });
        (results, reruns, executor.progress())
    })?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let ideal = ideal::cpu(per_job, spec.jobs, spec.effective_workers(), cores);
    let mut tally = verify(results).with_runs(reruns, Some(progress));
    tally.worker_retries = worker_retries;
    Ok(tally.outcome(timing, ideal))
}

/// Checks that result `i` is `hash_job(i)`. Jobs cannot be duplicated or lost silently here:
/// `map` returns one result per input, and a missing one is an error.
fn verify(results: Vec<Result<u64, JobError>>) -> Tally {
    let mut tally = Tally::default();
    for (index, result) in (0_u64..).zip(results) {
        match result {
            Ok(hash) if hash == hash_job(index) => tally.ok += 1,
            Ok(hash) => tally.error(format!("job {index}: wrong hash {hash:016x}")),
            Err(error) => {
                tally.lost += 1;
                tally.error(format!("job {index}: {error}"));
            }
        }
    }
    tally.verified = tally.errors == 0;
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_deterministic_and_depends_on_the_index() {
        assert_eq!(hash_job(1), hash_job(1));
        assert_ne!(hash_job(1), hash_job(2));
    }

    #[test]
    fn wrong_and_missing_hashes_are_counted() {
        let tally = verify(vec![Ok(hash_job(0)), Ok(0), Err(JobError::Cancelled)]);
        assert_eq!((tally.ok, tally.errors, tally.lost), (1, 2, 1));
        assert!(!tally.verified);
    }
}
