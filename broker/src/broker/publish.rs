//! Publishing, in two steps: [`Broker::publish`] accepts a message (the hooks hear of it, the
//! retained store keeps it) and hands it on to [`Broker::deliver_local`], which gives it to every
//! matching session on this node and, in a cluster, to the peers that need it. A message forwarded
//! from another node takes neither step: `Broker::deliver_forwarded` only delivers it here.
//!
//! Whether a client may publish is decided before this, by whoever publishes on its behalf, with
//! [`Broker::authorize_publish`]: a connection for its PUBLISH and its will at CONNECT, the broker
//! again when a will fires.

use std::sync::Arc;

use super::Broker;
use crate::backpressure::BacklogWait;
use crate::cluster::Forwarded;
use crate::codec::{QoS, ReasonCode};
use crate::hook::Access;
use crate::identity::ClientInfo;
use crate::message::Message;
use crate::receipt::Receipt;
use crate::router::{RetainedFull, RouteScope, Routed};
use crate::stats::{DropReason, LimitKind};
use crate::topic;

/// What became of a published message.
#[derive(Default)]
pub struct Published {
    pub routed: Routed,
    /// Under `cluster.acknowledge: cluster`, for a QoS 1 or 2 message other nodes need: done once
    /// they hold it, which the publisher's acknowledgement waits for.
    pub receipt: Option<Arc<Receipt>>,
    /// In a cluster, the queue towards a peer backed up with this message: the publisher waits
    /// for it as for a backlogged subscriber (`routed.backlogged` comes first).
    pub peer_backlog: Option<BacklogWait>,
}

impl std::fmt::Debug for Published {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Published")
            .field("routed", &self.routed)
            .field("receipt", &self.receipt)
            .field("peer_backlog", &self.peer_backlog.is_some())
            .finish()
    }
}

impl Broker {
    /// Whether `client` may publish on `topic`: `$SYS/...` is the broker's own, and the hooks (the
    /// ACL among them) decide the rest. Every message published on a client's behalf passes here,
    /// its PUBLISH and its will alike, so a will cannot reach where the client's PUBLISH may not.
    pub fn authorize_publish(
        &self,
        client: &ClientInfo,
        topic_name: &str,
        qos: QoS,
        retain: bool,
    ) -> Result<(), ReasonCode> {
        if topic::is_sys(topic_name) {
            return Err(ReasonCode::NOT_AUTHORIZED);
        }
        match self
            .hooks
            .authorize_publish(client, topic_name, qos, retain)
        {
            Access::Deny => Err(ReasonCode::NOT_AUTHORIZED),
            Access::Allow | Access::AllowUpTo(_) | Access::Continue => Ok(()),
        }
    }

    /// Accepts a message: retained store, hooks, then every matching session. `from` is the client
    /// that published it, `None` for the broker's own messages and the inline client's. A
    /// retained message the store has no room for is delivered all the same, not retained (and
    /// counted): what a publisher that cannot be told (MQTT 3, a will, the admin API) gets.
    pub fn publish(&self, message: Message, from: Option<&ClientInfo>) -> Published {
        let message = Arc::new(identified(message));
        self.retain(&message);
        self.accept(&message, from)
    }

    /// [`Self::publish`] for a publisher that can be told: a retained message the store has no
    /// room for is refused whole, with the reason code for its acknowledgement (MQTT 5: 0x97
    /// *Quota exceeded*), and goes nowhere.
    pub fn publish_or_refuse(
        &self,
        message: Message,
        from: Option<&ClientInfo>,
    ) -> Result<Published, ReasonCode> {
        let message = Arc::new(identified(message));
        if !self.retain(&message) {
            return Err(ReasonCode::QUOTA_EXCEEDED);
        }
        Ok(self.accept(&message, from))
    }

    /// Stores a retained message; false if the store refused it (counted).
    fn retain(&self, message: &Arc<Message>) -> bool {
        if !message.retain || !self.config.features.retain_available {
            return true;
        }
        let full = match self.retained.store(message, &self.origin) {
            Ok(write) => {
                self.store_retained(&write);
                if let Some(cluster) = &self.cluster {
                    cluster.retained_written(write);
                }
                return true;
            }
            Err(full) => full,
        };
        self.stats.limit_hit(match full {
            RetainedFull::Messages => LimitKind::RetainedMessages,
            RetainedFull::Bytes => LimitKind::RetainedBytes,
        });
        self.stats.dropped(DropReason::RetainedStoreFull);
        false
    }

    /// The hooks hear of an accepted message, then it goes to every matching session.
    fn accept(&self, message: &Arc<Message>, from: Option<&ClientInfo>) -> Published {
        for hook in self.hooks.iter() {
            hook.on_publish(from, message);
        }
        self.deliver_local(message)
    }

    /// Hands an accepted message to every session on this node with a matching subscription, and
    /// says which subscriber backs up (for a publishing connection to wait for). In a cluster the
    /// message is also queued for each peer with a matching route, and each matching shared group
    /// gets it on one node only.
    pub fn deliver_local(&self, message: &Arc<Message>) -> Published {
        let Some(cluster) = &self.cluster else {
            return Published {
                routed: self.router.route(message, RouteScope::Everything),
                ..Published::default()
            };
        };
        let plan = cluster.plan(&message.topic);
        let Forwarded { receipt, wait } =
            cluster.forward(message, &plan, self.backpressure.max_pause());
        let mut routed = self.router.route(
            message,
            RouteScope::Cluster {
                direct: true,
                groups: &plan.local_groups,
            },
        );
        routed.remote = plan.peers().count_ones() as usize;
        Published {
            routed,
            receipt,
            peer_backlog: wait,
        }
    }

    /// Deletes a topic's retained message (the admin API), on every node of a cluster; returns
    /// whether there was one.
    pub fn delete_retained(&self, topic: &str) -> bool {
        let Some(write) = self.retained.remove(topic, &self.origin) else {
            return false;
        };
        self.store_retained(&write);
        if let Some(cluster) = &self.cluster {
            cluster.retained_written(write);
        }
        true
    }
}

/// The message with its id (see `Message::id`), given as the broker accepts it.
fn identified(mut message: Message) -> Message {
    message.id = fastrand::u64(1..);
    message
}
