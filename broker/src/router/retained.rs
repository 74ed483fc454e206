//! Retained messages (MQTT 5.0 §3.3.1.3): the last message with the RETAIN flag on each topic,
//! stored by publishing, sent to new subscriptions, listed and deleted by the admin API, and dropped
//! once its expiry interval has run out.
//!
//! Every write carries a [`RetainStamp`], so that a cluster's nodes, which each keep every retained
//! message, agree on the last write to a topic whatever order writes reach them in: a write applies
//! only if its stamp is later than the one held, and a deletion is kept as a stamped tombstone for
//! [`TOMBSTONE_TTL`] so that an older write arriving late does not bring the message back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytestring::ByteString;
use parking_lot::RwLock;

use crate::message::{Message, RetainStamp, RetainedWrite};
use crate::topic::{TopicFilter, TopicTree};

/// How long a deletion is remembered: longer than a write can take to reach every node.
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(600);

/// One topic's last write.
#[derive(Debug, Clone)]
struct Entry {
    stamp: RetainStamp,
    /// `None` once deleted (a tombstone), with the time of the deletion here.
    message: Option<Arc<Message>>,
    written: Instant,
}

#[derive(Debug, Default)]
struct Entries {
    tree: TopicTree<Entry>,
    tombstones: usize,
}

/// The retained messages by topic.
#[derive(Debug, Default)]
pub struct RetainedStore {
    entries: RwLock<Entries>,
    /// The hybrid clock: the last stamp's milliseconds this node wrote or saw.
    clock: AtomicU64,
}

impl RetainedStore {
    /// Stores a retained message written on this node, or deletes the topic's retained message
    /// when the payload is empty [MQTT-3.3.1-6], [MQTT-3.3.1-7]. Returns the write, for the other
    /// nodes of a cluster.
    pub fn store(&self, message: &Arc<Message>, origin: &Arc<str>) -> RetainedWrite {
        let write = RetainedWrite {
            topic: message.topic.clone(),
            stamp: self.next_stamp(origin),
            message: (!message.payload.is_empty()).then(|| Arc::clone(message)),
        };
        self.apply(write.clone());
        write
    }

    /// Deletes a topic's retained message on this node's behalf (the admin API); returns the write
    /// when there was one.
    pub fn remove(&self, topic: &str, origin: &Arc<str>) -> Option<RetainedWrite> {
        let held = self
            .entries
            .read()
            .tree
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
        self.apply(write.clone());
        Some(write)
    }

    /// Applies a write (this node's or another's) if it is later than what the topic holds;
    /// returns whether it was.
    pub fn apply(&self, write: RetainedWrite) -> bool {
        self.clock.fetch_max(write.stamp.millis, Ordering::AcqRel);
        let mut entries = self.entries.write();
        let Entries { tree, tombstones } = &mut *entries;
        let held = tree
            .get(&write.topic)
            .map(|e| (e.stamp.clone(), e.message.is_none()));
        if let Some((stamp, _)) = &held
            && *stamp >= write.stamp
        {
            return false;
        }
        let was_tombstone = held.is_some_and(|(_, tombstone)| tombstone);
        let is_tombstone = write.message.is_none();
        *tombstones = *tombstones + usize::from(is_tombstone) - usize::from(was_tombstone);
        tree.insert(
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
        self.entries.read().tree.for_each(|topic, entry| {
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
        self.entries
            .read()
            .tree
            .for_each_match(filter, |_topic, entry| {
                if let Some(message) = &entry.message
                    && !message.is_expired(now)
                {
                    found.push(Arc::clone(message));
                }
            });
        found
    }

    /// Retained messages held (deletions not counted).
    pub fn count(&self) -> usize {
        let entries = self.entries.read();
        entries.tree.len() - entries.tombstones
    }

    /// Drops retained messages whose expiry interval has run out, and deletions older than
    /// [`TOMBSTONE_TTL`]; returns how many messages expired.
    pub fn sweep_expired(&self, now: Instant) -> usize {
        let mut entries = self.entries.write();
        let Entries { tree, tombstones } = &mut *entries;
        let mut expired = 0;
        let mut forgotten = 0;
        tree.retain(|_topic, entry| match &entry.message {
            Some(message) if message.is_expired(now) => {
                expired += 1;
                false
            }
            Some(_) => true,
            None if now.saturating_duration_since(entry.written) >= TOMBSTONE_TTL => {
                forgotten += 1;
                false
            }
            None => true,
        });
        *tombstones -= forgotten;
        expired
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
        let first = on_a.store(&message("t", "from a"), &a);
        let second = on_b.store(&message("t", "from b"), &b);
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
        store.store(&message("t", "new"), &here);
        assert_eq!(payloads(&store), ["new"]);
    }

    /// A deletion is remembered, so a write older than it arriving late does not bring the message
    /// back; deletions are not counted as messages.
    #[test]
    fn a_deletion_outlives_an_older_write_arriving_late() {
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let store = RetainedStore::default();
        let other = RetainedStore::default();
        let old = other.store(&message("t", "old"), &b);
        store.apply(old.clone());
        let deletion = store.store(&message("t", ""), &a);
        assert!(deletion.message.is_none());
        assert!(!store.apply(old), "the older write is ignored");
        assert_eq!((payloads(&store).len(), store.count()), (0, 0));
        assert!(store.remove("t", &a).is_none(), "nothing left to delete");
    }
}
