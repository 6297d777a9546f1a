//! The behaviours every executor must show, as a macro that instantiates them per executor.

/// `conformance_suite!(module, Type, build, inline = bool)`: `build` turns a worker count into
/// `Result<Type, BuildError>`; `inline` says the executor runs jobs on the caller's thread.
macro_rules! conformance_suite {
    ($module:ident, $executor:ty, $build:expr, inline = $inline:expr) => {
        mod $module {
            use std::cell::Cell;
            use std::time::Duration;

            use fanout::{BuildError, Executor, JobError, Shutdown, as_completed, wait_any};

            #[allow(unused_imports)]
            use super::*;
            use crate::jobs::*;

            const WORKERS: usize = 4;
            const INLINE: bool = $inline;

            fn build(workers: usize) -> Result<$executor, BuildError> {
                ($build)(workers)
            }

            fn executor() -> $executor {
                build(WORKERS).expect("the executor builds")
            }

            /// A job that builds an executor of the same kind and uses it: the article's nested
            /// pools, which Python refuses ("daemonic processes are not allowed to have children").
            fn nested_sum_of_squares(n: u64) -> u64 {
                let inner = build(2).expect("a nested executor builds inside a job");
                inner.map(square, 0..n).into_iter().map(|r| r.expect("inner job")).sum()
            }

            #[test]
            fn map_keeps_input_order_over_10_000_inputs() {
                let results = executor().map(square, 0..10_000_u64);
                assert_eq!(results.len(), 10_000);
                for (i, result) in results.into_iter().enumerate() {
                    assert_eq!(result, Ok((i as u64) * (i as u64)), "input {i}");
                }
            }

            #[test]
            fn empty_input_gives_empty_output() {
                let executor = executor();
                assert!(executor.map(square, Vec::<u64>::new()).is_empty());
                assert_eq!(executor.map_unordered(square, 0..0_u64).count(), 0);
            }

            #[test]
            fn one_panicking_input_leaves_the_other_999_correct() {
                let executor = executor();
                let results = executor.map(double_or_panic_at_500, 0..1_000_u64);
                assert_eq!(results.len(), 1_000);
                for (i, result) in results.iter().enumerate() {
                    if i == 500 {
                        let Err(JobError::Panicked { message }) = result else {
                            panic!("input 500 should report its panic, got {result:?}");
                        };
                        assert!(message.contains("input 500 fails on purpose"), "{message}");
                    } else {
                        assert_eq!(*result, Ok(i as u64 * 2), "input {i}");
                    }
                }
                // The executor is still whole after the panic.
                assert_eq!(executor.map(square, 0..100_u64).into_iter().filter(Result::is_ok).count(), 100);
            }

            #[test]
            fn map_unordered_yields_every_index_exactly_once() {
                let mut seen: Vec<(usize, u64)> = executor()
                    .map_unordered(square, 0..2_000_u64)
                    .map(|(index, result)| (index, result.expect("job")))
                    .collect();
                seen.sort_unstable();
                assert_eq!(seen.len(), 2_000);
                for (expected, (index, value)) in seen.into_iter().enumerate() {
                    assert_eq!(index, expected);
                    assert_eq!(value, (expected * expected) as u64);
                }
            }

            #[test]
            fn map_unordered_pulls_inputs_lazily() {
                let pulled = Cell::new(0_usize);
                let executor = executor();
                let inputs = (0..1_000_000_u64).inspect(|_| pulled.set(pulled.get() + 1));
                let first: Vec<_> = executor.map_unordered(square, inputs).take(10).collect();
                assert_eq!(first.len(), 10);
                // A bounded window, not the whole million, was read to produce ten results.
                assert!(pulled.get() < 10_000, "pulled {} inputs for 10 results", pulled.get());
            }

            #[test]
            fn imap_yields_in_input_order_over_an_endless_input() {
                let executor = executor();
                let first: Vec<_> = executor.imap(square, 0_u64..).take(3_000).collect();
                for (i, result) in first.into_iter().enumerate() {
                    assert_eq!(result, Ok((i as u64) * (i as u64)), "input {i}");
                }
            }

            #[test]
            fn imap_holds_a_bounded_window_behind_a_slow_input() {
                let pulled = Cell::new(0_usize);
                let executor = executor();
                let inputs = (0_u64..).inspect(|_| pulled.set(pulled.get() + 1));
                let mut results = executor.imap(slow_first, inputs);
                // Input 0 takes 100 ms while the others finish at once: they wait behind it in
                // a buffer bounded by the window, and no more inputs are pulled meanwhile.
                assert_eq!(results.next(), Some(Ok(0)));
                assert!(pulled.get() < 10_000, "pulled {} inputs for the first result", pulled.get());
                assert_eq!(results.next(), Some(Ok(1)));
            }

            #[test]
            fn map_and_imap_agree_with_panics_in_chunks() {
                let executor = executor();
                let collected: Vec<_> = executor.imap(double_or_panic_at_500, 0..1_000_u64).collect();
                assert_eq!(collected, executor.map(double_or_panic_at_500, 0..1_000_u64));
            }

            #[test]
            fn a_handle_can_be_polled_without_blocking() {
                let executor = executor();
                let mut handle = executor.submit(sleep_ms, 200);
                if !INLINE {
                    assert_eq!(handle.try_wait(), None, "a running job has no result yet");
                    assert!(!handle.is_finished());
                }
                assert_eq!(handle.wait_timeout(Duration::from_secs(60)), Ok(200));
                assert!(handle.is_finished());
                assert_eq!(handle.try_wait(), Some(Err(JobError::ResultTaken)));
                assert_eq!(handle.wait_timeout(Duration::from_millis(1)), Err(JobError::ResultTaken));
            }

            #[test]
            fn cancel_stops_a_queued_job_and_not_a_running_one() {
                let executor = build(1).expect("builds");
                let started = marker_path(concat!(stringify!($module), "-running"));
                let never = marker_path(concat!(stringify!($module), "-never"));
                let running = executor.submit(mark_started_then_sleep, (started.clone(), 200));
                if !INLINE {
                    while !std::path::Path::new(&started).exists() {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                let queued = executor.submit(mark_started_then_sleep, (never.clone(), 0));
                assert!(!running.cancel(), "a job that started cannot be cancelled");
                if INLINE {
                    assert!(!queued.cancel(), "an inline executor ran it already");
                    assert_eq!(queued.wait(), Ok(0));
                } else {
                    assert!(queued.cancel(), "a queued job can be cancelled");
                    assert!(queued.is_finished());
                    assert_eq!(queued.wait(), Err(JobError::Cancelled));
                }
                assert_eq!(running.wait(), Ok(200));
                executor.shutdown(Shutdown::Finish);
                assert_eq!(std::path::Path::new(&never).exists(), INLINE, "a cancelled job never runs");
                let _ = std::fs::remove_file(&started);
                let _ = std::fs::remove_file(&never);
            }

            #[test]
            fn as_completed_and_wait_any_see_every_job() {
                let executor = executor();
                let durations = [120_u64, 10, 60, 0];
                let handles: Vec<_> = durations.iter().map(|&ms| executor.submit(sleep_ms, ms)).collect();
                assert!(wait_any(&handles).is_some_and(|index| index < durations.len()));
                let mut seen: Vec<(usize, u64)> = as_completed(handles)
                    .map(|(position, result)| (position, result.expect("job")))
                    .collect();
                seen.sort_unstable();
                assert_eq!(seen, [(0, 120), (1, 10), (2, 60), (3, 0)]);
            }

            #[test]
            fn submit_then_wait() {
                let executor = executor();
                let handles: Vec<_> = (0..20_u64).map(|x| executor.submit(square, x)).collect();
                for (x, handle) in (0..20_u64).zip(handles) {
                    assert_eq!(handle.wait(), Ok(x * x));
                }
            }

            #[test]
            fn wait_timeout_reports_timed_out_and_the_job_goes_on() {
                let executor = executor();
                let mut handle = executor.submit(sleep_ms, 300);
                if INLINE {
                    assert_eq!(handle.wait_timeout(Duration::from_millis(1)), Ok(300));
                    return;
                }
                let timeout = Duration::from_millis(5);
                assert_eq!(handle.wait_timeout(timeout), Err(JobError::WaitTimedOut { waited: timeout }));
                assert_eq!(handle.wait_timeout(Duration::from_secs(60)), Ok(300));
            }

            #[test]
            fn one_mib_input_and_output() {
                let input: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
                let mut expected = input.clone();
                expected.reverse();
                let results = executor().map(reversed, vec![input.clone(), input]);
                assert_eq!(results, [Ok(expected.clone()), Ok(expected)]);
            }

            #[test]
            fn shutdown_can_cancel_queued_jobs() {
                let executor = build(1).expect("builds");
                let marker = marker_path(concat!(stringify!($module), "-cancel"));
                let running = executor.submit(mark_started_then_sleep, (marker.clone(), 100));
                if !INLINE {
                    // Wait until the one worker is busy, so that what follows is queued.
                    while !std::path::Path::new(&marker).exists() {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                let queued: Vec<_> = (0..20).map(|_| executor.submit(sleep_ms, 10)).collect();
                executor.shutdown(Shutdown::CancelQueued);
                let _ = std::fs::remove_file(&marker);
                assert_eq!(running.wait(), Ok(100), "a running job finishes");
                let expected = if INLINE { Ok(10) } else { Err(JobError::Cancelled) };
                for handle in queued {
                    assert_eq!(handle.wait(), expected);
                }
            }

            #[test]
            fn kill_cancels_queued_jobs_and_kills_running_ones_at_once() {
                let executor = build(1).expect("builds");
                let marker = marker_path(concat!(stringify!($module), "-kill"));
                let watch = executor.progress_watch();
                // Far longer than `Kill` may take; inline, the job simply runs.
                let running_ms = if INLINE { 10 } else { 60_000 };
                let running = executor.submit(mark_started_then_sleep, (marker.clone(), running_ms));
                if !INLINE {
                    while !std::path::Path::new(&marker).exists() {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                let queued: Vec<_> = (0..5).map(|_| executor.submit(sleep_ms, 10)).collect();
                let killed_at = std::time::Instant::now();
                executor.shutdown(Shutdown::Kill);
                let took = killed_at.elapsed();
                let _ = std::fs::remove_file(&marker);
                // A guard against a hang, generous for a loaded machine; the target is 1 s.
                assert!(took < Duration::from_secs(10), "Kill took {took:?}");
                let (running_result, queued_result) =
                    if INLINE { (Ok(10), Ok(10)) } else { (Err(JobError::Killed), Err(JobError::Cancelled)) };
                assert_eq!(running.wait(), running_result);
                for handle in queued {
                    assert_eq!(handle.wait(), queued_result);
                }
                let progress = watch.snapshot();
                assert_eq!(progress.submitted, 6);
                assert_eq!(progress.pending(), 0, "{progress:?}");
                assert_eq!(progress.killed, u64::from(!INLINE));
                assert_eq!(progress.cancelled, if INLINE { 0 } else { 5 });
            }

            #[test]
            fn progress_counts_add_up() {
                let executor = executor();
                assert_eq!(executor.progress(), fanout::Progress::default());
                let results = executor.map(double_or_panic_at_500, 0..1_000_u64);
                assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1);
                assert_eq!(executor.imap(square, 0..100_u64).count(), 100);
                assert_eq!(executor.map_unordered(square, 0..50_u64).count(), 50);
                assert_eq!(executor.submit(square, 3).wait(), Ok(9));
                let progress = executor.progress();
                assert_eq!(progress.submitted, 1_151, "{progress:?}");
                assert_eq!(progress.started, 1_151, "{progress:?}");
                assert_eq!(progress.succeeded, 1_150, "{progress:?}");
                assert_eq!(progress.failed, 1, "{progress:?}");
                assert_eq!((progress.cancelled, progress.expired, progress.killed), (0, 0, 0));
                assert_eq!(progress.pending(), 0);
            }

            #[test]
            fn drop_finishes_queued_jobs() {
                let executor = build(2).expect("builds");
                let handles: Vec<_> = (0..6).map(|_| executor.submit(sleep_ms, 10)).collect();
                #[allow(dropping_copy_types)]
                drop(executor);
                for handle in handles {
                    assert_eq!(handle.wait(), Ok(10));
                }
            }

            #[test]
            fn a_job_can_build_and_use_its_own_executor() {
                let results = executor().map(nested_sum_of_squares, [10_u64, 20, 30]);
                let expected = |n: u64| (0..n).map(|x| x * x).sum::<u64>();
                assert_eq!(results, [Ok(expected(10)), Ok(expected(20)), Ok(expected(30))]);
            }

            #[test]
            fn tuple_inputs_carry_multiple_arguments() {
                let executor = executor();
                assert_eq!(executor.map(add, [(1, 2), (30, 40)]), [Ok(3), Ok(70)]);
                assert_eq!(executor.map(label, [("a".to_owned(), 3)]), [Ok("ax3".to_owned())]);
            }

            #[test]
            fn zero_workers_is_a_construction_error() {
                if INLINE {
                    return;
                }
                assert!(matches!(build(0), Err(BuildError::ZeroWorkers)));
            }

            #[test]
            fn reports_its_name_and_workers() {
                let executor = executor();
                assert!(["serial", "thread", "process", "async", "redis"].contains(&executor.name()));
                assert_eq!(executor.workers(), if INLINE { 1 } else { WORKERS });
            }
        }
    };
}
