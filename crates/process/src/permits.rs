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

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;
use fanout_core::limit::{PermitHandle, PermitSource, Scope};
use ipc_channel::ipc::{IpcReceiver, IpcSender};

use crate::protocol::WorkerReply;

/// What the permit thread is asked for.
pub(crate) enum PermitRequest {
    /// A permit for the dispatcher: counted in [`PermitThread::take`]'s count, then the
    /// dispatcher is woken.
    Dispatch,
    /// A permit for a worker's job: granted on the worker's channel.
    Worker(IpcSender<()>),
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
                        PermitRequest::Worker(grant) => drop(grant.send(())),
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
    grants: Mutex<IpcReceiver<()>>,
    scope: Scope,
}

impl RemoteSource {
    pub(crate) fn new(replies: IpcSender<WorkerReply>, grants: IpcReceiver<()>, scope: Scope) -> Self {
        Self { replies, grants: Mutex::new(grants), scope }
    }
}

impl PermitSource for RemoteSource {
    fn acquire(&self) {
        // One request at a time per worker: the grant that comes back is this request's.
        let grants = self.grants.lock().unwrap_or_else(PoisonError::into_inner);
        if self.replies.send(WorkerReply::Acquire).is_ok() {
            // A parent that is gone closes the channel: the job goes on, and its worker dies
            // with the parent anyway.
            let _ = grants.recv();
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
}
