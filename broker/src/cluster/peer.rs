//! One peer as this node knows it while gossip says it is alive: who it is, its bit in the route
//! table, and its outbox, the ordered queue of frames waiting for its link.
//!
//! The outbox is bounded: beyond `cluster.peer_queue_messages` waiting messages a QoS 0 message is
//! dropped, and beyond four times that a QoS 1 or 2 message is too; each drop is counted (and QoS 1
//! and 2 drops logged). State frames (routes, retained messages) are never dropped: a snapshot replaces the ones still
//! waiting.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::routes::NodeBit;
use super::wire::{Forward, Frame};
use crate::codec::QoS;

/// A frame waiting for the link: replicated state (routes, retained messages), which a new link's
/// snapshot replaces; a forwarded message; or a control frame (claims, session moves, wills),
/// which is neither replaced nor counted against the outbox's bound.
#[derive(Debug)]
pub(super) enum Outgoing {
    Sync(Frame),
    Forward(Forward),
    Control(Frame),
}

/// Why a message was not queued for a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// The outbox holds as many messages as this message's QoS may wait behind.
    Full,
}

#[derive(Debug, Default)]
struct Queue {
    frames: VecDeque<Outgoing>,
    /// Forwards among `frames`.
    messages: usize,
}

/// The frames waiting for one peer's link, in the order they must be sent.
#[derive(Debug)]
pub(super) struct Outbox {
    queue: Mutex<Queue>,
    ready: Notify,
    capacity: usize,
}

impl Outbox {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            queue: Mutex::default(),
            ready: Notify::new(),
            capacity,
        }
    }

    /// Queues a message for the peer unless the outbox is full for its QoS.
    pub(super) fn push_forward(&self, forward: Forward) -> Result<(), Refused> {
        let limit = match forward.message.qos {
            QoS::AtMostOnce => self.capacity,
            QoS::AtLeastOnce | QoS::ExactlyOnce => self.capacity.saturating_mul(4),
        };
        {
            let mut queue = self.queue.lock();
            if queue.messages >= limit {
                return Err(Refused::Full);
            }
            queue.messages += 1;
            queue.frames.push_back(Outgoing::Forward(forward));
        }
        self.ready.notify_one();
        Ok(())
    }

    /// Queues a state frame (a route delta, a retained write).
    pub(super) fn push_sync(&self, frame: Frame) {
        self.queue.lock().frames.push_back(Outgoing::Sync(frame));
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

    /// Takes up to `max` frames, waiting for one if there are none.
    pub(super) async fn take(&self, max: usize, into: &mut Vec<Outgoing>) {
        loop {
            let ready = self.ready.notified();
            {
                let mut queue = self.queue.lock();
                let n = queue.frames.len().min(max);
                if n > 0 {
                    let taken = queue.frames.drain(..n);
                    let mut messages = 0;
                    for outgoing in taken {
                        messages += usize::from(matches!(outgoing, Outgoing::Forward(_)));
                        into.push(outgoing);
                    }
                    queue.messages -= messages;
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
        let mut queue = self.queue.lock();
        queue.frames.clear();
        std::mem::take(&mut queue.messages)
    }
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
            gone: CancellationToken::new(),
        }
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

    fn forward(qos: QoS) -> Forward {
        Forward {
            message: Arc::new(Message::new("t", "m", qos, false)),
            direct: true,
            groups: Vec::new(),
        }
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
        assert_eq!(
            outbox.push_forward(forward(QoS::ExactlyOnce)),
            Err(Refused::Full)
        );
        assert_eq!(outbox.depth(), 8);
        let mut taken = Vec::new();
        outbox.take(100, &mut taken).await;
        assert_eq!((taken.len(), outbox.depth()), (8, 0));
    }

    #[tokio::test]
    async fn a_new_snapshot_goes_first_and_replaces_waiting_route_frames() {
        let outbox = Outbox::new(10);
        outbox.push_sync(Frame::RoutesEnd);
        outbox.push_forward(forward(QoS::AtLeastOnce)).unwrap();
        outbox.restart_sync(vec![Frame::RoutesBegin { version: 3 }, Frame::RoutesEnd]);
        let mut taken = Vec::new();
        outbox.take(100, &mut taken).await;
        let names: Vec<&str> = taken
            .iter()
            .map(|o| match o {
                Outgoing::Sync(frame) | Outgoing::Control(frame) => frame.name(),
                Outgoing::Forward(_) => "forward",
            })
            .collect();
        assert_eq!(names, ["routes_begin", "routes_end", "forward"]);
    }
}
