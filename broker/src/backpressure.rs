//! Backpressure towards publishers: when a connected subscriber's queue backs up, the publishers
//! feeding it stop being read until it has drained, so a fast publisher slows to what its
//! subscribers take instead of filling their queues until messages are dropped.
//!
//! A queue backs up by length (`limits.backlog_high_water`) or by delay: once it spans
//! `limits.backlog_max_delay_ms` of publishing, oldest message to newest. The delay bounds the
//! wait in a queue that drains slowly (one publisher feeding many subscribers), which the length
//! alone lets grow to seconds; a queue fed by many publishers and drained fast backs up by length
//! first, and keeps its depth, and with it the rate of fan-in.
//!
//! The waits are bounded. A publisher waits at most `limits.backlog_max_pause_ms` for one backlog;
//! if the subscriber is still backlogged by then it is marked stalled and no publisher waits for it
//! again until it drains, so a subscriber that stops reading costs publishers one pause, not their
//! throughput. Its queue then overflows under `limits.queue_overflow` as before.
//!
//! Publishers go on in proportion to the room the subscriber makes, oldest waiter first: once the
//! queue is down to the low-water mark, enough of them to refill it to the high-water mark, more as
//! it drains further, and all of them if it runs dry. Waking every waiter at once would have each
//! bring a message or two and pause again, a wake-up, a read and a write per message; a few at a
//! time bring whole reads. Each woken publisher may publish [`MESSAGES_PER_RESUME`] messages
//! before a backlog pauses it again: publishers woken together otherwise race for the room, the
//! first to run takes it all, and the others go round their pause for a message each, which made
//! fan-in's slowest publishers several times slower than its median.
//!
//! Who does what:
//! - the router tells a publishing connection which session is backlogged (`Session::deliver`);
//! - the publishing connection stops reading and waits here ([`Backpressure::wait_for`]);
//! - the subscriber's connection, each time it takes deliveries from a queue publishers wait for,
//!   lets some of them go on ([`Backpressure::release`]); the broker lets all of them go on when
//!   the subscriber goes away ([`Backpressure::subscriber_gone`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::Limits;
use crate::identity::SessionId;
use crate::session::{BacklogMarks, OutboundQueue, Session};

/// A publisher's wait for a backlog to drain; resolves with how long it waited.
pub type BacklogWait = Pin<Box<dyn Future<Output = Duration> + Send>>;

/// Messages a publisher brings when it goes on: a read's worth of 1 KiB messages. Sets how many
/// waiters the room in a queue wakes, and each woken publisher may publish this many before a
/// backlog pauses it again (see `Connection::resume_quota`).
pub const MESSAGES_PER_RESUME: u8 = 8;

/// The broker's side of backpressure: the marks and the publishers waiting per backlogged session.
#[derive(Debug)]
pub struct Backpressure {
    marks: Option<BacklogMarks>,
    max_pause: Duration,
    /// The publishers waiting for each session; removed when none is left or all are woken.
    waiting: Mutex<foldhash::HashMap<SessionId, Arc<Waiters>>>,
}

/// The publishers waiting for one session. The counts steer how many to wake; they are estimates
/// (a waiter that times out or disconnects leaves them a little off), and a queue that runs dry
/// wakes everyone and starts them afresh.
#[derive(Debug, Default)]
struct Waiters {
    /// Wakes waiters oldest first (`notify_one` is FIFO).
    notify: Arc<Notify>,
    /// Waiting and not yet woken.
    asleep: AtomicUsize,
    /// Woken, with their messages not yet in the queue.
    resuming: AtomicUsize,
}

impl Backpressure {
    pub fn new(limits: &Limits) -> Self {
        Self {
            marks: BacklogMarks::from_limits(limits),
            max_pause: Duration::from_millis(limits.backlog_max_pause_ms),
            waiting: Mutex::default(),
        }
    }

    pub fn marks(&self) -> Option<BacklogMarks> {
        self.marks
    }

    /// How long a publisher waits for one backlog, or `None` when backpressure is off.
    pub fn max_pause(&self) -> Option<Duration> {
        self.marks.map(|_| self.max_pause)
    }

