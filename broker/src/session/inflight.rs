//! The outbound inflight window: QoS 1/2 messages sent to the client and not yet fully acknowledged,
//! kept in send order so they can be resent in that order when the session resumes [MQTT-4.4.0-1].

use super::deque::LazyDeque;
use crate::codec::PacketId;
use crate::message::Delivery;

/// Where one outbound QoS 1/2 exchange stands.
#[derive(Debug, Clone)]
pub enum InflightState {
    /// PUBLISH sent; waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    AwaitingAck(Delivery),
    /// PUBREL sent; waiting for PUBCOMP. The message itself is no longer needed: a PUBLISH is never
    /// re-sent once its PUBREL has been [MQTT-4.3.3-6]. `seq` is the delivery's place in the
    /// store (0 when not stored).
    AwaitingComp { seq: u64 },
}

#[derive(Debug, Clone)]
pub struct InflightEntry {
    pub packet_id: PacketId,
    pub state: InflightState,
}

/// Outbound packet identifiers and the exchanges they belong to.
#[derive(Debug)]
pub struct Inflight {
    entries: LazyDeque<InflightEntry>,
    next_id: PacketId,
}

impl Default for Inflight {
    fn default() -> Self {
        Self {
            entries: LazyDeque::default(),
            next_id: PacketId::MIN,
        }
    }
}

impl Inflight {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Records a new exchange under a fresh packet identifier and returns that identifier. A
    /// stored delivery takes the identifier its sequence number gives, so that after a crash it is
    /// sent again under the identifier it may already have gone out with, and a QoS 2 receiver
    /// recognises it [MQTT-4.3.3-10] (another one, if that identifier is still in flight after
    /// 65,535 later deliveries).
    pub fn push(&mut self, delivery: Delivery) -> PacketId {
        let id = match stored_packet_id(delivery.seq) {
            Some(id) if self.position(id).is_none() => id,
            _ => self.allocate_id(),
        };
        self.entries.push_back(InflightEntry {
            packet_id: id,
            state: InflightState::AwaitingAck(delivery),
        });
        id
    }

    /// The delivery most recently pushed, while it still awaits its acknowledgement.
    pub fn newest(&self) -> Option<&Delivery> {
        match &self.entries.back()?.state {
            InflightState::AwaitingAck(delivery) => Some(delivery),
            InflightState::AwaitingComp { .. } => None,
        }
    }

    /// Puts back an exchange read from the store that awaits PUBCOMP.
    pub fn push_released(&mut self, packet_id: PacketId, seq: u64) {
        self.entries.push_back(InflightEntry {
            packet_id,
            state: InflightState::AwaitingComp { seq },
        });
    }

    /// Removes the exchange with this identifier if it is in `AwaitingAck` (PUBACK) or
    /// `AwaitingComp` (PUBCOMP) as `expect_comp` says; returns it.
    pub fn complete(&mut self, id: PacketId, expect_comp: bool) -> Option<InflightState> {
        let index = self.position(id)?;
        let matches = self.entries.get(index).is_some_and(|entry| {
            matches!(
                (&entry.state, expect_comp),
                (InflightState::AwaitingAck(_), false) | (InflightState::AwaitingComp { .. }, true)
            )
        });
        if matches {
            self.entries.remove(index).map(|entry| entry.state)
        } else {
            None
        }
    }

    /// PUBREC received: the exchange moves on to PUBCOMP. Returns the delivery it no longer
    /// needs, or `None` for an identifier not awaiting PUBREC (one already released is answered
    /// again, so `Some(None)`).
    pub fn released(&mut self, id: PacketId) -> Option<Option<Delivery>> {
        let entry = self
            .position(id)
            .and_then(|index| self.entries.get_mut(index))?;
        match &entry.state {
            InflightState::AwaitingAck(delivery) => {
                let seq = delivery.seq;
                let old = std::mem::replace(&mut entry.state, InflightState::AwaitingComp { seq });
                match old {
                    InflightState::AwaitingAck(delivery) => Some(Some(delivery)),
                    InflightState::AwaitingComp { .. } => Some(None),
                }
            }
            InflightState::AwaitingComp { .. } => Some(None),
        }
    }

    /// Drops an exchange outright (a PUBREC with an error code ends a QoS 2 exchange); returns it.
    pub fn remove(&mut self, id: PacketId) -> Option<InflightState> {
        let index = self.position(id)?;
        self.entries.remove(index).map(|entry| entry.state)
    }

    /// Takes every exchange out, in send order, with where the identifiers had got to (a session
    /// moving to another node).
    pub fn take_all(&mut self) -> (Vec<InflightEntry>, PacketId) {
        let mut taken = Vec::with_capacity(self.entries.len());
        while let Some(entry) = self.entries.pop_front() {
            taken.push(entry);
        }
        (taken, self.next_id)
    }

