//! One peer as this node knows it while gossip says it is alive: who it is, its bit in the route
//! table, and its outbox, the ordered queue of frames waiting for its link.
//!
//! The outbox is bounded: beyond `cluster.peer_queue_messages` waiting messages a QoS 0 message is
//! dropped, and beyond four times that a QoS 1 or 2 message is too; each drop is counted (and QoS 1
//! and 2 drops logged). State frames (routes, retained messages) are never dropped: a snapshot
//! replaces the ones still waiting.
//!
//! Past half its bound the outbox is *backlogged*: a publisher whose message it took waits for it
//! to drain to a quarter, as a publisher waits for a backlogged subscriber on its own node (see
//! `crate::backpressure`), for at most `limits.backlog_max_pause_ms`; an outbox still backlogged
//! then is *stalled* (its link is down or its peer cannot keep up) and nobody waits for it again
//! until it drains, so its bound decides as before. Without this a fast publisher outran the link
//! and the peer, and its QoS 1 messages were dropped where one node would have slowed it down.
//!
//! The link carries at most [`WINDOW`] forwarded messages the peer has not acknowledged: the rest wait
//! in the outbox, where the backlog is seen. Without the window the sockets' buffers between two nodes
//! held megabytes, seconds of a slow subscriber's work, which the outbox could not see drain; its
//! publishers' waits ran out and their messages were dropped after all.
//!
//! Forwarded messages are numbered, and a QoS 1 or 2 copy written to a link is kept until the peer
//! acknowledges it: when a link breaks, what the peer may not have read goes again, first, on the
//! next one, and the peer drops the copies it already had by their numbers.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::routes::NodeBit;
use super::wire::{Forward, Frame};
use crate::codec::QoS;
use crate::receipt::Receipt;

/// A frame waiting for the link: replicated state (routes, retained messages), which a new link's
/// snapshot replaces; a forwarded message; or a control frame (claims, session moves, wills),
/// which is neither replaced nor counted against the outbox's bound.
#[derive(Debug)]
pub(super) enum Outgoing {
    Sync(Frame),
    Forward(ForwardCopy),
    Control(Frame),
}

/// A message on its way to one peer, with the receipt its publisher's acknowledgement waits on
/// (`cluster.acknowledge: cluster`).
#[derive(Debug)]
pub(super) struct ForwardCopy {
    pub forward: Forward,
    pub receipt: Option<Arc<Receipt>>,
}

impl ForwardCopy {
    /// This peer is done with the copy: it holds it, dropped it, or died.
    fn done(self) {
        if let Some(receipt) = self.receipt {
            receipt.party_done();
        }
    }
}

/// Forwarded messages written to a link and not yet acknowledged by the peer, at most. A peer
/// acknowledges what it applied once per read (up to a thousand small messages), so this keeps a
/// few reads in flight.
pub(super) const WINDOW: u64 = 4096;

/// A publisher's wait for a backlogged outbox (or a subscriber's queue on the peer) to drain;
/// resolves with how long it waited. The same shape as `crate::backpressure::BacklogWait`.
pub type PeerWait = Pin<Box<dyn Future<Output = Duration> + Send>>;

/// Why a message was not queued for a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// The outbox holds as many messages as this message's QoS may wait behind.
    Full,
}

#[derive(Debug, Default)]
struct Queue {
    /// Acknowledgements of what the peer sent (`ForwardAck`, `RoutesAck`), the latest of each
    /// kind: they go before every frame, so that two nodes whose windows are both full still tell
    /// each other what they hold.
    acks: [Option<Frame>; 2],
    frames: VecDeque<Outgoing>,
    /// Forwards among `frames`.
    messages: usize,
    /// The number the last forwarded message got.
    last_seq: u64,
}

/// The frames waiting for one peer's link, in the order they must be sent.
#[derive(Debug)]
pub(super) struct Outbox {
    queue: Mutex<Queue>,
    ready: Notify,
    capacity: usize,
    /// Wakes the publishers waiting for the outbox to drain.
    drained: Arc<Notify>,
    /// Publishers wait for the outbox (see the module's documentation).
    awaited: AtomicBool,
    /// Backlogged longer than a publisher waits: nobody waits for it until it drains.
    stalled: AtomicBool,
    /// The stream this node numbers its messages to the peer in (see `Forward::stream`).
    stream: u64,
}

