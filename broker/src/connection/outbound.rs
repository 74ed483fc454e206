//! Turning the session's deliveries into PUBLISH packets for this client: inflight window, packet
//! identifiers, topic aliases, remaining expiry, subscription identifiers and the client's maximum
//! packet size, plus resending unacknowledged messages when a session resumes.

use std::time::Instant;

use bytes::BytesMut;

use super::aliases::AliasUse;
use super::{Close, Connection, Extras};
use crate::codec::{self, Ack, EncodeError, Packet, PacketId, ProtocolVersion, PublishView, QoS};
use crate::message::Delivery;
use crate::session::{InflightState, SessionState};
use crate::stats::DropReason;

/// Everything the encoding of one PUBLISH needs that is about the connection, not the message.
struct Encoder<'a> {
    buf: &'a mut BytesMut,
    /// Where the aliases assigned so far are, once there are any.
    extras: &'a mut Option<Box<Extras>>,
    /// The client's Topic Alias Maximum.
    alias_maximum: u16,
    protocol: ProtocolVersion,
    max_packet_size: u32,
}

impl Encoder<'_> {
    /// Encodes one delivery; `Ok(false)` if it exceeds the client's maximum packet size and must be
    /// dropped instead [MQTT-3.1.2-25].
    fn publish(
        &mut self,
        delivery: &Delivery,
        packet_id: Option<PacketId>,
        dup: bool,
        now: Instant,
    ) -> Result<bool, EncodeError> {
        let message = &delivery.message;
        let mut topic: &str = &message.topic;
        let mut topic_alias = None;
        if self.protocol.is_v5() && self.alias_maximum > 0 {
            let aliases = &mut self.extras.get_or_insert_default().outbound_aliases;
            match aliases.resolve(&message.topic, self.alias_maximum) {
                AliasUse::None => {}
                AliasUse::Define(alias) => topic_alias = Some(alias),
                AliasUse::Reuse(alias) => {
                    topic_alias = Some(alias);
                    topic = "";
                }
            }
        }
        // Encoded from the shared message's parts: cloning its payload and properties for every
        // subscriber would touch their reference counts from every core the fan-out runs on.
        let publish = PublishView {
            dup,
            qos: delivery.qos,
            retain: delivery.retain,
            topic,
            packet_id,
            properties: &message.properties,
            message_expiry_interval: message.remaining_expiry(now), // [MQTT-3.3.2-6]
            topic_alias,
            subscription_identifiers: &delivery.subscription_ids,
            payload: &message.payload,
        };
        match codec::encode_publish(&publish, self.protocol, self.max_packet_size, self.buf) {
            Ok(_) => Ok(true),
            Err(EncodeError::TooLarge { .. }) => Ok(false),
            Err(other) => Err(other),
        }
    }
}

impl Connection {
    fn encoder(&mut self) -> Encoder<'_> {
        Encoder {
            buf: &mut self.write_buf,
            extras: &mut self.extras,
            alias_maximum: self.outbound_alias_maximum,
            protocol: self.protocol,
            max_packet_size: self.client_max_packet_size,
        }
    }

    /// Resends every unacknowledged exchange of a resumed session, in order, PUBLISH with DUP set and
    /// PUBREL as they were [MQTT-4.4.0-1].
    pub(super) fn resend_inflight(&mut self) -> Result<(), Close> {
        let session = std::sync::Arc::clone(&self.session);
        let state = session.lock();
        if state.inflight.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        for entry in state.inflight.iter() {
            match &entry.state {
                InflightState::AwaitingAck(delivery) => {
                    self.encoder()
                        .publish(delivery, Some(entry.packet_id), true, now)
                        .map_err(encode_failure)?;
                }
                InflightState::AwaitingComp { .. } => {
                    self.send(&Packet::PubRel(Ack::success(entry.packet_id)))?;
                }
            }
        }
        Ok(())
    }

    /// Moves deliveries from the session queue into the write buffer while the inflight window and
    /// the buffer allow. Order is kept: a QoS 1/2 message waiting for window space holds back the
    /// messages behind it [MQTT-4.6.0-5].
    pub(super) fn pull_deliveries(&mut self) -> Result<(), Close> {
        let session = std::sync::Arc::clone(&self.session);
        let mut state = session.lock();
        if !state.queue.is_empty() {
            self.pull_from(&mut state)?;
        }
        self.awaiting_acks = !state.inflight.is_empty();
        // Publishers waiting for this queue to drain are woken outside the session's lock.
        let release = self
            .slot
            .broker()
            .backpressure()
            .taken(&session, &state.queue);
        drop(state);
        if let Some(queued) = release {
            self.slot.broker().backpressure().release(&session, queued);
        }
        Ok(())
    }

    fn pull_from(&mut self, state: &mut SessionState) -> Result<(), Close> {
        let now = Instant::now();
        let stats = std::sync::Arc::clone(self.slot.broker().stats());
        while self.write_buf.len() < super::WRITE_HIGH_WATER {
            let Some(front) = state.queue.front() else {
                break;
            };
            if front.qos != QoS::AtMostOnce
                && state.inflight.len() >= usize::from(self.inflight_window)
            {
                break;
            }
            let Some(delivery) = state.queue.pop() else {
                break;
            };
            if delivery.message.is_expired(now) {
                stats.dropped(DropReason::Expired); // [MQTT-3.3.2-5]
                state.discard(&delivery);
                continue;
            }
            let (qos, received_at) = (delivery.qos, delivery.message.received_at);
            let sent = if qos == QoS::AtMostOnce {
                self.encoder()
                    .publish(&delivery, None, false, now)
                    .map_err(encode_failure)?
            } else {
                // The identifier is allocated first so the encoded packet carries it; a delivery too
                // large for the client is taken out of the window again.
                let id = state.inflight.push(delivery);
                let sent = match state.inflight.newest() {
                    Some(delivery) => self
                        .encoder()
                        .publish(delivery, Some(id), false, now)
                        .map_err(encode_failure)?,
                    None => false,
                };
                if !sent {
                    state.abandon(id);
                }
                sent
            };
            if sent {
                stats.message_sent(qos);
                stats
                    .delivery_latency
                    .observe(now.saturating_duration_since(received_at).as_secs_f64());
            } else {
                stats.dropped(DropReason::TooLargeForClient);
            }
        }
        Ok(())
    }
}

fn encode_failure(error: EncodeError) -> Close {
    Close::Server(
        crate::codec::ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR,
        std::borrow::Cow::Owned(error.to_string()),
    )
}
