//! A session taken whole, to move to another node of a cluster: what it holds for its client
//! (subscriptions, queued deliveries, the outbound inflight window with its packet identifiers,
//! inbound QoS 2 identifiers awaiting PUBREL, a will waiting out its delay, the expiry), so that the
//! client finds it unchanged wherever it reconnects [MQTT-3.1.2-4].

use crate::codec::PacketId;
use crate::identity::ClientId;
use crate::message::Delivery;
use crate::topic::SubscriptionFilter;

use super::{InflightEntry, PendingWill, Session, SubscriptionRecord};

/// Everything a session holds for its client.
#[derive(Debug, Clone)]
pub struct SessionSnapshot {
    pub client_id: ClientId,
    pub expiry_interval: u32,
    pub subscriptions: Vec<(SubscriptionFilter, SubscriptionRecord)>,
    pub queued: Vec<Delivery>,
    pub inflight: Vec<InflightEntry>,
    /// The packet identifier the next outbound exchange takes.
    pub next_packet_id: PacketId,
    pub inbound_qos2: Vec<u16>,
    pub pending_will: Option<Box<PendingWill>>,
}

impl Session {
    /// Takes everything out for a move and ends the session here, so nothing more is delivered to
    /// it; `None` if it had already ended. Its subscriptions are returned too, for the caller to
    /// take out of the router.
    pub fn take_for_move(&self) -> Option<SessionSnapshot> {
        let mut state = self.lock();
        if self.is_ended() {
            return None;
        }
        self.mark_ended();
        self.set_online(false);
        // The session lives on another node now: this one's store lets it go.
        state.record_end();
        let mut queued = Vec::with_capacity(state.queue.len());
        while let Some(delivery) = state.queue.pop() {
            queued.push(delivery);
        }
        let (inflight, next_packet_id) = state.inflight.take_all();
        let mut inbound_qos2 = Vec::with_capacity(state.inbound_qos2.len());
        while let Some(id) = state.inbound_qos2.pop_front() {
            inbound_qos2.push(id);
        }
        Some(SessionSnapshot {
            client_id: self.client_id.clone(),
            expiry_interval: state.expiry_interval,
            subscriptions: std::mem::take(&mut state.subscriptions)
                .into_iter()
                .collect(),
            queued,
            inflight,
            next_packet_id,
            inbound_qos2,
            pending_will: state.take_pending_will(),
        })
    }

    /// Fills a new, detached session with what a snapshot held, except the subscriptions, which
    /// the broker adds through its one subscription path. Deliveries that meanwhile reached this
    /// node for the session come after the snapshot's.
    pub fn restore(&self, snapshot: &mut SessionSnapshot) {
        let mut state = self.lock();
        state.expiry_interval = snapshot.expiry_interval;
        // Until the old node has forwarded its last delivery, a message may reach the session
        // both through it and directly: each is delivered once.
        state.start_arriving();
        for delivery in snapshot.queued.drain(..) {
            state.note_arrived(delivery.message.id);
            state.push_delivery(delivery, false);
        }
        for entry in &snapshot.inflight {
            if let super::InflightState::AwaitingAck(delivery) = &entry.state {
                state.note_arrived(delivery.message.id);
            }
        }
        state.inflight.restore(
            std::mem::take(&mut snapshot.inflight),
            snapshot.next_packet_id,
        );
        for id in snapshot.inbound_qos2.drain(..) {
            state.inbound_qos2.push_back(id);
        }
        if let Some(will) = snapshot.pending_will.take() {
            state.set_pending_will(will);
        }
    }
}
