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
    /// re-sent once its PUBREL has been [MQTT-4.3.3-6].
    AwaitingComp,
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

    /// Records a new exchange under a fresh packet identifier and returns that identifier.
    pub fn push(&mut self, delivery: Delivery) -> PacketId {
        let id = self.allocate_id();
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
            InflightState::AwaitingComp => None,
        }
    }

    /// Removes the exchange with this identifier if it is in `AwaitingAck` (PUBACK) or
    /// `AwaitingComp` (PUBCOMP) as `expect_comp` says; returns whether one was removed.
    pub fn complete(&mut self, id: PacketId, expect_comp: bool) -> bool {
        let Some(index) = self.position(id) else {
            return false;
        };
        let matches = self.entries.get(index).is_some_and(|entry| {
            matches!(
                (&entry.state, expect_comp),
                (InflightState::AwaitingAck(_), false) | (InflightState::AwaitingComp, true)
            )
        });
        if matches {
            self.entries.remove(index);
        }
        matches
    }

    /// PUBREC received: the exchange moves on to PUBCOMP. Returns false for an unknown identifier.
    pub fn released(&mut self, id: PacketId) -> bool {
        match self
            .position(id)
            .and_then(|index| self.entries.get_mut(index))
        {
            Some(entry) => {
                entry.state = InflightState::AwaitingComp;
                true
            }
            None => false,
        }
    }

    /// Drops an exchange outright (a PUBREC with an error code ends a QoS 2 exchange).
    pub fn remove(&mut self, id: PacketId) -> bool {
        match self.position(id) {
            Some(index) => {
                self.entries.remove(index);
                true
            }
            None => false,
        }
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
        assert!(inflight.complete(second, false));
        for _ in 0..65_533 {
            let id = inflight.push(delivery());
            assert!(inflight.complete(id, false));
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
            !inflight.complete(id, true),
            "PUBCOMP before PUBREC must not complete"
        );
        assert!(inflight.released(id));
        assert!(
            !inflight.complete(id, false),
            "PUBACK after PUBREC must not complete"
        );
        assert!(inflight.complete(id, true));
        assert!(inflight.is_empty());
    }
}