impl Outbox {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            queue: Mutex::default(),
            ready: Notify::new(),
            capacity,
            drained: Arc::new(Notify::new()),
            awaited: AtomicBool::new(false),
            stalled: AtomicBool::new(false),
            stream: fastrand::u64(1..),
        }
    }

    /// Messages from which publishers wait for the outbox.
    fn high_water(&self) -> usize {
        self.capacity.div_ceil(2)
    }

    /// Messages to which it must drain before they go on.
    fn low_water(&self) -> usize {
        self.capacity / 4
    }

    /// Whether a publisher that just queued a message should wait for the outbox.
    pub(super) fn is_backlogged(&self) -> bool {
        !self.stalled.load(Ordering::Acquire) && self.depth() >= self.high_water()
    }

    /// Lets every waiting publisher go on once the outbox holds `messages`, at most its low-water
    /// mark, and ends a stall.
    fn eased(&self, messages: usize) {
        if messages > self.low_water() {
            return;
        }
        self.stalled.store(false, Ordering::Release);
        if self.awaited.swap(false, Ordering::AcqRel) {
            self.drained.notify_waiters();
        }
    }

    /// Numbers a message and queues it for the peer, unless the outbox is full for its QoS (then
    /// the peer is done with it, and its receipt is told).
    pub(super) fn push_forward(&self, copy: ForwardCopy) -> Result<(), Refused> {
        let mut copy = copy;
        let limit = match copy.forward.message.qos {
            QoS::AtMostOnce => self.capacity,
            QoS::AtLeastOnce | QoS::ExactlyOnce => self.capacity.saturating_mul(4),
        };
        {
            let mut queue = self.queue.lock();
            if queue.messages >= limit {
                drop(queue);
                copy.done();
                return Err(Refused::Full);
            }
            queue.last_seq += 1;
            copy.forward.stream = self.stream;
            copy.forward.seq = queue.last_seq;
            queue.messages += 1;
            queue.frames.push_back(Outgoing::Forward(copy));
        }
        self.ready.notify_one();
        Ok(())
    }

    /// Puts copies that were written to a link that broke back at the front, in their order.
    fn resend(&self, copies: VecDeque<ForwardCopy>) {
        if copies.is_empty() {
            return;
        }
        {
            let mut queue = self.queue.lock();
            queue.messages += copies.len();
            for copy in copies.into_iter().rev() {
                queue.frames.push_front(Outgoing::Forward(copy));
            }
        }
        self.ready.notify_one();
    }

    /// Queues a state frame (a route delta, a retained write).
    pub(super) fn push_sync(&self, frame: Frame) {
        self.queue.lock().frames.push_back(Outgoing::Sync(frame));
        self.ready.notify_one();
    }

    /// Queues an acknowledgement, replacing the one of its kind still waiting (both are
    /// cumulative); it goes before every other frame.
    pub(super) fn push_ack(&self, frame: Frame) {
        let slot = usize::from(!matches!(frame, Frame::ForwardAck { .. }));
        self.queue.lock().acks[slot] = Some(frame);
        self.ready.notify_one();
    }

    /// Queues a control frame.
    pub(super) fn push_control(&self, frame: Frame) {
        self.queue.lock().frames.push_back(Outgoing::Control(frame));
        self.ready.notify_one();
    }

    /// Puts a fresh snapshot of the replicated state at the front, dropping the state frames that
    /// were waiting (the snapshot holds what they said); waiting messages keep their order behind
    /// it.
    pub(super) fn restart_sync(&self, snapshot: Vec<Frame>) {
        {
            let mut queue = self.queue.lock();
            queue.frames.retain(|o| !matches!(o, Outgoing::Sync(_)));
            for frame in snapshot.into_iter().rev() {
                queue.frames.push_front(Outgoing::Sync(frame));
            }
        }
        self.ready.notify_one();
    }

    /// Takes up to `max` frames, of which at most `max_messages` forwarded messages (the frames
    /// behind one more wait), waiting for one if there are none.
    pub(super) async fn take(&self, max: usize, max_messages: usize, into: &mut Vec<Outgoing>) {
        loop {
            let ready = self.ready.notified();
            {
                let mut queue = self.queue.lock();
                let mut taken = 0;
                for ack in &mut queue.acks {
                    if let Some(frame) = ack.take() {
                        into.push(Outgoing::Control(frame));
                        taken += 1;
                    }
                }
                let mut messages = 0;
                while taken < max {
                    let next_is_message = match queue.frames.front() {
                        None => break,
                        Some(outgoing) => matches!(outgoing, Outgoing::Forward(_)),
                    };
                    if next_is_message && messages == max_messages {
                        break;
                    }
                    messages += usize::from(next_is_message);
                    into.extend(queue.frames.pop_front());
                    taken += 1;
                }
                if taken > 0 {
                    queue.messages -= messages;
                    let left = queue.messages;
                    drop(queue);
                    if messages > 0 {
                        self.eased(left);
                    }
                    return;
                }
            }
            ready.await;
        }
    }

    /// Messages waiting.
    pub(super) fn depth(&self) -> usize {
        self.queue.lock().messages
    }

    /// Drops everything waiting (the peer is gone); returns how many messages that was.
    pub(super) fn clear(&self) -> usize {
        let (frames, messages) = {
            let mut queue = self.queue.lock();
            (
                std::mem::take(&mut queue.frames),
                std::mem::take(&mut queue.messages),
            )
        };
        for outgoing in frames {
            if let Outgoing::Forward(copy) = outgoing {
                copy.done();
            }
        }
        self.eased(0);
        messages
    }
}

