//! Sessions: the state that outlives a network connection (subscriptions, queued and inflight messages,
//! the will), and the registry that maps client identifiers to them.
//!
//! A [`Session`] is shared between the router, which enqueues deliveries from any task, and at most one
//! connection task, which drains them. Both reach the state through one short, synchronous critical
//! section (`Session::lock`); nothing holds it across an `.await`.

mod backlog;
mod deque;
mod inflight;
mod journal;
mod queue;
mod registry;
mod snapshot;

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::{Mutex, MutexGuard};

pub use backlog::{BacklogMarks, MIN_DELAYED};
pub use deque::LazyDeque;
pub use inflight::{Inflight, InflightEntry, InflightState};
pub use journal::SessionJournal;
pub use queue::{Enqueued, OutboundQueue, QueueBound, QueueLimits};
pub use registry::SessionRegistry;
pub use snapshot::SessionSnapshot;

use crate::codec::{ReasonCode, SubscriptionOptions};
use crate::control::ConnectionControl;
use crate::identity::{ClientId, ClientInfo, Generation, SessionId};
use crate::message::{Delivery, Message};
use crate::stats::{DropReason, LimitKind, Stats};
use crate::topic::SubscriptionFilter;

/// Session Expiry Interval meaning "never" (0xFFFFFFFF, MQTT 5.0 §3.1.2.11.2).
pub const NEVER_EXPIRES: u32 = u32::MAX;

/// One subscription as the session remembers it, so it can be listed, resumed and removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRecord {
    pub options: SubscriptionOptions,
    pub identifier: Option<u32>,
}

/// A will waiting for its connection to end.
#[derive(Debug, Clone)]
pub struct PendingWill {
    pub message: Message,
    /// Will Delay Interval in seconds (0 for v3).
    pub delay: u32,
    /// Who set it: the will is published on this client's behalf, with its rights when it fires,
    /// which a reload may have changed since CONNECT.
    pub client: Arc<ClientInfo>,
}

/// Everything about a session that changes, behind one lock.
#[derive(Debug)]
pub struct SessionState {
    /// Deliveries not yet handed to a connection.
    pub queue: OutboundQueue,
    /// Outbound QoS 1/2 exchanges in progress.
    pub inflight: Inflight,
    /// Inbound QoS 2 packet identifiers that got PUBREC and await PUBREL; kept with the session so
    /// that a repeated PUBLISH, on this connection or a resumed one, is acknowledged and not
    /// delivered again [MQTT-4.3.3-10].
    pub inbound_qos2: LazyDeque<u16>,
    /// Subscriptions by filter (with its share group, if any), as parsed when the client
    /// subscribed. Changed only through `Broker::subscribe` and `Broker::unsubscribe`, which keep
    /// the router in step.
    pub subscriptions: HashMap<SubscriptionFilter, SubscriptionRecord, ProcessSeed>,
    /// The connection currently attached, if any.
    pub connection: Option<Arc<ConnectionControl>>,
    /// Bumped on every attach, so stale timers and a taken-over connection can tell they are stale.
    pub generation: Generation,
    /// Session Expiry Interval in seconds; `u32::MAX` never expires.
    pub expiry_interval: u32,
    /// What few sessions have (a will waiting out its delay, a move from another node under way),
    /// boxed: this state is paid per connected client.
    rare: Option<Box<Rare>>,
    /// Who holds (or last held) the session, for listings.
    pub client: Option<Arc<ClientInfo>>,
}

/// The parts of a session's state that few sessions have.
#[derive(Debug, Default)]
struct Rare {
    /// A will whose delay is running after its connection closed; a new connection cancels it and
    /// the session ending publishes it. The will of a live connection stays with that connection.
    pending_will: Option<Box<PendingWill>>,
    /// While the session moves here from another node: the ids of the messages delivered to it,
    /// so that one that reaches it twice (once through the old node, once directly) is delivered
    /// once.
    arriving: Option<HashSet<u64, ProcessSeed>>,
    /// A stored session's link to the store (see [`journal`]).
    journal: Option<SessionJournal>,
}

