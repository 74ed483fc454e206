//! A stored session's link to the store: every change to what outlives the process (a delivery
//! queued, sent, acknowledged or dropped; an inbound QoS 2 packet id held or released) is recorded
//! here, under the session's lock, so the store sees the changes in the order they were made.
//!
//! Sessions that end with their connection (Session Expiry 0) are not stored, nor are QoS 0
//! deliveries: neither would be resumed after a restart.

use std::sync::Arc;

use crate::codec::{PacketId, QoS};
use crate::identity::{ClientId, SessionId};
use crate::message::Delivery;
use crate::storage::{Change, SessionRecord, Storage, StoredWill};

use super::{InflightState, PendingWill, SessionState};

/// What a stored session needs to record its changes.
#[derive(Debug)]
pub struct SessionJournal {
    session: SessionId,
    storage: Storage,
    /// The sequence number the next stored delivery takes.
    next_seq: u64,
    /// When its connection ended (milliseconds since the Unix epoch); `None` while one is
    /// attached. The session's expiry and its will's delay count from here, across a restart.
    disconnected_at: Option<u64>,
    /// The will of the connection attached now, kept so that a crash of the broker does not lose
    /// it: after the restart the session is detached and the will goes out after its delay.
    live_will: Option<StoredWill>,
}

impl SessionJournal {
    /// `next_seq` is one past the highest sequence number the store holds for the session (1 for
    /// a new one).
    pub fn new(session: SessionId, storage: Storage, next_seq: u64) -> Self {
        Self {
            session,
            storage,
            next_seq: next_seq.max(1),
            disconnected_at: None,
            live_will: None,
        }
    }
}

impl SessionState {
    /// Makes the session a stored one: from now on its changes are recorded.
    pub fn start_journal(&mut self, journal: SessionJournal) {
        self.rare.get_or_insert_default().journal = Some(journal);
    }

    /// The store this session records its changes in, if it is stored.
    pub fn journal(&self) -> Option<&SessionJournal> {
        self.rare.as_ref()?.journal.as_ref()
    }

    /// Records the session's own record (expiry, will, when it was disconnected), if it is
    /// stored: when it opens, resumes, detaches, or its will goes out. `disconnected_at` is the
    /// moment its connection ended, `None` while one is attached, and kept when `Some(None)`.
    pub fn record_session(&mut self, client_id: &ClientId, disconnected_at: Option<Option<u64>>) {
        let Some(journal) = self.rare.as_mut().and_then(|rare| rare.journal.as_mut()) else {
            return;
        };
        if let Some(at) = disconnected_at {
            journal.disconnected_at = at;
            // Attached or detached, the connection whose will this was is gone.
            journal.live_will = None;
        }
        let disconnected_at = journal.disconnected_at;
        let live_will = journal.live_will.clone();
        let will = self.pending_will().map(stored_will).or(live_will);
        let record = SessionRecord {
            client_id: client_id.clone(),
            expiry_interval: self.expiry_interval,
            disconnected_at,
            will,
        };
        self.record(|id| Change::Session {
            id,
            record: Box::new(record),
        });
    }

    /// The attached connection has a will: stored with the session, so that it goes out (after its
    /// delay) even if the broker crashes before the connection ends.
    pub fn keep_live_will(&mut self, client_id: &ClientId, will: &PendingWill) {
        let Some(journal) = self.rare.as_mut().and_then(|rare| rare.journal.as_mut()) else {
            return;
        };
        journal.live_will = Some(stored_will(will));
        self.record_session(client_id, None);
    }

    /// Puts back a delivery read from the store, which holds it already: nothing is recorded
    /// unless the queue's bounds (lower since) drop it.
    pub fn restore_delivery(&mut self, delivery: Delivery) {
        let Some(journal) = self.rare.as_mut().and_then(|rare| rare.journal.as_mut()) else {
            return;
        };
        journal.next_seq = journal.next_seq.max(delivery.seq + 1);
        let (session, storage) = (journal.session, journal.storage.clone());
        let outcome = self
            .queue
            .push_observed(delivery.clone(), false, |dropped| {
                storage.record(forget(session, &dropped));
            });
        if matches!(
            outcome,
            super::Enqueued::Dropped(_) | super::Enqueued::DroppedDisconnect(_)
        ) {
            storage.record(forget(session, &delivery));
        }
    }

    /// Puts back an exchange read from the store that awaits PUBCOMP.
    pub fn restore_released(&mut self, packet_id: PacketId, seq: u64) {
        if let Some(journal) = self.rare.as_mut().and_then(|rare| rare.journal.as_mut()) {
            journal.next_seq = journal.next_seq.max(seq + 1);
        }
        self.inflight.push_released(packet_id, seq);
    }

