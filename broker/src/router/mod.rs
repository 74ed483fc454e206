//! The router: which sessions want a message (the subscription trie and shared groups), and the
//! retained messages ([`RetainedStore`]). Each index is reached through its methods, each a short
//! synchronous critical section. Subscriptions change only through `Broker::subscribe` and
//! `Broker::unsubscribe`, which keep each session's own record in step; the router tells them when a
//! route (a filter, or a shared group, with subscribers) appears or disappears.
//!
//! Lock order: the subscription index may be held while a session's lock is taken (to enqueue), never
//! the other way round. Routing holds it for reading until a message is handed out to every
//! subscriber, which borrows the subscribers instead of counting references to them.

mod retained;
mod subscribers;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::RwLock;

pub use retained::{RetainedFull, RetainedStore};
pub use subscribers::{FilterSubscribers, SharedGroup, Subscriber};

use crate::codec::{QoS, SubscriptionOptions};
use crate::identity::SessionId;
use crate::message::{Delivery, Message};
use crate::session::{Backlog, BacklogMarks, Session};
use crate::stats::Stats;
use crate::topic::{FilterTrie, SubscriptionFilter};

#[derive(Debug, Default)]
pub struct Router {
    subscriptions: RwLock<FilterTrie<FilterSubscribers>>,
    subscription_count: AtomicUsize,
    /// Filters with direct subscribers, plus shared groups.
    route_count: AtomicUsize,
    /// When set, routing reports a subscriber whose queue backs up (see `crate::backpressure`).
    backlog: Option<BacklogMarks>,
    /// Where deliveries a full queue refuses are counted.
    stats: Arc<Stats>,
}

/// A route (a filter, or a shared group's filter) that gained its first or lost its last subscriber
/// on this node: exactly what other nodes need to know to forward messages here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteChange {
    Added(SubscriptionFilter),
    Removed(SubscriptionFilter),
}

/// Which of the matching subscriptions a message goes to on this node.
#[derive(Debug, Clone, Copy)]
pub enum RouteScope<'a> {
    /// All of them: a single broker, or a message published on this node of a cluster whose
    /// shared groups have members only here.
    Everything,
    /// In a cluster: direct subscribers if `direct`, and of the shared groups only those the
    /// cluster picked this node for (each message goes to one member of a group cluster-wide).
    Cluster {
        direct: bool,
        groups: &'a [SubscriptionFilter],
    },
}

impl RouteScope<'_> {
    fn serves(&self, group: &SharedGroup) -> bool {
        match self {
            Self::Everything => true,
            Self::Cluster { groups, .. } => groups
                .iter()
                .any(|g| g.share.as_ref() == Some(&group.name) && g.filter == group.filter),
        }
    }
}

/// What adding a subscription changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inserted {
    /// The session already had this subscription, which was replaced [MQTT-3.8.4-3].
    pub replaced: bool,
    /// The filter (or shared group) had no subscriber before.
    pub new_route: bool,
}

/// What removing a subscription changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    /// The session had this subscription.
    pub existed: bool,
    /// The filter (or shared group) has no subscriber left.
    pub route_gone: bool,
}

/// Where a message went.
#[derive(Debug, Default)]
pub struct Routed {
    /// How many sessions on this node it was handed to.
    pub sessions: usize,
    /// How many other nodes of the cluster it was forwarded to.
    pub remote: usize,
    /// A connected subscriber, other than the publisher, whose queue reached the backlog's
    /// high-water mark with this message: the publisher should wait for it.
    pub backlogged: Option<Arc<Session>>,
    /// A subscriber's queue is past `BacklogMarks::full`: the publisher must wait even with a share
    /// left to publish.
    pub backlog_full: bool,
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

    /// Adds or replaces a session's subscription. Only for `Broker::subscribe`, which keeps the
    /// session's own record in step.
    pub(crate) fn subscribe(
        &self,
        session: &Arc<Session>,
        filter: &SubscriptionFilter,
        options: SubscriptionOptions,
        identifier: Option<u32>,
    ) -> Inserted {
        let subscriber = Subscriber {
            session: Arc::clone(session),
            options,
            identifier,
        };
        let inserted = self
            .subscriptions
            .write()
            .entry_or_default(&filter.filter)
            .insert(&filter.filter, filter.share.as_ref(), subscriber);
        if !inserted.replaced {
            self.subscription_count.fetch_add(1, Ordering::Relaxed);
        }
        if inserted.new_route {
            self.route_count.fetch_add(1, Ordering::Relaxed);
        }
        inserted
    }

