//! The cluster's metrics, registered with the broker's: members, messages and bytes forwarded per
//! peer, drops, peer-link queue depth, route counts and replication lag. The `peer` label is a node
//! id, bounded by the cluster's size.

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts};

use crate::codec::QoS;
use crate::stats::Stats;

pub(super) struct ClusterMetrics {
    members: IntGauge,
    forwarded_messages: IntCounterVec,
    forwarded_bytes: IntCounterVec,
    received_messages: IntCounterVec,
    dropped: IntCounterVec,
    queue: IntGaugeVec,
    unacked: IntGaugeVec,
    resent: IntCounterVec,
    peer_routes: IntGaugeVec,
    route_lag: IntGaugeVec,
    table_filters: IntGauge,
    by_state: IntGaugeVec,
    sessions_moved: IntCounterVec,
}

impl ClusterMetrics {
    pub(super) fn register(stats: &Stats) -> Self {
        let registry = stats.registry();
        let counters = |name: &str, help: &str, labels: &[&str]| {
            let vec = IntCounterVec::new(Opts::new(name, help), labels)
                .unwrap_or_else(|_| unreachable_metric());
            let _ = registry.register(Box::new(vec.clone()));
            vec
        };
        let gauges = |name: &str, help: &str| {
            let vec = IntGaugeVec::new(Opts::new(name, help), &["peer"])
                .unwrap_or_else(|_| unreachable_metric());
            let _ = registry.register(Box::new(vec.clone()));
            vec
        };
        let gauge = |name: &str, help: &str| {
            let gauge = IntGauge::new(name, help).unwrap_or_else(|_| unreachable_metric());
            let _ = registry.register(Box::new(gauge.clone()));
            gauge
        };
        Self {
            members: gauge(
                "tern_cluster_members",
                "Live members of the cluster, this node included.",
            ),
            forwarded_messages: counters(
                "tern_cluster_forwarded_messages_total",
                "Messages sent to a peer for its subscribers.",
                &["peer"],
            ),
            forwarded_bytes: counters(
                "tern_cluster_forwarded_bytes_total",
                "Bytes written on the link to a peer.",
                &["peer"],
            ),
            received_messages: counters(
                "tern_cluster_received_messages_total",
                "Messages a peer forwarded to this node.",
                &["peer"],
            ),
            dropped: counters(
                "tern_cluster_dropped_messages_total",
                "Messages for a peer that were dropped, by reason and QoS.",
                &["peer", "reason", "qos"],
            ),
            queue: gauges(
                "tern_cluster_peer_queue_messages",
                "Messages waiting for the link to a peer.",
            ),
            unacked: gauges(
                "tern_cluster_peer_unacked_messages",
                "QoS 1 and 2 messages written to the link to a peer that it has not acknowledged yet.",
            ),
            resent: counters(
                "tern_cluster_resent_messages_total",
                "QoS 1 and 2 messages sent to a peer again on a new link, because the link they were written to broke before the peer acknowledged them.",
                &["peer"],
            ),
            peer_routes: gauges(
                "tern_cluster_peer_routes",
                "Routes this node holds for a peer.",
            ),
            route_lag: gauges(
                "tern_cluster_route_lag",
                "Route changes a peer has announced that this node has not applied yet.",
            ),
            table_filters: gauge(
                "tern_cluster_route_table_filters",
                "Distinct topic filters in the cluster's route table, this node's included.",
            ),
            by_state: {
                let vec = IntGaugeVec::new(
                    Opts::new(
                        "tern_cluster_members_by_state",
                        "Peers by the state of their link: joined, joining or unreachable.",
                    ),
                    &["state"],
                )
                .unwrap_or_else(|_| unreachable_metric());
                let _ = registry.register(Box::new(vec.clone()));
                vec
            },
            sessions_moved: counters(
                "tern_cluster_sessions_moved_total",
                "Sessions taken over across nodes: moved here (in) or away (out).",
                &["direction"],
            ),
        }
    }

    pub(super) fn members(&self, peers: usize) {
        self.members
            .set(i64::try_from(peers + 1).unwrap_or(i64::MAX));
    }

    pub(super) fn forwarded(&self, peer: &str, messages: u64, bytes: usize) {
        self.forwarded_messages
            .with_label_values(&[peer])
            .inc_by(messages);
        self.forwarded_bytes
            .with_label_values(&[peer])
            .inc_by(u64::try_from(bytes).unwrap_or(u64::MAX));
    }

    pub(super) fn received(&self, peer: &str) {
        self.received_messages.with_label_values(&[peer]).inc();
    }

    pub(super) fn dropped(&self, peer: &str, reason: &str, qos: QoS) {
        self.dropped
            .with_label_values(&[peer, reason, qos_label(qos)])
            .inc();
    }

    /// Drops whose QoS is not known one by one (a departed peer's whole queue).
    pub(super) fn dropped_many(&self, peer: &str, reason: &str, count: usize) {
        self.dropped
            .with_label_values(&[peer, reason, "any"])
            .inc_by(u64::try_from(count).unwrap_or(u64::MAX));
    }

    pub(super) fn peer_sample(&self, peer: &str, link: LinkSample) {
        let value = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let LinkSample {
            queued,
            unacked,
            routes,
            lag,
        } = link;
        self.queue.with_label_values(&[peer]).set(value(queued));
        self.unacked.with_label_values(&[peer]).set(value(unacked));
        self.peer_routes
            .with_label_values(&[peer])
            .set(value(routes));
        self.route_lag
            .with_label_values(&[peer])
            .set(i64::try_from(lag).unwrap_or(i64::MAX));
    }

    /// Sets the number of peers in each link state.
    pub(super) fn states(&self, joined: usize, joining: usize, unreachable: usize) {
        let value = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.by_state
            .with_label_values(&["joined"])
            .set(value(joined));
        self.by_state
            .with_label_values(&["joining"])
            .set(value(joining));
        self.by_state
            .with_label_values(&["unreachable"])
            .set(value(unreachable));
    }

    pub(super) fn resent(&self, peer: &str, messages: usize) {
        self.resent
            .with_label_values(&[peer])
            .inc_by(u64::try_from(messages).unwrap_or(u64::MAX));
    }

    /// A session moved here (`in`) or away (`out`).
    pub(super) fn session_moved(&self, direction: &str) {
        self.sessions_moved.with_label_values(&[direction]).inc();
    }

    /// Drops the series of a departed peer.
    pub(super) fn forget_peer(&self, peer: &str) {
        for vec in [
            &self.queue,
            &self.unacked,
            &self.peer_routes,
            &self.route_lag,
        ] {
            let _ = vec.remove_label_values(&[peer]);
        }
    }

    pub(super) fn table_filters(&self, filters: usize) {
        self.table_filters
            .set(i64::try_from(filters).unwrap_or(i64::MAX));
    }
}

/// What is sampled about one peer's link.
pub(super) struct LinkSample {
    pub queued: usize,
    pub unacked: usize,
    pub routes: usize,
    /// Route changes announced and not applied yet.
    pub lag: u64,
}

fn qos_label(qos: QoS) -> &'static str {
    match qos {
        QoS::AtMostOnce => "0",
        QoS::AtLeastOnce => "1",
        QoS::ExactlyOnce => "2",
    }
}

/// The names and help texts above are constants that prometheus accepts.
fn unreachable_metric() -> ! {
    unreachable!("a cluster metric's definition is invalid")
}