impl SessionState {
    /// The will waiting out its delay, taken away.
    pub fn take_pending_will(&mut self) -> Option<Box<PendingWill>> {
        let will = self.rare.as_mut()?.pending_will.take();
        self.tidy_rare();
        will
    }

    /// The will waiting out its delay, if any.
    pub fn pending_will(&self) -> Option<&PendingWill> {
        self.rare.as_ref()?.pending_will.as_deref()
    }

    /// Keeps a will until its delay has passed or the session ends.
    pub fn set_pending_will(&mut self, will: Box<PendingWill>) {
        self.rare.get_or_insert_default().pending_will = Some(will);
    }

    /// Starts recognising messages that arrive twice while the session moves here.
    pub fn start_arriving(&mut self) {
        self.rare.get_or_insert_default().arriving = Some(HashSet::default());
    }

    /// Records a message as delivered while the session moves here (it came in its snapshot).
    pub fn note_arrived(&mut self, message_id: u64) {
        if let Some(seen) = self.rare.as_mut().and_then(|rare| rare.arriving.as_mut()) {
            seen.insert(message_id);
        }
    }

    /// The move is over: no message can arrive on two paths any more.
    pub fn finish_arriving(&mut self) {
        if let Some(rare) = &mut self.rare {
            rare.arriving = None;
        }
        self.tidy_rare();
    }

    /// Whether `message_id` may be delivered: false for a message already delivered during a move.
    fn first_arrival(&mut self, message_id: u64) -> bool {
        match self.rare.as_mut().and_then(|rare| rare.arriving.as_mut()) {
            Some(seen) => seen.insert(message_id),
            None => true,
        }
    }

    fn tidy_rare(&mut self) {
        if self.rare.as_ref().is_some_and(|rare| {
            rare.pending_will.is_none() && rare.arriving.is_none() && rare.journal.is_none()
        }) {
            self.rare = None;
        }
    }
}

/// The hasher of every session's subscription map: one random seed for the process rather than one
/// per map, which would cost eight bytes in every session.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessSeed;

impl BuildHasher for ProcessSeed {
    type Hasher = foldhash::fast::FoldHasher;

    fn build_hasher(&self) -> Self::Hasher {
        static SEED: OnceLock<foldhash::fast::RandomState> = OnceLock::new();
        SEED.get_or_init(foldhash::fast::RandomState::default)
            .build_hasher()
    }
}

/// Bits of [`Session::flags`].
mod flag {
    /// Mirrors `state.connection.is_some()`, so shared-subscription selection can prefer online
    /// members without taking every member's lock.
    pub const ONLINE: u8 = 1;
    /// The queue reached the backlog's high-water mark while online; cleared once it is back to
    /// the low-water mark (see `crate::backpressure`).
    pub const BACKLOGGED: u8 = 2;
    /// A publisher waited the longest pause for this backlog; none waits for it again until it
    /// drains.
    pub const STALLED: u8 = 4;
    /// Publishers wait for this session; set and cleared under `Backpressure`'s lock.
    pub const AWAITED: u8 = 8;
    /// The session was removed; the router then delivers nothing more to it. Set under the
    /// session's lock, so that whoever holds the lock sees it settled. (A flag rather than a field
    /// of the state: the state is paid per connected client, and one byte there costs eight.)
    pub const ENDED: u8 = 16;
}

/// Whether a delivery left its session's queue backed up, and how far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backlog {
    Clear,
    /// At the high-water mark (or the delay): publishers should wait.
    Reached,
    /// Past [`BacklogMarks::full`]: publishers must wait, whatever share they were given.
    Full,
}

/// A session: identity plus locked state.
#[derive(Debug)]
pub struct Session {
    pub id: SessionId,
    pub client_id: ClientId,
    state: Mutex<SessionState>,
    /// What others check without the lock: see [`flag`].
    flags: AtomicU8,
}

