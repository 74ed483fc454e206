//! Publishing, in two steps that a cluster can take apart: [`Broker::publish`] accepts a message
//! (the hooks hear of it, the retained store keeps it) and hands it on for delivery;
//! [`Broker::deliver_local`] gives it to every matching session on this node, which is all a
//! message forwarded from another node needs.
//!
//! Whether a client may publish (authorization, `$SYS`, payload format) is decided before this, by
//! whoever publishes on its behalf.

use std::sync::Arc;

use super::Broker;
use crate::identity::ClientInfo;
use crate::message::Message;
use crate::router::Routed;

impl Broker {
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
