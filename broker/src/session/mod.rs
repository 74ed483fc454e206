//! Sessions: the state that outlives a network connection (subscriptions, queued and inflight messages,
//! the will), and the registry that maps client identifiers to them.
//!
//! A [`Session`] is shared between the router, which enqueues deliveries from any task, and at most one
//! connection task, which drains them. Both reach the state through one short, synchronous critical
//! section (`Session::lock`); nothing holds it across an `.await`.

mod deque;
mod inflight;
mod queue;
mod registry;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::BuildHasher;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{SystemTime, UNIX_EPOCH};

use bytestring::ByteString;
use futures_util::task::AtomicWaker;
use parking_lot::{Mutex, MutexGuard};

pub use deque::LazyDeque;
pub use inflight::{Inflight, InflightEntry, InflightState};
pub use queue::{Enqueued, OutboundQueue};
pub use registry::SessionRegistry;

use crate::backpressure::BacklogMarks;
use crate::codec::{ReasonCode, SubscriptionOptions};
use crate::config::QueueOverflow;
use crate::hook::ClientInfo;
use crate::message::{Delivery, Message};
use crate::stats::{DropReason, LimitKind, Stats};

/// The broker-wide identity of one session incarnation (a new session for the same client id gets a new
/// one), used for No Local and to order sessions cheaply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub u64);

/// A client identifier as the client sent it (or as the broker assigned it).
///
/// Its own small allocation, shared by the session, the registry and the client's identity: not a
/// slice of the CONNECT packet, which would keep the whole packet for as long as the client stays.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(Arc<str>);

