//! A cancellation wait for a loop that polls it on every turn.
//!
//! `CancellationToken::cancelled()` takes the token's waiter lock on every poll that finds the token
//! still live. A connection's event loop polls its kick and shutdown waits every time its task
//! wakes — for each read, write and delivery — so that lock showed up as several percent of the
//! broker's instructions per message. This wrapper polls the inner wait only when the task's waker
//! changed; otherwise the waiter it registered earlier still wakes the same task, and reading the
//! token's flag is all a poll has to do.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use pin_project_lite::pin_project;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

pin_project! {
    /// Resolves when `token` is cancelled, like [`CancellationToken::cancelled`].
    pub(crate) struct Cancelled<'a> {
        token: &'a CancellationToken,
        #[pin]
        wait: WaitForCancellationFuture<'a>,
        registered_with: Option<Waker>,
    }
}

impl<'a> Cancelled<'a> {
    pub(crate) fn new(token: &'a CancellationToken) -> Self {
        Self {
            token,
            wait: token.cancelled(),
            registered_with: None,
        }
    }
}

impl Future for Cancelled<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if this.token.is_cancelled() {
            return Poll::Ready(());
        }
        if this
            .registered_with
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()))
        {
            return Poll::Pending;
        }
        let poll = this.wait.poll(cx);
        if poll.is_pending() {
            *this.registered_with = Some(cx.waker().clone());
        }
        poll
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use super::*;

    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_cancellation_after_repeated_polls_wakes_the_task_and_resolves() {
        let token = CancellationToken::new();
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&counter));
        let mut cx = Context::from_waker(&waker);
        let mut cancelled = Box::pin(Cancelled::new(&token));
        for _ in 0..3 {
            assert!(cancelled.as_mut().poll(&mut cx).is_pending());
        }
        token.cancel();
        assert_eq!(
            counter.0.load(Ordering::SeqCst),
            1,
            "the registered waker is woken"
        );
        assert!(cancelled.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn a_new_waker_is_registered_and_woken() {
        let token = CancellationToken::new();
        let first = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let second = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let mut cancelled = Box::pin(Cancelled::new(&token));
        let waker = Waker::from(Arc::clone(&first));
        assert!(
            cancelled
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
        let waker = Waker::from(Arc::clone(&second));
        assert!(
            cancelled
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
        token.cancel();
        assert_eq!(
            second.0.load(Ordering::SeqCst),
            1,
            "the current waker is woken"
        );
    }

    #[test]
    fn an_already_cancelled_token_resolves_at_once() {
        let token = CancellationToken::new();
        token.cancel();
        let waker = Waker::noop();
        assert!(
            Box::pin(Cancelled::new(&token))
                .as_mut()
                .poll(&mut Context::from_waker(waker))
                .is_ready()
        );
    }
}
