//! What the broker tells the store: one [`Change`] per change to durable state, in the order the
//! broker made them. The writer turns them into table writes (see `writer`).

use std::sync::Arc;

use crate::codec::SubscriptionOptions;
use crate::identity::SessionId;
use crate::message::{Delivery, RetainedWrite};

use super::records::SessionRecord;

/// One change to what must outlive the process.
#[derive(Debug)]
pub enum Change {
    /// A stored session's record, written whole: when it opens, resumes or detaches.
    Session {
        id: SessionId,
        record: Box<SessionRecord>,
    },
    /// The session ended: its record, subscriptions, deliveries and inbound packet ids go, and
    /// `messages` (the ids its deliveries held) lose a reference each.
    EndSession { id: SessionId, messages: Vec<u64> },
    Subscribe {
        session: SessionId,
        filter: Arc<str>,
        options: SubscriptionOptions,
        identifier: Option<u32>,
    },
    Unsubscribe {
        session: SessionId,
        filter: Arc<str>,
    },
    /// A QoS 1 or 2 delivery joined the session's queue under `seq`.
    Deliver {
        session: SessionId,
        seq: u64,
        delivery: Delivery,
    },
    /// The client sent PUBREC for the delivery sent under `packet_id`: only PUBREL is left, and the
    /// message itself is no longer needed [MQTT-4.3.3-6].
    Release {
        session: SessionId,
        seq: u64,
        packet_id: u16,
        message: u64,
    },
    /// The delivery is done with (acknowledged, expired, dropped); `message` is the id it still
    /// held, `None` once released.
    Forget {
        session: SessionId,
        seq: u64,
        message: Option<u64>,
    },
    /// An inbound QoS 2 packet id got PUBREC (`held`) or PUBREL (not).
    InboundQos2 {
        session: SessionId,
        packet_id: u16,
        held: bool,
    },
    /// A topic's retained message was written or deleted.
    Retained(RetainedWrite),
}

impl Change {
    /// A delivery as stored, for [`Change::Deliver`].
    pub fn deliver(session: SessionId, delivery: &Delivery) -> Self {
        Change::Deliver {
            session,
            seq: delivery.seq,
            delivery: delivery.clone(),
        }
    }

    /// The deliveries of a session that ends hold these messages.
    pub fn held_messages<'a>(deliveries: impl Iterator<Item = &'a Delivery>) -> Vec<u64> {
        deliveries
            .filter(|delivery| delivery.seq != 0)
            .map(|delivery| delivery.message.id)
            .collect()
    }
}
