//! The broker's side of the cluster: what peers forward is delivered here, routes appearing and
//! going are told to the cluster, a client id is claimed cluster-wide before a CONNECT takes it, and
//! a session moves between nodes whole. The cluster itself (`crate::cluster`) knows nothing of the
//! broker; it reaches it through the [`ClusterSink`] registered at start.
//!
//! A session that moves away leaves a stand-in here for a moment: a session with the same
//! subscriptions, whose deliveries are forwarded to the new node until that node's routes are in
//! place everywhere (`crate::cluster::ownership` describes the exchange).

use std::collections::HashSet;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::Broker;
use super::sessions::SessionRequest;
use crate::backpressure::BacklogWait;
use crate::cluster::{ClusterSink, Forward, Kicked, PeerWait};
use crate::codec::ReasonCode;
use crate::control::ConnectionControl;
use crate::hook::BoxFuture;
use crate::identity::ClientId;
use crate::message::{Delivery, RetainedWrite};
use crate::router::{RouteChange, RouteScope};
use crate::session::{PendingWill, Session, SessionSnapshot};
use crate::storage::unix_millis_now;

/// How long a node asked to hand a session over waits for a CONNECT for the same client id that
/// it is handling itself (the later CONNECT wins, so it goes first).
const LOCAL_CLAIM_WAIT: Duration = Duration::from_secs(5);

/// The sink the cluster hands what peers send to. Weak: the broker owns the cluster handle, and
/// what arrives while the broker is going away is simply not applied.
pub struct BrokerSink(Weak<Broker>);

impl BrokerSink {
    pub fn new(broker: &Arc<Broker>) -> Arc<Self> {
        Arc::new(Self(Arc::downgrade(broker)))
    }
}

/// The cluster-side state the broker keeps.
#[derive(Debug, Default)]
pub(super) struct ClusterState {
    /// Client ids whose CONNECT this node is handling: a hand-over asked for meanwhile waits.
    claiming: Mutex<HashSet<ClientId>>,
    /// Stand-ins for sessions that moved away, until their new node has its routes in place.
    moving_out: Mutex<Vec<MoveOut>>,
}

#[derive(Debug)]
struct MoveOut {
    client_id: ClientId,
    stand_in: Arc<Session>,
    /// Cancelled by `MoveDone`: the stand-in forwards what it still holds, then ends.
    done: CancellationToken,
}

/// Holds a client id in [`ClusterState::claiming`] while a CONNECT for it is handled.
struct Claiming<'a> {
    broker: &'a Broker,
    client_id: ClientId,
}

