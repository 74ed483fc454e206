//! How others reach a connection: the [`ConnectionControl`] block that a session holds for the
//! connection attached to it. The router raises "deliveries queued" on it, the broker raises "kicked"
//! (takeover, revocation, drain, shutdown), and the connection's task, or the parking lot while the
//! connection has no task, is woken.
//!
//! Below sessions and connections on purpose: a session stores the block without knowing what a
//! connection is, and the parking lot registers where wake-ups for parked connections go
//! ([`set_parked_wake`]) instead of being called from here.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use futures_util::task::AtomicWaker;

use crate::codec::ReasonCode;

/// Where wake-ups of parked connections go: set once, by the parking lot when it starts. A
/// connection is parked only after that, so a parked id always finds it set.
static PARKED_WAKE: OnceLock<fn(u64)> = OnceLock::new();

/// Registers the parking lot's wake-up for parked connections (see `connection::park`).
pub(crate) fn set_parked_wake(wake: fn(u64)) {
    let _ = PARKED_WAKE.set(wake);
}

/// The handle by which others reach a session's connection: a request to close (with the reason the
/// connection should give the client) and the wake-up for queued deliveries.
///
/// Both wake the connection through one atomic waker slot and are read as flags, so a connection
/// waits on neither with a registered future: an idle client costs only this small block. Broker
/// shutdown reaches every connection the same way, as a kick with reason 0x8B.
#[derive(Debug, Default)]
pub struct ConnectionControl {
    /// `KICKED | reason` once the connection was asked to close; 0 until then.
    kick: AtomicU16,
    /// Set when deliveries are queued; cleared by the connection when it looks at the queue.
    queued: AtomicBool,
    /// The connection's task. An atomic slot, not a `Notify`: the router wakes a connection for
    /// every delivery, and this takes no lock on either side. It lives here rather than in the
    /// session so that a taken-over connection cannot overwrite its successor's waker.
    waker: AtomicWaker,
    /// While the connection is parked without a task (`connection::park`), the lot's id for it;
    /// 0 otherwise. A wake-up then goes to the lot, which resumes the connection in a new task.
    parked: AtomicU64,
}

/// The bit that marks [`ConnectionControl::kick`] as set, so every reason code (0x00 included) fits.
const KICKED: u16 = 0x100;

impl ConnectionControl {
    /// Tells the connection that deliveries are waiting in its session's queue.
    pub fn notify_queued(&self) {
        if self.mark_queued() {
            self.wake();
        }
    }

    /// Marks deliveries as waiting; true if the connection is to be woken for them, which the
    /// caller does with [`Self::wake`] once it holds no lock. A connection told before and not yet
    /// looking needs no second wake-up: the first is on its way, and the connection reads the flag
    /// after it. In a fan-out at full speed most deliveries find it so, and leave the connection's
    /// waker slot and reference count alone.
    pub(crate) fn mark_queued(&self) -> bool {
        // SeqCst, like the parked slot: a connection parking stores its id and then looks at the
        // flags, a notifier sets a flag and then looks at the id, and one of the two must see the
        // other's write.
        !self.queued.swap(true, Ordering::SeqCst)
    }

