//! Backpressure towards publishers: when a connected subscriber's queue backs up, the publishers
//! feeding it stop being read until it has drained, so a fast publisher slows to what its
//! subscribers take instead of filling their queues until messages are dropped.
//!
//! The waits are bounded. A publisher waits at most `limits.backlog_max_pause_ms` for one backlog;
//! if the subscriber has not drained by then it is marked stalled and no publisher waits for it
//! again until it does, so a subscriber that stops reading costs publishers one pause, not their
//! throughput. Its queue then overflows under `limits.queue_overflow` as before.
//!
//! Who does what:
//! - the router tells a publishing connection which session is backlogged (`Session::deliver`);
//! - the publishing connection stops reading and waits here ([`Backpressure::wait_for`]);
//! - the subscriber's connection, when its queue is back to the low-water mark, or the broker, when
//!   the subscriber goes away, wakes the waiters ([`Backpressure::wake`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::Limits;
use crate::session::{Session, SessionId};

/// Queue lengths between which a connected subscriber counts as backlogged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BacklogMarks {
    /// Publishers wait once the queue holds this many deliveries.
    pub high: usize,
    /// They go on once it is down to this many.
    pub low: usize,
}

impl BacklogMarks {
    /// The marks `limits` asks for: `None` when backpressure is off. The high mark is capped at the
    /// queue's capacity, so a small `max_queued_messages` does not turn it off by accident.
    pub fn from_limits(limits: &Limits) -> Option<Self> {
        let high = limits.backlog_high_water.min(limits.max_queued_messages);
        (high > 0).then_some(Self {
            high,
            low: high / 2,
        })
    }
}

/// A publisher's wait for a backlog to drain; resolves with how long it waited.
pub type BacklogWait = Pin<Box<dyn Future<Output = Duration> + Send>>;

/// The broker's side of backpressure: the marks and the publishers waiting per backlogged session.
#[derive(Debug)]
pub struct Backpressure {
    marks: Option<BacklogMarks>,
    max_pause: Duration,
    /// One wake-up per backlogged session that publishers wait for; removed when it drains.
    waiting: Mutex<foldhash::HashMap<SessionId, Arc<Notify>>>,
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
        let mut drained = {
            let mut waiting = self.waiting.lock();
            let notify = Arc::clone(waiting.entry(session.id).or_default());
            // Marked before the wait is enabled, under the same lock `wake` takes: a drain that
            // reads the mark finds this waiter registered.
            session.mark_awaited();
            let mut drained = Box::pin(notify.notified_owned());
            drained.as_mut().enable();
            drained
        };
        // A drain that cleared the backlog before the mark was set did not see it: look again.
        if !session.is_backlogged() {
            return None;
        }
        let max_pause = self.max_pause;
        let since = Instant::now();
        Some(Box::pin(async move {
            tokio::select! {
                () = &mut drained => {}
                () = tokio::time::sleep(max_pause) => session.mark_stalled(),
            }
            since.elapsed()
        }))
    }

    /// Wakes every publisher waiting for `session`: its backlog drained, or it went away.
    pub fn wake(&self, session: SessionId) {
        if let Some(notify) = self.waiting.lock().remove(&session) {
            notify.notify_waiters();
        }
    }

    /// The subscriber went offline or its session ended: nobody will drain its queue now, and an
    /// offline session's queue is what `max_queued_messages` is for.
    pub fn subscriber_gone(&self, session: &Session) {
        if session.clear_backlog() {
            self.wake(session.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                low: 500
            })
        );
    }

    #[test]
    fn the_high_mark_is_capped_at_the_queue() {
        let marks = BacklogMarks::from_limits(&limits(100, 1_000));
        assert_eq!(marks, Some(BacklogMarks { high: 100, low: 50 }));
    }

    #[test]
    fn zero_turns_backpressure_off() {
        assert_eq!(BacklogMarks::from_limits(&limits(100, 0)), None);
        assert_eq!(BacklogMarks::from_limits(&limits(0, 1_000)), None);
    }
}