    /// Records a change, if the session is stored.
    pub fn record(&self, change: impl FnOnce(SessionId) -> Change) {
        if let Some(journal) = self.journal() {
            journal.storage.record(change(journal.session));
        }
    }

    /// Queues a delivery; a stored session stores a QoS 1 or 2 one (under the next sequence
    /// number) and forgets what the overflow policy drops for it.
    pub(super) fn push_delivery(
        &mut self,
        mut delivery: Delivery,
        online: bool,
    ) -> super::Enqueued {
        let Some(journal) = self.rare.as_mut().and_then(|rare| rare.journal.as_mut()) else {
            return self.queue.push(delivery, online);
        };
        if delivery.qos == QoS::AtMostOnce {
            delivery.seq = 0;
            return self.queue.push(delivery, online);
        }
        if delivery.seq == 0 {
            delivery.seq = journal.next_seq;
            journal.next_seq += 1;
        } else {
            // A delivery read back from the store keeps its place.
            journal.next_seq = journal.next_seq.max(delivery.seq + 1);
        }
        let (session, storage) = (journal.session, journal.storage.clone());
        let stored = Change::deliver(session, &delivery);
        let outcome = self.queue.push_observed(delivery, online, |dropped| {
            storage.record(forget(session, &dropped));
        });
        if matches!(
            outcome,
            super::Enqueued::Queued | super::Enqueued::QueuedDroppedOldest(..)
        ) {
            storage.record(stored);
        }
        outcome
    }

    /// A delivery taken from the queue will not be sent (it expired, or is too large for the
    /// client): a stored one is forgotten.
    pub fn discard(&self, delivery: &Delivery) {
        if delivery.seq != 0 {
            self.record(|session| forget(session, delivery));
        }
    }

    /// PUBACK (`comp` false) or PUBCOMP (`comp` true) for an outbound exchange; returns whether
    /// it was one awaiting that.
    pub fn acknowledge(&mut self, id: PacketId, comp: bool) -> bool {
        match self.inflight.complete(id, comp) {
            Some(state) => {
                self.forget_exchange(&state);
                true
            }
            None => false,
        }
    }

    /// PUBREC with success for an outbound QoS 2 exchange: only PUBREL is left. Returns whether
    /// the identifier was in flight.
    pub fn release(&mut self, id: PacketId) -> bool {
        match self.inflight.released(id) {
            Some(Some(delivery)) => {
                if delivery.seq != 0 {
                    self.record(|session| Change::Release {
                        session,
                        seq: delivery.seq,
                        packet_id: id.get(),
                        message: delivery.message.id,
                    });
                }
                true
            }
            Some(None) => true,
            None => false,
        }
    }

    /// Ends an outbound exchange outright (PUBREC with an error, a PUBLISH that could not be
    /// sent).
    pub fn abandon(&mut self, id: PacketId) {
        if let Some(state) = self.inflight.remove(id) {
            self.forget_exchange(&state);
        }
    }

    /// An inbound QoS 2 message got PUBREC: its packet id is held until PUBREL [MQTT-4.3.3-10].
    pub fn hold_inbound_qos2(&mut self, id: u16) {
        self.inbound_qos2.push_back(id);
        self.record(|session| Change::InboundQos2 {
            session,
            packet_id: id,
            held: true,
        });
    }

    /// PUBREL for an inbound QoS 2 message; returns whether its packet id was held.
    pub fn release_inbound_qos2(&mut self, id: u16) -> bool {
        let Some(index) = self.inbound_qos2.iter().position(|&held| held == id) else {
            return false;
        };
        self.inbound_qos2.remove(index);
        self.record(|session| Change::InboundQos2 {
            session,
            packet_id: id,
            held: false,
        });
        true
    }

    /// The session ends here (expired, taken over by a clean start, moved to another node): the
    /// store lets go of it, and of the messages its deliveries held. Called before its queue is
    /// cleared.
    pub fn record_end(&self) {
        self.record(|id| Change::EndSession {
            id,
            messages: Change::held_messages(self.queue.iter().chain(self.inflight.deliveries())),
        });
    }

    fn forget_exchange(&self, state: &InflightState) {
        match state {
            InflightState::AwaitingAck(delivery) => self.discard(delivery),
            InflightState::AwaitingComp { seq } if *seq != 0 => {
                let seq = *seq;
                self.record(|session| Change::Forget {
                    session,
                    seq,
                    message: None,
                });
            }
            InflightState::AwaitingComp { .. } => {}
        }
    }
}

fn stored_will(will: &PendingWill) -> StoredWill {
    StoredWill {
        client: Arc::clone(&will.client),
        delay: will.delay,
        message: will.message.clone(),
    }
}

fn forget(session: SessionId, delivery: &Delivery) -> Change {
    Change::Forget {
        session,
        seq: delivery.seq,
        message: Some(delivery.message.id),
    }
}
