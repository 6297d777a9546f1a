//! The conformance suite: one set of behaviours, checked against every executor.
//!
//! Each executor gets a module from [`conformance_suite!`]; an executor that runs jobs inline
//! (`Serial`) has no queue, so the tests about queued jobs check its inline behaviour instead.

mod jobs;
#[macro_use]
mod suite;

use fanout::{AnyExecutor, AsyncExecutor, ExecutorKind, ProcessPool, Serial, ThreadPool};

conformance_suite!(serial, Serial, |_workers| Ok(Serial::new()), inline = true);
conformance_suite!(thread, ThreadPool, ThreadPool::new, inline = false);
conformance_suite!(
    thread_chunked,
    ThreadPool,
    |workers| ThreadPool::builder().workers(workers).chunk_size(7).build(),
    inline = false
);
conformance_suite!(process, ProcessPool, ProcessPool::new, inline = false);
conformance_suite!(
    process_chunked,
    ProcessPool,
    |workers| ProcessPool::builder().workers(workers).chunk_size(7).build(),
    inline = false
);
conformance_suite!(async_current, AsyncExecutor, AsyncExecutor::new, inline = false);
conformance_suite!(
    async_multi,
    AsyncExecutor,
    |workers| AsyncExecutor::builder().workers(workers).worker_threads(2).build(),
    inline = false
);

// The run-time choice keeps the trait: `AnyExecutor` passes the whole suite for every kind.
conformance_suite!(any_serial, AnyExecutor, |w| AnyExecutor::new(ExecutorKind::Serial, w), inline = true);
conformance_suite!(any_thread, AnyExecutor, |w| AnyExecutor::new(ExecutorKind::Thread, w), inline = false);
conformance_suite!(any_process, AnyExecutor, |w| AnyExecutor::new(ExecutorKind::Process, w), inline = false);
conformance_suite!(any_async, AnyExecutor, |w| AnyExecutor::new(ExecutorKind::Async, w), inline = false);
