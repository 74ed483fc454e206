//! The receipt for a message forwarded to peers under `cluster.acknowledge: cluster`: its
//! publisher's PUBACK or PUBREC waits until every peer the message went to holds it.
//!
//! A peer *holds* a copy once it has handed it to its own subscribers' sessions and said so with a
//! [`Frame::ForwardAck`](super::wire::Frame::ForwardAck). A peer that is declared dead, or whose
//! queue had no room for the copy, counts as done too: the first will never hold it, and the second
//! dropped it and counted the drop (see `docs/cluster.md`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

/// How many peers a forwarded message still waits for, and who to wake when none is left.
#[derive(Debug)]
pub struct Receipt {
    waiting: AtomicUsize,
    waker: AtomicWaker,
}

impl Receipt {
    pub(super) fn new(peers: usize) -> Self {
        Self {
            waiting: AtomicUsize::new(peers),
            waker: AtomicWaker::new(),
        }
    }

    /// Every peer holds the message (or is done with it).
    pub fn is_done(&self) -> bool {
        self.waiting.load(Ordering::Acquire) == 0
    }

    /// Ready once [`Self::is_done`]; otherwise wakes `cx` when it is.
    pub fn poll_done(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.is_done() {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // Done between the first look and the registration: the wake went to the old waker.
        if self.is_done() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// One peer holds the message, died, or dropped it.
    pub(super) fn peer_done(&self) {
        if self.waiting.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use std::task::{Wake, Waker};

    use super::*;

    struct Flag(AtomicBool);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::Release);
        }
    }

    #[test]
    fn a_receipt_is_done_and_wakes_its_waiter_when_the_last_peer_is() {
        let receipt = Receipt::new(2);
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(Arc::clone(&flag));
        let mut cx = Context::from_waker(&waker);
        assert!(receipt.poll_done(&mut cx).is_pending());
        receipt.peer_done();
        assert!(!receipt.is_done());
        assert!(
            !flag.0.load(Ordering::Acquire),
            "one peer is still waited for"
        );
        receipt.peer_done();
        assert!(receipt.is_done());
        assert!(flag.0.load(Ordering::Acquire));
        assert!(receipt.poll_done(&mut cx).is_ready());
    }
}