    /// Removes a session's subscription. Only for `Broker::unsubscribe` and the end of a session.
    pub(crate) fn unsubscribe(&self, session: SessionId, filter: &SubscriptionFilter) -> Removed {
        let removed = {
            let mut trie = self.subscriptions.write();
            let removed = trie
                .get_mut(&filter.filter)
                .map(|subscribers| subscribers.remove(filter.share.as_ref(), session))
                .unwrap_or(Removed {
                    existed: false,
                    route_gone: false,
                });
            trie.remove_if(&filter.filter, FilterSubscribers::is_empty);
            removed
        };
        if removed.existed {
            self.subscription_count.fetch_sub(1, Ordering::Relaxed);
        }
        if removed.route_gone {
            self.route_count.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    pub fn subscription_count(&self) -> usize {
        self.subscription_count.load(Ordering::Relaxed)
    }

    /// Distinct routes: filters with direct subscribers, plus shared groups.
    pub fn route_count(&self) -> usize {
        self.route_count.load(Ordering::Relaxed)
    }

    /// Hands a message to every session with a matching subscription within `scope`. A session with
    /// several matching subscriptions gets one copy at the highest granted QoS carrying every
    /// subscription identifier [MQTT-3.3.4-2], [MQTT-3.3.4-3].
    pub fn route(&self, message: &Arc<Message>, scope: RouteScope<'_>) -> Routed {
        // Held until every copy is handed out, so the targets are borrowed rather than cloned:
        // a reference count per subscriber, touched from every core, costs more than a
        // subscription change waiting for one message's fan-out.
        let trie = self.subscriptions.read();
        let mut targets: Vec<Target<'_>> = Vec::new();
        // A session can be among the targets twice only if more than one list of them matched.
        let mut lists = 0;
        trie.for_each_match(&message.topic, |subscribers| {
            let before = targets.len();
            let direct = match scope {
                RouteScope::Everything => true,
                RouteScope::Cluster { direct, .. } => direct,
            };
            for subscriber in subscribers.direct.values().filter(|_| direct) {
                if subscriber.options.no_local && message.publisher == Some(subscriber.session.id) {
                    continue; // [MQTT-3.8.3-3]
                }
                targets.push(Target::new(subscriber, message.qos, true));
            }
            lists += usize::from(targets.len() > before);
            for group in &subscribers.shared {
                if !scope.serves(group) {
                    continue;
                }
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
        if targets.is_empty() {
            return routed;
        }
        // Every target's session counts an equal part of the one copy they share.
        let share = Delivery::share_of(message, targets.len());
        let mut iter = targets.into_iter().peekable();
        while let Some(first) = iter.next() {
            let mut delivery = Delivery {
                message: Arc::clone(message),
                qos: first.qos,
                retain: first.retain_as_published && message.retain,
                subscription_ids: first.identifier.into_iter().collect(),
                share,
                seq: 0,
            };
            let mut backpressure = first.backpressure;
            while let Some(next) = iter.next_if(|t| t.session.id == first.session.id) {
                delivery.qos = delivery.qos.max(next.qos);
                delivery.retain |= next.retain_as_published && message.retain;
                delivery.subscription_ids.extend(next.identifier);
                backpressure |= next.backpressure;
            }
            let backlog = first.session.deliver(delivery, self.backlog, &self.stats);
            if backlog != Backlog::Clear
                && backpressure
                && message.publisher != Some(first.session.id)
            {
                if routed.backlogged.is_none() {
                    routed.backlogged = Some(Arc::clone(first.session));
                }
                routed.backlog_full |= backlog == Backlog::Full;
            }
            routed.sessions += 1;
        }
        routed
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
    use crate::identity::ClientId;
    use crate::session::QueueLimits;

    fn session(id: u64) -> Arc<Session> {
        Arc::new(Session::new(
            SessionId(id),
            ClientId::new(format!("s{id}")),
            QueueLimits::new(100, QueueOverflow::DropNewest, usize::MAX, usize::MAX),
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
        let routed = router.route(&message, RouteScope::Everything);
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

    /// A route appears with the first subscriber of a filter (or of a shared group) and goes with
    /// the last: what other nodes of a cluster replicate, counted once however many sessions share
    /// it.
    #[test]
    fn a_route_comes_with_its_first_subscriber_and_goes_with_its_last() {
        let router = Router::default();
        let (a, b) = (session(1), session(2));
        let qos1 = options(QoS::AtLeastOnce);
        let first = router.subscribe(&a, &filter("x/#"), qos1, None);
        assert_eq!((first.replaced, first.new_route), (false, true));
        let again = router.subscribe(&a, &filter("x/#"), qos1, None);
        assert_eq!((again.replaced, again.new_route), (true, false));
        let second = router.subscribe(&b, &filter("x/#"), qos1, None);
        assert_eq!((second.replaced, second.new_route), (false, false));
        // A shared group on the same filter is a route of its own.
        assert!(
            router
                .subscribe(&a, &filter("$share/g/x/#"), qos1, None)
                .new_route
        );
        assert!(
            !router
                .subscribe(&b, &filter("$share/g/x/#"), qos1, None)
                .new_route
        );
        assert_eq!(router.route_count(), 2);
        assert_eq!(router.subscription_count(), 4);

        let gone = |r: Removed| (r.existed, r.route_gone);
        assert_eq!(
            gone(router.unsubscribe(a.id, &filter("x/#"))),
            (true, false)
        );
        assert_eq!(
            gone(router.unsubscribe(a.id, &filter("x/#"))),
            (false, false)
        );
        assert_eq!(gone(router.unsubscribe(b.id, &filter("x/#"))), (true, true));
        assert_eq!(
            gone(router.unsubscribe(a.id, &filter("$share/g/x/#"))),
            (true, false)
        );
        assert_eq!(
            gone(router.unsubscribe(b.id, &filter("$share/g/x/#"))),
            (true, true)
        );
        assert_eq!((router.route_count(), router.subscription_count()), (0, 0));
    }
}
