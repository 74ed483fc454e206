//! Client ids across the cluster: claims to each id's arbiter, session moves between nodes, and
//! wills kept for the clients of other nodes (see [`super::owners`] for who arbitrates and who
//! keeps). The broker decides what a claim means for a session; this module carries the questions
//! and answers between nodes.
//!
//! A session moves like this (the new node `X`, the old node `Y`):
//! 1. `X` claims the client id from its arbiter, which names `Y`.
//! 2. `X` sends `TakeOver` to `Y`; `Y` lets the client's connection go, puts a stand-in session on
//!    the same subscriptions, and answers `HandOver` with the session; from then on the stand-in
//!    forwards what reaches it on `Y` to `X` (`SessionDelivery`, after the `HandOver` on the same
//!    ordered link).
//! 3. `X` installs the session and its subscriptions, and, once every node has acknowledged its
//!    new routes, sends `MoveDone`; `Y` drops the stand-in and answers `MoveEnded`, after the last
//!    delivery it forwarded. A message that reached the session both ways meanwhile is delivered
//!    once: `X` recognises it by its id until `MoveEnded`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::owners::{Held, KeptWill, Registered, rank_first};
use super::peer::Peer;
use super::wire::{Claim, Frame, Owner, WillKeep};
use super::{Cluster, Kicked, Shared};
use crate::identity::ClientId;
use crate::message::Delivery;
use crate::session::{PendingWill, SessionSnapshot};

/// How long a question to another node may take before the asker goes on without the answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the link to the node asked may stay down before the asker gives up on the answer: a
/// node that crashed drops its links at once but is declared dead only seconds later, and a
/// client reconnecting after the crash should not wait for the whole timeout (or give up first).
const LINK_DOWN_GRACE: Duration = Duration::from_millis(500);
/// How often a question waiting for its answer looks at the link.
const LINK_CHECK: Duration = Duration::from_millis(50);
/// How long a new owner waits for every node to hold its routes before ending a move anyway.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// The registrations bound for one arbiter.
type RegisterBatch = (Arc<Peer>, Vec<(String, u64)>);

/// An answer to a question another node was asked.
#[derive(Debug)]
pub(super) enum Reply {
    Claimed(Option<Owner>),
    HandedOver(Option<Box<SessionSnapshot>>),
    Kicked(Kicked),
}

impl Cluster {
    /// Claims `client_id` for a CONNECT accepted at `stamp` (milliseconds): from now on this node
    /// holds it. Returns the other node that held it before, if one did and is alive.
    pub async fn claim(&self, client_id: &ClientId, stamp: u64) -> Option<Arc<str>> {
        let shared = &self.shared;
        let arbiter = shared.arbiter(client_id.as_str());
        let previous = match arbiter {
            None => shared.owners.lock().claim(
                client_id.as_str(),
                Held {
                    node_id: Arc::clone(&shared.me),
                    stamp,
                },
            ),
            Some(arbiter) => {
                let frame = |request| {
                    Frame::Claim(Claim {
                        request,
                        client_id: client_id.to_string(),
                        stamp,
                    })
                };
                match shared.ask(&arbiter, frame).await {
                    Some(Reply::Claimed(previous)) => previous.map(|owner| Held {
                        node_id: Arc::from(owner.node_id),
                        stamp: owner.stamp,
                    }),
                    _ => {
                        warn!(%client_id, arbiter = %arbiter.node_id, "claim unanswered; going on as if no other node held the client id");
                        None
                    }
                }
            }
        };
        previous
            .map(|held| held.node_id)
            .filter(|node| *node != shared.me && shared.peer(node).is_some())
    }

    /// Asks `node` to let `client_id`'s connection go and hand its session over (`None`: nothing
    /// to hand over, or no answer in time).
    pub async fn take_over(
        &self,
        node: &str,
        client_id: &ClientId,
        clean_start: bool,
    ) -> Option<SessionSnapshot> {
        let peer = self.shared.peer(node)?;
        let frame = |request| Frame::TakeOver {
            request,
            client_id: client_id.to_string(),
            clean_start,
        };
        match self.shared.ask(&peer, frame).await {
            Some(Reply::HandedOver(snapshot)) => snapshot.map(|s| *s),
            _ => {
                warn!(%client_id, from = node, "session hand-over unanswered; starting without it");
                None
            }
        }
    }