    /// Starts a publisher's wait for `session` to drain; `None` if it already has.
    pub fn wait_for(&self, session: Arc<Session>) -> Option<BacklogWait> {
        let (waiters, mut drained) = {
            let mut waiting = self.waiting.lock();
            let waiters = Arc::clone(waiting.entry(session.id).or_default());
            // Marked and enabled under the lock `release` takes: a drain that reads the mark finds
            // this waiter registered.
            session.mark_awaited();
            let mut drained = Box::pin(Arc::clone(&waiters.notify).notified_owned());
            drained.as_mut().enable();
            waiters.asleep.fetch_add(1, Ordering::Relaxed);
            (waiters, drained)
        };
        // A drain that ended the backlog before the mark was set did not see it: look again.
        if !session.is_backlogged() {
            decrement(&waiters.asleep);
            return None;
        }
        let max_pause = self.max_pause;
        let since = Instant::now();
        Some(Box::pin(async move {
            tokio::select! {
                () = &mut drained => decrement(&waiters.resuming),
                () = tokio::time::sleep(max_pause) => {
                    decrement(&waiters.asleep);
                    // Not woken in time because others went first is no stall.
                    if session.is_backlogged() {
                        session.mark_stalled();
                    }
                }
            }
            since.elapsed()
        }))
    }

    /// Called by whoever takes deliveries from `session`'s queue (its connection, or the inline
    /// client's pump), under the session's lock: ends the backlog once the queue has eased, and
    /// returns how many deliveries are left if publishers waiting for it may go on, for
    /// [`Self::release`] to be called once the lock is let go.
    pub fn taken(&self, session: &Session, queue: &OutboundQueue) -> Option<usize> {
        let marks = self.marks?;
        session.ease_backlog(queue, marks).then(|| queue.len())
    }

    /// Called by `session`'s connection after taking deliveries from its queue, which now holds
    /// `queued`, while publishers wait for it and it is no longer backlogged: wakes as many as
    /// the room below the high-water mark calls for, or all once the queue is empty.
    pub fn release(&self, session: &Session, queued: usize) {
        let Some(marks) = self.marks else {
            return;
        };
        let mut waiting = self.waiting.lock();
        let Some(waiters) = waiting.get(&session.id) else {
            session.clear_awaited();
            return;
        };
        let asleep = waiters.asleep.load(Ordering::Relaxed);
        if asleep == 0 || queued == 0 {
            wake_all(&mut waiting, session);
            return;
        }
        let room = marks.high.saturating_sub(queued);
        let wanted = room
            .div_ceil(usize::from(MESSAGES_PER_RESUME))
            .saturating_sub(waiters.resuming.load(Ordering::Relaxed));
        let woken = wanted.min(asleep);
        for _ in 0..woken {
            waiters.notify.notify_one();
        }
        // Saturating: a waiter that timed out meanwhile took itself off already.
        let _ = waiters
            .asleep
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(woken))
            });
        waiters.resuming.fetch_add(woken, Ordering::Relaxed);
    }

    /// The subscriber went offline or its session ended: nobody will drain its queue now, and an
    /// offline session's queue is what `max_queued_messages` is for.
    pub fn subscriber_gone(&self, session: &Session) {
        if session.clear_backlog() {
            wake_all(&mut self.waiting.lock(), session);
        }
    }
}

/// Wakes every publisher waiting for `session`; called with the waiting lock held.
fn wake_all(waiting: &mut foldhash::HashMap<SessionId, Arc<Waiters>>, session: &Session) {
    if let Some(waiters) = waiting.remove(&session.id) {
        waiters.notify.notify_waiters();
    }
    session.clear_awaited();
}

/// Takes one off a count that may already be at zero (see [`Waiters`]).
fn decrement(count: &AtomicUsize) {
    let _ = count.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
}

#[cfg(test)]
mod tests {
    use std::task::{Context, Waker};

    use bytes::Bytes;

    use super::*;
    use crate::codec::QoS;
    use crate::config::QueueOverflow;
    use crate::control::ConnectionControl;
    use crate::identity::ClientId;
    use crate::message::{Delivery, Message};
    use crate::session::QueueLimits;
    use crate::stats::Stats;

    /// High-water mark 80, low-water mark 40: a waiter is woken per 8 messages of room below 80.
    const HIGH: usize = 80;

    /// A connected subscriber whose queue has just reached the high-water mark.
    fn backlogged_session(backpressure: &Backpressure) -> Arc<Session> {
        let session = Arc::new(Session::new(
            SessionId(1),
            ClientId::new("subscriber"),
            QueueLimits::new(10_000, QueueOverflow::DropNewest, usize::MAX, usize::MAX),
        ));
        session.lock().connection = Some(Arc::new(ConnectionControl::default()));
        session.set_online(true);
        assert!(
            fill_to_high(backpressure, &session),
            "the queue is at the high-water mark"
        );
        session
    }