impl Session {
    pub fn new(id: SessionId, client_id: ClientId, queue: Arc<QueueLimits>) -> Self {
        Self {
            id,
            client_id,
            state: Mutex::new(SessionState {
                queue: OutboundQueue::new(queue),
                inflight: Inflight::default(),
                inbound_qos2: LazyDeque::default(),
                subscriptions: HashMap::default(),
                connection: None,
                generation: Generation::default(),
                expiry_interval: 0,
                rare: None,
                client: None,
            }),
            flags: AtomicU8::new(0),
        }
    }

    /// The session's state. Keep the guard short and never across an `.await`.
    pub fn lock(&self) -> MutexGuard<'_, SessionState> {
        self.state.lock()
    }

    pub fn is_online(&self) -> bool {
        self.has(flag::ONLINE)
    }

    pub(crate) fn set_online(&self, online: bool) {
        if online {
            self.flags.fetch_or(flag::ONLINE, Ordering::Relaxed);
        } else {
            self.flags.fetch_and(!flag::ONLINE, Ordering::Relaxed);
        }
    }

    /// Whether the session has ended (see [`flag::ENDED`]).
    pub fn is_ended(&self) -> bool {
        self.has(flag::ENDED)
    }

    /// Ends the session for the router; called with its lock held.
    pub(crate) fn mark_ended(&self) {
        self.flags.fetch_or(flag::ENDED, Ordering::SeqCst);
    }

    /// Whether the queue is between the backlog's marks (see `crate::backpressure`).
    pub fn is_backlogged(&self) -> bool {
        self.has(flag::BACKLOGGED)
    }

    fn has(&self, bit: u8) -> bool {
        self.flags.load(Ordering::SeqCst) & bit != 0
    }

    /// Publishers wait for this session: its connection releases them as the queue drains.
    pub(crate) fn mark_awaited(&self) {
        self.flags.fetch_or(flag::AWAITED, Ordering::SeqCst);
    }

    /// No publisher waits for this session any more.
    pub(crate) fn clear_awaited(&self) {
        self.flags.fetch_and(!flag::AWAITED, Ordering::SeqCst);
    }

    /// A publisher waited the longest pause and the backlog is still there.
    pub(crate) fn mark_stalled(&self) {
        self.flags.fetch_or(flag::STALLED, Ordering::SeqCst);
    }

    /// Ends the backlog; returns whether publishers wait for this session.
    pub(crate) fn clear_backlog(&self) -> bool {
        let flags = self
            .flags
            .fetch_and(!(flag::BACKLOGGED | flag::STALLED), Ordering::SeqCst);
        flags & flag::AWAITED != 0
    }

    /// Called by the session's connection after it took deliveries from `queue` (under this
    /// session's lock): ends the backlog once the queue has eased below the marks. Returns whether
    /// publishers wait for this session and it is no longer backlogged, so some of them may go on.
    pub(crate) fn ease_backlog(&self, queue: &OutboundQueue, marks: BacklogMarks) -> bool {
        let flags = self.flags.load(Ordering::SeqCst);
        if flags & flag::BACKLOGGED == 0 {
            return flags & flag::AWAITED != 0;
        }
        marks.eased(queue) && self.clear_backlog()
    }

    /// Offers a delivery to the session's queue, applying the overflow policy and counting drops.
    /// With `backlog` marks, returns whether the publisher should wait for this session: it is
    /// online, its queue has backed up (by length or by delay), and no publisher gave up on it.
    pub fn deliver(
        &self,
        delivery: Delivery,
        backlog: Option<BacklogMarks>,
        stats: &Stats,
    ) -> Backlog {
        let (outcome, wake, backlogged) = {
            let mut state = self.state.lock();
            if self.is_ended() || !state.first_arrival(delivery.message.id) {
                return Backlog::Clear;
            }
            let online = state.connection.is_some();
            let outcome = state.push_delivery(delivery, online);
            let backlogged = match backlog {
                Some(marks) if online && marks.reached(&state.queue) && self.enter_backlog() => {
                    if marks.full(&state.queue) {
                        Backlog::Full
                    } else {
                        Backlog::Reached
                    }
                }
                _ => Backlog::Clear,
            };
            if matches!(outcome, Enqueued::DroppedDisconnect(_))
                && let Some(connection) = &state.connection
            {
                connection.kick(ReasonCode::QUOTA_EXCEEDED);
            }
            // Woken after the lock is released: waking a task may wake a worker thread.
            let queued = matches!(
                outcome,
                Enqueued::Queued | Enqueued::QueuedDroppedOldest(..)
            );
            let wake = match &state.connection {
                Some(connection) if queued && connection.mark_queued() => {
                    Some(Arc::clone(connection))
                }
                _ => None,
            };
            (outcome, wake, backlogged)
        };
        count_overflow(outcome, stats);
        if let Some(connection) = wake {
            connection.wake();
        }
        backlogged
    }

    /// Queues a retained message for a new subscription if the queue has room for it as it is,
    /// dropping nothing queued before; returns false, queuing nothing, when it has not. Used on
    /// subscribe, where a filter may match more retained messages than a queue holds: those
    /// beyond are not sent (and counted by the caller), rather than pushing out one another.
    pub fn offer_retained(&self, delivery: Delivery, stats: &Stats) -> bool {
        let wake = {
            let mut state = self.state.lock();
            if self.is_ended() || !state.queue.has_room_for(&delivery.message) {
                return false;
            }
            let online = state.connection.is_some();
            let outcome = state.push_delivery(delivery, online);
            count_overflow(outcome, stats);
            match &state.connection {
                Some(connection) if connection.mark_queued() => Some(Arc::clone(connection)),
                _ => None,
            }
        };
        if let Some(connection) = wake {
            connection.wake();
        }
        true
    }

    /// Marks the queue as backlogged; returns whether publishers should wait for it (not if one
    /// already waited the longest pause).
    fn enter_backlog(&self) -> bool {
        let flags = self.flags.load(Ordering::Relaxed);
        if flags & flag::BACKLOGGED == 0 {
            self.flags.fetch_or(flag::BACKLOGGED, Ordering::SeqCst);
        }
        flags & flag::STALLED == 0
    }
}

