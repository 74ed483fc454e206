//! Publishing, in two steps: [`Broker::publish`] accepts a message (the hooks hear of it, the
//! retained store keeps it) and hands it on to [`Broker::deliver_local`], which gives it to every
//! matching session on this node and, in a cluster, to the peers that need it. A message forwarded
//! from another node takes neither step: `Broker::deliver_forwarded` only delivers it here.
//!
//! Whether a client may publish (authorization, `$SYS`, payload format) is decided before this, by
//! whoever publishes on its behalf.

use std::sync::Arc;

use super::Broker;
use crate::identity::ClientInfo;
use crate::message::Message;
use crate::router::{RouteScope, Routed};

impl Broker {
    /// Accepts a message: hooks, retained store, then every matching session. `from` is the client
    /// that published it, `None` for the broker's own messages and the inline client's.
    pub fn publish(&self, mut message: Message, from: Option<&ClientInfo>) -> Routed {
        message.id = fastrand::u64(1..);
        let message = Arc::new(message);
        for hook in self.hooks.iter() {
            hook.on_publish(from, &message);
        }
        if message.retain && self.config.features.retain_available {
            let write = self.retained.store(&message, &self.origin);
            if let Some(cluster) = &self.cluster {
                cluster.retained_written(write);
            }
        }
        self.deliver_local(&message)
    }

    /// Hands an accepted message to every session on this node with a matching subscription, and
    /// says which subscriber backs up (for a publishing connection to wait for). In a cluster the
    /// message is also queued for each peer with a matching route, and each matching shared group
    /// gets it on one node only.
    pub fn deliver_local(&self, message: &Arc<Message>) -> Routed {
        let Some(cluster) = &self.cluster else {
            return self.router.route(message, RouteScope::Everything);
        };
        let plan = cluster.plan(&message.topic);
        cluster.forward(message, &plan);
        let mut routed = self.router.route(
            message,
            RouteScope::Cluster {
                direct: true,
                groups: &plan.local_groups,
            },
        );
        routed.remote = plan.peers().count_ones() as usize;
        routed
    }

    /// Deletes a topic's retained message (the admin API), on every node of a cluster; returns
    /// whether there was one.
    pub fn delete_retained(&self, topic: &str) -> bool {
        let Some(write) = self.retained.remove(topic, &self.origin) else {
            return false;
        };
        if let Some(cluster) = &self.cluster {
            cluster.retained_written(write);
        }
        true
    }
}
