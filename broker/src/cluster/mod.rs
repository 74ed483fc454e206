//! The cluster: what one node of a Tern cluster does with the others, so that to every client the
//! brokers of one cluster are one broker. Without a `cluster` section none of this runs.
//!
//! - [`members`]: membership and failure detection by gossip (chitchat).
//! - [`link`]: one ordered TCP link per pair of nodes (mutual TLS with [`tls`]), carrying frames in
//!   the sans-IO [`wire`] format, each peer's [`peer::Outbox`] feeding it.
//! - [`routes`]: which nodes hold which routes. Each node tells the others its own routes (filters,
//!   and shared groups, with subscribers here) as a snapshot when a link comes up, then as numbered
//!   deltas as they appear and go.
//! - Publishing asks [`Cluster::plan`] which peers need a message and which node serves each
//!   matching shared group, and [`Cluster::forward`] queues it for them; a peer hands what arrives to
//!   this node's [`ClusterSink`] (the broker), which delivers it locally.
//!
//! The broker depends on this module, never the other way round: what comes from peers reaches the
//! broker through the sink it registers at start.

mod link;
mod members;
mod metrics;
mod owners;
mod ownership;
mod peer;
mod routes;
mod tls;
pub mod wire;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chitchat::ChitchatHandle;
use parking_lot::{Mutex, RwLock};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use peer::PeerWait;
pub use routes::{MAX_NODES, Plan};
pub use tls::PeerTlsError;
pub use wire::Forward;

use crate::receipt::Receipt;
use link::LinkStream;
use members::Member;
use metrics::{ClusterMetrics, LinkSample};
use peer::{ForwardCopy, Peer, Refused};
use routes::{NodeBit, RouteTable, nodes_in};
use tls::PeerTls;
use wire::Frame;

use crate::codec::QoS;
use crate::config::{ClusterAcknowledge, ClusterConfig};
use crate::hook::BoxFuture;
use crate::identity::ClientId;
use crate::message::{Delivery, Message, RetainedWrite};
use crate::session::PendingWill;
use crate::stats::Stats;
use crate::topic::SubscriptionFilter;

/// Routes per snapshot frame.
const SNAPSHOT_CHUNK: usize = 1024;
/// How long a new node waits for gossip to find its peers before it may call itself joined.
const JOIN_GRACE_ROUNDS: u32 = 4;

/// Why the cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster.bind {addr}: cannot accept peer links: {error}")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("cluster.bind {addr}: cannot gossip: {error}")]
    Gossip { addr: SocketAddr, error: String },
    #[error("cluster.tls: {0}")]
    Tls(PeerTlsError),
}

/// What forwarding a message to the peers that need it gave its publisher.
#[derive(Default)]
pub struct Forwarded {
    /// Under `cluster.acknowledge: cluster`, for a QoS 1 or 2 message: done once every peer it
    /// went to holds it.
    pub receipt: Option<Arc<Receipt>>,
    /// A peer's outbox backed up with this message: the publisher waits for it to drain.
    pub wait: Option<PeerWait>,
}

/// Where the cluster hands what peers send and ask: the broker.
pub trait ClusterSink: Send + Sync + 'static {
    /// A message a peer forwarded: deliver it to this node's matching subscribers. Returns a wait
    /// when a subscriber here backed up with it: the link is not read from until it ends, so the
    /// peer's publishers slow down as they would for a subscriber on their own node.
    fn deliver(&self, forward: Forward) -> Option<PeerWait>;
    /// A retained message written (or deleted) on a peer: keep it if it is the later write.
    fn retained(&self, write: RetainedWrite);
    /// Every retained write this node holds, for a peer whose link just came up.
    fn retained_snapshot(&self) -> Vec<RetainedWrite>;
    /// Node `to` has a CONNECT for `client_id`: let the connection here go, and answer with
    /// [`Cluster::hand_over`] (the session, unless `clean_start` or there is none).
    fn take_over(
        &self,
        request: u64,
        client_id: ClientId,
        to: Arc<str>,
        clean_start: bool,
    ) -> BoxFuture<'static, ()>;
    /// A delivery for a session that moved here, forwarded by the node it left.
    fn session_delivery(&self, client_id: ClientId, delivery: Delivery);
    /// The session that moved away from here is in place on its new node: stop forwarding.
    fn move_done(&self, client_id: ClientId);
    /// The node a session moved from forwards nothing more for it.
    fn move_ended(&self, client_id: ClientId);
    /// A newer connection holds `client_id` elsewhere: let the one here go, with its session.
    fn evict(&self, client_id: ClientId);
    /// The will of a client whose node died, kept here: publish it.
    fn publish_will(&self, client_id: ClientId, will: PendingWill);
    /// The sessions held here, with when their connection was accepted, to register again.
    fn local_sessions(&self) -> Vec<(ClientId, u64)>;
    /// The admin API of another node asks: disconnect `client_id` here, and end its session too
    /// if `end`.
    fn kick(&self, client_id: ClientId, end: bool) -> Kicked;
}

