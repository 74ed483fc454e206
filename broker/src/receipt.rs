//! A receipt: what a client's acknowledgement (PUBACK, PUBREC, SUBACK) waits for before it may
//! go out, counted in parties that each say once that they are done.
//!
//! The parties are the other nodes of a cluster under `cluster.acknowledge: cluster` (each holds
//! the forwarded message, has been declared dead or dropped the copy and counted the drop; see
//! `docs/cluster.md`) and, with `storage.durability: sync`, the store (what the acknowledgement
//! covers is on disk; see `docs/storage.md`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

/// How many parties an acknowledgement still waits for, and who to wake when none is left.
#[derive(Debug)]
pub struct Receipt {
    waiting: AtomicUsize,
    waker: AtomicWaker,
}

impl Receipt {
    pub fn new(parties: usize) -> Self {
        Self {
            waiting: AtomicUsize::new(parties),
            waker: AtomicWaker::new(),
        }
    }

    /// Every party is done.
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

    /// One more party to wait for; only by whoever created the receipt, before anyone waits on
    /// it.
    pub fn add_party(&self) {
        self.waiting.fetch_add(1, Ordering::AcqRel);
    }

    /// One party is done.
    pub fn party_done(&self) {
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
    fn a_receipt_is_done_and_wakes_its_waiter_when_the_last_party_is() {
        let receipt = Receipt::new(2);
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(Arc::clone(&flag));
        let mut cx = Context::from_waker(&waker);
        assert!(receipt.poll_done(&mut cx).is_pending());
        receipt.party_done();
        assert!(!receipt.is_done());
        assert!(
            !flag.0.load(Ordering::Acquire),
            "one party is still waited for"
        );
        receipt.party_done();
        assert!(receipt.is_done());
        assert!(flag.0.load(Ordering::Acquire));
        assert!(receipt.poll_done(&mut cx).is_ready());
    }
}
