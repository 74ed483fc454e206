//! The bounded queue of deliveries waiting for a session's connection (or for the client to come back),
//! with the explicit, counted overflow policy DESIGN.md §2 asks for. It is bounded three ways: in
//! deliveries (`limits.max_queued_messages`) and bytes (`limits.max_queued_bytes`) per session, and
//! in bytes across all sessions (`limits.max_queued_bytes_total`).
//!
//! What "bytes" counts: a message's topic, payload and data-carrying properties
//! ([`Message::data_size`]). One message routed to many sessions is one copy that they share, so
//! each session's own budget counts it whole (that is what the session would hold if the others
//! let go), while the broker-wide count gives each delivery its share ([`Delivery::share`]), so
//! that the total follows the memory held and a fan-out is not counted a thousand times.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::codec::QoS;
use crate::config::{Limits, QueueOverflow};
use crate::message::{Delivery, Message};

/// A session reports its share of the broker-wide total in steps of this many bytes, and only
/// beyond its first step's worth, so that the shared counter is touched once per few kilobytes
/// queued or taken rather than per delivery, and never by a subscriber that keeps up (its queue
/// goes from empty to a message or two and back). The total may run behind the truth by up to one
/// step per session, and ahead of it by up to two.
const REPORT_STEP: usize = 4 * 1024;

/// Which bound refused a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueBound {
    /// The session's `limits.max_queued_messages`.
    Messages,
    /// The session's `limits.max_queued_bytes`.
    Bytes,
    /// The broker's `limits.max_queued_bytes_total`.
    TotalBytes,
}

/// What happened to a delivery offered to a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Queued; nothing dropped.
    Queued,
    /// Queued, and this many of the oldest queued deliveries were dropped to make room.
    QueuedDroppedOldest(usize, QueueBound),
    /// The new delivery was dropped (QoS 0 on a full queue, the drop-newest policy, or the
    /// broker-wide bound).
    Dropped(QueueBound),
    /// The new delivery was dropped and the policy asks for the client to be disconnected.
    DroppedDisconnect(QueueBound),
}

/// The bounds every session's queue keeps to, and the broker-wide count of queued bytes: one for
/// the broker, shared by every queue.
#[derive(Debug)]
pub struct QueueLimits {
    capacity: usize,
    policy: QueueOverflow,
    max_bytes: usize,
    max_total: usize,
    /// Bytes queued across all sessions, as the sessions report them (see [`REPORT_STEP`]).
    total: AtomicUsize,
}

impl QueueLimits {
    pub fn new(
        capacity: usize,
        policy: QueueOverflow,
        max_bytes: usize,
        max_total: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            capacity,
            policy,
            max_bytes,
            max_total,
            total: AtomicUsize::new(0),
        })
    }

    pub fn from_limits(limits: &Limits) -> Arc<Self> {
        Self::new(
            limits.max_queued_messages,
            limits.queue_overflow,
            limits.max_queued_bytes,
            limits.max_queued_bytes_total,
        )
    }

    /// Bytes queued across all sessions, for `/metrics`.
    pub fn total_bytes(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    #[inline]
    fn total_has_room(&self, share: usize) -> bool {
        self.total.load(Ordering::Relaxed).saturating_add(share) <= self.max_total
    }
}

/// Deliveries in arrival order, within the bounds of its [`QueueLimits`]. Costs two pointers until
/// something is queued: every session has one, and most stay empty.
#[derive(Debug)]
pub struct OutboundQueue {
    items: Option<Box<Queued>>,
    limits: Arc<QueueLimits>,
}

/// A used queue: its deliveries and what they count for.
#[derive(Debug, Default)]
struct Queued {
    items: VecDeque<Delivery>,
    /// The data size of every queued message, for the session's own bound.
    bytes: usize,
    /// The queued deliveries' shares, for the broker-wide bound.
    shares: usize,
    /// What this queue has added to the broker-wide total: `shares` beyond the first step,
    /// rounded up to a step.
    reported: usize,
}

impl OutboundQueue {
    pub fn new(limits: Arc<QueueLimits>) -> Self {
        Self {
            items: None,
            limits,
        }
    }