impl Drop for Claiming<'_> {
    fn drop(&mut self) {
        self.broker
            .cluster_state
            .claiming
            .lock()
            .remove(&self.client_id);
    }
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Broker {
    /// Delivers a message another node forwarded: to this node's direct subscribers if it says so,
    /// and to one member of each shared group it picked this node for. No hook hears of it again
    /// and it goes nowhere else: the node it was published on did both. Returns the wait for a
    /// subscriber it backed up, which the peer link takes before it reads on.
    pub fn deliver_forwarded(&self, forward: &Forward) -> Option<BacklogWait> {
        let routed = self.router.route(
            &forward.message,
            RouteScope::Cluster {
                direct: forward.direct,
                groups: &forward.groups,
            },
        );
        let wait = routed
            .backlogged
            .and_then(|subscriber| self.backpressure.wait_for(subscriber));
        if wait.is_some() {
            self.stats.limit_hit(crate::stats::LimitKind::Backlog);
        }
        wait
    }

    /// Tells the cluster, if there is one, that a route appeared or went on this node.
    pub(super) fn tell_cluster(&self, change: &RouteChange) {
        if let Some(cluster) = &self.cluster {
            match change {
                RouteChange::Added(route) => cluster.route_added(route),
                RouteChange::Removed(route) => cluster.route_removed(route),
            }
        }
    }

    /// Before a CONNECT takes `request.client_id` on this node: claims it cluster-wide, and if
    /// another node held its session, has that node let its connection go and either end the
    /// session (clean start) or hand it over, installing it here.
    pub(super) async fn claim_cluster_wide(self: &Arc<Self>, request: &SessionRequest) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let client_id = &request.client_id;
        self.cluster_state.claiming.lock().insert(client_id.clone());
        let _claiming = Claiming {
            broker: self,
            client_id: client_id.clone(),
        };
        let Some(previous) = cluster.claim(client_id, now_millis()).await else {
            return;
        };
        let snapshot = cluster
            .take_over(&previous, client_id, request.clean_start)
            .await;
        let Some(snapshot) = snapshot.filter(|_| !request.clean_start) else {
            return;
        };
        info!(%client_id, from = %previous, "session moved here from another node");
        cluster.session_moved("in");
        self.install_moved(snapshot);
        let cluster = cluster.clone();
        let client_id = client_id.clone();
        self.tasks.spawn(async move {
            cluster.routes_settled().await;
            cluster.move_done(&previous, &client_id);
        });
    }

    /// Puts a session that moved here into the registry, detached, with its subscriptions.
    fn install_moved(&self, mut snapshot: SessionSnapshot) {
        if let Some(stale) = self.sessions.get(&snapshot.client_id) {
            // A session left here from before: the one that moved is newer.
            self.end_session(&stale, Some(ReasonCode::SESSION_TAKEN_OVER), None);
        }
        let session = Arc::new(self.new_session(snapshot.client_id.clone()));
        {
            // Stored here from the start, so that the deliveries it brings are stored too.
            let mut state = session.lock();
            state.expiry_interval = snapshot.expiry_interval;
            self.start_journal(&session, &mut state);
        }
        session.restore(&mut snapshot);
        session
            .lock()
            .record_session(&session.client_id, Some(Some(unix_millis_now())));
        self.sessions.lock().insert(Arc::clone(&session));
        for (filter, record) in snapshot.subscriptions {
            self.subscribe_quietly(&session, filter, record.options, record.identifier);
        }
    }

    /// Asked by node `to`, which has a CONNECT for `client_id`: lets the connection here go and
    /// ends the session (clean start) or moves it to `to`.
    async fn hand_session_over(
        self: Arc<Self>,
        request: u64,
        client_id: ClientId,
        to: Arc<str>,
        clean_start: bool,
    ) {
        let Some(cluster) = self.cluster.clone() else {
            return;
        };
        self.wait_for_local_claim(&client_id).await;
        self.displace_connection(&client_id).await;
        let Some(session) = self.sessions.get(&client_id) else {
            cluster.hand_over(&to, request, None);
            return;
        };
        if clean_start {
            self.end_session(&session, None, None);
            cluster.hand_over(&to, request, None);
            return;
        }
        // The stand-in takes the subscriptions first, so no message for the client falls between
        // the session leaving the router and the new node's routes arriving.
        let stand_in = Arc::new(self.new_session(client_id.clone()));
        let subscriptions: Vec<_> = session
            .lock()
            .subscriptions
            .iter()
            .map(|(f, r)| (f.clone(), r.clone()))
            .collect();
        for (filter, record) in subscriptions {
            self.subscribe_quietly(&stand_in, filter, record.options, record.identifier);
        }
        let Some(snapshot) = session.take_for_move() else {
            self.end_stand_in(&stand_in);
            cluster.hand_over(&to, request, None);
            return;
        };
        self.sessions.remove_if_same(&session);
        self.backpressure.subscriber_gone(&session);
        self.forget_subscriptions(
            session.id,
            snapshot.subscriptions.iter().map(|(f, _)| f.clone()),
        );
        if let Some(cluster) = &self.cluster {
            cluster.drop_will(&client_id);
        }
        debug!(%client_id, %to, queued = snapshot.queued.len(), inflight = snapshot.inflight.len(), "session handed over");
        // The hand-over goes on the link before anything the stand-in forwards.
        cluster.hand_over(&to, request, Some(snapshot));
        cluster.session_moved("out");
        let done = CancellationToken::new();
        self.cluster_state.moving_out.lock().push(MoveOut {
            client_id: client_id.clone(),
            stand_in: Arc::clone(&stand_in),
            done: done.clone(),
        });
        self.tasks
            .spawn(Arc::clone(&self).forward_stand_in(stand_in, client_id, to, done));
    }

    /// Forwards what reaches a stand-in to the session's new node, until `done`; then what is
    /// left, and the end of the move.
    async fn forward_stand_in(
        self: Arc<Self>,
        stand_in: Arc<Session>,
        client_id: ClientId,
        to: Arc<str>,
        done: CancellationToken,
    ) {
        let Some(cluster) = self.cluster.clone() else {
            return;
        };
        let control = Arc::new(ConnectionControl::default());
        stand_in.lock().connection = Some(Arc::clone(&control));
        stand_in.set_online(true);
        loop {
            loop {
                let next = stand_in.lock().queue.pop();
                let Some(delivery) = next else { break };
                if !cluster.session_delivery(&to, &client_id, delivery) {
                    break;
                }
            }
            if done.is_cancelled() {
                break;
            }
            tokio::select! {
                () = control.queued() => {}
                () = done.cancelled() => {}
                () = self.shutdown.cancelled() => return,
            }
        }
        self.end_stand_in(&stand_in);
        cluster.move_ended(&to, &client_id);
    }

    /// The session's new node has its routes in place: the stand-in stops taking deliveries,
    /// forwards what it holds and ends.
    fn finish_move_out(&self, client_id: &ClientId) {
        let moves: Vec<MoveOut> = {
            let mut moving = self.cluster_state.moving_out.lock();
            let (done, rest) = std::mem::take(&mut *moving)
                .into_iter()
                .partition(|m| m.client_id == *client_id);
            *moving = rest;
            done
        };
        for out in moves {
            let filters: Vec<_> = out.stand_in.lock().subscriptions.keys().cloned().collect();
            // Out of the router first, so that nothing reaches it after its last forward.
            self.forget_subscriptions(out.stand_in.id, filters);
            out.done.cancel();
        }
    }

    fn end_stand_in(&self, stand_in: &Arc<Session>) {
        self.end_session(stand_in, None, None);
    }

    /// Waits (bounded) while this node is handling a CONNECT for `client_id` itself.
    async fn wait_for_local_claim(&self, client_id: &ClientId) {
        let deadline = tokio::time::Instant::now() + LOCAL_CLAIM_WAIT;
        while self.cluster_state.claiming.lock().contains(client_id)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// A delivery for a session that moved here, forwarded by the node it left.
    fn deliver_moved(&self, client_id: &ClientId, delivery: Delivery) {
        if let Some(session) = self.sessions.get(client_id) {
            session.deliver(delivery, None, &self.stats);
        }
    }

    /// The node a session moved from forwards nothing more: duplicates can no longer arrive.
    fn move_arrived(&self, client_id: &ClientId) {
        if let Some(session) = self.sessions.get(client_id) {
            session.lock().finish_arriving();
        }
    }

    /// Disconnects `client_id`'s connection on this node (MQTT 5: DISCONNECT 0x98 Administrative
    /// action); with `end`, its session ends too.
    pub(super) fn kick_local(&self, client_id: &ClientId, end: bool) -> Kicked {
        let Some(session) = self.sessions.get(client_id) else {
            return Kicked::NoSuchClient;
        };
        if end {
            self.end_session(&session, Some(ReasonCode::ADMINISTRATIVE_ACTION), None);
            return Kicked::Done;
        }
        match &session.lock().connection {
            Some(connection) => {
                connection.kick(ReasonCode::ADMINISTRATIVE_ACTION);
                Kicked::Done
            }
            None => Kicked::NotConnected,
        }
    }

    /// [`Self::kick_local`] on whichever node of the cluster holds the client; the node's id is
    /// returned with the outcome (`None`: this one).
    pub async fn kick_anywhere(&self, client_id: &ClientId, end: bool) -> (Kicked, Option<String>) {
        let here = self.kick_local(client_id, end);
        let Some(cluster) = self
            .cluster
            .as_ref()
            .filter(|_| here == Kicked::NoSuchClient)
        else {
            return (here, None);
        };
        let Some(node) = cluster
            .locate(client_id)
            .await
            .filter(|n| **n != *cluster.node_id())
        else {
            return (here, None);
        };
        let kicked = cluster
            .kick(&node, client_id, end)
            .await
            .unwrap_or(Kicked::NoSuchClient);
        (kicked, Some(node.to_string()))
    }

    /// The node of the cluster that holds `client_id`, when it is not this one.
    pub async fn locate_elsewhere(&self, client_id: &ClientId) -> Option<String> {
        let cluster = self.cluster.as_ref()?;
        cluster
            .locate(client_id)
            .await
            .filter(|node| **node != *cluster.node_id())
            .map(|node| node.to_string())
    }

    /// A newer connection holds `client_id` on another node: the one here goes, with its session.
    fn evict(&self, client_id: &ClientId) {
        if let Some(session) = self.sessions.get(client_id) {
            self.end_session(&session, Some(ReasonCode::SESSION_TAKEN_OVER), None);
        }
    }
}