/// Counts what a full queue dropped, and which bound it hit.
fn count_overflow(outcome: Enqueued, stats: &Stats) {
    let (reason, bound, times) = match outcome {
        Enqueued::Queued => return,
        Enqueued::QueuedDroppedOldest(dropped, bound) => {
            (DropReason::QueueFullOldest, bound, dropped)
        }
        Enqueued::Dropped(bound) | Enqueued::DroppedDisconnect(bound) => {
            (DropReason::QueueFull, bound, 1)
        }
    };
    let limit = match bound {
        QueueBound::Messages => LimitKind::QueueFull,
        QueueBound::Bytes => LimitKind::QueuedBytes,
        QueueBound::TotalBytes => LimitKind::QueuedBytesTotal,
    };
    stats.dropped_many(reason, times);
    stats.limit_hit(limit);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every client has a session for as long as it is connected (and after, if it asks): the
    /// bound is memory per idle client, not timing. With the `Arc`'s counts a 144-byte session
    /// fills jemalloc's 160-byte size class; one byte more costs 32 (the next class is 192).
    #[test]
    fn a_session_stays_small() {
        let size = std::mem::size_of::<Session>();
        assert!(size <= 144, "a session is {size} bytes");
    }

    /// Shared by a connection and its session, so paid per connected client too: with the
    /// `Arc`'s counts, 80 bytes fill jemalloc's 96-byte class.
    #[test]
    fn client_info_stays_small() {
        let size = std::mem::size_of::<ClientInfo>();
        assert!(size <= 80, "a client's description is {size} bytes");
    }
}
