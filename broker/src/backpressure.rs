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
use crate::session::{OutboundQueue, Session, SessionId};

/// When a connected subscriber counts as backlogged: by how many deliveries its queue holds, and
/// by how long the oldest of them has waited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BacklogMarks {
    /// Publishers wait once the queue holds this many deliveries.
    pub high: usize,
    /// They go on once it is down to this many (and, with `max_delay`, half as old).
    pub low: usize,
    /// Publishers also wait once the queue spans this much time, oldest message to newest, and
    /// holds at least [`MIN_DELAYED`]. A queue that takes long to drain backs up in time before it
    /// does in length: a subscriber taking 700 messages a second is 1.4 s behind at 1,000.
    pub max_delay: Option<Duration>,
}

/// The fewest queued deliveries that count as a backlog by delay: a subscriber a handful of
/// messages behind is not worth pausing anyone for, however slowly it reads.
pub const MIN_DELAYED: usize = 32;

impl BacklogMarks {
    /// The marks `limits` asks for: `None` when backpressure is off. The high mark is capped at the
    /// queue's capacity, so a small `max_queued_messages` does not turn it off by accident.
    pub fn from_limits(limits: &Limits) -> Option<Self> {
        let high = limits.backlog_high_water.min(limits.max_queued_messages);
        (high > 0).then_some(Self {
            high,
            low: high / 2,
            max_delay: (limits.backlog_max_delay_ms > 0)
                .then(|| Duration::from_millis(limits.backlog_max_delay_ms)),
        })
    }

    /// Whether a queue this long and this old makes its publishers wait.
    pub fn reached(&self, queue: &OutboundQueue) -> bool {
        let queued = queue.len();
        queued >= self.high
            || self
                .max_delay
                .is_some_and(|max| queued >= MIN_DELAYED && queue.span() >= max)
    }

    /// Whether a backlogged queue has drained enough for its publishers to go on.
    pub fn eased(&self, queue: &OutboundQueue) -> bool {
        queue.len() <= self.low && self.max_delay.is_none_or(|max| queue.span() <= max / 2)
    }
}

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
    use crate::message::{Delivery, Message};
    use crate::session::{ClientId, ConnectionControl};
    use crate::stats::Stats;

    /// High-water mark 80, low-water mark 40: a waiter is woken per 8 messages of room below 80.
    const HIGH: usize = 80;

    /// A connected subscriber whose queue has just reached the high-water mark.
    fn backlogged_session(backpressure: &Backpressure) -> Arc<Session> {
        let session = Arc::new(Session::new(
            SessionId(1),
            ClientId::new("subscriber"),
            10_000,
            QueueOverflow::DropNewest,
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
            };
            wait = session.deliver(delivery, backpressure.marks(), &Stats::new());
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

    #[test]
    fn the_low_mark_is_half_the_high_mark() {
        let marks = BacklogMarks::from_limits(&limits(10_000, 1_000));
        assert_eq!(
            marks,
            Some(BacklogMarks {
                high: 1_000,
                low: 500,
                max_delay: Some(Duration::from_millis(100)),
            })
        );
    }

    #[test]
    fn the_high_mark_is_capped_at_the_queue() {
        let marks = BacklogMarks::from_limits(&limits(100, 1_000)).expect("on");
        assert_eq!((marks.high, marks.low), (100, 50));
    }

    #[test]
    fn a_zero_delay_leaves_only_the_length() {
        let marks = BacklogMarks::from_limits(&Limits {
            backlog_max_delay_ms: 0,
            ..limits(10_000, 1_000)
        });
        assert_eq!(marks.expect("on").max_delay, None);
    }

    /// A queue of `count` deliveries whose messages arrived `step` apart, the newest now.
    fn queue_spanning(count: u32, step: Duration) -> OutboundQueue {
        let mut queue = OutboundQueue::new(10_000, QueueOverflow::DropNewest);
        let newest = std::time::Instant::now();
        for i in (0..count).rev() {
            let mut message = Message::new("t", Bytes::from_static(b"m"), QoS::AtLeastOnce, false);
            message.received_at = newest - step * i;
            let delivery = Delivery {
                message: Arc::new(message),
                qos: QoS::AtLeastOnce,
                retain: false,
                subscription_ids: Vec::new(),
            };
            queue.push(delivery, true);
        }
        queue
    }

    #[test]
    fn a_queue_backs_up_by_delay_well_before_its_length() {
        let marks = BacklogMarks::from_limits(&limits(10_000, 1_000)).expect("on");
        // 40 messages over 117 ms: past the 100 ms delay, far below the high-water mark.
        assert!(marks.reached(&queue_spanning(40, Duration::from_millis(3))));
        // As many over 39 ms: within the delay.
        assert!(!marks.reached(&queue_spanning(40, Duration::from_millis(1))));
        // A few messages a long time apart: not worth pausing anyone for.
        let few = MIN_DELAYED as u32 - 1;
        assert!(!marks.reached(&queue_spanning(few, Duration::from_secs(1))));
        // Without the delay, only the length counts.
        let length_only = BacklogMarks {
            max_delay: None,
            ..marks
        };
        assert!(!length_only.reached(&queue_spanning(40, Duration::from_millis(3))));
        assert!(length_only.reached(&queue_spanning(1_000, Duration::ZERO)));
    }

    #[test]
    fn a_delayed_queue_eases_at_half_the_delay() {
        let marks = BacklogMarks::from_limits(&limits(10_000, 1_000)).expect("on");
        // 60 ms of messages: below the low-water mark but more than half the delay.
        assert!(!marks.eased(&queue_spanning(40, Duration::from_millis(2))));
        // 39 ms: eased.
        assert!(marks.eased(&queue_spanning(40, Duration::from_millis(1))));
        // Half the delay in time but above the low-water mark in length: not yet.
        assert!(!marks.eased(&queue_spanning(501, Duration::ZERO)));
    }

    #[test]
    fn zero_turns_backpressure_off() {
        assert_eq!(BacklogMarks::from_limits(&limits(100, 0)), None);
        assert_eq!(BacklogMarks::from_limits(&limits(0, 1_000)), None);
    }
}
