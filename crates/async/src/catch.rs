//! Panics inside futures: [`CatchPanic`] turns a panic while a future is polled into
//! [`JobError::Panicked`], with the same message every other executor reports.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use fanout_core::JobError;
use fanout_core::plumbing::catch_panic;
use pin_project_lite::pin_project;

pin_project! {
    /// Polls `inner`, catching a panic of any poll as [`JobError::Panicked`].
    ///
    /// After a panic the inner future is never polled again (it is dropped with the wrapper).
    #[derive(Debug)]
    #[must_use = "futures do nothing unless polled"]
    pub(crate) struct CatchPanic<F> {
        #[pin]
        inner: F,
        panicked: bool,
    }
}

impl<F> CatchPanic<F> {
    pub(crate) fn new(inner: F) -> Self {
        Self { inner, panicked: false }
    }
}

impl<F: Future> Future for CatchPanic<F> {
    type Output = Result<F::Output, JobError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if *this.panicked {
            // Only reachable if the caller polls again after `Ready`, which futures forbid.
            return Poll::Ready(Err(JobError::Panicked {
                message: "the future was polled again after it had panicked".to_owned(),
            }));
        }
        // `catch_panic` is fanout-core's one place that turns a panic payload into a message,
        // so a panicking future reads exactly like a panicking blocking job.
        match catch_panic(|| this.inner.poll(cx)) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(error) => {
                *this.panicked = true;
                Poll::Ready(Err(error))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;

    fn poll_once<F: Future>(future: F) -> Poll<F::Output> {
        let mut cx = Context::from_waker(Waker::noop());
        let mut future = std::pin::pin!(future);
        future.as_mut().poll(&mut cx)
    }

    #[test]
    fn a_ready_future_passes_through() {
        assert_eq!(poll_once(CatchPanic::new(async { 7 })), Poll::Ready(Ok(7)));
    }

    #[test]
    fn a_panic_becomes_panicked_with_its_message() {
        let result = poll_once(CatchPanic::new(async {
            if true {
                panic!("boom {}", 42);
            }
        }));
        assert_eq!(result, Poll::Ready(Err(JobError::Panicked { message: "boom 42".to_owned() })));
    }
}
