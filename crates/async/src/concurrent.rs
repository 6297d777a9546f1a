//! [`map_concurrent`]: bounded concurrency *inside* one future, the async form of a nested
//! pool. The futures it runs are polled by the task that awaits it: no thread, no runtime and
//! no spawn of their own, so it works in any async context, on any runtime.

use std::future::Future;

use fanout_core::JobError;
use fanout_core::plumbing::catch_panic;
use futures_util::stream::{FuturesUnordered, StreamExt};

use crate::catch::CatchPanic;

/// Runs `f` on every input with at most `limit` futures in flight, and returns the results in
/// input order, each with its own `Result` ([`JobError::Panicked`] for a future or an `f`
/// that panicked), like every other fanout map.
///
/// Inputs are pulled lazily, as futures complete. A `limit` of 0 is taken as 1. The futures
/// need not be `Send` or `'static`: they run inside the awaiting future, so they may borrow
/// from it; they make progress only while it is polled.
///
/// The ticket migration uses it for a ticket's attachments: the ticket's future is one of the
/// executor's `workers` in flight, and its attachments are copied `limit` at a time inside it.
///
/// ```
/// use std::time::Duration;
/// use fanout_async::{AsyncExecutor, map_concurrent};
///
/// async fn copy(attachment: u64) -> u64 {
///     tokio::time::sleep(Duration::from_millis(5)).await; // download + upload
///     attachment
/// }
///
/// async fn migrate(ticket: u64) -> usize {
///     let attachments = (0..ticket).collect::<Vec<u64>>();
///     // At most 4 attachments of this ticket in flight at once, inside this future.
///     let copied = map_concurrent(4, attachments, copy).await;
///     copied.into_iter().filter(Result::is_ok).count()
/// }
///
/// let executor = AsyncExecutor::new(8)?; // 8 tickets in flight
/// assert_eq!(executor.map_async(migrate, [3, 0, 5]), [Ok(3), Ok(0), Ok(5)]);
/// # Ok::<(), fanout_core::BuildError>(())
/// ```
pub async fn map_concurrent<I, F, Fut>(
    limit: usize,
    inputs: impl IntoIterator<Item = I>,
    mut f: F,
) -> Vec<Result<Fut::Output, JobError>>
where
    F: FnMut(I) -> Fut,
    Fut: Future,
{
    let limit = limit.max(1);
    let mut inputs = inputs.into_iter().enumerate();
    let mut results: Vec<Option<Result<Fut::Output, JobError>>> = Vec::new();
    let mut in_flight = FuturesUnordered::new();
    let mut exhausted = false;
    loop {
        while !exhausted && in_flight.len() < limit {
            let Some((index, input)) = inputs.next() else {
                exhausted = true;
                break;
            };
            if index >= results.len() {
                results.resize_with(index + 1, || None);
            }
            match catch_panic(|| f(input)) {
                Ok(future) => in_flight.push(indexed(index, future)),
                Err(error) => results[index] = Some(Err(error)),
            }
        }
        match in_flight.next().await {
            Some((index, result)) => results[index] = Some(result),
            None if exhausted => break,
            None => {}
        }
    }
    // Every input was either answered on the spot or pushed and awaited to completion.
    results.into_iter().map(|slot| slot.unwrap_or(Err(JobError::Cancelled))).collect()
}

async fn indexed<Fut: Future>(index: usize, future: Fut) -> (usize, Result<Fut::Output, JobError>) {
    (index, CatchPanic::new(future).await)
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::time::Duration;

    use super::*;

    fn run<F: Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(|rt| rt.block_on(future))
            .unwrap()
    }

    #[test]
    fn results_come_back_in_input_order_with_at_most_limit_in_flight() {
        let running = Cell::new(0_usize);
        let peak = Cell::new(0_usize);
        let results = run(map_concurrent(3, 0..20_u64, |x| {
            let (running, peak) = (&running, &peak);
            async move {
                running.set(running.get() + 1);
                peak.set(peak.get().max(running.get()));
                // Later inputs finish first, so completion order differs from input order.
                tokio::time::sleep(Duration::from_millis(20 - x)).await;
                running.set(running.get() - 1);
                x * 2
            }
        }));
        assert_eq!(results, (0..20).map(|x| Ok(x * 2)).collect::<Vec<_>>());
        assert_eq!(peak.get(), 3);
    }

    #[test]
    fn panics_are_reported_per_input() {
        let results = run(map_concurrent(2, 0..4_u64, |x| {
            assert!(x != 1, "f panics on {x}");
            async move {
                assert!(x != 2, "future panics on {x}");
                x
            }
        }));
        assert_eq!(results[0], Ok(0));
        assert_eq!(results[1], Err(JobError::Panicked { message: "f panics on 1".to_owned() }));
        assert_eq!(results[2], Err(JobError::Panicked { message: "future panics on 2".to_owned() }));
        assert_eq!(results[3], Ok(3));
    }

    #[test]
    fn zero_limit_is_one_and_empty_input_is_empty() {
        assert_eq!(run(map_concurrent(0, [5_u64], |x| async move { x })), [Ok(5)]);
        assert!(run(map_concurrent(4, Vec::<u64>::new(), |x| async move { x })).is_empty());
    }
}