    /// Answers a [`ClusterSink::take_over`](super::ClusterSink::take_over).
    pub fn hand_over(&self, to: &str, request: u64, snapshot: Option<SessionSnapshot>) {
        if let Some(peer) = self.shared.peer(to) {
            peer.outbox.push_control(Frame::HandOver {
                request,
                snapshot: snapshot.map(Box::new),
            });
        }
    }

    /// Forwards a delivery for a session that moved to `to`; false if `to` is gone.
    pub fn session_delivery(&self, to: &str, client_id: &ClientId, delivery: Delivery) -> bool {
        let Some(peer) = self.shared.peer(to) else {
            return false;
        };
        peer.outbox.push_control(Frame::SessionDelivery {
            client_id: client_id.to_string(),
            delivery,
        });
        true
    }

    /// This node's route set version (a change bumps it).
    pub fn local_route_version(&self) -> u64 {
        self.shared.local.lock().version
    }

    /// Waits (bounded) until every linked peer holds this node's routes as they are now.
    pub async fn routes_settled(&self) {
        self.wait_acked(self.local_route_version()).await;
    }

    /// Waits (bounded) until every peer with a link up has acknowledged this node's routes up to
    /// `version`. A peer without a link gets every route in the snapshot its next link starts
    /// with, so it is not waited for.
    pub async fn wait_acked(&self, version: u64) {
        let shared = &self.shared;
        let settled = async {
            loop {
                let acked = shared.acked.notified();
                let behind = shared.live_peers().iter().any(|peer| {
                    peer.connected.load(Ordering::Acquire)
                        && peer.acked.load(Ordering::Acquire) < version
                });
                if !behind {
                    return;
                }
                acked.await;
            }
        };
        if tokio::time::timeout(SETTLE_TIMEOUT, settled).await.is_err() {
            warn!(
                version,
                "not every peer acknowledged this node's routes in time"
            );
        }
    }

    /// Tells `node`, which a session moved away from, that this node's routes for it are in
    /// place everywhere.
    pub fn move_done(&self, node: &str, client_id: &ClientId) {
        if let Some(peer) = self.shared.peer(node) {
            peer.outbox.push_control(Frame::MoveDone {
                client_id: client_id.to_string(),
            });
        }
    }

    /// Tells `node`, which a session moved to, that nothing more for it follows from here.
    pub fn move_ended(&self, node: &str, client_id: &ClientId) {
        if let Some(peer) = self.shared.peer(node) {
            peer.outbox.push_control(Frame::MoveEnded {
                client_id: client_id.to_string(),
            });
        }
    }

    /// The node that holds `client_id`, as its arbiter knows it (`None`: no node, or no answer).
    pub async fn locate(&self, client_id: &ClientId) -> Option<Arc<str>> {
        self.shared.locate(client_id).await
    }

    /// Asks `node` to disconnect `client_id` (and end its session if `end`); `None` without an
    /// answer.
    pub async fn kick(&self, node: &str, client_id: &ClientId, end: bool) -> Option<Kicked> {
        let peer = self.shared.peer(node)?;
        let frame = |request| Frame::Kick {
            request,
            client_id: client_id.to_string(),
            end,
        };
        match self.shared.ask(&peer, frame).await {
            Some(Reply::Kicked(kicked)) => Some(kicked),
            _ => None,
        }
    }

    /// Has `client_id`'s keeper hold its will, to publish if this node dies.
    pub fn keep_will(&self, client_id: &ClientId, will: &PendingWill) {
        self.shared.keep_will(client_id.as_str(), will);
    }

    /// The will of `client_id` is gone (published, discarded, or the session moved on).
    pub fn drop_will(&self, client_id: &ClientId) {
        let keeper = self.shared.keepers.lock().remove(client_id.as_str());
        if let Some(peer) = keeper.and_then(|(node, _)| self.shared.peer(&node)) {
            peer.outbox.push_control(Frame::WillDrop {
                client_id: client_id.to_string(),
            });
        }
    }
}