    pub fn len(&self) -> usize {
        self.items.as_ref().map_or(0, |queued| queued.items.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of message data queued (each message counted whole).
    pub fn bytes(&self) -> usize {
        self.items.as_ref().map_or(0, |queued| queued.bytes)
    }

    /// Offers a delivery. `online` says whether a connection is attached: the disconnect policy only
    /// makes sense for a client that is there to be disconnected.
    pub fn push(&mut self, delivery: Delivery, online: bool) -> Enqueued {
        self.push_observed(delivery, online, |_| {})
    }

    /// [`Self::push`], handing each delivery the drop-oldest policy pushes out to `dropped` (a
    /// stored session forgets it in the store).
    pub fn push_observed(
        &mut self,
        delivery: Delivery,
        online: bool,
        mut dropped: impl FnMut(Delivery),
    ) -> Enqueued {
        let limits = &*self.limits;
        let share = delivery.share as usize;
        if !limits.total_has_room(share) {
            return Enqueued::Dropped(QueueBound::TotalBytes);
        }
        let size = delivery.message.data_size();
        let queued = self.items.get_or_insert_default();
        let Some(bound) = queued.bound_hit(limits, size) else {
            queued.push(delivery, size);
            queued.report(limits);
            return Enqueued::Queued;
        };
        let hopeless = limits.capacity == 0 || size > limits.max_bytes;
        if delivery.qos == QoS::AtMostOnce || hopeless {
            return Enqueued::Dropped(bound);
        }
        match limits.policy {
            QueueOverflow::DropOldest => {
                let mut count = 0;
                while queued.bound_hit(limits, size).is_some() {
                    let Some(oldest) = queued.pop() else { break };
                    dropped(oldest);
                    count += 1;
                }
                queued.push(delivery, size);
                queued.report(limits);
                Enqueued::QueuedDroppedOldest(count, bound)
            }
            QueueOverflow::DropNewest => Enqueued::Dropped(bound),
            QueueOverflow::Disconnect if online => Enqueued::DroppedDisconnect(bound),
            QueueOverflow::Disconnect => Enqueued::Dropped(bound),
        }
    }

    /// Whether a delivery of `message` would be queued whole now, with nothing dropped for it.
    pub fn has_room_for(&self, message: &Message) -> bool {
        let size = message.data_size();
        let within = match &self.items {
            Some(queued) => queued.bound_hit(&self.limits, size).is_none(),
            None => self.limits.capacity > 0 && size <= self.limits.max_bytes,
        };
        within && self.limits.total_has_room(size)
    }

    /// How much publishing time the queue holds: from the oldest queued message's arrival to the
    /// newest's. For a connected subscriber that is about how long the oldest has waited, without
    /// reading the clock.
    pub fn span(&self) -> Duration {
        match (
            self.front(),
            self.items.as_ref().and_then(|q| q.items.back()),
        ) {
            (Some(oldest), Some(newest)) => newest
                .message
                .received_at
                .saturating_duration_since(oldest.message.received_at),
            _ => Duration::ZERO,
        }
    }

    pub fn front(&self) -> Option<&Delivery> {
        self.items.as_ref()?.items.front()
    }

    pub fn pop(&mut self) -> Option<Delivery> {
        let queued = self.items.as_mut()?;
        let delivery = queued.pop();
        queued.report(&self.limits);
        delivery
    }

    /// Puts a delivery back at the head (it could not be sent yet).
    pub fn push_front(&mut self, delivery: Delivery) {
        let size = delivery.message.data_size();
        let queued = self.items.get_or_insert_default();
        queued.bytes += size;
        queued.shares += delivery.share as usize;
        queued.items.push_front(delivery);
        queued.report(&self.limits);
    }

    /// Every queued delivery, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Delivery> {
        self.items.iter().flat_map(|queued| queued.items.iter())
    }

    pub fn clear(&mut self) {
        if let Some(queued) = &mut self.items {
            queued.items.clear();
            queued.bytes = 0;
            queued.shares = 0;
            queued.report(&self.limits);
        }
    }
}

impl Queued {
    /// Brings this queue's part of the broker-wide total up to date, in whole steps: up as soon
    /// as the shares pass what was reported, down once they are two steps below it, and to
    /// nothing once they are within the first step (so an emptied queue holds none of it).
    #[inline]
    fn report(&mut self, limits: &QueueLimits) {
        let due = self
            .shares
            .saturating_sub(REPORT_STEP)
            .div_ceil(REPORT_STEP)
            * REPORT_STEP;
        let settled = due == 0 && self.reported > 0;
        if due > self.reported {
            limits
                .total
                .fetch_add(due - self.reported, Ordering::Relaxed);
            self.reported = due;
        } else if settled || due + 2 * REPORT_STEP <= self.reported {
            limits
                .total
                .fetch_sub(self.reported - due, Ordering::Relaxed);
            self.reported = due;
        }
    }

