//! The broker's side of the cluster: what a peer forwards is delivered here, and the cluster is
//! told which routes this node holds. The cluster itself (`crate::cluster`) knows nothing of the
//! broker; it reaches it through the [`ClusterSink`] registered at start.

use std::sync::{Arc, Weak};

use super::Broker;
use crate::cluster::{ClusterSink, Forward};
use crate::message::RetainedWrite;
use crate::router::{RouteChange, RouteScope};

/// The sink the cluster hands forwarded messages to. Weak: the broker owns the cluster handle, and
/// a message that arrives while the broker is going away is simply not delivered.
pub struct BrokerSink(Weak<Broker>);

impl BrokerSink {
    pub fn new(broker: &Arc<Broker>) -> Arc<Self> {
        Arc::new(Self(Arc::downgrade(broker)))
    }
}

impl ClusterSink for BrokerSink {
    fn deliver(&self, forward: Forward) {
        if let Some(broker) = self.0.upgrade() {
            broker.deliver_forwarded(&forward);
        }
    }

    fn retained(&self, write: RetainedWrite) {
        if let Some(broker) = self.0.upgrade() {
            broker.retained.apply(write);
        }
    }

    fn retained_snapshot(&self) -> Vec<RetainedWrite> {
        self.0
            .upgrade()
            .map(|broker| broker.retained.snapshot())
            .unwrap_or_default()
    }
}

impl Broker {
    /// Delivers a message another node forwarded: to this node's direct subscribers if it says so,
    /// and to one member of each shared group it picked this node for. No hook hears of it again
    /// and it goes nowhere else: the node it was published on did both.
    pub fn deliver_forwarded(&self, forward: &Forward) {
        self.router.route(
            &forward.message,
            RouteScope::Cluster {
                direct: forward.direct,
                groups: &forward.groups,
            },
        );
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
}
