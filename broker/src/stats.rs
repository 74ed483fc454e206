//! Broker-wide counters: plain atomics bumped on the hot path, read by `$SYS` (and by the metrics
//! endpoint). Labels are bounded enums, never client data.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::codec::QoS;

/// Why a message was not delivered to a subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// A session's queue was full and the new message was dropped.
    QueueFull,
    /// A session's queue was full and its oldest message was dropped for the new one.
    QueueFullOldest,
    /// The message expiry interval ran out before delivery.
    Expired,
    /// The packet would exceed the client's Maximum Packet Size [MQTT-3.1.2-25].
    TooLargeForClient,
    /// Authorization denied the publish.
    NotAuthorized,
}

impl DropReason {
    pub const ALL: [DropReason; 5] = [
        Self::QueueFull,
        Self::QueueFullOldest,
        Self::Expired,
        Self::TooLargeForClient,
        Self::NotAuthorized,
    ];

    pub fn kind(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::QueueFullOldest => "queue_full_oldest",
            Self::Expired => "expired",
            Self::TooLargeForClient => "too_large_for_client",
            Self::NotAuthorized => "not_authorized",
        }
    }
}

#[derive(Debug, Default)]
pub struct Stats {
    pub connections: AtomicI64,
    pub connections_total: AtomicU64,
    pub messages_received: [AtomicU64; 3],
    pub messages_sent: [AtomicU64; 3],
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub auth_failures: AtomicU64,
    pub protocol_errors: AtomicU64,
    dropped: [AtomicU64; DropReason::ALL.len()],
}

impl Stats {
    pub fn message_received(&self, qos: QoS) {
        self.messages_received[qos as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn message_sent(&self, qos: QoS) {
        self.messages_sent[qos as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn dropped(&self, reason: DropReason) {
        self.dropped[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn dropped_count(&self, reason: DropReason) -> u64 {
        self.dropped[reason as usize].load(Ordering::Relaxed)
    }

    pub fn total(counters: &[AtomicU64]) -> u64 {
        counters.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
