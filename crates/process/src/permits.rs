//! Rate limits across processes: the parent's *permit thread*, which serves every permit of a
//! pool from one limit, and [`RemoteSource`], how a worker's job asks its parent for one.
//!
//! A limiter inside each worker would multiply the rate by the number of workers, so workers
//! keep none: a job's `limit::acquire()` in a worker sends `Acquire` on its reply channel and
//! blocks on its grant channel; the dispatcher passes the request to the permit thread, which
//! takes a permit from the pool's source and sends the grant straight to the worker. The
//! dispatcher's own per-job permits come from the same thread, in the same order, so every
//! permit of the pool, dispatched or asked for, comes out of one limit. The source may itself
//! be remote: a pool built inside a worker draws from its root's limit through the worker's
//! [`RemoteSource`], which is why the permit thread may block and the dispatcher never does.
//!
//! **A grant is good for two periods.** Between the parent's grant and the worker's request
//! lie a channel and a process wake-up. On a loaded machine that wake-up can take tens of
//! milliseconds, and a worker that wakes late sends its request beside those of the permits
//! granted after it: traced at 500/s on two loaded cores, five workers woken together sent
//! five requests within 0.4 ms, over a server's burst of 5, and met `429` (issue 13). So each
//! [`Grant`] carries when it was granted (`CLOCK_MONOTONIC`, the same clock in every process
//! of the machine) and for how long it is good, [`GOOD_FOR_PERIODS`] of the limit's periods;
//! a worker that receives it later than that lets it go and asks again (at most
//! [`MAX_STALE`] times, so that a machine too loaded to ever wake in time still makes
//! progress). A late permit is then lost instead of bunched: requests leave at the limit's
//! rate with at most two permits more of burst, whatever the workers' scheduling.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;
use fanout_core::limit::{PermitHandle, PermitSource, Scope};
use ipc_channel::ipc::{IpcReceiver, IpcSender};

use crate::protocol::WorkerReply;

/// How many stale grants in a row a worker lets go before it uses the next one anyway.
pub(crate) const MAX_STALE: u32 = 2;

/// How many of the limit's periods a grant stays good. Measured on the migration at 500/s,
/// 20 x 4 worker processes, two cores loaded by busy loops, five interleaved runs each: with
/// no bound, 0 to 19 `429`s a run; one period, 0 to 2 and the rate down to 381-438/s (many
/// grants let go); two periods, none, at 442-471/s.
pub(crate) const GOOD_FOR_PERIODS: u32 = 2;

/// A permit granted to a worker's job: when, and for how long it is good.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub(crate) struct Grant {
    /// `CLOCK_MONOTONIC` when it was granted, in nanoseconds.
    at: u64,
    /// How long after `at` it may be used, in nanoseconds (`u64::MAX`: no bound).
    good_for: u64,
    /// The limit's period in nanoseconds (0: unknown), for a pool nested in the worker's jobs.
    period: u64,
}

impl Grant {
    /// A permit granted now under a limit of `period` (`None`: good for ever).
    fn now(period: Option<Duration>) -> Self {
        let nanos = |duration: Duration| u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        Self {
            at: monotonic_nanos(),
            good_for: period.map_or(u64::MAX, |period| nanos(period.saturating_mul(GOOD_FOR_PERIODS))),
            period: period.map_or(0, nanos),
        }
    }