/// Where this node is in the messages the peer forwards to it.
#[derive(Debug, Default)]
struct Received {
    stream: u64,
    seq: u64,
    /// A QoS 1 or 2 message arrived since the last [`Frame::ForwardAck`].
    ack_due: bool,
}

/// A live peer.
#[derive(Debug)]
pub(super) struct Peer {
    pub node_id: Arc<str>,
    pub generation: u64,
    /// Where its peer links are accepted (its gossip address: the same port, over TCP).
    pub addr: SocketAddr,
    pub bit: NodeBit,
    pub outbox: Outbox,
    /// Set while a link to it is up.
    pub connected: AtomicBool,
    /// Set once its route snapshot has arrived over the current link (cleared while a new one is
    /// on its way after a gap).
    pub synced: AtomicBool,
    /// Set once everything its link carries first (routes, retained messages) has arrived.
    pub caught_up: AtomicBool,
    /// The version of its routes this node holds.
    pub route_version: AtomicU64,
    /// The version of this node's routes it has acknowledged holding.
    pub acked: AtomicU64,
    /// QoS 1 and 2 copies written to a link and not yet acknowledged, oldest first.
    unacked: Mutex<VecDeque<ForwardCopy>>,
    /// The number of the last forwarded message written to the link, and the last the peer
    /// acknowledged: their difference is what the link holds (see [`WINDOW`]).
    written_through: AtomicU64,
    acked_through: AtomicU64,
    /// Wakes the link's writer when an acknowledgement opens the window.
    window_opened: Notify,
    received: Mutex<Received>,
    /// Cancelled when the peer is forgotten: ends its link task.
    pub gone: CancellationToken,
}

impl Peer {
    pub(super) fn new(
        node_id: Arc<str>,
        generation: u64,
        addr: SocketAddr,
        bit: NodeBit,
        queue_capacity: usize,
    ) -> Self {
        Self {
            node_id,
            generation,
            addr,
            bit,
            outbox: Outbox::new(queue_capacity),
            connected: AtomicBool::new(false),
            synced: AtomicBool::new(false),
            caught_up: AtomicBool::new(false),
            route_version: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            unacked: Mutex::default(),
            written_through: AtomicU64::new(0),
            acked_through: AtomicU64::new(0),
            window_opened: Notify::new(),
            received: Mutex::default(),
            gone: CancellationToken::new(),
        }
    }

    /// Starts a publisher's wait for the peer's outbox to drain to its low-water mark, for at most
    /// `max_pause`; `None` if it already has.
    pub(super) fn wait_for_room(self: &Arc<Self>, max_pause: Duration) -> Option<PeerWait> {
        let outbox = &self.outbox;
        let mut drained = Box::pin(Arc::clone(&outbox.drained).notified_owned());
        drained.as_mut().enable();
        outbox.awaited.store(true, Ordering::Release);
        // A drain that came before the mark did not see it: look again.
        if !outbox.is_backlogged() {
            return None;
        }
        let peer = Arc::clone(self);
        let since = tokio::time::Instant::now();
        Some(Box::pin(async move {
            tokio::select! {
                () = &mut drained => {}
                () = tokio::time::sleep(max_pause) => {
                    if peer.outbox.is_backlogged() {
                        peer.outbox.stalled.store(true, Ordering::Release);
                    }
                }
            }
            since.elapsed()
        }))
    }