/// Returns once the link to `peer` has been down for [`LINK_DOWN_GRACE`] in a row.
async fn link_stays_down(peer: &Peer) {
    let mut down_for = Duration::ZERO;
    while down_for < LINK_DOWN_GRACE {
        tokio::time::sleep(LINK_CHECK).await;
        if peer.connected.load(Ordering::Acquire) {
            down_for = Duration::ZERO;
        } else {
            down_for += LINK_CHECK;
        }
    }
}

impl Shared {
    /// The node that holds `client_id`, as its arbiter knows it (`None`: no node, or no answer).
    async fn locate(&self, client_id: &ClientId) -> Option<Arc<str>> {
        let shared = self;
        let held = match shared.arbiter(client_id.as_str()) {
            None => shared
                .owners
                .lock()
                .holder(client_id.as_str())
                .map(|held| held.node_id),
            Some(arbiter) => {
                let frame = |request| Frame::Locate {
                    request,
                    client_id: client_id.to_string(),
                };
                match shared.ask(&arbiter, frame).await {
                    Some(Reply::Claimed(owner)) => owner.map(|o| Arc::from(o.node_id)),
                    _ => None,
                }
            }
        };
        held.filter(|node| *node == shared.me || shared.peer(node).is_some())
    }

    /// The live peer that arbitrates `client_id`, or `None` when this node does.
    fn arbiter(&self, client_id: &str) -> Option<Arc<Peer>> {
        let peers = self.live_peers();
        let first = rank_first(
            client_id,
            peers
                .iter()
                .map(|p| &*p.node_id)
                .chain(std::iter::once(&*self.me)),
        )?
        .to_owned();
        peers.into_iter().find(|p| *p.node_id == *first)
    }

    /// The live peer that keeps the will of `client_id`, connected here.
    fn keeper(&self, client_id: &str) -> Option<Arc<Peer>> {
        let peers = self.live_peers();
        let first = rank_first(client_id, peers.iter().map(|p| &*p.node_id))?.to_owned();
        peers.into_iter().find(|p| *p.node_id == *first)
    }

    pub(super) fn live_peers(&self) -> Vec<Arc<Peer>> {
        self.peers
            .read()
            .by_id
            .values()
            .map(|e| Arc::clone(&e.peer))
            .collect()
    }

    /// Sends a question to `peer` and waits (bounded) for its answer: up to [`REQUEST_TIMEOUT`],
    /// or [`LINK_DOWN_GRACE`] once the link to it is down.
    async fn ask(&self, peer: &Peer, frame: impl FnOnce(u64) -> Frame) -> Option<Reply> {
        let request = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = oneshot::channel();
        self.requests.lock().insert(request, answer);
        peer.outbox.push_control(frame(request));
        let reply = tokio::select! {
            reply = tokio::time::timeout(REQUEST_TIMEOUT, answered) => reply.ok().and_then(Result::ok),
            () = link_stays_down(peer) => None,
        };
        self.requests.lock().remove(&request);
        reply
    }

    fn answer(&self, request: u64, reply: Reply) {
        if let Some(answer) = self.requests.lock().remove(&request) {
            let _ = answer.send(reply);
        }
    }

    fn keep_will(&self, client_id: &str, will: &PendingWill) {
        let Some(keeper) = self.keeper(client_id) else {
            // No other node to keep it: remembered, and handed over when one joins.
            self.keepers
                .lock()
                .insert(client_id.to_owned(), (Arc::clone(&self.me), will.clone()));
            return;
        };
        let previous = self.keepers.lock().insert(
            client_id.to_owned(),
            (Arc::clone(&keeper.node_id), will.clone()),
        );
        if let Some((old, _)) = previous.filter(|(old, _)| *old != keeper.node_id)
            && let Some(old) = self.peer(&old)
        {
            old.outbox.push_control(Frame::WillDrop {
                client_id: client_id.to_owned(),
            });
        }
        keeper
            .outbox
            .push_control(Frame::WillKeep(Box::new(WillKeep {
                client_id: client_id.to_owned(),
                owner_generation: self.generation,
                will: will.clone(),
            })));
    }