impl ClusterSink for BrokerSink {
    fn deliver(&self, forward: Forward) -> Option<PeerWait> {
        self.0.upgrade()?.deliver_forwarded(&forward)
    }

    fn retained(&self, write: RetainedWrite) {
        if let Some(broker) = self.0.upgrade() {
            let stored = broker.storage.is_some().then(|| write.clone());
            if broker.retained.apply(write)
                && let Some(write) = stored
            {
                broker.store_retained(&write);
            }
        }
    }

    fn retained_snapshot(&self) -> Vec<RetainedWrite> {
        self.0
            .upgrade()
            .map(|broker| broker.retained.snapshot())
            .unwrap_or_default()
    }

    fn take_over(
        &self,
        request: u64,
        client_id: ClientId,
        to: Arc<str>,
        clean_start: bool,
    ) -> BoxFuture<'static, ()> {
        let broker = self.0.upgrade();
        Box::pin(async move {
            if let Some(broker) = broker {
                broker
                    .hand_session_over(request, client_id, to, clean_start)
                    .await;
            }
        })
    }

    fn session_delivery(&self, client_id: ClientId, delivery: Delivery) {
        if let Some(broker) = self.0.upgrade() {
            broker.deliver_moved(&client_id, delivery);
        }
    }

    fn move_done(&self, client_id: ClientId) {
        if let Some(broker) = self.0.upgrade() {
            broker.finish_move_out(&client_id);
        }
    }

    fn move_ended(&self, client_id: ClientId) {
        if let Some(broker) = self.0.upgrade() {
            broker.move_arrived(&client_id);
        }
    }

    fn evict(&self, client_id: ClientId) {
        if let Some(broker) = self.0.upgrade() {
            broker.evict(&client_id);
        }
    }

    fn publish_will(&self, client_id: ClientId, will: PendingWill) {
        if let Some(broker) = self.0.upgrade() {
            debug!(%client_id, "publishing a will kept for a client of a dead node");
            broker.publish_kept_will(will);
        }
    }

    fn kick(&self, client_id: ClientId, end: bool) -> Kicked {
        match self.0.upgrade() {
            Some(broker) => broker.kick_local(&client_id, end),
            None => Kicked::NoSuchClient,
        }
    }

    fn local_sessions(&self) -> Vec<(ClientId, u64)> {
        let Some(broker) = self.0.upgrade() else {
            return Vec::new();
        };
        broker
            .sessions
            .snapshot()
            .into_iter()
            .map(|session| {
                let since = session
                    .lock()
                    .client
                    .as_ref()
                    .and_then(|client| client.connected_at)
                    .map_or(0, |s| u64::from(s.get()) * 1000);
                (session.client_id.clone(), since)
            })
            .collect()
    }
}
