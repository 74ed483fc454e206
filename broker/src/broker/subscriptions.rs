//! Subscribing and unsubscribing: the one path by which a subscription comes into being, changes or
//! goes, whoever asks (a client's SUBSCRIBE, the inline client, a re-check after a reload, a session
//! ending). It keeps three things in step: the router's entry, the session's own record (which
//! lists, resumes and ends it), and the hooks. It also sees every route (a filter, or a shared group,
//! with subscribers on this node) appear and disappear, which is what other nodes of a cluster need
//! to know.
//!
//! Whether a client may subscribe at all (features, limits, authorization) is decided before this, by
//! whoever asks.

use std::sync::Arc;

use tracing::debug;

use super::Broker;
use crate::codec::SubscriptionOptions;
use crate::identity::{ClientInfo, SessionId};
use crate::router::RouteChange;
use crate::session::{Session, SubscriptionRecord};
use crate::storage::Change;
use crate::topic::SubscriptionFilter;

/// What a subscribe did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribed {
    /// The session already had this subscription, which was replaced [MQTT-3.8.4-3].
    pub replaced: bool,
    /// The filter (or shared group) gained its first subscriber on this node.
    pub new_route: bool,
}

/// What an unsubscribe did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribed {
    /// The session had this subscription.
    pub existed: bool,
    /// The filter (or shared group) lost its last subscriber on this node.
    pub route_gone: bool,
}

impl Broker {
    /// Adds or replaces `session`'s subscription to `filter` with the options granted, and tells the
    /// hooks. A session that has ended meanwhile keeps nothing.
    pub fn subscribe(
        &self,
        session: &Arc<Session>,
        client: &ClientInfo,
        filter: SubscriptionFilter,
        options: SubscriptionOptions,
        identifier: Option<u32>,
    ) -> Subscribed {
        let text = (!self.hooks.is_empty()).then(|| filter.to_string());
        let subscribed = self.subscribe_quietly(session, filter, options, identifier);
        if let Some(text) = text
            && !session.is_ended()
        {
            for hook in self.hooks.iter() {
                hook.on_subscribe(client, &text, &options);
            }
        }
        subscribed
    }

    /// [`Self::subscribe`] without telling the hooks: for a subscription that already existed
    /// elsewhere (a session that moved here from another node, a stand-in).
    pub(super) fn subscribe_quietly(
        &self,
        session: &Arc<Session>,
        filter: SubscriptionFilter,
        options: SubscriptionOptions,
        identifier: Option<u32>,
    ) -> Subscribed {
        let inserted = self.router.subscribe(session, &filter, options, identifier);
        let mut subscribed = Subscribed {
            replaced: inserted.replaced,
            new_route: inserted.new_route,
        };
        let record = SubscriptionRecord {
            options,
            identifier,
        };
        let ended = {
            let mut state = session.lock();
            if !session.is_ended() {
                state.subscriptions.insert(filter.clone(), record);
                state.record(|session| Change::Subscribe {
                    session,
                    filter: Arc::from(filter.to_string()),
                    options,
                    identifier,
                });
            }
            session.is_ended()
        };
        if inserted.new_route {
            self.route_changed(RouteChange::Added(filter.clone()));
        }
        if ended {
            // `end_session` took the session's record before this subscription was in it.
            let removed = self.router.unsubscribe(session.id, &filter);
            if removed.route_gone {
                self.route_changed(RouteChange::Removed(filter));
            }
            subscribed.new_route = false;
        }
        subscribed
    }

    /// Removes `session`'s subscription to `filter`, telling the hooks if there was one.
    pub fn unsubscribe(
        &self,
        session: &Session,
        client: &ClientInfo,
        filter: &SubscriptionFilter,
    ) -> Unsubscribed {
        {
            let mut state = session.lock();
            if state.subscriptions.remove(filter).is_some() {
                state.record(|session| Change::Unsubscribe {
                    session,
                    filter: Arc::from(filter.to_string()),
                });
            }
        }
        let removed = self.router.unsubscribe(session.id, filter);
        if removed.route_gone {
            self.route_changed(RouteChange::Removed(filter.clone()));
        }
        if removed.existed && !self.hooks.is_empty() {
            let text = filter.to_string();
            for hook in self.hooks.iter() {
                hook.on_unsubscribe(client, &text);
            }
        }
        Unsubscribed {
            existed: removed.existed,
            route_gone: removed.route_gone,
        }
    }

    /// Takes an ended session's subscriptions out of the router. No hook hears of them one by one:
    /// the session's end is the event.
    pub(super) fn forget_subscriptions(
        &self,
        session: SessionId,
        filters: impl IntoIterator<Item = SubscriptionFilter>,
    ) {
        for filter in filters {
            if self.router.unsubscribe(session, &filter).route_gone {
                self.route_changed(RouteChange::Removed(filter));
            }
        }
    }

    /// A route appeared or disappeared on this node: the cluster's peers are told.
    fn route_changed(&self, change: RouteChange) {
        debug!(?change, "route changed");
        self.tell_cluster(&change);
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use bytestring::ByteString;
    use parking_lot::Mutex;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::codec::{ProtocolVersion, QoS};
    use crate::config::Config;
    use crate::hook::{Hook, Hooks};
    use crate::identity::ClientId;

    /// Remembers what hooks are told about subscriptions.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl Hook for Arc<Recorder> {
        fn name(&self) -> &'static str {
            "recorder"
        }