    /// Resolves once deliveries were queued since the last time it resolved.
    pub fn queued(&self) -> Signal<'_> {
        Signal {
            control: self,
            raised: Self::take_queued,
        }
    }

    /// Asks the connection to send DISCONNECT with `reason` (v5) and close. The first reason wins.
    pub fn kick(&self, reason: ReasonCode) {
        let first = self
            .kick
            .compare_exchange(
                0,
                KICKED | u16::from(reason.0),
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_ok();
        if first {
            self.wake();
        }
    }

    /// Wakes the connection's task, or has the parking lot resume the connection.
    pub(crate) fn wake(&self) {
        if self.parked.load(Ordering::SeqCst) != 0 {
            let parked = self.parked.swap(0, Ordering::SeqCst);
            if parked != 0 {
                if let Some(wake) = PARKED_WAKE.get() {
                    wake(parked);
                }
                return;
            }
        }
        self.waker.wake();
    }

    /// Records that the connection is parked under `id`: wake-ups go to the lot from now on. The
    /// ended task's waker is dropped, as it would keep the task's memory.
    pub(crate) fn set_parked(&self, id: u64) {
        drop(self.waker.take());
        self.parked.store(id, Ordering::SeqCst);
    }

    /// Takes the parked id back (0 if a wake-up already took it): wake-ups go to the task again.
    pub(crate) fn take_parked(&self) -> u64 {
        self.parked.swap(0, Ordering::SeqCst)
    }

    /// Whether a kick or deliveries wait, without clearing anything: a connection that is about to
    /// park looks here after recording its id, so that neither is missed.
    pub(crate) fn has_pending(&self) -> bool {
        self.kick.load(Ordering::SeqCst) != 0 || self.queued.load(Ordering::SeqCst)
    }

    /// Resolves once the connection was kicked.
    pub fn kicked(&self) -> Signal<'_> {
        Signal {
            control: self,
            raised: Self::is_kicked,
        }
    }

    pub fn is_kicked(&self) -> bool {
        self.kick.load(Ordering::Acquire) != 0
    }

    /// The reason the connection was kicked with, if it was.
    pub fn reason(&self) -> Option<ReasonCode> {
        let kick = self.kick.load(Ordering::Acquire);
        // Truncation keeps the reason byte below the KICKED bit.
        (kick != 0).then_some(ReasonCode(kick as u8))
    }

    /// Makes the next kick or delivery wake this task. Register before looking at the flags: a
    /// notification in between is then seen one way or the other.
    pub fn register(&self, waker: &Waker) {
        self.waker.register(waker);
    }

    /// Whether deliveries were queued since the last call (which clears the mark).
    pub fn take_queued(&self) -> bool {
        self.queued.swap(false, Ordering::AcqRel)
    }
}

/// Resolves once one of the control block's flags is raised: see [`ConnectionControl::queued`] and
/// [`ConnectionControl::kicked`].
#[derive(Debug)]
pub struct Signal<'a> {
    control: &'a ConnectionControl,
    /// Reads (and for deliveries, clears) the flag.
    raised: fn(&ConnectionControl) -> bool,
}

impl Future for Signal<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.control.register(cx.waker());
        if (self.raised)(self.control) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    use super::*;

    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_first_kick_reason_wins_and_wakes_the_connection() {
        let control = ConnectionControl::default();
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&counter));
        let mut cx = Context::from_waker(&waker);
        let mut kicked = Box::pin(control.kicked());
        assert!(kicked.as_mut().poll(&mut cx).is_pending());
        assert_eq!(control.reason(), None);

        control.kick(ReasonCode::SESSION_TAKEN_OVER);
        control.kick(ReasonCode::SERVER_SHUTTING_DOWN);
        assert_eq!(counter.0.load(Ordering::SeqCst), 1, "woken once");
        assert_eq!(control.reason(), Some(ReasonCode::SESSION_TAKEN_OVER));
        assert!(kicked.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn a_kick_with_reason_zero_still_counts() {
        let control = ConnectionControl::default();
        control.kick(ReasonCode::SUCCESS);
        assert!(control.is_kicked());
        assert_eq!(control.reason(), Some(ReasonCode::SUCCESS));
    }

    #[test]
    fn queued_deliveries_are_seen_once() {
        let control = ConnectionControl::default();
        control.notify_queued();
        assert!(control.take_queued());
        assert!(!control.take_queued());
    }

    #[test]
    fn a_connection_is_woken_once_per_look_at_its_queue() {
        let control = ConnectionControl::default();
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&counter));
        control.register(&waker);
        control.notify_queued();
        control.register(&waker);
        control.notify_queued();
        assert_eq!(
            counter.0.load(Ordering::SeqCst),
            1,
            "the second delivery finds the connection told and not yet looking"
        );
        assert!(control.take_queued());
        control.register(&waker);
        control.notify_queued();
        assert_eq!(
            counter.0.load(Ordering::SeqCst),
            2,
            "once it has looked, the next delivery wakes it again"
        );
    }
}
