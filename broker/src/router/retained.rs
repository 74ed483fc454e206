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
//!
//! Every write carries a [`RetainStamp`], so that a cluster's nodes, which each keep every retained
//! message, agree on the last write to a topic whatever order writes reach them in: a write applies
//! only if its stamp is later than the one held, and a deletion is kept as a stamped tombstone for
//! [`TOMBSTONE_TTL`] so that an older write arriving late does not bring the message back. The bounds
//! are checked where a write is made; a write another node made within them is applied as it is, so
//! that every node holds the same messages.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytestring::ByteString;
use parking_lot::RwLock;

use crate::config::Limits;
use crate::message::{Message, RetainStamp, RetainedWrite};
use crate::topic::{self, TopicFilter, TopicTree};

/// How long a deletion is remembered: longer than a write can take to reach every node.
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(600);

/// Why a retained message was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetainedFull {
    /// `limits.max_retained_messages`.
    Messages,
    /// `limits.max_retained_bytes`.
    Bytes,
}

/// One topic's last write.
#[derive(Debug, Clone)]
struct Entry {
    stamp: RetainStamp,
    /// `None` once deleted (a tombstone).
    message: Option<Arc<Message>>,
    written: Instant,
}

/// The entries, and what counts against the bounds (messages other than `$SYS`), changed together
/// under one lock.
#[derive(Debug, Default)]
struct Stored {
    entries: TopicTree<Entry>,
    tombstones: usize,
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

    /// Puts `entry` in place of what the topic held, keeping the counts.
    fn replace(&mut self, topic: &str, entry: Entry) {
        if let Some(message) = &entry.message {
            self.count(message, true);
        } else {
            self.tombstones += 1;
        }
        if let Some(old) = self.entries.insert(topic, entry) {
            match &old.message {
                Some(message) => self.count(message, false),
                None => self.tombstones -= 1,
            }
        }
    }
}

