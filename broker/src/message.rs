//! An application message inside the broker: what a PUBLISH carried, shared by every subscriber it
//! goes to, plus the per-subscriber [`Delivery`] that wraps it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use crate::codec::{self, Packet, PacketId, ProtocolVersion, PublishProperties, PublishView, QoS};
use crate::identity::SessionId;

/// A published message as the router holds it. Immutable once built; fan-out clones the `Arc`.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: ByteString,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// The v5 properties that travel with the message. Topic alias, subscription identifiers and the
    /// expiry interval are per delivery, so they are always empty here; expiry lives in `expires_at`.
    pub properties: PublishProperties,
    /// When the message's expiry interval runs out.
    pub expires_at: Option<Instant>,
    /// The session that published it, for the No Local option; `None` for the broker's own messages.
    pub publisher: Option<SessionId>,
    pub received_at: Instant,
    /// Random, given when the broker accepts the message (0 until then) and kept when it travels
    /// to other nodes: a session that moves between nodes recognises a message that reached it
    /// twice, once on each path, by it.
    pub id: u64,
}

impl Message {
    /// A message the broker itself (or an embedding program) publishes.
    pub fn new(
        topic: impl Into<ByteString>,
        payload: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
    ) -> Self {
        Self {
            topic: topic.into(),
            payload: payload.into(),
            qos,
            retain,
            properties: PublishProperties::default(),
            expires_at: None,
            publisher: None,
            received_at: Instant::now(),
            id: 0,
        }
    }

    /// The seconds left of the message expiry interval, rounded up, or `None` when it never expires.
    /// `Some(0)` means expired.
    pub fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        self.expires_at.map(|at| {
            let left = at.saturating_duration_since(now);
            if left.is_zero() {
                0
            } else {
                let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
                u32::try_from(secs).unwrap_or(u32::MAX)
            }
        })
    }

    /// The bytes of data the message holds: topic, payload and the properties that carry data.
    /// What the retained store and session queues count against their byte bounds; the fixed part
    /// of the struct is not counted.
    #[inline]
    pub fn data_size(&self) -> usize {
        let properties = &self.properties;
        let text = |s: &Option<ByteString>| s.as_ref().map_or(0, |s| s.len());
        self.topic.len()
            + self.payload.len()
            + text(&properties.response_topic)
            + text(&properties.content_type)
            + properties.correlation_data.as_ref().map_or(0, Bytes::len)
            + properties
                .user_properties
                .iter()
                .map(|(key, value)| key.len() + value.len())
                .sum::<usize>()
    }

    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// Encodes the message as an MQTT 5 PUBLISH with `expiry` as its Message Expiry Interval: how
    /// it travels to other nodes and sits in the store, so both read it back with the codec.
    pub fn encode_as_publish(&self, expiry: Option<u32>, out: &mut BytesMut) {
        let publish = PublishView {
            dup: false,
            qos: self.qos,
            retain: self.retain,
            topic: &self.topic,
            // The identifier means nothing off the wire; the codec wants one for QoS 1 and 2.
            packet_id: (self.qos != QoS::AtMostOnce).then_some(PacketId::MIN),
            properties: &self.properties,
            message_expiry_interval: expiry,
            topic_alias: None,
            subscription_identifiers: &[],
            payload: &self.payload,
        };
        let start = out.len();
        // A message the broker accepted encodes within the protocol's limits.
        if codec::encode_publish(&publish, ProtocolVersion::V5, u32::MAX, out).is_err() {
            out.truncate(start);
        }
    }

    /// Reads back what [`Self::encode_as_publish`] wrote: the message (not yet expiring, received
    /// now, with the given id) and the expiry interval it carried.
    pub fn decode_from_publish(
        mut packet: BytesMut,
        id: u64,
    ) -> Result<(Self, Option<u32>), String> {
        let publish = match codec::decode(&mut packet, ProtocolVersion::V5, u32::MAX) {
            Ok(Some(Packet::Publish(publish))) => publish,
            Ok(Some(other)) => return Err(format!("{} is not a PUBLISH", other.kind())),
            Ok(None) => return Err("a truncated PUBLISH".into()),
            Err(error) => return Err(error.to_string()),
        };
        if !packet.is_empty() {
            return Err("bytes after the PUBLISH".into());
        }
        let expiry = publish.properties.message_expiry_interval;
        let message = Self {
            topic: publish.topic,
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            properties: PublishProperties {
                message_expiry_interval: None,
                topic_alias: None,
                subscription_identifiers: Vec::new(),
                ..publish.properties
            },
            expires_at: None,
            publisher: None,
            received_at: Instant::now(),
            id,
        };
        Ok((message, expiry))
    }

    /// Sets the expiry from a Message Expiry Interval in seconds.
    pub fn with_expiry_interval(mut self, interval: Option<u32>) -> Self {
        self.expires_at =
            interval.map(|secs| self.received_at + Duration::from_secs(u64::from(secs)));
        self
    }
}

/// When and where a retained message, or its deletion, was written: in a cluster, concurrent writes
/// to one topic on two nodes are ordered by it and the later one wins everywhere. `millis` comes
/// from a hybrid clock (wall-clock milliseconds, never behind a stamp the node has seen), so a
/// write made after another was seen always wins over it; `origin` (the node id) breaks ties.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RetainStamp {
    pub millis: u64,
    pub origin: Arc<str>,
}

/// One write, as it travels between nodes: the topic, its stamp, and the message (`None` for a
/// deletion).
#[derive(Debug, Clone)]
pub struct RetainedWrite {
    pub topic: ByteString,
    pub stamp: RetainStamp,
    pub message: Option<Arc<Message>>,
}

/// One message on its way to one session: the shared message plus what this subscriber's
/// subscription(s) decided about it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message: Arc<Message>,
    /// min(message QoS, granted QoS) [MQTT-3.8.4-8].
    pub qos: QoS,
    /// The RETAIN flag to send: set for retained messages sent on subscribe, and for live messages only
    /// with Retain As Published.
    pub retain: bool,
    /// Identifiers of the matching subscriptions that carry one [MQTT-3.3.4-3].
    pub subscription_ids: Vec<u32>,
    /// This delivery's part of its message's [`Message::data_size`] in the broker-wide count of
    /// queued bytes: the sessions a message is routed to share one copy, so each counts its share.
    pub share: u32,
    /// Where the delivery is in its session's stored sequence (see `crate::storage`); 0 when it is
    /// not stored (QoS 0, a session that ends with its connection, or no storage).
    pub seq: u64,
}

impl Delivery {
    /// The share of a message routed to `sessions` sessions, rounded up.
    pub fn share_of(message: &Message, sessions: usize) -> u32 {
        let share = message.data_size().div_ceil(sessions.max(1));
        u32::try_from(share).unwrap_or(u32::MAX)
    }
}