/// What a kick found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kicked {
    NoSuchClient,
    NotConnected,
    Done,
}

/// This node's own routes: what it tells its peers.
#[derive(Debug, Default)]
struct LocalRoutes {
    /// Bumped by every change; a delta carries the version it makes.
    version: u64,
    routes: HashSet<SubscriptionFilter>,
}

impl LocalRoutes {
    /// The frames of a snapshot of this node's routes.
    fn route_snapshot(&self) -> Vec<Frame> {
        let mut frames = vec![Frame::RoutesBegin {
            version: self.version,
        }];
        let routes: Vec<SubscriptionFilter> = self.routes.iter().cloned().collect();
        for chunk in routes.chunks(SNAPSHOT_CHUNK) {
            frames.push(Frame::RoutesChunk(chunk.to_vec()));
        }
        frames.push(Frame::RoutesEnd);
        frames
    }
}

/// A route snapshot arriving from a peer.
#[derive(Debug)]
pub(super) struct SnapshotReceiver {
    version: u64,
    routes: HashSet<SubscriptionFilter>,
}

/// What every task of the cluster shares.
pub(super) struct Shared {
    config: ClusterConfig,
    me: Arc<str>,
    generation: u64,
    tls: Option<PeerTls>,
    /// Lock order: `local`, then `peers`, then `table`, then a peer's outbox; none is held across an
    /// `.await`.
    local: Mutex<LocalRoutes>,
    peers: RwLock<Peers>,
    table: RwLock<RouteTable>,
    sink: OnceLock<Arc<dyn ClusterSink>>,
    /// Client ids this node arbitrates (see [`owners`]).
    owners: Mutex<owners::OwnerTable>,
    /// Wills this node keeps for clients of other nodes.
    wills: Mutex<owners::WillTable>,
    /// For each client connected here with a will: the will, and the node that keeps it.
    keepers: Mutex<HashMap<String, (Arc<str>, PendingWill)>>,
    /// Questions to other nodes waiting for their answer, by request id.
    requests: Mutex<HashMap<u64, tokio::sync::oneshot::Sender<ownership::Reply>>>,
    next_request: AtomicU64,
    /// Woken whenever a peer acknowledges this node's routes.
    acked: tokio::sync::Notify,
    metrics: ClusterMetrics,
    joined: AtomicBool,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

/// The live peers, by node id and by route-table bit.
#[derive(Default)]
struct Peers {
    by_id: HashMap<Arc<str>, PeerEntry>,
    by_bit: Vec<Option<Arc<Peer>>>,
}

struct PeerEntry {
    peer: Arc<Peer>,
    /// Where accepted connections from this peer go to its link task.
    accepted: mpsc::Sender<LinkStream>,
    member: Member,
}

/// A handle on the running cluster, held by the broker.
#[derive(Clone)]
pub struct Cluster {
    shared: Arc<Shared>,
    gossip: Arc<ChitchatHandle>,
    listener: Arc<Mutex<Option<TcpListener>>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("name", &self.shared.config.name)
            .field("node_id", &self.shared.me)
            .finish_non_exhaustive()
    }
}