    /// Whether it came too late to be used.
    fn is_stale(&self) -> bool {
        monotonic_nanos().saturating_sub(self.at) > self.good_for
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for every process of the machine (unlike
/// `Instant`, whose values cannot cross a process boundary). 0 if it cannot be read, which
/// makes every grant look fresh.
fn monotonic_nanos() -> u64 {
    use nix::time::{ClockId, clock_gettime};
    clock_gettime(ClockId::CLOCK_MONOTONIC).map_or(0, |now| {
        let secs = u64::try_from(now.tv_sec()).unwrap_or(0);
        let nanos = u64::try_from(now.tv_nsec()).unwrap_or(0);
        secs.saturating_mul(1_000_000_000).saturating_add(nanos)
    })
}

/// What the permit thread is asked for.
pub(crate) enum PermitRequest {
    /// A permit for the dispatcher: counted in [`PermitThread::take`]'s count, then the
    /// dispatcher is woken.
    Dispatch,
    /// A permit for a worker's job: granted on the worker's channel.
    Worker(IpcSender<Grant>),
}

/// The parent's side: the thread that takes permits from the pool's source, in request order.
pub(crate) struct PermitThread {
    requests: Option<Sender<PermitRequest>>,
    /// Dispatch permits granted and not yet taken by the dispatcher.
    ready: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl PermitThread {
    /// Starts the thread; `wake` wakes the dispatcher after each dispatch permit.
    pub(crate) fn start(source: PermitHandle, wake: impl Fn() + Send + 'static) -> std::io::Result<Self> {
        let (requests, queue) = crossbeam_channel::unbounded::<PermitRequest>();
        let ready = Arc::new(AtomicUsize::new(0));
        let granted = Arc::clone(&ready);
        let thread =
            std::thread::Builder::new().name("fanout-process-permits".to_owned()).spawn(move || {
                // Ends when the dispatcher drops its sender.
                while let Ok(request) = queue.recv() {
                    source.acquire();
                    match request {
                        PermitRequest::Dispatch => {
                            granted.fetch_add(1, Ordering::AcqRel);
                            wake();
                        }
                        // A worker that died meanwhile has no receiver left: nothing to do.
                        PermitRequest::Worker(grant) => drop(grant.send(Grant::now(source.period()))),
                    }
                }
            })?;
        Ok(Self { requests: Some(requests), ready, thread: Some(thread) })
    }

    /// Asks for one more permit.
    pub(crate) fn request(&self, request: PermitRequest) {
        if let Some(requests) = &self.requests {
            let _ = requests.send(request);
        }
    }

    /// Takes a granted dispatch permit, if there is one.
    pub(crate) fn take(&self) -> bool {
        self.ready.fetch_update(Ordering::AcqRel, Ordering::Acquire, |ready| ready.checked_sub(1)).is_ok()
    }
}

impl PermitThread {
    /// Lets the thread go without waiting for it (a `Kill`): it ends after the permit it waits
    /// for, which a long `Retry-After` pause may hold up.
    pub(crate) fn detach(mut self) {
        self.requests = None;
        drop(self.thread.take());
    }
}

impl Drop for PermitThread {
    fn drop(&mut self) {
        // Closing the queue ends the thread after the request it serves now (a permit is never
        // longer away than the limit's period, or a `Retry-After` pause).
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A worker's permit source: its parent's limit, asked over the worker's channels.
pub(crate) struct RemoteSource {
    replies: IpcSender<WorkerReply>,
    grants: Mutex<IpcReceiver<Grant>>,
    scope: Scope,
    /// The limit's period, as the last grant said (nanoseconds; 0 before the first or for
    /// none): what a pool nested in this worker's jobs bounds its own grants with.
    period: AtomicU64,
}

impl RemoteSource {
    pub(crate) fn new(replies: IpcSender<WorkerReply>, grants: IpcReceiver<Grant>, scope: Scope) -> Self {
        Self { replies, grants: Mutex::new(grants), scope, period: AtomicU64::new(0) }
    }
}

impl PermitSource for RemoteSource {
    fn acquire(&self) {
        // One request at a time per worker: the grant that comes back is this request's.
        let grants = self.grants.lock().unwrap_or_else(PoisonError::into_inner);
        for stale in 0..=MAX_STALE {
            if self.replies.send(WorkerReply::Acquire).is_err() {
                // A parent that is gone closes the channel: the job goes on, and its worker
                // dies with the parent anyway.
                return;
            }
            let Ok(grant) = grants.recv() else { return };
            self.period.store(grant.period, Ordering::Relaxed);
            // A grant that came later than it is good for would send this request beside the
            // next permits' (see the module docs): let it go and ask again.
            if !grant.is_stale() || stale == MAX_STALE {
                return;
            }
        }
    }

    fn pause(&self, duration: Duration) {
        let _ = self
            .replies
            .send(WorkerReply::Pause { nanos: duration.as_nanos().min(u128::from(u64::MAX)) as u64 });
    }

    fn scope(&self) -> Scope {
        self.scope
    }

    fn period(&self) -> Option<Duration> {
        match self.period.load(Ordering::Relaxed) {
            0 => None,
            nanos => Some(Duration::from_nanos(nanos)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipc_channel::ipc;

    /// Serves a `RemoteSource::acquire` on another thread with `grants`, one per `Acquire`;
    /// returns how many it asked for.
    fn asks_for(grants: Vec<Grant>) -> usize {
        let (replies, requests) = ipc::channel::<WorkerReply>().expect("channel");
        let (grant_sender, grant_receiver) = ipc::channel::<Grant>().expect("channel");
        let source = RemoteSource::new(replies, grant_receiver, Scope::PerRequest);
        let job = std::thread::spawn(move || {
            source.acquire();
            source.period()
        });
        let mut asked = 0;
        for grant in grants {
            match requests.recv() {
                Ok(WorkerReply::Acquire) => asked += 1,
                _ => break,
            }
            if grant_sender.send(grant).is_err() {
                break;
            }
        }
        let period = job.join().expect("acquire returns");
        assert_eq!(period, Some(Duration::from_millis(2)));
        asked
    }

    fn grant(age: Duration, good_for: Duration) -> Grant {
        let nanos = |duration: Duration| u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        Grant {
            at: monotonic_nanos().saturating_sub(nanos(age)),
            good_for: nanos(good_for),
            period: nanos(Duration::from_millis(2)),
        }
    }

    #[test]
    fn a_grant_that_arrives_in_time_is_used() {
        assert_eq!(asks_for(vec![grant(Duration::ZERO, Duration::from_secs(60))]), 1);
    }

    #[test]
    fn a_grant_that_arrives_late_is_let_go_and_asked_again() {
        // Granted a second ago, good for 4 ms: a worker that sent now would bunch with the
        // permits granted since.
        let late = grant(Duration::from_secs(1), Duration::from_millis(4));
        let fresh = grant(Duration::ZERO, Duration::from_secs(60));
        assert_eq!(asks_for(vec![late, fresh]), 2);
    }

    #[test]
    fn a_worker_that_always_wakes_late_still_goes_on() {
        let late = grant(Duration::from_secs(1), Duration::from_millis(4));
        assert_eq!(asks_for(vec![late; MAX_STALE as usize + 1]), MAX_STALE as usize + 1);
    }

    #[test]
    fn a_grant_says_how_long_it_is_good() {
        let grant = Grant::now(Some(Duration::from_millis(2)));
        assert_eq!(grant.good_for, 2_000_000 * u64::from(GOOD_FOR_PERIODS));
        assert_eq!(Grant::now(None).good_for, u64::MAX);
    }
}