    /// Puts exchanges taken with [`Self::take_all`] back, in the same order and under the same
    /// identifiers, so the client's acknowledgements still match.
    pub fn restore(&mut self, entries: Vec<InflightEntry>, next_id: PacketId) {
        for entry in entries {
            self.entries.push_back(entry);
        }
        self.next_id = next_id;
    }

    /// Every exchange in send order, for resending on session resumption.
    pub fn iter(&self) -> impl Iterator<Item = &InflightEntry> {
        self.entries.iter()
    }

    /// Every delivery still held (awaiting PUBACK or PUBREC).
    pub fn deliveries(&self) -> impl Iterator<Item = &Delivery> {
        self.entries.iter().filter_map(|entry| match &entry.state {
            InflightState::AwaitingAck(delivery) => Some(delivery),
            InflightState::AwaitingComp { .. } => None,
        })
    }

    /// Acknowledgements usually arrive in order, so the front is checked first.
    fn position(&self, id: PacketId) -> Option<usize> {
        if self.entries.front().is_some_and(|e| e.packet_id == id) {
            return Some(0);
        }
        self.entries.iter().position(|e| e.packet_id == id)
    }

    /// Identifiers are handed out in sequence, so every identifier in use lies on the arc from the
    /// oldest entry's to the newest's; a candidate off that arc is free without a scan.
    fn allocate_id(&mut self) -> PacketId {
        loop {
            let candidate = self.next_id;
            self.next_id = candidate.next();
            if !self.on_arc(candidate) || self.position(candidate).is_none() {
                return candidate;
            }
        }
    }

    fn on_arc(&self, id: PacketId) -> bool {
        let (Some(front), Some(back)) = (self.entries.front(), self.entries.back()) else {
            return false;
        };
        let (lo, hi, x) = (front.packet_id.get(), back.packet_id.get(), id.get());
        if lo <= hi {
            (lo..=hi).contains(&x)
        } else {
            x >= lo || x <= hi
        }
    }
}

/// The packet identifier of a stored delivery: its sequence number, wrapped onto 1 ..= 65535.
fn stored_packet_id(seq: u64) -> Option<PacketId> {
    if seq == 0 {
        return None;
    }
    PacketId::new(u16::try_from((seq - 1) % 65_535 + 1).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::codec::QoS;
    use crate::message::Message;

    fn delivery() -> Delivery {
        Delivery {
            message: Arc::new(Message::new("t", "p", QoS::AtLeastOnce, false)),
            qos: QoS::AtLeastOnce,
            retain: false,
            subscription_ids: Vec::new(),
            share: 1,
            seq: 0,
        }
    }

    #[test]
    fn identifiers_are_sequential_and_never_reused_while_in_flight() {
        let mut inflight = Inflight::default();
        let first = inflight.push(delivery());
        let second = inflight.push(delivery());
        assert_eq!(first.get(), 1);
        assert_eq!(second.get(), 2);
        // Walk the counter all the way round: id 1 is still in flight and must be skipped.
        assert!(inflight.complete(second, false).is_some());
        for _ in 0..65_533 {
            let id = inflight.push(delivery());
            assert!(inflight.complete(id, false).is_some());
        }
        let wrapped = inflight.push(delivery());
        assert_ne!(
            wrapped, first,
            "an in-flight identifier was handed out again"
        );
    }

    #[test]
    fn qos2_exchange_moves_from_ack_to_comp() {
        let mut inflight = Inflight::default();
        let id = inflight.push(delivery());
        assert!(
            inflight.complete(id, true).is_none(),
            "PUBCOMP before PUBREC must not complete"
        );
        assert!(inflight.released(id).is_some());
        assert!(
            inflight.complete(id, false).is_none(),
            "PUBACK after PUBREC must not complete"
        );
        assert!(inflight.complete(id, true).is_some());
        assert!(inflight.is_empty());
    }

    /// A stored delivery goes out under the identifier its sequence number gives, so the same one
    /// is used again when it is resent after a restart.
    #[test]
    fn a_stored_delivery_takes_the_identifier_of_its_sequence_number() {
        let mut inflight = Inflight::default();
        let stored = |seq| Delivery { seq, ..delivery() };
        assert_eq!(inflight.push(stored(7)).get(), 7);
        assert_eq!(inflight.push(stored(65_535 + 8)).get(), 8);
        // 65,535 deliveries later, 7 is still in flight: another identifier is taken.
        let clash = inflight.push(stored(2 * 65_535 + 7));
        assert!(clash.get() != 7 && clash.get() != 8);
    }
}
