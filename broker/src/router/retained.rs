//! Retained messages (MQTT 5.0 §3.3.1.3): the last message with the RETAIN flag on each topic,
//! stored by publishing, sent to new subscriptions, listed and deleted by the admin API, and dropped
//! once its expiry interval has run out.

use std::sync::Arc;
use std::time::Instant;

use parking_lot::RwLock;

use crate::message::Message;
use crate::topic::{TopicFilter, TopicTree};

/// The retained messages by topic.
#[derive(Debug, Default)]
pub struct RetainedStore {
    messages: RwLock<TopicTree<Arc<Message>>>,
}

impl RetainedStore {
    /// Stores a retained message, or deletes the topic's retained message when the payload is empty
    /// [MQTT-3.3.1-6], [MQTT-3.3.1-7].
    pub fn store(&self, message: &Arc<Message>) {
        let mut retained = self.messages.write();
        if message.payload.is_empty() {
            retained.remove(&message.topic);
        } else {
            retained.insert(&message.topic, Arc::clone(message));
        }
    }

    /// Deletes a topic's retained message; returns whether there was one.
    pub fn remove(&self, topic: &str) -> bool {
        self.messages.write().remove(topic).is_some()
    }

    /// The unexpired retained messages matching a filter.
    pub fn matching(&self, filter: &TopicFilter, now: Instant) -> Vec<Arc<Message>> {
        let mut found = Vec::new();
        self.messages
            .read()
            .for_each_match(filter, |_topic, message| {
                if !message.is_expired(now) {
                    found.push(Arc::clone(message));
                }
            });
        found
    }

    pub fn count(&self) -> usize {
        self.messages.read().len()
    }

    /// Drops retained messages whose expiry interval has run out.
    pub fn sweep_expired(&self, now: Instant) -> usize {
        let mut retained = self.messages.write();
        let before = retained.len();
        retained.retain(|_topic, message| !message.is_expired(now));
        before - retained.len()
    }
}