        fn on_subscribe(&self, client: &ClientInfo, filter: &str, options: &SubscriptionOptions) {
            let qos = options.qos as u8;
            self.0
                .lock()
                .push(format!("+{} {filter} {qos}", client.client_id));
        }

        fn on_unsubscribe(&self, client: &ClientInfo, filter: &str) {
            self.0
                .lock()
                .push(format!("-{} {filter}", client.client_id));
        }
    }

    fn broker_recording() -> (Arc<Broker>, Arc<Recorder>) {
        let recorder = Arc::new(Recorder::default());
        let hooks = Hooks::new(vec![Arc::new(Arc::clone(&recorder))]);
        let broker = Broker::new(Config::default(), hooks, CancellationToken::new());
        (Arc::new(broker), recorder)
    }

    fn client(id: &str) -> ClientInfo {
        ClientInfo {
            client_id: ClientId::new(id),
            username: None,
            protocol: ProtocolVersion::V5,
            remote_addr: SocketAddr::from(([127, 0, 0, 1], 1)).into(),
            listener: Arc::from("test"),
            certificate_identity: false,
            connected_at: None,
        }
    }

    fn filter(text: &'static str) -> SubscriptionFilter {
        SubscriptionFilter::parse(&ByteString::from_static(text), true).expect("a valid filter")
    }

    fn qos(qos: QoS) -> SubscriptionOptions {
        SubscriptionOptions {
            qos,
            ..SubscriptionOptions::default()
        }
    }

    /// One call keeps the router, the session's own record and the hooks in step, and says when a
    /// route appears or goes.
    #[test]
    fn subscribing_updates_the_router_the_session_and_the_hooks_together() {
        let (broker, recorder) = broker_recording();
        let (a, b) = (client("a"), client("b"));
        let session_a = Arc::new(broker.new_session(a.client_id.clone()));
        let session_b = Arc::new(broker.new_session(b.client_id.clone()));

        let first = broker.subscribe(
            &session_a,
            &a,
            filter("s/#"),
            qos(QoS::AtLeastOnce),
            Some(7),
        );
        assert_eq!(
            first,
            Subscribed {
                replaced: false,
                new_route: true
            }
        );
        let shared = broker.subscribe(&session_b, &b, filter("s/#"), qos(QoS::AtMostOnce), None);
        assert_eq!(
            shared,
            Subscribed {
                replaced: false,
                new_route: false
            }
        );
        let again = broker.subscribe(&session_a, &a, filter("s/#"), qos(QoS::ExactlyOnce), None);
        assert_eq!(
            again,
            Subscribed {
                replaced: true,
                new_route: false
            }
        );
        assert_eq!((broker.subscription_count(), broker.route_count()), (2, 1));
        let record = session_a.lock().subscriptions.get(&filter("s/#")).cloned();
        assert_eq!(
            record.map(|r| (r.options.qos, r.identifier)),
            Some((QoS::ExactlyOnce, None))
        );

        let gone_a = broker.unsubscribe(&session_a, &a, &filter("s/#"));
        assert_eq!(
            gone_a,
            Unsubscribed {
                existed: true,
                route_gone: false
            }
        );
        let never = broker.unsubscribe(&session_a, &a, &filter("s/#"));
        assert_eq!(
            never,
            Unsubscribed {
                existed: false,
                route_gone: false
            }
        );
        let gone_b = broker.unsubscribe(&session_b, &b, &filter("s/#"));
        assert_eq!(
            gone_b,
            Unsubscribed {
                existed: true,
                route_gone: true
            }
        );
        assert!(session_a.lock().subscriptions.is_empty());
        assert_eq!((broker.subscription_count(), broker.route_count()), (0, 0));
        assert_eq!(
            *recorder.0.lock(),
            ["+a s/# 1", "+b s/# 0", "+a s/# 2", "-a s/#", "-b s/#"],
            "the hooks hear of every change and of nothing else"
        );
    }

    /// A session's end takes every route it alone held, and a subscription that races with the end
    /// is not left behind in the router.
    #[test]
    fn an_ended_session_leaves_no_route_behind() {
        let (broker, _) = broker_recording();
        let a = client("a");
        let session = Arc::new(broker.new_session(a.client_id.clone()));
        broker.subscribe(&session, &a, filter("x"), qos(QoS::AtMostOnce), None);
        broker.subscribe(
            &session,
            &a,
            filter("$share/g/y"),
            qos(QoS::AtMostOnce),
            None,
        );
        assert_eq!(broker.route_count(), 2);
        broker.end_session(&session, None, None);
        assert_eq!((broker.subscription_count(), broker.route_count()), (0, 0));

        let late = broker.subscribe(&session, &a, filter("z"), qos(QoS::AtMostOnce), None);
        assert!(!late.new_route);
        assert_eq!((broker.subscription_count(), broker.route_count()), (0, 0));
        assert!(session.lock().subscriptions.is_empty());
    }
}
