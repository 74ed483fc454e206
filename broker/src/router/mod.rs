//! The router: which sessions want a message (subscription trie and shared groups) and which messages
//! are retained. It owns both indexes; sessions and connections reach them through these methods, each
//! a short synchronous critical section.
//!
//! Lock order: the subscription index may be held while a session's lock is taken (to enqueue), never
//! the other way round. Routing holds it for reading until a message is handed out to every
//! subscriber, which borrows the subscribers instead of counting references to them.

mod subscribers;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use parking_lot::RwLock;

pub use subscribers::{FilterSubscribers, SharedGroup, Subscriber};

use crate::backpressure::BacklogMarks;
use crate::codec::{QoS, SubscriptionOptions};
use crate::message::{Delivery, Message};
use crate::session::{Session, SessionId};
use crate::stats::Stats;
use crate::topic::{FilterTrie, SubscriptionFilter, TopicFilter, TopicTree};

#[derive(Debug, Default)]
pub struct Router {
    subscriptions: RwLock<FilterTrie<FilterSubscribers>>,
    retained: RwLock<TopicTree<Arc<Message>>>,
    subscription_count: AtomicUsize,
    /// When set, routing reports a subscriber whose queue backs up (see `crate::backpressure`).
    backlog: Option<BacklogMarks>,
    /// Where deliveries a full queue refuses are counted.
    stats: Arc<Stats>,
}

/// Where a message went.
#[derive(Debug, Default)]
pub struct Routed {
    /// How many sessions it was handed to.
    pub sessions: usize,
    /// A connected subscriber, other than the publisher, whose queue reached the backlog's
    /// high-water mark with this message: the publisher should wait for it.
    pub backlogged: Option<Arc<Session>>,
}

/// One session chosen for a message, before overlapping subscriptions are merged; borrowed from
/// the subscription trie, which stays locked for reading while the message is handed out.
struct Target<'a> {
    session: &'a Arc<Session>,
    qos: QoS,
    retain_as_published: bool,
    identifier: Option<u32>,
    /// Whether the publisher waits if this session backs up. For a shared group's member only when
    /// every online member is backlogged: otherwise the group passes over a backlogged member.
    backpressure: bool,
}

impl Router {
    /// A router that reports backlogged subscribers at `backlog`'s marks, if given, and counts
    /// dropped deliveries in `stats`.
    pub fn new(backlog: Option<BacklogMarks>, stats: Arc<Stats>) -> Self {
        Self {
            backlog,
            stats,
            ..Self::default()
        }
    }

    /// Adds or replaces a session's subscription. Returns true if it replaced an existing one
    /// [MQTT-3.8.4-3].
    pub fn subscribe(
        &self,
        session: &Arc<Session>,
        filter: &SubscriptionFilter,
        options: SubscriptionOptions,
        identifier: Option<u32>,
    ) -> bool {
        let subscriber = Subscriber {
            session: Arc::clone(session),
            options,
            identifier,
        };
        let existed = self
            .subscriptions
            .write()
            .entry_or_default(&filter.filter)
            .insert(filter.share.as_ref(), subscriber);
        if !existed {
            self.subscription_count.fetch_add(1, Ordering::Relaxed);
        }
        existed
    }

