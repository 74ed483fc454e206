//! The inline client: publish and subscribe from inside the program that embeds the broker, without a
//! network connection (like mochi-mqtt's inline client). Messages go through the same router, retained
//! store and hooks as a network client's.

use std::sync::Arc;

use bytes::Bytes;
use bytestring::ByteString;
use thiserror::Error;
use tokio::sync::mpsc;

use crate::broker::Broker;
use crate::codec::{QoS, SubscriptionOptions};
use crate::message::{Delivery, Message};
use crate::session::{ClientId, ConnectionControl, Session};
use crate::topic::{self, SubscriptionFilter, TopicError};

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
        Ok(self.broker.publish(message, None))
    }

    /// Subscribes to a filter (shared filters included). Messages arrive on the returned
    /// [`Subscription`] until it is dropped. A subscriber that does not keep up backs up into its
    /// session queue, where the configured overflow policy applies.
    pub fn subscribe(&self, filter: &str, qos: QoS) -> Result<Subscription, InlineError> {
        let filter_text = ByteString::from(filter);
        let parsed = SubscriptionFilter::parse(&filter_text, true)?;
        let limits = &self.broker.config.limits;
        let session = Arc::new(Session::new(
            self.broker.sessions.next_id(),
            ClientId::new(format!("$inline-{}", fastrand::u64(..))),
            limits.max_queued_messages,
            limits.queue_overflow,
        ));
        let control = Arc::new(ConnectionControl::default());
        session.lock().connection = Some(Arc::clone(&control));
        session.set_online(true);
        let options = SubscriptionOptions {
            qos,
            ..SubscriptionOptions::default()
        };
        self.broker
            .router
            .subscribe(&session, &parsed, options, None);

        let (sender, receiver) = mpsc::channel(64);
        self.broker.tasks.spawn(pump(
            Arc::clone(&session),
            Arc::clone(&control),
            sender,
            self.broker.shutdown.clone(),
        ));
        Ok(Subscription {
            receiver,
            broker: Arc::clone(&self.broker),
            session,
            control,
            filter: parsed,
        })
    }
}

/// Moves deliveries from the subscription's session into its channel.
async fn pump(
    session: Arc<Session>,
    control: Arc<ConnectionControl>,
    sender: mpsc::Sender<Delivery>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        loop {
            let next = session.lock().queue.pop();
            let Some(delivery) = next else { break };
            if sender.send(delivery).await.is_err() {
                return;
            }
        }
        tokio::select! {
            () = control.queued() => {}
            () = control.kicked() => return,
            () = shutdown.cancelled() => return,
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
    control: Arc<ConnectionControl>,
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
            .router
            .unsubscribe(self.session.id, &self.filter);
        self.control
            .kick(crate::codec::ReasonCode::NORMAL_DISCONNECTION);
    }
}
