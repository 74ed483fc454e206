//! The broker's side of `crate::storage`: which sessions are stored, the retained writes the store
//! hears of, and rebuilding sessions and retained messages from the store at start.
//!
//! A session is stored when it outlives its connection (a Session Expiry Interval above 0) and the
//! broker has a store; the session then records its own changes (`crate::session::SessionJournal`).
//! After a restart each stored session is detached: its expiry and its will's delay count from
//! when its connection ended, so the time the broker was down counts; for a connection the crash
//! itself ended, whose moment is not on disk, they count from the restart.

use std::sync::Arc;
use std::time::Duration;

use tracing::info;

use super::Broker;
use crate::identity::{Generation, SessionId};
use crate::message::RetainedWrite;
use crate::session::{NEVER_EXPIRES, PendingWill, Session, SessionJournal, SessionState};
use crate::storage::{Change, Recovered, RecoveredDelivery, RecoveredSession, unix_millis_now};

impl Broker {
    /// Makes a new session stored, if it outlives its connection and the broker has a store.
    pub(super) fn start_journal(&self, session: &Session, state: &mut SessionState) {
        if let Some(storage) = &self.storage
            && state.expiry_interval > 0
        {
            state.start_journal(SessionJournal::new(session.id, storage.clone(), 1));
        }
    }

    /// The will of a connection that holds a stored session is stored with it (see
    /// `SessionState::keep_live_will`).
    pub fn store_will(&self, session: &Session, will: &PendingWill) {
        session.lock().keep_live_will(&session.client_id, will);
    }

    /// The store hears of a retained message written or deleted; `$SYS` topics are the broker's
    /// own and written afresh at start.
    pub(super) fn store_retained(&self, write: &RetainedWrite) {
        if let Some(storage) = &self.storage
            && !crate::topic::is_sys(&write.topic)
        {
            storage.record(Change::Retained(write.clone()));
        }
    }

    /// Rebuilds retained messages and sessions read back from the store. Called once, before the
    /// listeners accept anyone.
    pub fn recover(self: &Arc<Self>, recovered: Recovered) {
        let Some(storage) = self.storage.clone() else {
            return;
        };
        let retained = recovered.retained.len();
        let damaged = recovered.damaged_total();
        let expired_messages = recovered.expired;
        for write in recovered.retained {
            self.retained.apply(write);
        }
        let now_millis = unix_millis_now();
        let (mut resumed, mut expired) = (0usize, 0usize);
        let mut wills_due = Vec::new();
        for stored in recovered.sessions {
            self.sessions.reserve(SessionId(stored.id));
            match self.recover_session(stored, now_millis, &storage) {
                Some((session, will_due)) => {
                    resumed += 1;
                    if let Some(will) = will_due {
                        wills_due.push((session, will));
                    }
                }
                None => expired += 1,
            }
        }
        // Wills whose delay ran out while the broker was down go out now that every session is
        // back, so that they reach the sessions stored with them. (Their sessions' records no
        // longer hold them: a crash from here on loses such a will rather than sending it twice.)
        for (session, will) in wills_due {
            self.publish_will(will, &session);
        }
        info!(
            sessions = resumed,
            expired_sessions = expired,
            retained,
            damaged,
            expired_messages,
            "storage: state rebuilt"
        );
    }

    /// Puts one stored session back, detached; `None` when it expired while the broker was down
    /// (it is then removed from the store). Returns a will whose delay has already run out.
    fn recover_session(
        self: &Arc<Self>,
        stored: RecoveredSession,
        now_millis: u64,
        storage: &crate::storage::Storage,
    ) -> Option<(Arc<Session>, Option<Box<PendingWill>>)> {
        let RecoveredSession {
            id,
            record,
            subscriptions,
            deliveries,
            inbound_qos2,
        } = stored;
        let id = SessionId(id);
        // A session whose connection was attached when the broker stopped lost it then.
        let disconnected_at = record.disconnected_at.unwrap_or(now_millis);
        let down_for = Duration::from_millis(now_millis.saturating_sub(disconnected_at));
        let expiry = record.expiry_interval;
        let lifetime = Duration::from_secs(u64::from(expiry));
        if expiry == 0 || (expiry != NEVER_EXPIRES && down_for >= lifetime) {
            let messages = deliveries
                .iter()
                .filter_map(|delivery| match delivery {
                    RecoveredDelivery::Pending(delivery) => Some(delivery.message.id),
                    RecoveredDelivery::Released { .. } => None,
                })
                .collect();
            storage.record(Change::EndSession { id, messages });
            return None;
        }
        if let Some(older) = self.sessions.get(&record.client_id) {
            // Two records for one client id: a clean start replaced the older session just before
            // the broker stopped, and its end was not on disk yet. Ids only grow: this one is newer.
            self.end_session(&older, None, None);
        }
        let session = Arc::new(Session::new(
            id,
            record.client_id.clone(),
            Arc::clone(&self.queue_limits),
        ));
        {
            let mut state = session.lock();
            state.generation = Generation::FIRST;
            state.expiry_interval = expiry;
            state.client = record.will.as_ref().map(|will| Arc::clone(&will.client));
        }
        self.sessions.lock().insert(Arc::clone(&session));
        // Subscriptions go back through the one subscription path (router, the session's record),
        // before the session records changes: the store holds them already.
        for (filter, options, identifier) in subscriptions {
            self.subscribe_quietly(&session, filter, options, identifier);
        }
        let mut will_due = None;
        {
            let mut state = session.lock();
            state.start_journal(SessionJournal::new(id, storage.clone(), 1));
            for delivery in deliveries {
                match delivery {
                    RecoveredDelivery::Pending(delivery) => state.restore_delivery(delivery),
                    RecoveredDelivery::Released { seq, packet_id } => {
                        if let Some(packet_id) = crate::codec::PacketId::new(packet_id) {
                            state.restore_released(packet_id, seq);
                        }
                    }
                }
            }
            for packet_id in inbound_qos2 {
                state.inbound_qos2.push_back(packet_id);
            }
            if let Some(will) = record.will {
                let will = Box::new(PendingWill {
                    message: will.message,
                    delay: will.delay,
                    client: will.client,
                });
                let delay = Duration::from_secs(u64::from(will.delay));
                match delay.checked_sub(down_for) {
                    Some(left) if !left.is_zero() => {
                        state.set_pending_will(will);
                        self.spawn_will_timer(&session, Generation::FIRST, left);
                    }
                    _ => will_due = Some(will),
                }
            }
            state.record_session(&session.client_id, Some(Some(disconnected_at)));
        }
        if expiry != NEVER_EXPIRES {
            self.spawn_expiry_timer(&session, Generation::FIRST, lifetime - down_for);
        }
        Some((session, will_due))
    }
}
