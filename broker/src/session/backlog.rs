//! When a connected subscriber's queue counts as backed up, by length and by how long its oldest
//! delivery has waited. The session applies these marks as it queues and gives out deliveries;
//! what publishers do about a backlog is `crate::backpressure`'s.

use std::time::Duration;

use super::OutboundQueue;
use crate::config::Limits;

/// When a connected subscriber counts as backlogged: by how many deliveries its queue holds, and
/// by how long the oldest of them has waited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BacklogMarks {
    /// Publishers wait once the queue holds this many deliveries.
    pub high: usize,
    /// They go on once it is down to this many (and, with `max_delay`, half as old).
    pub low: usize,
    /// Halfway from `high` to the queue's capacity: publishers wait at this length even while they
    /// may otherwise publish a share without pausing (see `Connection::resume_quota`), so that
    /// many woken at once cannot overflow the queue.
    pub full: usize,
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
            full: high + (limits.max_queued_messages - high) / 2,
            max_delay: (limits.backlog_max_delay_ms > 0)
                .then(|| Duration::from_millis(limits.backlog_max_delay_ms)),
        })
    }

    /// Whether a queue is so long that its publishers wait whatever share they were given.
    pub fn full(&self, queue: &OutboundQueue) -> bool {
        queue.len() >= self.full
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::codec::QoS;
    use crate::config::QueueOverflow;
    use crate::message::{Delivery, Message};
    use crate::session::QueueLimits;

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
                full: 5_500,
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
        let limits = QueueLimits::new(10_000, QueueOverflow::DropNewest, usize::MAX, usize::MAX);
        let mut queue = OutboundQueue::new(limits);
        let newest = std::time::Instant::now();
        for i in (0..count).rev() {
            let mut message = Message::new("t", Bytes::from_static(b"m"), QoS::AtLeastOnce, false);
            message.received_at = newest - step * i;
            let delivery = Delivery {
                message: Arc::new(message),
                qos: QoS::AtLeastOnce,
                retain: false,
                subscription_ids: Vec::new(),
                share: 1,
                seq: 0,
            };
            queue.push(delivery, true);
        }
        queue
    }

    #[test]
    fn a_queue_is_full_halfway_from_the_high_mark_to_its_capacity() {
        let marks = BacklogMarks::from_limits(&limits(10_000, 1_000)).expect("on");
        let no_delay = Duration::ZERO;
        assert!(!marks.full(&queue_spanning(5_499, no_delay)));
        assert!(marks.full(&queue_spanning(5_500, no_delay)));
        // With the high mark capped at the capacity, reaching it is being full.
        let capped = BacklogMarks::from_limits(&limits(100, 1_000)).expect("on");
        assert_eq!(capped.full, 100);
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