    /// Applies a frame of the ownership protocol from `peer`; the frame's name if it is not one.
    pub(super) fn apply_ownership(&self, peer: &Peer, frame: Frame) -> Option<&'static str> {
        match frame {
            Frame::RoutesAck { version } => {
                peer.acked.store(version, Ordering::Release);
                self.acked.notify_waiters();
            }
            Frame::Claim(claim) => {
                let previous = self.owners.lock().claim(
                    &claim.client_id,
                    Held {
                        node_id: Arc::clone(&peer.node_id),
                        stamp: claim.stamp,
                    },
                );
                peer.outbox.push_control(Frame::ClaimReply {
                    request: claim.request,
                    previous: previous.map(|held| Owner {
                        node_id: held.node_id.to_string(),
                        stamp: held.stamp,
                    }),
                });
            }
            Frame::ClaimReply { request, previous } => {
                self.answer(request, Reply::Claimed(previous))
            }
            Frame::TakeOver {
                request,
                client_id,
                clean_start,
            } => {
                if let Some(sink) = self.sink.get() {
                    let handing = sink.take_over(
                        request,
                        ClientId::new(client_id),
                        Arc::clone(&peer.node_id),
                        clean_start,
                    );
                    self.tasks.spawn(handing);
                }
            }
            Frame::HandOver { request, snapshot } => {
                self.answer(request, Reply::HandedOver(snapshot));
            }
            Frame::SessionDelivery {
                client_id,
                delivery,
            } => {
                if let Some(sink) = self.sink.get() {
                    sink.session_delivery(ClientId::new(client_id), delivery);
                }
            }
            Frame::MoveDone { client_id } => {
                if let Some(sink) = self.sink.get() {
                    sink.move_done(ClientId::new(client_id));
                }
            }
            Frame::MoveEnded { client_id } => {
                if let Some(sink) = self.sink.get() {
                    sink.move_ended(ClientId::new(client_id));
                }
            }
            Frame::Register(owners) => self.on_register(peer, owners),
            Frame::Evict { client_id } => {
                info!(%client_id, by = %peer.node_id, "a newer connection holds this client id elsewhere");
                if let Some(sink) = self.sink.get() {
                    sink.evict(ClientId::new(client_id));
                }
            }
            Frame::WillKeep(keep) => {
                let keep = *keep;
                self.wills.lock().keep(
                    keep.client_id,
                    KeptWill {
                        owner: Arc::clone(&peer.node_id),
                        owner_generation: keep.owner_generation,
                        will: keep.will,
                    },
                );
            }
            Frame::WillDrop { client_id } => {
                self.wills.lock().drop_will(&client_id, &peer.node_id);
            }
            Frame::Locate { request, client_id } => {
                let held = self.owners.lock().holder(&client_id);
                peer.outbox.push_control(Frame::ClaimReply {
                    request,
                    previous: held.map(|held| Owner {
                        node_id: held.node_id.to_string(),
                        stamp: held.stamp,
                    }),
                });
            }
            Frame::Kick {
                request,
                client_id,
                end,
            } => {
                let kicked = self.sink.get().map_or(Kicked::NoSuchClient, |sink| {
                    sink.kick(ClientId::new(client_id), end)
                });
                let outcome = match kicked {
                    Kicked::NoSuchClient => 0,
                    Kicked::NotConnected => 1,
                    Kicked::Done => 2,
                };
                peer.outbox.push_control(Frame::Kicked { request, outcome });
            }
            Frame::Kicked { request, outcome } => {
                let kicked = match outcome {
                    0 => Kicked::NoSuchClient,
                    1 => Kicked::NotConnected,
                    _ => Kicked::Done,
                };
                self.answer(request, Reply::Kicked(kicked));
            }
            other => return Some(other.name()),
        }
        None
    }

    /// `peer` says it holds these client ids; a newer connection wins, the older node is evicted.
    fn on_register(&self, peer: &Peer, owners: Vec<(String, u64)>) {
        let mut evictions: HashMap<Arc<str>, Vec<String>> = HashMap::new();
        {
            let mut table = self.owners.lock();
            for (client_id, stamp) in owners {
                let held = Held {
                    node_id: Arc::clone(&peer.node_id),
                    stamp,
                };
                match table.register(&client_id, held) {
                    Registered::Accepted => {}
                    Registered::Stale => evictions
                        .entry(Arc::clone(&peer.node_id))
                        .or_default()
                        .push(client_id),
                    Registered::Displaced(node) => {
                        evictions.entry(node).or_default().push(client_id);
                    }
                }
            }
        }
        for (node, client_ids) in evictions {
            for client_id in client_ids {
                self.evict(&node, client_id);
            }
        }
    }

    fn evict(&self, node: &str, client_id: String) {
        if *node == *self.me {
            if let Some(sink) = self.sink.get() {
                sink.evict(ClientId::new(client_id));
            }
        } else if let Some(peer) = self.peer(node) {
            peer.outbox.push_control(Frame::Evict { client_id });
        }
    }

    /// After the members changed: every session here registers with its arbiter again, every
    /// connected client's will goes to its keeper again, and this node forgets the ids it no
    /// longer arbitrates.
    pub(super) fn reregister(&self) {
        let Some(sink) = self.sink.get() else {
            return;
        };
        let mut batches: HashMap<Arc<str>, RegisterBatch> = HashMap::new();
        let mut own = Vec::new();
        for (client_id, stamp) in sink.local_sessions() {
            match self.arbiter(client_id.as_str()) {
                Some(arbiter) => batches
                    .entry(Arc::clone(&arbiter.node_id))
                    .or_insert_with(|| (arbiter, Vec::new()))
                    .1
                    .push((client_id.to_string(), stamp)),
                None => own.push((client_id, stamp)),
            }
        }
        let me = Arc::clone(&self.me);
        for (client_id, stamp) in own {
            let held = Held {
                node_id: Arc::clone(&me),
                stamp,
            };
            if let Registered::Displaced(node) =
                self.owners.lock().register(client_id.as_str(), held)
            {
                self.evict(&node, client_id.to_string());
            }
        }
        let sent: usize = batches.values().map(|(_, batch)| batch.len()).sum();
        for (_, (arbiter, batch)) in batches {
            arbiter.outbox.push_control(Frame::Register(batch));
        }
        // Ids this node no longer arbitrates are registered with their new arbiters by their holders.
        let peers = self.live_peers();
        self.owners.lock().retain(|client_id| {
            rank_first(
                client_id,
                peers
                    .iter()
                    .map(|p| &*p.node_id)
                    .chain(std::iter::once(&*me)),
            ) == Some(&*me)
        });
        let kept: Vec<(String, PendingWill)> = self
            .keepers
            .lock()
            .iter()
            .map(|(client_id, (_, will))| (client_id.clone(), will.clone()))
            .collect();
        for (client_id, will) in kept {
            self.keep_will(&client_id, &will);
        }
        debug!(sent, "sessions registered with their arbiters again");
    }

    /// A peer died: its client ids are free again, and the wills kept for its clients are
    /// published (each after its delay).
    pub(super) fn peer_died(self: &Arc<Self>, peer: &Peer) {
        self.owners.lock().forget_node(&peer.node_id);
        // Wills this node had that peer keep go to their new keepers when the members are
        // registered again (`reregister`).
        let wills = self.wills.lock().take_for(&peer.node_id, peer.generation);
        let Some(sink) = self.sink.get() else {
            return;
        };
        for (client_id, will) in wills {
            info!(%client_id, node = %peer.node_id, delay = will.delay, "publishing the will of a client whose node died");
            let sink = Arc::clone(sink);
            let shared = Arc::clone(self);
            self.tasks.spawn(async move {
                let client_id = ClientId::new(client_id);
                if will.delay > 0 {
                    tokio::select! {
                        () = shared.shutdown.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(u64::from(will.delay))) => {}
                    }
                    // A client that connected again within the delay, on any node, keeps its will
                    // unsent [MQTT-3.1.3-9].
                    if let Some(node) = shared.locate(&client_id).await {
                        info!(%client_id, %node, "the client of a dead node is back; its will is not published");
                        return;
                    }
                }
                sink.publish_will(client_id, will);
            });
        }
    }
}