    /// A copy was just encoded for the link: a QoS 1 or 2 one is kept until the peer acknowledges
    /// it; a QoS 0 one is done.
    pub(super) fn written(&self, copy: ForwardCopy) {
        self.written_through
            .fetch_max(copy.forward.seq, Ordering::AcqRel);
        if copy.forward.message.qos == QoS::AtMostOnce {
            copy.done();
        } else {
            self.unacked.lock().push_back(copy);
        }
    }

    /// The peer holds this node's messages of `stream` up to `seq`.
    pub(super) fn acknowledged(&self, stream: u64, seq: u64) {
        if stream != self.outbox.stream {
            return;
        }
        if self.acked_through.fetch_max(seq, Ordering::AcqRel) < seq {
            self.window_opened.notify_one();
        }
        let mut held = Vec::new();
        {
            let mut unacked = self.unacked.lock();
            while unacked.front().is_some_and(|copy| copy.forward.seq <= seq) {
                held.extend(unacked.pop_front());
            }
        }
        for copy in held {
            copy.done();
        }
    }

    /// How many more forwarded messages the link may take now (see [`WINDOW`]).
    pub(super) fn window_room(&self) -> usize {
        let in_flight = self
            .written_through
            .load(Ordering::Acquire)
            .saturating_sub(self.acked_through.load(Ordering::Acquire));
        usize::try_from(WINDOW.saturating_sub(in_flight)).unwrap_or(usize::MAX)
    }

    /// Waits until an acknowledgement may have opened the window.
    pub(super) async fn window_opened(&self) {
        self.window_opened.notified().await;
    }

    /// A new link is up: the copies the last one may have lost go first, and the window starts
    /// empty (what the last link held is either among them or was QoS 0 and is gone). Returns
    /// how many go again.
    pub(super) fn resend_unacked(&self) -> usize {
        self.acked_through.fetch_max(
            self.written_through.load(Ordering::Acquire),
            Ordering::AcqRel,
        );
        let copies = std::mem::take(&mut *self.unacked.lock());
        let resent = copies.len();
        self.outbox.resend(copies);
        resent
    }

    /// The peer is gone: no copy still waiting for it will be held.
    pub(super) fn release_unacked(&self) -> usize {
        let copies = std::mem::take(&mut *self.unacked.lock());
        let released = copies.len();
        for copy in copies {
            copy.done();
        }
        released
    }

    /// Copies written and not yet acknowledged.
    pub(super) fn unacked(&self) -> usize {
        self.unacked.lock().len()
    }

    /// A forwarded message arrived: whether it is new (not one sent again after a broken link).
    pub(super) fn arrived(&self, forward: &Forward) -> bool {
        let mut received = self.received.lock();
        if forward.stream != received.stream {
            // The peer started numbering afresh (it forgot this node and found it again).
            *received = Received {
                stream: forward.stream,
                ..Received::default()
            };
        }
        // Every copy is acknowledged, QoS 0 too: the acknowledgements pace the sender's window. A
        // copy it already had is acknowledged again: the ack it sent may be what was lost.
        received.ack_due = true;
        if forward.seq <= received.seq {
            return false;
        }
        received.seq = forward.seq;
        true
    }

    /// The acknowledgement to send for what arrived since the last one, if any is due.
    pub(super) fn forward_ack(&self) -> Option<Frame> {
        let mut received = self.received.lock();
        std::mem::take(&mut received.ack_due).then_some(Frame::ForwardAck {
            stream: received.stream,
            seq: received.seq,
        })
    }