/// One member as the admin API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MemberView {
    pub node_id: String,
    pub generation: u64,
    pub address: String,
    /// `self`, `joined` (link up, routes held), `joining` (link up, routes on their way) or
    /// `unreachable` (alive by gossip, no link).
    pub state: &'static str,
    pub ready: bool,
    pub routes: usize,
    pub queued: usize,
    /// QoS 1 and 2 messages written to its link that it has not acknowledged yet.
    pub unacked: usize,
    pub listeners: String,
}

/// The cluster as this node sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterView {
    pub name: String,
    pub node_id: String,
    pub generation: u64,
    pub ready: bool,
    pub local_routes: usize,
    pub route_version: u64,
    /// Client ids this node arbitrates.
    pub arbitrated: usize,
    /// Wills this node keeps for clients of other nodes.
    pub kept_wills: usize,
    pub members: Vec<MemberView>,
}

impl Cluster {
    /// Binds the peer-link socket and starts gossiping. `listeners` are this node's client
    /// listeners (name, address), which it advertises for MQTT 5 Server Reference.
    pub async fn bind(
        config: &ClusterConfig,
        listeners: &[(String, SocketAddr)],
        stats: &Stats,
    ) -> Result<Self, ClusterError> {
        let tls = config
            .tls
            .as_ref()
            .map(|tls| PeerTls::load(tls, &config.name))
            .transpose()
            .map_err(ClusterError::Tls)?;
        let listener =
            TcpListener::bind(config.bind)
                .await
                .map_err(|error| ClusterError::Bind {
                    addr: config.bind,
                    error,
                })?;
        let generation = members::new_generation();
        let advertised = listeners
            .iter()
            .map(|(name, addr)| {
                let addr = if addr.ip().is_unspecified() {
                    SocketAddr::new(config.advertise_addr().ip(), addr.port())
                } else {
                    *addr
                };
                format!("{name}={addr}")
            })
            .collect::<Vec<_>>()
            .join(",");
        let gossip = members::start(config, generation, advertised).await?;
        let shared = Arc::new(Shared {
            config: config.clone(),
            me: Arc::from(config.node_id.as_str()),
            generation,
            tls,
            table: RwLock::new(RouteTable::new()),
            local: Mutex::default(),
            peers: RwLock::new(Peers {
                by_id: HashMap::new(),
                by_bit: vec![None; MAX_NODES],
            }),
            sink: OnceLock::new(),
            owners: Mutex::default(),
            wills: Mutex::default(),
            keepers: Mutex::default(),
            requests: Mutex::default(),
            next_request: AtomicU64::new(1),
            acked: tokio::sync::Notify::new(),
            metrics: ClusterMetrics::register(stats),
            joined: AtomicBool::new(false),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        info!(cluster = %config.name, node_id = %config.node_id, generation, bind = %config.bind, "cluster member starting");
        Ok(Self {
            shared,
            gossip: Arc::new(gossip),
            listener: Arc::new(Mutex::new(Some(listener))),
        })
    }

    /// Starts following the members and accepting and dialling peer links; what peers forward
    /// goes to `sink`.
    pub fn start(&self, sink: Arc<dyn ClusterSink>) {
        let _ = self.shared.sink.set(sink);
        let shared = &self.shared;
        if let Some(listener) = self.listener.lock().take() {
            shared
                .tasks
                .spawn(link::accept_loop(Arc::clone(shared), listener));
        }
        shared
            .tasks
            .spawn(members::watch(Arc::clone(shared), Arc::clone(&self.gossip)));
        shared.tasks.spawn(members::publish_state(
            Arc::clone(shared),
            Arc::clone(&self.gossip),
        ));
        let joining = Arc::clone(shared);
        shared.tasks.spawn(async move {
            let grace =
                Duration::from_millis(joining.config.gossip_interval_ms) * JOIN_GRACE_ROUNDS;
            tokio::select! {
                () = joining.shutdown.cancelled() => {}
                () = tokio::time::sleep(grace) => joining.joined.store(true, Ordering::Release),
            }
        });
    }

    /// Leaves: stops gossip and every link, and waits for the tasks.
    pub async fn shutdown(&self) {
        self.shared.shutdown.cancel();
        let peers: Vec<Arc<Peer>> = self
            .shared
            .peers
            .read()
            .by_id
            .values()
            .map(|e| Arc::clone(&e.peer))
            .collect();
        for peer in peers {
            peer.gone.cancel();
        }
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
    }

    pub fn node_id(&self) -> &str {
        &self.shared.me
    }

    /// The node ids of the live members, this node included, in order.
    pub fn member_ids(&self) -> Vec<Arc<str>> {
        let mut ids: Vec<Arc<str>> = self
            .shared
            .live_peers()
            .iter()
            .map(|p| Arc::clone(&p.node_id))
            .collect();
        ids.push(Arc::clone(&self.shared.me));
        ids.sort();
        ids
    }

    /// Whether this node's id sorts first among the live members: it publishes what is said once
    /// for the whole cluster (the `$SYS` totals).
    pub fn leads(&self) -> bool {
        self.member_ids().first() == Some(&self.shared.me)
    }

    /// Joined, and holding the routes and retained messages of every live peer.
    pub fn is_ready(&self) -> bool {
        self.shared.is_ready()
    }

    /// A route appeared on this node.
    pub fn route_added(&self, route: &SubscriptionFilter) {
        self.shared.local_route_changed(route, true);
    }

    /// A route went from this node.
    pub fn route_removed(&self, route: &SubscriptionFilter) {
        self.shared.local_route_changed(route, false);
    }

    /// Where a message on `topic` goes in the cluster.
    pub fn plan(&self, topic: &str) -> Plan {
        self.shared.table.read().plan(topic)
    }

    /// Queues `message` for every peer `plan` names. Under `cluster.acknowledge: cluster` a QoS 1
    /// or 2 message comes with a receipt, which its publisher's acknowledgement waits for.
    pub fn forward(
        &self,
        message: &Arc<Message>,
        plan: &Plan,
        max_pause: Option<Duration>,
    ) -> Forwarded {
        let peers = plan.peers();
        if peers == 0 {
            return Forwarded::default();
        }
        let targets: Vec<Arc<Peer>> = {
            let known = self.shared.peers.read();
            nodes_in(peers)
                .filter_map(|bit| known.by_bit.get(bit.index()).cloned().flatten())
                .collect()
        };
        let receipt = (self.shared.config.acknowledge == ClusterAcknowledge::Cluster
            && message.qos != QoS::AtMostOnce
            && !targets.is_empty())
        .then(|| Arc::new(Receipt::new(targets.len())));
        let mut backlogged = None;
        for peer in targets {
            let copy = ForwardCopy {
                forward: Forward {
                    stream: 0,
                    seq: 0,
                    message: Arc::clone(message),
                    direct: plan.has_direct(peer.bit),
                    groups: plan.groups_for(peer.bit),
                },
                receipt: receipt.clone(),
            };
            match peer.outbox.push_forward(copy) {
                Ok(()) => {
                    if backlogged.is_none() && peer.outbox.is_backlogged() {
                        backlogged = Some(peer);
                    }
                }
                Err(Refused::Full) => {
                    self.shared
                        .metrics
                        .dropped(&peer.node_id, "queue_full", message.qos);
                    if message.qos != QoS::AtMostOnce {
                        warn!(peer = %peer.node_id, topic = %message.topic, "peer queue full; QoS {} message to it dropped", message.qos as u8);
                    }
                }
            }
        }
        Forwarded {
            receipt: receipt.filter(|receipt| !receipt.is_done()),
            wait: backlogged
                .zip(max_pause)
                .and_then(|(peer, max_pause)| peer.wait_for_room(max_pause)),
        }
    }

    /// Counts a session that moved here (`in`) or away (`out`).
    pub fn session_moved(&self, direction: &'static str) {
        self.shared.metrics.session_moved(direction);
    }

    /// A retained message was written or deleted on this node: every peer keeps it too.
    pub fn retained_written(&self, write: RetainedWrite) {
        self.shared.retained_written(&write);
    }

    /// The members and their state, for the admin API.
    pub fn view(&self) -> ClusterView {
        self.shared.view()
    }

    /// Samples the gauges that are read from state (queue depths, route counts).
    pub fn sample_metrics(&self) {
        self.shared.sample_metrics();
    }
}

impl Shared {
    fn is_ready(&self) -> bool {
        self.joined.load(Ordering::Acquire)
            && self
                .peers
                .read()
                .by_id
                .values()
                .all(|entry| entry.peer.is_caught_up())
    }

    fn local_route_version(&self) -> u64 {
        self.local.lock().version
    }

    fn peer(&self, node_id: &str) -> Option<Arc<Peer>> {
        self.peers
            .read()
            .by_id
            .get(node_id)
            .map(|e| Arc::clone(&e.peer))
    }

    /// Hands an accepted, handshaken connection to the peer's link task.
    async fn hand_over(&self, peer: &Peer, stream: LinkStream) {
        let sender = self
            .peers
            .read()
            .by_id
            .get(&peer.node_id)
            .map(|e| e.accepted.clone());
        if let Some(sender) = sender {
            let _ = sender.send(stream).await;
        }
    }

    fn local_route_changed(&self, route: &SubscriptionFilter, added: bool) {
        let mut local = self.local.lock();
        let changed = if added {
            local.routes.insert(route.clone())
        } else {
            local.routes.remove(route)
        };
        if !changed {
            return;
        }
        local.version += 1;
        {
            let mut table = self.table.write();
            if added {
                table.add(NodeBit::LOCAL, route);
            } else {
                table.remove(NodeBit::LOCAL, route);
            }
        }
        let frame = Frame::RouteDelta {
            version: local.version,
            added,
            route: route.clone(),
        };
        for entry in self.peers.read().by_id.values() {
            entry.peer.outbox.push_sync(frame.clone());
        }
    }

    /// Queues this node's whole route set for `peer` behind what waits (the peer asked for it).
    fn send_routes(&self, peer: &Peer) {
        for frame in self.local.lock().route_snapshot() {
            peer.outbox.push_sync(frame);
        }
    }

    /// Puts everything a new link must carry first at the front of `peer`'s outbox: this node's
    /// routes, then every retained message it holds. Retained writes are merged by their stamps, so
    /// one that also arrives on its own, before or after, changes nothing.
    fn send_snapshot(&self, peer: &Peer) {
        let retained = self
            .sink
            .get()
            .map(|sink| sink.retained_snapshot())
            .unwrap_or_default();
        // Under the lock that orders route deltas: the deltas queued after it follow this version.
        let local = self.local.lock();
        let mut frames = local.route_snapshot();
        frames.extend(retained.into_iter().map(Frame::Retained));
        frames.push(Frame::SyncEnd);
        peer.outbox.restart_sync(frames);
    }

    /// Sends a retained write to every peer with a link up; a peer without one gets every write
    /// in the snapshot its next link starts with.
    fn retained_written(&self, write: &RetainedWrite) {
        for entry in self.peers.read().by_id.values() {
            if entry.peer.connected.load(Ordering::Acquire) {
                entry.peer.outbox.push_sync(Frame::Retained(write.clone()));
            }
        }
    }

    /// Applies one frame from `peer`; an error names the protocol breach that ends the link.
    fn apply(
        &self,
        peer: &Peer,
        frame: Frame,
        snapshot: &mut Option<SnapshotReceiver>,
        pause: &mut Option<PeerWait>,
    ) -> Result<(), &'static str> {
        match frame {
            Frame::Hello(_) => return Err("a second hello"),
            Frame::RoutesBegin { version } => {
                *snapshot = Some(SnapshotReceiver {
                    version,
                    routes: HashSet::new(),
                });
            }
            Frame::RoutesChunk(routes) => {
                let receiving = snapshot.as_mut().ok_or("routes outside a snapshot")?;
                receiving.routes.extend(routes);
            }
            Frame::RoutesEnd => {
                let received = snapshot.take().ok_or("routes end outside a snapshot")?;
                self.table.write().replace(peer.bit, received.routes);
                peer.route_version
                    .store(received.version, Ordering::Release);
                peer.synced.store(true, Ordering::Release);
            }
            Frame::RouteDelta {
                version,
                added,
                route,
            } => self.apply_delta(peer, version, added, &route),
            Frame::RoutesRequest => self.send_routes(peer),
            Frame::SyncEnd => peer.caught_up.store(true, Ordering::Release),
            Frame::Retained(write) => {
                if let Some(sink) = self.sink.get() {
                    sink.retained(write);
                }
            }
            Frame::Forward(forward) => {
                self.metrics.received(&peer.node_id);
                // A copy sent again after a link broke, which arrived the first time, is dropped.
                if peer.arrived(&forward)
                    && let Some(sink) = self.sink.get()
                    && let Some(wait) = sink.deliver(forward)
                    && pause.is_none()
                {
                    *pause = Some(wait);
                }
            }
            Frame::ForwardAck { stream, seq } => peer.acknowledged(stream, seq),
            other => {
                if let Some(unknown) = self.apply_ownership(peer, other) {
                    warn!(peer = %peer.node_id, frame = unknown, "unexpected frame from a peer");
                }
            }
        }
        Ok(())
    }

    /// A delta older than the snapshot is ignored; one beyond the next version means deltas were
    /// missed, and a new snapshot is asked for.
    fn apply_delta(&self, peer: &Peer, version: u64, added: bool, route: &SubscriptionFilter) {
        if !peer.is_synced() {
            return;
        }
        let held = peer.route_version.load(Ordering::Acquire);
        if version <= held {
            return;
        }
        if version != held + 1 {
            warn!(peer = %peer.node_id, held, version, "gap in the peer's route deltas; asking for a snapshot");
            peer.synced.store(false, Ordering::Release);
            peer.outbox.push_sync(Frame::RoutesRequest);
            return;
        }
        {
            let mut table = self.table.write();
            if added {
                table.add(peer.bit, route);
            } else {
                table.remove(peer.bit, route);
            }
        }
        peer.route_version.store(version, Ordering::Release);
    }

    /// Brings the peers in line with the live members gossip reports.
    fn set_members(self: &Arc<Self>, members: Vec<Member>) {
        let live: HashMap<Arc<str>, Member> = members
            .into_iter()
            .map(|m| (Arc::clone(&m.node_id), m))
            .collect();
        let mut peers = self.peers.write();
        let before = self.member_set(&peers);
        // Gone, or back as a new generation: forget the old one and its routes.
        let stale: Vec<Arc<str>> = peers
            .by_id
            .iter()
            .filter(|(id, entry)| {
                live.get(*id)
                    .is_none_or(|m| m.generation != entry.peer.generation)
            })
            .map(|(id, _)| Arc::clone(id))
            .collect();
        for id in stale {
            if let Some(entry) = peers.by_id.remove(&id) {
                self.forget(&mut peers, &entry.peer);
            }
        }
        for (id, member) in live {
            if let Some(entry) = peers.by_id.get_mut(&id) {
                entry.member = member;
                continue;
            }
            let Some(bit) = self.table.write().allocate() else {
                warn!(peer = %id, "the cluster already has {MAX_NODES} members; ignoring this one");
                continue;
            };
            info!(peer = %id, generation = member.generation, addr = %member.addr, "peer joined");
            let peer = Arc::new(Peer::new(
                Arc::clone(&id),
                member.generation,
                member.addr,
                bit,
                self.config.peer_queue_messages,
            ));
            let (accepted, incoming) = mpsc::channel(1);
            peers.by_bit[bit.index()] = Some(Arc::clone(&peer));
            peers.by_id.insert(
                id,
                PeerEntry {
                    peer: Arc::clone(&peer),
                    accepted,
                    member,
                },
            );
            self.tasks
                .spawn(link::run(Arc::clone(self), peer, incoming));
        }
        self.metrics.members(peers.by_id.len());
        let changed = self.member_set(&peers) != before;
        drop(peers);
        if changed {
            self.reregister();
        }
    }

    /// The live peers' identities, to tell whether the members changed.
    fn member_set(&self, peers: &Peers) -> Vec<(Arc<str>, u64)> {
        let mut set: Vec<(Arc<str>, u64)> = peers
            .by_id
            .values()
            .map(|e| (Arc::clone(&e.peer.node_id), e.peer.generation))
            .collect();
        set.sort();
        set
    }

    /// Drops a peer: its link ends, its routes and its queued messages go.
    fn forget(self: &Arc<Self>, peers: &mut Peers, peer: &Arc<Peer>) {
        warn!(peer = %peer.node_id, generation = peer.generation, "peer left or died; its routes are dropped");
        peer.gone.cancel();
        peers.by_bit[peer.bit.index()] = None;
        self.table.write().release(peer.bit);
        self.peer_died(peer);
        self.metrics.forget_peer(&peer.node_id);
        let dropped = peer.outbox.clear();
        let unacked = peer.release_unacked();
        if unacked > 0 {
            warn!(peer = %peer.node_id, unacked, "QoS 1 and 2 messages sent to a departed peer were not acknowledged; it may not have had them");
        }
        if dropped > 0 {
            warn!(peer = %peer.node_id, dropped, "messages queued for a departed peer dropped");
            self.metrics
                .dropped_many(&peer.node_id, "peer_gone", dropped);
        }
    }

    fn view(&self) -> ClusterView {
        let ready = self.is_ready();
        let (local_routes, route_version) = {
            let local = self.local.lock();
            (local.routes.len(), local.version)
        };
        let peers: Vec<(Arc<Peer>, Member)> = self
            .peers
            .read()
            .by_id
            .values()
            .map(|e| (Arc::clone(&e.peer), e.member.clone()))
            .collect();
        let table = self.table.read();
        let mut members = vec![MemberView {
            node_id: self.me.to_string(),
            generation: self.generation,
            address: self.config.advertise_addr().to_string(),
            state: "self",
            ready,
            routes: local_routes,
            queued: 0,
            unacked: 0,
            listeners: String::new(),
        }];
        for (peer, member) in peers {
            let state = match (peer.connected.load(Ordering::Acquire), peer.is_caught_up()) {
                (true, true) => "joined",
                (true, false) => "joining",
                (false, _) => "unreachable",
            };
            members.push(MemberView {
                node_id: peer.node_id.to_string(),
                generation: peer.generation,
                address: peer.addr.to_string(),
                state,
                ready: member.ready,
                routes: table.count(peer.bit),
                queued: peer.outbox.depth(),
                unacked: peer.unacked(),
                listeners: member.listeners,
            });
        }
        members.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        ClusterView {
            name: self.config.name.clone(),
            node_id: self.me.to_string(),
            generation: self.generation,
            ready,
            local_routes,
            route_version,
            arbitrated: self.owners.lock().len(),
            kept_wills: self.wills.lock().len(),
            members,
        }
    }

    fn sample_metrics(&self) {
        let peers: Vec<(Arc<Peer>, u64)> = self
            .peers
            .read()
            .by_id
            .values()
            .map(|e| (Arc::clone(&e.peer), e.member.route_version))
            .collect();
        let table = self.table.read();
        self.metrics.table_filters(table.filters());
        let (mut joined, mut joining, mut unreachable) = (0, 0, 0);
        for (peer, _) in &peers {
            match (peer.connected.load(Ordering::Acquire), peer.is_caught_up()) {
                (true, true) => joined += 1,
                (true, false) => joining += 1,
                (false, _) => unreachable += 1,
            }
        }
        self.metrics.states(joined, joining, unreachable);
        for (peer, advertised) in peers {
            self.metrics.peer_sample(
                &peer.node_id,
                LinkSample {
                    queued: peer.outbox.depth(),
                    unacked: peer.unacked(),
                    routes: table.count(peer.bit),
                    lag: advertised.saturating_sub(peer.route_version.load(Ordering::Acquire)),
                },
            );
        }
    }
}
