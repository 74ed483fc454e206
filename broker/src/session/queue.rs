//! The bounded queue of deliveries waiting for a session's connection (or for the client to come back),
//! with the explicit, counted overflow policy DESIGN.md §2 asks for.

use std::time::Duration;

use super::deque::LazyDeque;
use crate::codec::QoS;
use crate::config::QueueOverflow;
use crate::message::Delivery;

/// What happened to a delivery offered to a full (or not full) queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Queued; nothing dropped.
    Queued,
    /// Queued, and the oldest queued delivery was dropped to make room.
    QueuedDroppedOldest,
    /// The new delivery was dropped (QoS 0 on a full queue, or the drop-newest policy).
    Dropped,
    /// The new delivery was dropped and the policy asks for the client to be disconnected.
    DroppedDisconnect,
}

/// Deliveries in arrival order, at most `capacity` of them.
#[derive(Debug)]
pub struct OutboundQueue {
    items: LazyDeque<Delivery>,
    /// A copy of `limits.max_queued_messages`, as `u32`: this is paid per session.
    capacity: u32,
    policy: QueueOverflow,
}

impl OutboundQueue {
    pub fn new(capacity: usize, policy: QueueOverflow) -> Self {
        Self {
            items: LazyDeque::default(),
            capacity: u32::try_from(capacity).unwrap_or(u32::MAX),
            policy,
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Offers a delivery. `online` says whether a connection is attached: the disconnect policy only
    /// makes sense for a client that is there to be disconnected.
    pub fn push(&mut self, delivery: Delivery, online: bool) -> Enqueued {
        if self.items.len() < self.capacity as usize {
            self.items.push_back(delivery);
            return Enqueued::Queued;
        }
        if delivery.qos == QoS::AtMostOnce || self.capacity == 0 {
            return Enqueued::Dropped;
        }
        match self.policy {
            QueueOverflow::DropOldest => {
                self.items.pop_front();
                self.items.push_back(delivery);
                Enqueued::QueuedDroppedOldest
            }
            QueueOverflow::DropNewest => Enqueued::Dropped,
            QueueOverflow::Disconnect if online => Enqueued::DroppedDisconnect,
            QueueOverflow::Disconnect => Enqueued::Dropped,
        }
    }

    /// How much publishing time the queue holds: from the oldest queued message's arrival to the
    /// newest's. For a connected subscriber that is about how long the oldest has waited, without
    /// reading the clock.
    pub fn span(&self) -> Duration {
        match (self.items.front(), self.items.back()) {
            (Some(oldest), Some(newest)) => newest
                .message
                .received_at
                .saturating_duration_since(oldest.message.received_at),
            _ => Duration::ZERO,
        }
    }

    pub fn front(&self) -> Option<&Delivery> {
        self.items.front()
    }

    pub fn pop(&mut self) -> Option<Delivery> {
        self.items.pop_front()
    }

    /// Puts a delivery back at the head (it could not be sent yet).
    pub fn push_front(&mut self, delivery: Delivery) {
        self.items.push_front(delivery);
    }

    pub fn clear(&mut self) {
        self.items.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::message::Message;

    fn delivery(n: u8, qos: QoS) -> Delivery {
        Delivery {
            message: Arc::new(Message::new("t", vec![n], qos, false)),
            qos,
            retain: false,
            subscription_ids: Vec::new(),
        }
    }

    fn payloads(queue: &mut OutboundQueue) -> Vec<u8> {
        std::iter::from_fn(|| queue.pop())
            .map(|d| d.message.payload[0])
            .collect()
    }

    #[test]
    fn drop_oldest_keeps_the_newest_messages() {
        let mut queue = OutboundQueue::new(2, QueueOverflow::DropOldest);
        assert_eq!(
            queue.push(delivery(1, QoS::AtLeastOnce), false),
            Enqueued::Queued
        );
        assert_eq!(
            queue.push(delivery(2, QoS::AtLeastOnce), false),
            Enqueued::Queued
        );
        assert_eq!(
            queue.push(delivery(3, QoS::AtLeastOnce), false),
            Enqueued::QueuedDroppedOldest
        );
        assert_eq!(payloads(&mut queue), vec![2, 3]);
    }

    #[test]
    fn qos0_is_dropped_when_full_whatever_the_policy() {
        let mut queue = OutboundQueue::new(1, QueueOverflow::DropOldest);
        queue.push(delivery(1, QoS::AtLeastOnce), true);
        assert_eq!(
            queue.push(delivery(2, QoS::AtMostOnce), true),
            Enqueued::Dropped
        );
        assert_eq!(payloads(&mut queue), vec![1]);
    }

    #[test]
    fn disconnect_policy_applies_only_to_online_clients() {
        let mut queue = OutboundQueue::new(1, QueueOverflow::Disconnect);
        queue.push(delivery(1, QoS::ExactlyOnce), true);
        assert_eq!(
            queue.push(delivery(2, QoS::ExactlyOnce), true),
            Enqueued::DroppedDisconnect
        );
        assert_eq!(
            queue.push(delivery(3, QoS::ExactlyOnce), false),
            Enqueued::Dropped
        );
        assert_eq!(payloads(&mut queue), vec![1]);
    }
}