impl ClientId {
    pub fn new(id: impl AsRef<str>) -> Self {
        Self(Arc::from(id.as_ref()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

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
}

/// The handle by which others reach a session's connection: a request to close (with the reason the
/// connection should give the client) and the wake-up for queued deliveries.
///
/// Both wake the connection through one atomic waker slot and are read as flags, so a connection
/// waits on neither with a registered future: an idle client costs only this small block. Broker
/// shutdown reaches every connection the same way, as a kick with reason 0x8B.
#[derive(Debug, Default)]
pub struct ConnectionControl {
    /// `KICKED | reason` once the connection was asked to close; 0 until then.
    kick: AtomicU16,
    /// Set when deliveries are queued; cleared by the connection when it looks at the queue.
    queued: AtomicBool,
    /// The connection's task. An atomic slot, not a `Notify`: the router wakes a connection for
    /// every delivery, and this takes no lock on either side. It lives here rather than in the
    /// session so that a taken-over connection cannot overwrite its successor's waker.
    waker: AtomicWaker,
    /// While the connection is parked without a task (`connection::park`), the lot's id for it;
    /// 0 otherwise. A wake-up then goes to the lot, which resumes the connection in a new task.
    parked: AtomicU64,
}

/// The bit that marks [`ConnectionControl::kick`] as set, so every reason code (0x00 included) fits.
const KICKED: u16 = 0x100;

impl ConnectionControl {
    /// Tells the connection that deliveries are waiting in its session's queue.
    pub fn notify_queued(&self) {
        if self.mark_queued() {
            self.wake();
        }
    }

    /// Marks deliveries as waiting; true if the connection is to be woken for them, which the
    /// caller does with [`Self::wake`] once it holds no lock. A connection told before and not yet
    /// looking needs no second wake-up: the first is on its way, and the connection reads the flag
    /// after it. In a fan-out at full speed most deliveries find it so, and leave the connection's
    /// waker slot and reference count alone.
    pub(crate) fn mark_queued(&self) -> bool {
        // SeqCst, like the parked slot: a connection parking stores its id and then looks at the
        // flags, a notifier sets a flag and then looks at the id, and one of the two must see the
        // other's write.
        !self.queued.swap(true, Ordering::SeqCst)
    }

    /// Resolves once deliveries were queued since the last time it resolved.
    pub fn queued(&self) -> Signal<'_> {
        Signal {
            control: self,
            raised: Self::take_queued,
        }
    }

    /// Asks the connection to send DISCONNECT with `reason` (v5) and close. The first reason wins.
    pub fn kick(&self, reason: ReasonCode) {
        let first = self
            .kick
            .compare_exchange(
                0,
                KICKED | u16::from(reason.0),
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_ok();
        if first {
            self.wake();
        }
    }

    /// Wakes the connection's task, or has the parking lot resume the connection.
    pub(crate) fn wake(&self) {
        if self.parked.load(Ordering::SeqCst) != 0 {
            let parked = self.parked.swap(0, Ordering::SeqCst);
            if parked != 0 {
                crate::connection::park::wake(parked);
                return;
            }
        }
        self.waker.wake();
    }

    /// Records that the connection is parked under `id`: wake-ups go to the lot from now on. The
    /// ended task's waker is dropped, as it would keep the task's memory.
    pub(crate) fn set_parked(&self, id: u64) {
        drop(self.waker.take());
        self.parked.store(id, Ordering::SeqCst);
    }

    /// Takes the parked id back (0 if a wake-up already took it): wake-ups go to the task again.
    pub(crate) fn take_parked(&self) -> u64 {
        self.parked.swap(0, Ordering::SeqCst)
    }

    /// Whether a kick or deliveries wait, without clearing anything: a connection that is about to
    /// park looks here after recording its id, so that neither is missed.
    pub(crate) fn has_pending(&self) -> bool {
        self.kick.load(Ordering::SeqCst) != 0 || self.queued.load(Ordering::SeqCst)
    }

    /// Resolves once the connection was kicked.
    pub fn kicked(&self) -> Signal<'_> {
        Signal {
            control: self,
            raised: Self::is_kicked,
        }
    }

    pub fn is_kicked(&self) -> bool {
        self.kick.load(Ordering::Acquire) != 0
    }

    /// The reason the connection was kicked with, if it was.
    pub fn reason(&self) -> Option<ReasonCode> {
        let kick = self.kick.load(Ordering::Acquire);
        // Truncation keeps the reason byte below the KICKED bit.
        (kick != 0).then_some(ReasonCode(kick as u8))
    }

    /// Makes the next kick or delivery wake this task. Register before looking at the flags: a
    /// notification in between is then seen one way or the other.
    pub fn register(&self, waker: &Waker) {
        self.waker.register(waker);
    }

    /// Whether deliveries were queued since the last call (which clears the mark).
    pub fn take_queued(&self) -> bool {
        self.queued.swap(false, Ordering::AcqRel)
    }
}

/// Resolves once one of the control block's flags is raised: see [`ConnectionControl::queued`] and
/// [`ConnectionControl::kicked`].
#[derive(Debug)]
pub struct Signal<'a> {
    control: &'a ConnectionControl,
    /// Reads (and for deliveries, clears) the flag.
    raised: fn(&ConnectionControl) -> bool,
}

impl Future for Signal<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.control.register(cx.waker());
        if (self.raised)(self.control) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// Everything about a session that changes, behind one lock.
#[derive(Debug)]
pub struct SessionState {
    /// Deliveries not yet handed to a connection.
    pub queue: OutboundQueue,
    /// Outbound QoS 1/2 exchanges in progress.
    pub inflight: Inflight,
    /// Inbound QoS 2 packet identifiers that got PUBREC and await PUBREL [MQTT-4.3.3-9?]; kept with
    /// the session so a resumed connection still recognises duplicates.
    pub inbound_qos2: LazyDeque<u16>,
    /// Subscriptions by the filter string the client sent (with any `$share/` prefix).
    pub subscriptions: HashMap<ByteString, SubscriptionRecord, ProcessSeed>,
    /// The connection currently attached, if any.
    pub connection: Option<Arc<ConnectionControl>>,
    /// Bumped on every attach, so stale timers and a taken-over connection can tell they are stale.
    pub generation: Generation,
    /// Session Expiry Interval in seconds; `u32::MAX` never expires.
    pub expiry_interval: u32,
    /// A will whose delay is running after its connection closed; a new connection cancels it and the
    /// session ending publishes it. The will of a live connection stays with that connection.
    /// Boxed: most sessions have no will, and this state is paid per connected client.
    pub pending_will: Option<Box<PendingWill>>,
    /// Set once the session is removed; the router then delivers nothing more to it.
    pub ended: bool,
    /// Who holds (or last held) the session, for listings.
    pub client: Option<Arc<ClientInfo>>,
    /// When the current connection attached, in seconds since the Unix epoch (32 bits last until
    /// 2106, and this state is paid per connected client).
    pub connected_since: Option<NonZeroU32>,
}

/// Counts a session's attachments; see [`SessionState::generation`]. 32 bits wrap only after four
/// billion reconnects, long after any timer from the first one has fired.
pub type Generation = u32;

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

/// Seconds since the Unix epoch now, for [`SessionState::connected_since`].
pub fn unix_seconds_now() -> Option<NonZeroU32> {
    let seconds = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    NonZeroU32::new(u32::try_from(seconds).ok()?)
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
    pub fn new(
        id: SessionId,
        client_id: ClientId,
        queue_capacity: usize,
        overflow: QueueOverflow,
    ) -> Self {
        Self {
            id,
            client_id,
            state: Mutex::new(SessionState {
                queue: OutboundQueue::new(queue_capacity, overflow),
                inflight: Inflight::default(),
                inbound_qos2: LazyDeque::default(),
                subscriptions: HashMap::default(),
                connection: None,
                generation: 0,
                expiry_interval: 0,
                pending_will: None,
                ended: false,
                client: None,
                connected_since: None,
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
    ) -> bool {
        let (outcome, wake, backlogged) = {
            let mut state = self.state.lock();
            if state.ended {
                return false;
            }
            let online = state.connection.is_some();
            let outcome = state.queue.push(delivery, online);
            let backlogged = online
                && backlog.is_some_and(|marks| marks.reached(&state.queue))
                && self.enter_backlog();
            if outcome == Enqueued::DroppedDisconnect
                && let Some(connection) = &state.connection
            {
                connection.kick(ReasonCode::QUOTA_EXCEEDED);
            }
            // Woken after the lock is released: waking a task may wake a worker thread.
            let queued = matches!(outcome, Enqueued::Queued | Enqueued::QueuedDroppedOldest);
            let wake = match &state.connection {
                Some(connection) if queued && connection.mark_queued() => {
                    Some(Arc::clone(connection))
                }
                _ => None,
            };
            (outcome, wake, backlogged)
        };
        match outcome {
            Enqueued::Queued => {}
            Enqueued::QueuedDroppedOldest => {
                stats.dropped(DropReason::QueueFullOldest);
                stats.limit_hit(LimitKind::QueueFull);
            }
            Enqueued::Dropped | Enqueued::DroppedDisconnect => {
                stats.dropped(DropReason::QueueFull);
                stats.limit_hit(LimitKind::QueueFull);
            }
        }
        if let Some(connection) = wake {
            connection.wake();
        }
        backlogged
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    use super::*;

    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_first_kick_reason_wins_and_wakes_the_connection() {
        let control = ConnectionControl::default();
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&counter));
        let mut cx = Context::from_waker(&waker);
        let mut kicked = Box::pin(control.kicked());
        assert!(kicked.as_mut().poll(&mut cx).is_pending());
        assert_eq!(control.reason(), None);

        control.kick(ReasonCode::SESSION_TAKEN_OVER);
        control.kick(ReasonCode::SERVER_SHUTTING_DOWN);
        assert_eq!(counter.0.load(Ordering::SeqCst), 1, "woken once");
        assert_eq!(control.reason(), Some(ReasonCode::SESSION_TAKEN_OVER));
        assert!(kicked.as_mut().poll(&mut cx).is_ready());
    }

    /// Every client has a session for as long as it is connected (and after, if it asks): the
    /// bound is memory per idle client, not timing. With the `Arc`'s counts a 152-byte session
    /// fills a 176-byte allocator chunk; one byte more costs sixteen.
    #[test]
    fn a_session_stays_small() {
        let size = std::mem::size_of::<Session>();
        assert!(size <= 152, "a session is {size} bytes");
    }

    /// Shared by a connection and its session, so paid per connected client too.
    #[test]
    fn client_info_stays_small() {
        let size = std::mem::size_of::<ClientInfo>();
        assert!(size <= 72, "a client's description is {size} bytes");
    }

    #[test]
    fn a_kick_with_reason_zero_still_counts() {
        let control = ConnectionControl::default();
        control.kick(ReasonCode::SUCCESS);
        assert!(control.is_kicked());
        assert_eq!(control.reason(), Some(ReasonCode::SUCCESS));
    }

    #[test]
    fn queued_deliveries_are_seen_once() {
        let control = ConnectionControl::default();
        control.notify_queued();
        assert!(control.take_queued());
        assert!(!control.take_queued());
    }

    #[test]
    fn a_connection_is_woken_once_per_look_at_its_queue() {
        let control = ConnectionControl::default();
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&counter));
        control.register(&waker);
        control.notify_queued();
        control.register(&waker);
        control.notify_queued();
        assert_eq!(
            counter.0.load(Ordering::SeqCst),
            1,
            "the second delivery finds the connection told and not yet looking"
        );
        assert!(control.take_queued());
        control.register(&waker);
        control.notify_queued();
        assert_eq!(
            counter.0.load(Ordering::SeqCst),
            2,
            "once it has looked, the next delivery wakes it again"
        );
    }
}