    /// The bound that one more message of `size` bytes would break, if any.
    #[inline]
    fn bound_hit(&self, limits: &QueueLimits, size: usize) -> Option<QueueBound> {
        if self.items.len() >= limits.capacity {
            Some(QueueBound::Messages)
        } else if self.bytes + size > limits.max_bytes {
            Some(QueueBound::Bytes)
        } else {
            None
        }
    }

    #[inline]
    fn push(&mut self, delivery: Delivery, size: usize) {
        self.bytes += size;
        self.shares += delivery.share as usize;
        self.items.push_back(delivery);
    }

    #[inline]
    fn pop(&mut self) -> Option<Delivery> {
        let delivery = self.items.pop_front()?;
        self.bytes -= delivery.message.data_size();
        self.shares -= delivery.share as usize;
        Some(delivery)
    }
}

impl Drop for OutboundQueue {
    /// A queue that goes (its session ended) gives back what it reported.
    fn drop(&mut self) {
        if let Some(queued) = &self.items {
            self.limits
                .total
                .fetch_sub(queued.reported, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(n: u8, qos: QoS) -> Delivery {
        sized(n, qos, 2)
    }

    /// A delivery whose message's data is `size` bytes (a one-byte topic and the payload), with
    /// all of it as its share.
    fn sized(n: u8, qos: QoS, size: usize) -> Delivery {
        let mut payload = vec![0; size - 1];
        payload[0] = n;
        Delivery {
            message: Arc::new(Message::new("t", payload, qos, false)),
            qos,
            retain: false,
            subscription_ids: Vec::new(),
            share: u32::try_from(size).unwrap(),
            seq: 0,
        }
    }

    fn queue(capacity: usize, policy: QueueOverflow) -> OutboundQueue {
        OutboundQueue::new(QueueLimits::new(capacity, policy, usize::MAX, usize::MAX))
    }

    fn payloads(queue: &mut OutboundQueue) -> Vec<u8> {
        std::iter::from_fn(|| queue.pop())
            .map(|d| d.message.payload[0])
            .collect()
    }

    #[test]
    fn drop_oldest_keeps_the_newest_messages() {
        let mut queue = queue(2, QueueOverflow::DropOldest);
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
            Enqueued::QueuedDroppedOldest(1, QueueBound::Messages)
        );
        assert_eq!(payloads(&mut queue), vec![2, 3]);
    }

    #[test]
    fn qos0_is_dropped_when_full_whatever_the_policy() {
        let mut queue = queue(1, QueueOverflow::DropOldest);
        queue.push(delivery(1, QoS::AtLeastOnce), true);
        assert_eq!(
            queue.push(delivery(2, QoS::AtMostOnce), true),
            Enqueued::Dropped(QueueBound::Messages)
        );
        assert_eq!(payloads(&mut queue), vec![1]);
    }

    #[test]
    fn disconnect_policy_applies_only_to_online_clients() {
        let mut queue = queue(1, QueueOverflow::Disconnect);
        queue.push(delivery(1, QoS::ExactlyOnce), true);
        assert_eq!(
            queue.push(delivery(2, QoS::ExactlyOnce), true),
            Enqueued::DroppedDisconnect(QueueBound::Messages)
        );
        assert_eq!(
            queue.push(delivery(3, QoS::ExactlyOnce), false),
            Enqueued::Dropped(QueueBound::Messages)
        );
        assert_eq!(payloads(&mut queue), vec![1]);
    }

    /// A session's bytes are bounded like its messages, under the same policy: drop-oldest drops
    /// as many old messages as the new one needs room for; a message larger than the whole budget
    /// is dropped itself.
    #[test]
    fn a_session_is_bounded_in_bytes_under_its_overflow_policy() {
        let limits = QueueLimits::new(100, QueueOverflow::DropOldest, 1_000, usize::MAX);
        let mut queue = OutboundQueue::new(limits);
        for n in 1..=3 {
            assert_eq!(
                queue.push(sized(n, QoS::AtLeastOnce, 300), true),
                Enqueued::Queued
            );
        }
        assert_eq!(queue.bytes(), 900);
        assert_eq!(
            queue.push(sized(4, QoS::AtLeastOnce, 500), true),
            Enqueued::QueuedDroppedOldest(2, QueueBound::Bytes)
        );
        assert_eq!(
            queue.push(sized(5, QoS::AtLeastOnce, 1_001), true),
            Enqueued::Dropped(QueueBound::Bytes)
        );
        assert_eq!(payloads(&mut queue), vec![3, 4]);
        assert_eq!(queue.bytes(), 0);

        let newest = QueueLimits::new(100, QueueOverflow::DropNewest, 1_000, usize::MAX);
        let mut queue = OutboundQueue::new(newest);
        queue.push(sized(1, QoS::AtLeastOnce, 800), true);
        assert_eq!(
            queue.push(sized(2, QoS::AtLeastOnce, 300), true),
            Enqueued::Dropped(QueueBound::Bytes)
        );
    }

    /// The broker-wide bound counts each delivery's share, so sessions sharing one message count
    /// it about once; when it is reached, new deliveries are dropped whatever the policy, and
    /// what a queue gives back (taken, or the queue gone) makes room again.
    #[test]
    fn queues_share_one_broker_wide_byte_budget() {
        let limits = QueueLimits::new(1_000, QueueOverflow::DropOldest, usize::MAX, 64 * 1024);
        let mut first = OutboundQueue::new(Arc::clone(&limits));
        let mut second = OutboundQueue::new(Arc::clone(&limits));
        for n in 0..11 {
            assert_eq!(
                first.push(sized(n, QoS::AtLeastOnce, 4_096), true),
                Enqueued::Queued
            );
        }
        // 44 KiB queued, the first 4 KiB of them not reported.
        assert_eq!(limits.total_bytes(), 40 * 1024);
        // One 40 KiB message shared by ten sessions is 4 KiB of share each.
        let shared = Arc::new(Message::new(
            "t",
            vec![7; 40 * 1024],
            QoS::AtLeastOnce,
            false,
        ));
        let mut shared_delivery = sized(0, QoS::AtLeastOnce, 2);
        shared_delivery.message = shared;
        shared_delivery.share = 4 * 1024;
        assert_eq!(second.push(shared_delivery, true), Enqueued::Queued);
        assert_eq!(second.bytes(), 40 * 1024 + 1, "the session counts it whole");
        for n in 0..6 {
            assert_eq!(
                second.push(sized(n, QoS::AtLeastOnce, 4_096), true),
                Enqueued::Queued
            );
        }
        assert_eq!(limits.total_bytes(), 64 * 1024);
        assert_eq!(
            second.push(sized(9, QoS::AtLeastOnce, 4_096), true),
            Enqueued::Dropped(QueueBound::TotalBytes)
        );
        while first.pop().is_some() {}
        assert_eq!(
            limits.total_bytes(),
            24 * 1024,
            "an emptied queue holds none of it"
        );
        drop(second);
        assert_eq!(limits.total_bytes(), 0, "what is reported is given back");
    }

    /// A subscriber that keeps up, its queue going from empty to a message and back, never
    /// touches the broker-wide count.
    #[test]
    fn a_queue_that_keeps_up_reports_nothing() {
        let limits = QueueLimits::new(1_000, QueueOverflow::DropOldest, usize::MAX, usize::MAX);
        let mut queue = OutboundQueue::new(Arc::clone(&limits));
        for n in 0..100 {
            assert_eq!(
                queue.push(sized(n, QoS::AtLeastOnce, 1_000), true),
                Enqueued::Queued
            );
            assert_eq!(limits.total_bytes(), 0);
            assert!(queue.pop().is_some());
        }
    }
}