    /// Delivers until the queue is at the high-water mark; returns whether the last delivery asks
    /// its publisher to wait.
    fn fill_to_high(backpressure: &Backpressure, session: &Session) -> bool {
        let mut wait = false;
        while session.lock().queue.len() < HIGH {
            let message = Message::new("t", Bytes::from_static(b"m"), QoS::AtLeastOnce, false);
            let delivery = Delivery {
                message: Arc::new(message),
                qos: QoS::AtLeastOnce,
                retain: false,
                subscription_ids: Vec::new(),
                share: 1,
                seq: 0,
            };
            wait = session.deliver(delivery, backpressure.marks(), &Stats::new())
                != crate::session::Backlog::Clear;
        }
        wait
    }

    /// The subscriber takes deliveries until `queued` are left, as its connection does.
    fn drain_to(backpressure: &Backpressure, session: &Session, queued: usize) {
        let marks = backpressure.marks().expect("backpressure is on");
        let mut state = session.lock();
        while state.queue.len() > queued {
            state.queue.pop();
        }
        let eased = session.ease_backlog(&state.queue, marks);
        drop(state);
        if eased {
            backpressure.release(session, queued);
        }
    }

    /// Which of `waits` have resolved (polling each that has not).
    fn resolved(waits: &mut [Option<BacklogWait>]) -> Vec<usize> {
        let mut cx = Context::from_waker(Waker::noop());
        for wait in waits.iter_mut() {
            if let Some(pending) = wait
                && pending.as_mut().poll(&mut cx).is_ready()
            {
                *wait = None;
            }
        }
        (0..waits.len()).filter(|&i| waits[i].is_none()).collect()
    }

    fn twenty_waiters(
        backpressure: &Backpressure,
        session: &Arc<Session>,
    ) -> Vec<Option<BacklogWait>> {
        let mut waits: Vec<_> = (0..20)
            .map(|_| backpressure.wait_for(Arc::clone(session)))
            .collect();
        assert!(waits.iter().all(Option::is_some), "all wait");
        assert!(resolved(&mut waits).is_empty(), "none goes on yet");
        waits
    }

    #[tokio::test]
    async fn waiters_go_on_oldest_first_in_proportion_to_the_room_made() {
        let backpressure = Backpressure::new(&limits(10_000, HIGH));
        let session = backlogged_session(&backpressure);
        let mut waits = twenty_waiters(&backpressure, &session);

        drain_to(&backpressure, &session, 60);
        assert!(resolved(&mut waits).is_empty(), "above the low-water mark");

        // 40 messages of room: 5 waiters.
        drain_to(&backpressure, &session, 40);
        assert_eq!(resolved(&mut waits), (0..5).collect::<Vec<_>>());

        // Those five brought nothing and the queue fell to 20: 60 of room, 8 waiters in all.
        drain_to(&backpressure, &session, 20);
        assert_eq!(resolved(&mut waits), (0..13).collect::<Vec<_>>());

        // A queue that runs dry lets everyone go on.
        drain_to(&backpressure, &session, 0);
        assert_eq!(resolved(&mut waits), (0..20).collect::<Vec<_>>());
        assert!(!session.is_backlogged());
    }

    #[tokio::test]
    async fn a_subscriber_that_goes_away_lets_every_waiter_go_on() {
        let backpressure = Backpressure::new(&limits(10_000, HIGH));
        let session = backlogged_session(&backpressure);
        let mut waits = twenty_waiters(&backpressure, &session);

        backpressure.subscriber_gone(&session);
        assert_eq!(resolved(&mut waits), (0..20).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_backlog_that_outlasts_the_pause_is_marked_stalled_and_not_waited_for_again() {
        let backpressure = Backpressure::new(&Limits {
            backlog_max_pause_ms: 10,
            ..limits(10_000, HIGH)
        });
        let session = backlogged_session(&backpressure);

        let wait = backpressure.wait_for(Arc::clone(&session)).expect("waits");
        assert!(wait.await >= Duration::from_millis(10));
        drain_to(&backpressure, &session, HIGH - 1);
        assert!(
            !fill_to_high(&backpressure, &session),
            "a stalled backlog asks no publisher to wait"
        );
    }

    #[tokio::test]
    async fn a_waiter_whose_turn_has_not_come_is_no_stall() {
        let backpressure = Backpressure::new(&Limits {
            backlog_max_pause_ms: 10,
            ..limits(10_000, HIGH)
        });
        let session = backlogged_session(&backpressure);
        let mut waits = twenty_waiters(&backpressure, &session);

        // Five go on; the rest wait out the pause while the subscriber is not backlogged.
        drain_to(&backpressure, &session, 40);
        for wait in waits.drain(..).flatten() {
            wait.await;
        }
        assert!(
            fill_to_high(&backpressure, &session),
            "the next backlog is waited for"
        );
    }

    fn limits(max_queued_messages: usize, backlog_high_water: usize) -> Limits {
        Limits {
            max_queued_messages,
            backlog_high_water,
            ..Limits::default()
        }
    }
}