    pub(super) fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Holding its routes and its retained messages: what this node's readiness waits for.
    pub(super) fn is_caught_up(&self) -> bool {
        self.is_synced() && self.caught_up.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;

    fn forward(qos: QoS) -> ForwardCopy {
        with_receipt(qos, None)
    }

    fn with_receipt(qos: QoS, receipt: Option<&Arc<Receipt>>) -> ForwardCopy {
        ForwardCopy {
            forward: Forward {
                stream: 0,
                seq: 0,
                message: Arc::new(Message::new("t", "m", qos, false)),
                direct: true,
                groups: Vec::new(),
            },
            receipt: receipt.cloned(),
        }
    }

    fn peer() -> Peer {
        Peer::new(
            Arc::from("n1"),
            1,
            "127.0.0.1:4370".parse().unwrap(),
            NodeBit::LOCAL,
            10,
        )
    }

    /// Takes what waits in the outbox and "writes" it, as the link's writer does.
    async fn write_all(peer: &Peer) -> Vec<u64> {
        let mut taken = Vec::new();
        peer.outbox.take(100, usize::MAX, &mut taken).await;
        let mut seqs = Vec::new();
        for outgoing in taken {
            if let Outgoing::Forward(copy) = outgoing {
                seqs.push(copy.forward.seq);
                peer.written(copy);
            }
        }
        seqs
    }

    #[tokio::test]
    async fn a_full_outbox_drops_qos0_first_and_keeps_more_qos1() {
        let outbox = Outbox::new(2);
        assert!(outbox.push_forward(forward(QoS::AtMostOnce)).is_ok());
        assert!(outbox.push_forward(forward(QoS::AtMostOnce)).is_ok());
        assert_eq!(
            outbox.push_forward(forward(QoS::AtMostOnce)),
            Err(Refused::Full)
        );
        for _ in 0..6 {
            assert!(outbox.push_forward(forward(QoS::AtLeastOnce)).is_ok());
        }
        let receipt = Arc::new(Receipt::new(1));
        assert_eq!(
            outbox.push_forward(with_receipt(QoS::ExactlyOnce, Some(&receipt))),
            Err(Refused::Full)
        );
        assert!(
            receipt.is_done(),
            "a dropped copy does not hold its publisher up"
        );
        assert_eq!(outbox.depth(), 8);
        let mut taken = Vec::new();
        outbox.take(100, usize::MAX, &mut taken).await;
        assert_eq!((taken.len(), outbox.depth()), (8, 0));
    }

    /// Past half its bound the outbox holds its publishers until the link has taken it down to a
    /// quarter; one that is not drained within the pause is stalled, and nobody waits for it until
    /// it has drained.
    #[tokio::test(start_paused = true)]
    async fn a_backlogged_outbox_holds_its_publishers_until_it_drains() {
        let peer = Arc::new(peer());
        let max_pause = Duration::from_millis(500);
        for _ in 0..4 {
            peer.outbox.push_forward(forward(QoS::AtLeastOnce)).unwrap();
        }
        assert!(!peer.outbox.is_backlogged(), "4 of 10: below half");
        assert!(peer.wait_for_room(max_pause).is_none());
        peer.outbox.push_forward(forward(QoS::AtLeastOnce)).unwrap();
        assert!(peer.outbox.is_backlogged());
        let mut wait = peer
            .wait_for_room(max_pause)
            .expect("a backlog is waited for");
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        // Taking down to 3 is not enough; down to 2 (a quarter of 10) is.
        let mut taken = Vec::new();
        peer.outbox.take(2, usize::MAX, &mut taken).await;
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        peer.outbox.take(1, usize::MAX, &mut taken).await;
        assert!(wait.as_mut().poll(&mut cx).is_ready());

        for _ in 0..3 {
            peer.outbox.push_forward(forward(QoS::AtLeastOnce)).unwrap();
        }
        let waited = peer
            .wait_for_room(max_pause)
            .expect("backlogged again")
            .await;
        assert_eq!(waited, max_pause, "nothing drained it");
        assert!(!peer.outbox.is_backlogged(), "stalled: nobody waits for it");
        assert!(peer.wait_for_room(max_pause).is_none());
        taken.clear();
        peer.outbox.take(100, usize::MAX, &mut taken).await;
        for _ in 0..5 {
            peer.outbox.push_forward(forward(QoS::AtLeastOnce)).unwrap();
        }
        assert!(peer.outbox.is_backlogged(), "drained, so waited for again");
    }

    /// The link takes no more forwarded messages than the window has room for, while
    /// acknowledgements of what the peer sent go first whatever the window; an acknowledgement from
    /// the peer opens the window again.
    #[tokio::test]
    async fn the_link_holds_a_window_of_messages_and_acknowledgements_pass_it() {
        let peer = Arc::new(Peer::new(
            Arc::from("n1"),
            1,
            "127.0.0.1:4370".parse().unwrap(),
            NodeBit::LOCAL,
            100_000,
        ));
        let window = usize::try_from(WINDOW).unwrap();
        for _ in 0..window + 10 {
            peer.outbox.push_forward(forward(QoS::AtMostOnce)).unwrap();
        }
        let mut taken = Vec::new();
        peer.outbox
            .take(usize::MAX, peer.window_room(), &mut taken)
            .await;
        assert_eq!(taken.len(), window);
        for outgoing in taken.drain(..) {
            if let Outgoing::Forward(copy) = outgoing {
                peer.written(copy);
            }
        }
        assert_eq!(peer.window_room(), 0);
        peer.outbox.push_ack(Frame::RoutesAck { version: 1 });
        peer.outbox.push_ack(Frame::RoutesAck { version: 2 });
        peer.outbox.take(usize::MAX, 0, &mut taken).await;
        assert!(
            matches!(
                taken.as_slice(),
                [Outgoing::Control(Frame::RoutesAck { version: 2 })]
            ),
            "only the latest acknowledgement, and no message: {taken:?}"
        );
        peer.acknowledged(peer.outbox.stream, 100);
        assert_eq!(peer.window_room(), 100);
        assert_eq!(peer.outbox.depth(), 10);
    }

    #[tokio::test]
    async fn a_new_snapshot_goes_first_and_replaces_waiting_route_frames() {
        let outbox = Outbox::new(10);
        outbox.push_sync(Frame::RoutesEnd);
        outbox.push_forward(forward(QoS::AtLeastOnce)).unwrap();
        outbox.restart_sync(vec![Frame::RoutesBegin { version: 3 }, Frame::RoutesEnd]);
        let mut taken = Vec::new();
        outbox.take(100, usize::MAX, &mut taken).await;
        let names: Vec<&str> = taken
            .iter()
            .map(|o| match o {
                Outgoing::Sync(frame) | Outgoing::Control(frame) => frame.name(),
                Outgoing::Forward(_) => "forward",
            })
            .collect();
        assert_eq!(names, ["routes_begin", "routes_end", "forward"]);
    }

    /// QoS 1 copies written to a link that broke go again, first and in order, on the next one;
    /// QoS 0 ones do not; an acknowledgement releases what it covers and tells the receipts.
    #[tokio::test]
    async fn unacknowledged_copies_go_again_on_the_next_link() {
        let peer = peer();
        let receipt = Arc::new(Receipt::new(1));
        peer.outbox
            .push_forward(with_receipt(QoS::AtLeastOnce, Some(&receipt)))
            .unwrap();
        peer.outbox.push_forward(forward(QoS::AtMostOnce)).unwrap();
        peer.outbox.push_forward(forward(QoS::ExactlyOnce)).unwrap();
        assert_eq!(write_all(&peer).await, [1, 2, 3]);
        assert_eq!(peer.unacked(), 2);
        // The link breaks; another message is queued meanwhile; the next link comes up.
        peer.outbox.push_forward(forward(QoS::AtLeastOnce)).unwrap();
        peer.resend_unacked();
        assert_eq!(write_all(&peer).await, [1, 3, 4]);
        assert!(!receipt.is_done());
        peer.acknowledged(peer.outbox.stream, 3);
        assert!(receipt.is_done());
        assert_eq!(peer.unacked(), 1, "4 still waits");
        // An acknowledgement of another stream (an earlier incarnation of this peer) is ignored.
        peer.acknowledged(peer.outbox.stream.wrapping_add(1), 9);
        assert_eq!(peer.unacked(), 1);
        assert_eq!(peer.release_unacked(), 1);
    }

    #[test]
    fn a_copy_that_arrives_again_is_dropped_and_acknowledged_again() {
        let peer = peer();
        let copy = |stream, seq, qos| Forward {
            stream,
            seq,
            ..with_receipt(qos, None).forward
        };
        assert!(peer.arrived(&copy(7, 1, QoS::AtLeastOnce)));
        assert!(peer.arrived(&copy(7, 2, QoS::AtMostOnce)));
        assert!(matches!(
            peer.forward_ack(),
            Some(Frame::ForwardAck { stream: 7, seq: 2 })
        ));
        assert!(peer.forward_ack().is_none(), "nothing new since");
        assert!(
            !peer.arrived(&copy(7, 1, QoS::AtLeastOnce)),
            "a copy sent again"
        );
        assert!(matches!(
            peer.forward_ack(),
            Some(Frame::ForwardAck { stream: 7, seq: 2 })
        ));
        // The sender forgot this node and numbers afresh.
        assert!(peer.arrived(&copy(8, 1, QoS::AtLeastOnce)));
    }

    #[test]
    fn a_departed_peer_releases_every_receipt() {
        let peer = peer();
        let receipt = Arc::new(Receipt::new(1));
        peer.outbox
            .push_forward(with_receipt(QoS::AtLeastOnce, Some(&receipt)))
            .unwrap();
        assert_eq!(peer.outbox.clear(), 1);
        assert!(receipt.is_done());
    }
}
