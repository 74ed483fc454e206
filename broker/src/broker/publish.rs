//! Publishing, in two steps that a cluster can take apart: [`Broker::publish`] accepts a message
//! (the hooks hear of it, the retained store keeps it) and hands it on for delivery;
//! [`Broker::deliver_local`] gives it to every matching session on this node, which is all a
//! message forwarded from another node needs.
//!
//! Whether a client may publish is decided before this, by whoever publishes on its behalf, with
//! [`Broker::authorize_publish`]: a connection for its PUBLISH and its will at CONNECT, the broker
//! again when a will fires.

use std::sync::Arc;

use super::Broker;
use crate::codec::{QoS, ReasonCode};
use crate::hook::Access;
use crate::identity::ClientInfo;
use crate::message::Message;
use crate::router::{RetainedFull, Routed};
use crate::stats::{DropReason, LimitKind};
use crate::topic;

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
    pub fn publish(&self, message: Message, from: Option<&ClientInfo>) -> Routed {
        let message = Arc::new(message);
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
    ) -> Result<Routed, ReasonCode> {
        let message = Arc::new(message);
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
        let Err(full) = self.retained.store(message) else {
            return true;
        };
        self.stats.limit_hit(match full {
            RetainedFull::Messages => LimitKind::RetainedMessages,
            RetainedFull::Bytes => LimitKind::RetainedBytes,
        });
        self.stats.dropped(DropReason::RetainedStoreFull);
        false
    }

    /// The hooks hear of an accepted message, then it goes to every matching session.
    fn accept(&self, message: &Arc<Message>, from: Option<&ClientInfo>) -> Routed {
        for hook in self.hooks.iter() {
            hook.on_publish(from, message);
        }
        self.deliver_local(message)
    }

    /// Hands an accepted message to every session on this node with a matching subscription, and
    /// says which subscriber backs up (for a publishing connection to wait for).
    pub fn deliver_local(&self, message: &Arc<Message>) -> Routed {
        self.router.route(message)
    }
}
