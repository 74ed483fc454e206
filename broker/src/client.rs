//! The inline client: publish and subscribe from inside the program that embeds the broker, without a
//! network connection (like mochi-mqtt's inline client). Messages go through the same router, retained
//! store and hooks as a network client's, and subscriptions through the same `Broker::subscribe`.
//!
//! The embedding program is trusted: its messages (`$SYS` included) and subscriptions are not
//! authorized by the hooks (they are told of them: `on_publish` with no client, `on_subscribe` and
//! `on_unsubscribe` with the inline subscription's identity). Each subscription has a session of its own, outside the session
//! registry: it has no client identifier another client could take over, and a drain, which moves
//! network clients elsewhere, leaves it alone.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use bytestring::ByteString;
use thiserror::Error;
use tokio::sync::mpsc;

use crate::broker::Broker;
use crate::codec::{ProtocolVersion, QoS, ReasonCode, SubscriptionOptions};
use crate::control::ConnectionControl;
use crate::identity::{ClientId, ClientInfo};
use crate::message::{Delivery, Message};
use crate::session::Session;
use crate::topic::{self, SubscriptionFilter, TopicError};

/// How many deliveries wait in a subscription's channel; beyond that they wait in its session's
/// queue, where backpressure and the overflow policy apply.
const CHANNEL_CAPACITY: usize = 64;

#[derive(Debug, Error)]
pub enum InlineError {
    #[error("invalid topic: {0}")]
    Topic(#[from] TopicError),
}

/// A handle for publishing and subscribing in-process. Cheap to clone.
#[derive(Clone, Debug)]
pub struct InlineClient {
    broker: Arc<Broker>,
}

impl InlineClient {
    pub(crate) fn new(broker: Arc<Broker>) -> Self {
        Self { broker }
    }

    /// Publishes a message; returns how many sessions it was handed to.
    pub fn publish(
        &self,
        topic: impl Into<ByteString>,
        payload: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
    ) -> Result<usize, InlineError> {
        self.publish_message(Message::new(topic, payload, qos, retain))
    }

    /// Publishes a fully specified message (properties, expiry).
    pub fn publish_message(&self, message: Message) -> Result<usize, InlineError> {
        topic::validate_topic_name(&message.topic)?;
        Ok(self.broker.publish(message, None).routed.sessions)
    }

    /// Subscribes to a filter (shared filters included). Messages arrive on the returned
    /// [`Subscription`] until it is dropped. A subscriber that does not keep up backs up into its
    /// session queue, where backpressure and the configured overflow policy apply as they do to a
    /// network client.
    pub fn subscribe(&self, filter: &str, qos: QoS) -> Result<Subscription, InlineError> {
        let filter = SubscriptionFilter::parse(&ByteString::from(filter), true)?;
        let client_id = ClientId::new(format!("$inline-{}", fastrand::u64(..)));
        let session = Arc::new(self.broker.new_session(client_id.clone()));
        let control = Arc::new(ConnectionControl::default());
        session.lock().connection = Some(Arc::clone(&control));
        session.set_online(true);
        let client = Arc::new(ClientInfo {
            client_id,
            username: None,
            protocol: ProtocolVersion::V5,
            remote_addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)).into(),
            listener: Arc::from("inline"),
            certificate_identity: false,
            connected_at: crate::identity::unix_seconds_now(),
        });
        let options = SubscriptionOptions {
            qos,
            ..SubscriptionOptions::default()
        };
        self.broker
            .subscribe(&session, &client, filter.clone(), options, None);

        let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
        self.broker.tasks().spawn(pump(
            Arc::clone(&self.broker),
            Arc::clone(&session),
            control,
            sender,
        ));
        Ok(Subscription {
            receiver,
            broker: Arc::clone(&self.broker),
            session,
            client,
            filter,
        })
    }
}

/// Moves deliveries from the subscription's session into its channel, letting publishers that wait
/// for this subscriber go on as its queue drains, as a connection does.
async fn pump(
    broker: Arc<Broker>,
    session: Arc<Session>,
    control: Arc<ConnectionControl>,
    sender: mpsc::Sender<Delivery>,
) {
    loop {
        loop {
            let (next, release) = {
                let mut state = session.lock();
                let next = state.queue.pop();
                let release = broker.backpressure().taken(&session, &state.queue);
                (next, release)
            };
            if let Some(queued) = release {
                broker.backpressure().release(&session, queued);
            }
            let Some(delivery) = next else { break };
            if sender.send(delivery).await.is_err() {
                return;
            }
        }
        tokio::select! {
            () = control.queued() => {}
            () = control.kicked() => return,
            () = broker.shutdown_token().cancelled() => return,
            () = sender.closed() => return,
        }
    }
}

/// A live in-process subscription. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    receiver: mpsc::Receiver<Delivery>,
    broker: Arc<Broker>,
    session: Arc<Session>,
    client: Arc<ClientInfo>,
    filter: SubscriptionFilter,
}

impl Subscription {
    /// The next message, or `None` once the server has shut down.
    pub async fn recv(&mut self) -> Option<Arc<Message>> {
        self.receiver.recv().await.map(|delivery| delivery.message)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.broker
            .unsubscribe(&self.session, &self.client, &self.filter);
        // Ends the pump, and lets go of any publisher still waiting for this subscriber.
        self.broker
            .end_session(&self.session, Some(ReasonCode::NORMAL_DISCONNECTION), None);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::config::{Config, Limits};
    use crate::hook::Hooks;

    fn broker(limits: Limits) -> Arc<Broker> {
        let config = Config {
            limits,
            ..Config::default()
        };
        Arc::new(Broker::new(
            config,
            Hooks::default(),
            CancellationToken::new(),
        ))
    }

    /// A subscriber that fell behind and then caught up lets the publishers waiting for it go on
    /// and stops counting as backlogged, as a network client's connection does. The clock is
    /// paused: the only way the publisher's wait ends before its 60 s pause is being let go.
    #[tokio::test(start_paused = true)]
    async fn a_backed_up_inline_subscriber_lets_its_publishers_go_on_once_it_catches_up() {
        let broker = broker(Limits {
            backlog_high_water: 16,
            backlog_max_pause_ms: 60_000,
            ..Limits::default()
        });
        let client = InlineClient::new(Arc::clone(&broker));
        let mut subscription = client.subscribe("t", QoS::AtLeastOnce).unwrap();
        // More than the channel holds: the rest backs up in the subscription's session queue.
        let sent = CHANNEL_CAPACITY + 100;
        for i in 0..sent {
            client
                .publish("t", i.to_string(), QoS::AtLeastOnce, false)
                .unwrap();
        }
        tokio::task::yield_now().await;
        assert!(subscription.session.is_backlogged());
        let publisher = broker
            .backpressure()
            .wait_for(Arc::clone(&subscription.session))
            .expect("a backlogged subscriber is waited for");

        for i in 0..sent {
            let message = subscription.recv().await.expect("every message arrives");
            assert_eq!(message.payload, i.to_string());
        }
        tokio::time::timeout(Duration::from_secs(30), publisher)
            .await
            .expect("the publisher goes on once the subscriber has caught up");
        assert!(!subscription.session.is_backlogged());
    }
}
