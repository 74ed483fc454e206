//! Membership by gossip ([chitchat]): who is in the cluster, and who has died. Each node's
//! identity is its node id, its generation (its start time in milliseconds, so a restarted node is a
//! new member and the old one is forgotten) and its gossip address. Its gossiped state holds only a
//! few small facts ([`keys`]); routes travel over the peer links, never in gossip.
//!
//! The failure detector is chitchat's phi-accrual detector over the gossip heartbeats: with
//! `cluster.gossip_interval_ms` (500 ms) and `cluster.phi_threshold` (8) a node that stops is
//! declared dead within a few seconds (`docs/cluster.md` gives the measured window).
//!
//! [chitchat]: https://github.com/quickwit-oss/chitchat

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chitchat::transport::UdpTransport;
use chitchat::{
    ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, NodeState, ProtocolVersion,
};
use tracing::{debug, info};

use super::{ClusterError, Shared};
use crate::config::ClusterConfig;

/// The keys of a node's gossiped state.
pub mod keys {
    /// Where its peer links are accepted (`cluster.advertise`).
    pub const PEER: &str = "peer";
    /// Its client listeners, `name=address` separated by commas, for MQTT 5 Server Reference.
    pub const LISTENERS: &str = "listeners";
    /// Its broker version.
    pub const VERSION: &str = "version";
    /// `1` once it has joined and holds every peer's routes.
    pub const READY: &str = "ready";
    /// The version of its own route set, for replication lag.
    pub const ROUTES: &str = "routes";
}

/// How often this node's gossiped facts (readiness, route version) are refreshed.
const PUBLISH_EVERY: Duration = Duration::from_millis(500);

/// A live member other than this node, as gossip describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Member {
    pub node_id: Arc<str>,
    pub generation: u64,
    /// Its peer-link address.
    pub addr: SocketAddr,
    pub ready: bool,
    pub route_version: u64,
    pub listeners: String,
}

/// This node's generation: its start time in milliseconds since the Unix epoch.
pub(super) fn new_generation() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Starts gossiping (binds the UDP socket).
pub(super) async fn start(
    config: &ClusterConfig,
    generation: u64,
    listeners: String,
) -> Result<ChitchatHandle, ClusterError> {
    let interval = Duration::from_millis(config.gossip_interval_ms);
    let chitchat_config = ChitchatConfig {
        chitchat_id: ChitchatId::new(config.node_id.as_str(), generation, config.advertise_addr()),
        cluster_id: config.name.clone(),
        gossip_interval: interval,
        listen_addr: config.bind,
        seed_nodes: config.seeds.clone(),
        failure_detector_config: FailureDetectorConfig {
            phi_threshold: config.phi_threshold,
            sampling_window_size: 1_000,
            // A heartbeat gap longer than this is not learnt from (a pause, not the normal rhythm).
            max_interval: interval * 8,
            initial_interval: interval * 2,
            // How long a dead node's state is kept, so a late message about it is not taken for
            // a new member.
            dead_node_grace_period: Duration::from_secs(3600),
        },
        marked_for_deletion_grace_period: Duration::from_secs(3600),
        catchup_callback: None,
        extra_liveness_predicate: None,
        protocol_version: ProtocolVersion::V0,
    };
    let initial = vec![
        (keys::PEER.to_owned(), config.advertise_addr().to_string()),
        (keys::LISTENERS.to_owned(), listeners),
        (
            keys::VERSION.to_owned(),
            env!("CARGO_PKG_VERSION").to_owned(),
        ),
        (keys::READY.to_owned(), "0".to_owned()),
        (keys::ROUTES.to_owned(), "0".to_owned()),
    ];
    chitchat::spawn_chitchat(chitchat_config, initial, &UdpTransport)
        .await
        .map_err(|error| ClusterError::Gossip {
            addr: config.bind,
            error: format!("{error:#}"),
        })
}

/// Follows the live members until shutdown, telling `shared` whenever they change.
pub(super) async fn watch(shared: Arc<Shared>, gossip: Arc<ChitchatHandle>) {
    let mut live = gossip.with_chitchat(|c| c.live_nodes_watcher()).await;
    loop {
        let members = members_of(&shared, &live.borrow_and_update());
        shared.set_members(members);
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            changed = live.changed() => if changed.is_err() { return },
        }
    }
}

/// The live members other than this node; of two generations of one node, only the newer.
fn members_of(shared: &Shared, live: &BTreeMap<ChitchatId, NodeState>) -> Vec<Member> {
    let mut newest: BTreeMap<Arc<str>, Member> = BTreeMap::new();
    for (id, state) in live {
        if *id.node_id == *shared.me {
            continue;
        }
        let member = Member {
            node_id: Arc::clone(&id.node_id),
            generation: id.generation_id,
            addr: state
                .get(keys::PEER)
                .and_then(|addr| addr.parse().ok())
                .unwrap_or(id.gossip_advertise_addr),
            ready: state.get(keys::READY) == Some("1"),
            route_version: state
                .get(keys::ROUTES)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            listeners: state.get(keys::LISTENERS).unwrap_or_default().to_owned(),
        };
        match newest.get(&member.node_id) {
            Some(known) if known.generation >= member.generation => {}
            _ => {
                newest.insert(Arc::clone(&member.node_id), member);
            }
        }
    }
    newest.into_values().collect()
}

/// Keeps this node's gossiped readiness and route version current until shutdown, then leaves.
pub(super) async fn publish_state(shared: Arc<Shared>, gossip: Arc<ChitchatHandle>) {
    let mut published = (false, 0);
    let mut ticker = tokio::time::interval(PUBLISH_EVERY);
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let now = (shared.is_ready(), shared.local_route_version());
        if now != published {
            gossip
                .with_chitchat(|c| {
                    let state = c.self_node_state();
                    state.set(keys::READY, if now.0 { "1" } else { "0" });
                    state.set(keys::ROUTES, now.1);
                })
                .await;
            if now.0 != published.0 {
                info!(ready = now.0, "cluster readiness changed");
            }
            published = now;
        }
    }
    debug!("gossip stopping");
    let _ = gossip.initiate_shutdown();
}