    /// Removes a session's subscription; returns true if there was one.
    pub fn unsubscribe(&self, session: SessionId, filter: &SubscriptionFilter) -> bool {
        let removed = {
            let mut trie = self.subscriptions.write();
            let removed = trie
                .get_mut(&filter.filter)
                .is_some_and(|subscribers| subscribers.remove(filter.share.as_ref(), session));
            trie.remove_if(&filter.filter, FilterSubscribers::is_empty);
            removed
        };
        if removed {
            self.subscription_count.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    pub fn subscription_count(&self) -> usize {
        self.subscription_count.load(Ordering::Relaxed)
    }

    /// Hands a message to every session with a matching subscription. A session with several
    /// matching subscriptions gets one copy at the highest granted QoS carrying every subscription
    /// identifier [MQTT-3.3.4-2], [MQTT-3.3.4-3].
    pub fn route(&self, message: &Arc<Message>) -> Routed {
        // Held until every copy is handed out, so the targets are borrowed rather than cloned:
        // a reference count per subscriber, touched from every core, costs more than a
        // subscription change waiting for one message's fan-out.
        let trie = self.subscriptions.read();
        let mut targets: Vec<Target<'_>> = Vec::new();
        // A session can be among the targets twice only if more than one list of them matched.
        let mut lists = 0;
        trie.for_each_match(&message.topic, |subscribers| {
            let before = targets.len();
            for subscriber in subscribers.direct.values() {
                if subscriber.options.no_local && message.publisher == Some(subscriber.session.id) {
                    continue; // [MQTT-3.8.3-3]
                }
                targets.push(Target::new(subscriber, message.qos, true));
            }
            lists += usize::from(targets.len() > before);
            for group in &subscribers.shared {
                if let Some(member) = group.pick() {
                    // Picked though backlogged: so is every online member.
                    let all_backlogged = member.session.is_backlogged();
                    targets.push(Target::new(member, message.qos, all_backlogged));
                    lists += 1;
                }
            }
        });
        if lists > 1 {
            targets.sort_unstable_by_key(|t| t.session.id);
        }
        let mut routed = Routed::default();
        let mut iter = targets.into_iter().peekable();
        while let Some(first) = iter.next() {
            let mut delivery = Delivery {
                message: Arc::clone(message),
                qos: first.qos,
                retain: first.retain_as_published && message.retain,
                subscription_ids: first.identifier.into_iter().collect(),
            };
            let mut backpressure = first.backpressure;
            while let Some(next) = iter.next_if(|t| t.session.id == first.session.id) {
                delivery.qos = delivery.qos.max(next.qos);
                delivery.retain |= next.retain_as_published && message.retain;
                delivery.subscription_ids.extend(next.identifier);
                backpressure |= next.backpressure;
            }
            let backlogged = first.session.deliver(delivery, self.backlog, &self.stats);
            if backlogged
                && backpressure
                && routed.backlogged.is_none()
                && message.publisher != Some(first.session.id)
            {
                routed.backlogged = Some(Arc::clone(first.session));
            }
            routed.sessions += 1;
        }
        routed
    }

    /// Stores a retained message, or deletes the topic's retained message when the payload is empty
    /// [MQTT-3.3.1-6], [MQTT-3.3.1-7].
    pub fn retain(&self, message: &Arc<Message>) {
        let mut retained = self.retained.write();
        if message.payload.is_empty() {
            retained.remove(&message.topic);
        } else {
            retained.insert(&message.topic, Arc::clone(message));
        }
    }

    /// Deletes a topic's retained message; returns whether there was one.
    pub fn remove_retained(&self, topic: &str) -> bool {
        self.retained.write().remove(topic).is_some()
    }

    /// The unexpired retained messages matching a filter.
    pub fn retained_matching(&self, filter: &TopicFilter, now: Instant) -> Vec<Arc<Message>> {
        let mut found = Vec::new();
        self.retained
            .read()
            .for_each_match(filter, |_topic, message| {
                if !message.is_expired(now) {
                    found.push(Arc::clone(message));
                }
            });
        found
    }

    pub fn retained_count(&self) -> usize {
        self.retained.read().len()
    }

    /// Drops retained messages whose expiry interval has run out.
    pub fn sweep_expired_retained(&self, now: Instant) -> usize {
        let mut retained = self.retained.write();
        let before = retained.len();
        retained.retain(|_topic, message| !message.is_expired(now));
        before - retained.len()
    }
}

impl<'a> Target<'a> {
    fn new(subscriber: &'a Subscriber, message_qos: QoS, backpressure: bool) -> Self {
        Self {
            session: &subscriber.session,
            qos: message_qos.min(subscriber.options.qos),
            retain_as_published: subscriber.options.retain_as_published,
            identifier: subscriber.identifier,
            backpressure,
        }
    }
}

#[cfg(test)]
mod tests {
    use bytestring::ByteString;

    use super::*;
    use crate::config::QueueOverflow;
    use crate::session::ClientId;

    fn session(id: u64) -> Arc<Session> {
        Arc::new(Session::new(
            SessionId(id),
            ClientId::new(format!("s{id}")),
            100,
            QueueOverflow::DropNewest,
        ))
    }

    fn filter(text: &'static str) -> SubscriptionFilter {
        SubscriptionFilter::parse(&ByteString::from_static(text), true).expect("a valid filter")
    }

    fn options(qos: QoS) -> SubscriptionOptions {
        SubscriptionOptions {
            qos,
            ..SubscriptionOptions::default()
        }
    }

    /// Every session with several matching subscriptions gets one copy, at the highest of their
    /// QoS and with all their identifiers [MQTT-3.3.4-2], [MQTT-3.3.4-3], however many sessions
    /// share those filters and in whatever order the matching lists hold them.
    #[test]
    fn overlapping_subscriptions_of_many_sessions_give_each_one_copy() {
        let router = Router::default();
        let sessions: Vec<_> = (1..=20).map(session).collect();
        for session in &sessions {
            router.subscribe(session, &filter("a/#"), options(QoS::AtMostOnce), Some(1));
            router.subscribe(session, &filter("a/+"), options(QoS::ExactlyOnce), Some(2));
        }
        // Only some in the third list, so the lists differ in length and order.
        for session in sessions.iter().step_by(3) {
            router.subscribe(session, &filter("a/b"), options(QoS::AtLeastOnce), None);
        }
        let message = Arc::new(Message::new("a/b", "m", QoS::ExactlyOnce, false));
        let routed = router.route(&message);
        assert_eq!(routed.sessions, sessions.len());
        for session in &sessions {
            let mut state = session.lock();
            assert_eq!(
                state.queue.len(),
                1,
                "one copy for session {:?}",
                session.id
            );
            let delivery = state.queue.pop().expect("the copy");
            assert_eq!(delivery.qos, QoS::ExactlyOnce);
            let mut ids = delivery.subscription_ids.clone();
            ids.sort_unstable();
            assert_eq!(ids, [1, 2]);
        }
    }
}