/// The retained messages by topic.
#[derive(Debug)]
pub struct RetainedStore {
    stored: RwLock<Stored>,
    max_messages: usize,
    max_bytes: usize,
    /// The hybrid clock: the last stamp's milliseconds this node wrote or saw.
    clock: AtomicU64,
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
            clock: AtomicU64::new(0),
        }
    }

    /// Stores a retained message written on this node, or deletes the topic's retained message
    /// when the payload is empty [MQTT-3.3.1-6], [MQTT-3.3.1-7]; returns the write, for the other
    /// nodes of a cluster. A message that would take the store past its bounds is not stored, and
    /// the topic keeps what it had; replacing a topic's message needs room only for the
    /// difference, and a deletion always goes through.
    pub fn store(
        &self,
        message: &Arc<Message>,
        origin: &Arc<str>,
    ) -> Result<RetainedWrite, RetainedFull> {
        let mut stored = self.stored.write();
        let deletion = message.payload.is_empty();
        if !deletion && !topic::is_sys(&message.topic) {
            let old = stored
                .entries
                .get(&message.topic)
                .and_then(|e| e.message.as_ref())
                .map(|old| old.data_size());
            if old.is_none() && stored.counted >= self.max_messages {
                return Err(RetainedFull::Messages);
            }
            if stored.bytes - old.unwrap_or(0) + message.data_size() > self.max_bytes {
                return Err(RetainedFull::Bytes);
            }
        }
        let write = RetainedWrite {
            topic: message.topic.clone(),
            stamp: self.next_stamp(origin),
            message: (!deletion).then(|| Arc::clone(message)),
        };
        stored.replace(
            &write.topic,
            Entry {
                stamp: write.stamp.clone(),
                message: write.message.clone(),
                written: Instant::now(),
            },
        );
        Ok(write)
    }

    /// Deletes a topic's retained message on this node's behalf (the admin API); returns the write
    /// when there was one.
    pub fn remove(&self, topic: &str, origin: &Arc<str>) -> Option<RetainedWrite> {
        let mut stored = self.stored.write();
        let held = stored
            .entries
            .get(topic)
            .is_some_and(|e| e.message.is_some());
        if !held {
            return None;
        }
        let write = RetainedWrite {
            topic: ByteString::from(topic),
            stamp: self.next_stamp(origin),
            message: None,
        };
        stored.replace(
            topic,
            Entry {
                stamp: write.stamp.clone(),
                message: None,
                written: Instant::now(),
            },
        );
        Some(write)
    }

    /// Applies a write another node made, if it is later than what the topic holds; returns
    /// whether it was.
    pub fn apply(&self, write: RetainedWrite) -> bool {
        self.clock.fetch_max(write.stamp.millis, Ordering::AcqRel);
        let mut stored = self.stored.write();
        if stored
            .entries
            .get(&write.topic)
            .is_some_and(|held| held.stamp >= write.stamp)
        {
            return false;
        }
        stored.replace(
            &write.topic,
            Entry {
                stamp: write.stamp,
                message: write.message,
                written: Instant::now(),
            },
        );
        true
    }

    /// Every write held, deletions included, for a node that joins.
    pub fn snapshot(&self) -> Vec<RetainedWrite> {
        let mut writes = Vec::new();
        self.stored.read().entries.for_each(|topic, entry| {
            writes.push(RetainedWrite {
                topic: ByteString::from(topic),
                stamp: entry.stamp.clone(),
                message: entry.message.clone(),
            });
        });
        writes
    }

    /// The unexpired retained messages matching a filter.
    pub fn matching(&self, filter: &TopicFilter, now: Instant) -> Vec<Arc<Message>> {
        let mut found = Vec::new();
        self.stored
            .read()
            .entries
            .for_each_match(filter, |_topic, entry| {
                if let Some(message) = &entry.message
                    && !message.is_expired(now)
                {
                    found.push(Arc::clone(message));
                }
            });
        found
    }

    /// Retained messages held (deletions not counted; `$SYS` included).
    pub fn count(&self) -> usize {
        let stored = self.stored.read();
        stored.entries.len() - stored.tombstones
    }

    /// Bytes of message data stored (`$SYS` aside), as counted against `limits.max_retained_bytes`.
    pub fn bytes(&self) -> usize {
        self.stored.read().bytes
    }

    /// Drops retained messages whose expiry interval has run out, and deletions older than
    /// [`TOMBSTONE_TTL`]; returns how many messages expired.
    pub fn sweep_expired(&self, now: Instant) -> usize {
        let mut stored = self.stored.write();
        let mut expired = Vec::new();
        let mut forgotten = 0;
        stored.entries.retain(|_topic, entry| match &entry.message {
            Some(message) if message.is_expired(now) => {
                expired.push(Arc::clone(message));
                false
            }
            Some(_) => true,
            None if now.saturating_duration_since(entry.written) >= TOMBSTONE_TTL => {
                forgotten += 1;
                false
            }
            None => true,
        });
        for message in &expired {
            stored.count(message, false);
        }
        stored.tombstones -= forgotten;
        expired.len()
    }

    /// A stamp later than any this node has written or seen.
    fn next_stamp(&self, origin: &Arc<str>) -> RetainStamp {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let previous = self
            .clock
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
                Some(wall.max(last.saturating_add(1)))
            })
            .unwrap_or(wall);
        RetainStamp {
            millis: wall.max(previous.saturating_add(1)),
            origin: Arc::clone(origin),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::QoS;

    fn message(topic: &str, payload: &'static str) -> Arc<Message> {
        Arc::new(Message::new(
            ByteString::from(topic),
            payload,
            QoS::AtMostOnce,
            true,
        ))
    }

    fn payloads(store: &RetainedStore) -> Vec<String> {
        let all = TopicFilter::parse(ByteString::from_static("#")).unwrap();
        let mut found: Vec<String> = store
            .matching(&all, Instant::now())
            .iter()
            .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
            .collect();
        found.sort();
        found
    }

    /// Two nodes that receive the same writes in different orders end up holding the same
    /// message: the one with the later stamp.
    #[test]
    fn concurrent_writes_converge_on_the_later_stamp_in_any_order() {
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let on_a = RetainedStore::default();
        let on_b = RetainedStore::default();
        let first = on_a.store(&message("t", "from a"), &a).unwrap();
        let second = on_b.store(&message("t", "from b"), &b).unwrap();
        let winner = if first.stamp > second.stamp {
            "from a"
        } else {
            "from b"
        };
        on_a.apply(second);
        on_b.apply(first);
        assert_eq!(payloads(&on_a), [winner]);
        assert_eq!(payloads(&on_b), [winner]);
    }

    /// A write made after another was seen wins over it, whatever the wall clock says.
    #[test]
    fn a_write_after_one_seen_wins_even_against_a_clock_ahead() {
        let here: Arc<str> = Arc::from("here");
        let store = RetainedStore::default();
        let far_future = RetainedWrite {
            topic: ByteString::from_static("t"),
            stamp: RetainStamp {
                millis: u64::MAX / 2,
                origin: Arc::from("ahead"),
            },
            message: Some(message("t", "old")),
        };
        assert!(store.apply(far_future));
        store.store(&message("t", "new"), &here).unwrap();
        assert_eq!(payloads(&store), ["new"]);
    }

    /// A deletion is remembered, so a write older than it arriving late does not bring the message
    /// back; deletions are not counted as messages.
    #[test]
    fn a_deletion_outlives_an_older_write_arriving_late() {
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let store = RetainedStore::default();
        let other = RetainedStore::default();
        let old = other.store(&message("t", "old"), &b).unwrap();
        store.apply(old.clone());
        let deletion = store.store(&message("t", ""), &a).unwrap();
        assert!(deletion.message.is_none());
        assert!(!store.apply(old), "the older write is ignored");
        assert_eq!((payloads(&store).len(), store.count()), (0, 0));
        assert!(store.remove("t", &a).is_none(), "nothing left to delete");
    }

    /// Stores on node `n`, saying only whether it was refused and why.
    fn put(retained: &RetainedStore, message: &Arc<Message>) -> Result<(), RetainedFull> {
        retained.store(message, &Arc::from("n")).map(|_| ())
    }

    fn bounded(max_messages: usize, max_bytes: usize) -> RetainedStore {
        RetainedStore::new(&Limits {
            max_retained_messages: max_messages,
            max_retained_bytes: max_bytes,
            ..Limits::default()
        })
    }

    /// A message whose data (topic and payload) is `size` bytes.
    fn sized(topic: &str, size: usize) -> Arc<Message> {
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
        let retained = bounded(2, usize::MAX);
        assert_eq!(put(&retained, &sized("a", 10)), Ok(()));
        assert_eq!(put(&retained, &sized("b", 10)), Ok(()));
        assert_eq!(put(&retained, &sized("c", 10)), Err(RetainedFull::Messages));
        assert_eq!(put(&retained, &sized("a", 20)), Ok(()), "a replacement");
        assert_eq!(
            put(&retained, &sized("$SYS/x", 20)),
            Ok(()),
            "the broker's own"
        );
        assert_eq!(retained.count(), 3);
        assert!(retained.remove("b", &Arc::from("n")).is_some());
        assert_eq!(put(&retained, &sized("c", 10)), Ok(()), "a slot came free");
    }

    #[test]
    fn the_store_is_bounded_in_bytes_and_a_refusal_keeps_the_old_message() {
        let retained = bounded(100, 100);
        assert_eq!(put(&retained, &sized("a", 60)), Ok(()));
        assert_eq!(put(&retained, &sized("b", 41)), Err(RetainedFull::Bytes));
        assert_eq!(put(&retained, &sized("b", 40)), Ok(()));
        assert_eq!(put(&retained, &sized("a", 61)), Err(RetainedFull::Bytes));
        assert_eq!(put(&retained, &sized("a", 50)), Ok(()), "smaller fits");
        assert_eq!(retained.bytes(), 90);
        let empty = Arc::new(Message::new("a", Vec::new(), QoS::AtMostOnce, true));
        assert_eq!(
            put(&retained, &empty),
            Ok(()),
            "a deletion always goes through"
        );
        assert_eq!(retained.bytes(), 40);
        let mut expiring = Message::new("e", vec![b'x'; 9], QoS::AtMostOnce, true);
        expiring.expires_at = Some(Instant::now());
        assert_eq!(put(&retained, &Arc::new(expiring)), Ok(()));
        assert_eq!(retained.sweep_expired(Instant::now()), 1);
        assert_eq!((retained.count(), retained.bytes()), (1, 40));
    }
}
