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
use crate::router::Routed;
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

    /// Accepts a message: hooks, retained store, then every matching session. `from` is the client
    /// that published it, `None` for the broker's own messages and the inline client's.
    pub fn publish(&self, message: Message, from: Option<&ClientInfo>) -> Routed {
        let message = Arc::new(message);
        for hook in self.hooks.iter() {
            hook.on_publish(from, &message);
        }
        if message.retain && self.config.features.retain_available {
            self.retained.store(&message);
        }
        self.deliver_local(&message)
    }

    /// Hands an accepted message to every session on this node with a matching subscription, and
    /// says which subscriber backs up (for a publishing connection to wait for).
    pub fn deliver_local(&self, message: &Arc<Message>) -> Routed {
        self.router.route(message)
    }
}
