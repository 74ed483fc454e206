//! Retained messages (MQTT 5.0 §3.3.1.3): the last message with the RETAIN flag on each topic,
//! stored by publishing, sent to new subscriptions, listed and deleted by the admin API, and dropped
//! once its expiry interval has run out.
//!
//! The store is bounded in messages (`limits.max_retained_messages`) and in bytes of message data
//! (`limits.max_retained_bytes`, see `Message::data_size`), broker-wide: one client could otherwise
//! fill memory with retained messages on topics of its own. The bounds are not kept per client,
//! because a retained message outlives its publisher and belongs to its topic; the ACL's
//! `retain=false` is the tool for who may retain where. `$SYS` topics, the broker's own, are not
//! bounded.

use std::sync::Arc;
use std::time::Instant;

use parking_lot::RwLock;

use crate::config::Limits;
use crate::message::Message;
use crate::topic::{self, TopicFilter, TopicTree};

/// Why a retained message was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetainedFull {
    /// `limits.max_retained_messages`.
    Messages,
    /// `limits.max_retained_bytes`.
    Bytes,
}

/// The retained messages by topic.
#[derive(Debug)]
pub struct RetainedStore {
    stored: RwLock<Stored>,
    max_messages: usize,
    max_bytes: usize,
}

/// The messages, and how many of them and how many bytes count against the bounds (all but
/// `$SYS`), changed together under one lock.
#[derive(Debug, Default)]
struct Stored {
    messages: TopicTree<Arc<Message>>,
    counted: usize,
    bytes: usize,
}

impl Stored {
    /// Adds (or with `add` false takes away) what `message` counts for.
    fn count(&mut self, message: &Message, add: bool) {
        if topic::is_sys(&message.topic) {
            return;
        }
        let size = message.data_size();
        if add {
            self.counted += 1;
            self.bytes += size;
        } else {
            self.counted -= 1;
            self.bytes -= size;
        }
    }
}

impl Default for RetainedStore {
    fn default() -> Self {
        Self::new(&Limits::default())
    }
}

impl RetainedStore {
    pub fn new(limits: &Limits) -> Self {
        Self {
            stored: RwLock::default(),
            max_messages: limits.max_retained_messages,
            max_bytes: limits.max_retained_bytes,
        }
    }

    /// Stores a retained message, or deletes the topic's retained message when the payload is empty
    /// [MQTT-3.3.1-6], [MQTT-3.3.1-7]. A message that would take the store past its bounds is not
    /// stored, and the topic keeps what it had; replacing a topic's message needs room only for
    /// the difference, and a deletion always goes through.
    pub fn store(&self, message: &Arc<Message>) -> Result<(), RetainedFull> {
        let mut stored = self.stored.write();
        if message.payload.is_empty() {
            if let Some(old) = stored.messages.remove(&message.topic) {
                stored.count(&old, false);
            }
            return Ok(());
        }
        if !topic::is_sys(&message.topic) {
            let old = stored
                .messages
                .get(&message.topic)
                .map(|old| old.data_size());
            if old.is_none() && stored.counted >= self.max_messages {
                return Err(RetainedFull::Messages);
            }
            if stored.bytes - old.unwrap_or(0) + message.data_size() > self.max_bytes {
                return Err(RetainedFull::Bytes);
            }
        }
        stored.count(message, true);
        if let Some(old) = stored.messages.insert(&message.topic, Arc::clone(message)) {
            stored.count(&old, false);
        }
        Ok(())
    }

    /// Deletes a topic's retained message; returns whether there was one.
    pub fn remove(&self, topic: &str) -> bool {
        let mut stored = self.stored.write();
        match stored.messages.remove(topic) {
            Some(old) => {
                stored.count(&old, false);
                true
            }
            None => false,
        }
    }

    /// The unexpired retained messages matching a filter.
    pub fn matching(&self, filter: &TopicFilter, now: Instant) -> Vec<Arc<Message>> {
        let mut found = Vec::new();
        self.stored
            .read()
            .messages
            .for_each_match(filter, |_topic, message| {
                if !message.is_expired(now) {
                    found.push(Arc::clone(message));
                }
            });
        found
    }

    pub fn count(&self) -> usize {
        self.stored.read().messages.len()
    }

    /// Bytes of message data stored (`$SYS` aside), as counted against `limits.max_retained_bytes`.
    pub fn bytes(&self) -> usize {
        self.stored.read().bytes
    }

    /// Drops retained messages whose expiry interval has run out.
    pub fn sweep_expired(&self, now: Instant) -> usize {
        let mut stored = self.stored.write();
        let before = stored.messages.len();
        let mut expired = Vec::new();
        stored.messages.retain(|_topic, message| {
            let keep = !message.is_expired(now);
            if !keep {
                expired.push(Arc::clone(message));
            }
            keep
        });
        for message in &expired {
            stored.count(message, false);
        }
        before - stored.messages.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::QoS;

    fn store(max_messages: usize, max_bytes: usize) -> RetainedStore {
        RetainedStore::new(&Limits {
            max_retained_messages: max_messages,
            max_retained_bytes: max_bytes,
            ..Limits::default()
        })
    }

    /// A message whose data (topic and payload) is `size` bytes.
    fn message(topic: &str, size: usize) -> Arc<Message> {
        let payload = vec![b'x'; size - topic.len()];
        Arc::new(Message::new(
            topic.to_owned(),
            payload,
            QoS::AtMostOnce,
            true,
        ))
    }

    #[test]
    fn the_store_is_bounded_in_messages_and_replacing_needs_no_new_slot() {
        let retained = store(2, usize::MAX);
        assert_eq!(retained.store(&message("a", 10)), Ok(()));
        assert_eq!(retained.store(&message("b", 10)), Ok(()));
        assert_eq!(
            retained.store(&message("c", 10)),
            Err(RetainedFull::Messages)
        );
        assert_eq!(retained.store(&message("a", 20)), Ok(()), "a replacement");
        assert_eq!(
            retained.store(&message("$SYS/x", 20)),
            Ok(()),
            "the broker's own"
        );
        assert_eq!(retained.count(), 3);
        assert!(retained.remove("b"));
        assert_eq!(
            retained.store(&message("c", 10)),
            Ok(()),
            "a slot came free"
        );
    }

    #[test]
    fn the_store_is_bounded_in_bytes_and_a_refusal_keeps_the_old_message() {
        let retained = store(100, 100);
        assert_eq!(retained.store(&message("a", 60)), Ok(()));
        assert_eq!(retained.store(&message("b", 41)), Err(RetainedFull::Bytes));
        assert_eq!(retained.store(&message("b", 40)), Ok(()));
        assert_eq!(retained.store(&message("a", 61)), Err(RetainedFull::Bytes));
        assert_eq!(retained.store(&message("a", 50)), Ok(()), "smaller fits");
        assert_eq!(retained.bytes(), 90);
        let empty = Arc::new(Message::new("a", Vec::new(), QoS::AtMostOnce, true));
        assert_eq!(
            retained.store(&empty),
            Ok(()),
            "a deletion always goes through"
        );
        assert_eq!(retained.bytes(), 40);
        let mut expiring = Message::new("e", vec![b'x'; 9], QoS::AtMostOnce, true);
        expiring.expires_at = Some(Instant::now());
        assert_eq!(retained.store(&Arc::new(expiring)), Ok(()));
        assert_eq!(retained.sweep_expired(Instant::now()), 1);
        assert_eq!((retained.count(), retained.bytes()), (1, 40));
    }
}
