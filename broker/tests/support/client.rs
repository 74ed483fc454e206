//! A client of either protocol version behind one type, so that a scenario both versions share is
//! written once: [`Client`] wraps the [`v311`] or [`v5`] helpers and hands back version-neutral
//! [`Message`]s. Version-specific checks (v5 reason codes on PUBACK, PUBREC, PUBCOMP and UNSUBACK)
//! still run, inside the helpers it calls; anything only one version has stays in those modules.

use rumqttc::QoS;
use rumqttc::v5::mqttbytes::QoS as QoS5;

use super::{QUIET, WAIT, v5, v311};

/// Session Expiry Interval of the v5 sessions [`Client::start_session`] opens, in seconds.
pub const SESSION_EXPIRY: u32 = 3600;

/// The protocol version a scenario runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V311,
    V5,
}

/// An application message received by a client, whatever its protocol version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: QoS,
    pub retain: bool,
    pub dup: bool,
    pub pkid: u16,
}

impl Message {
    /// The payload as text.
    pub fn payload(&self) -> &str {
        std::str::from_utf8(&self.payload).expect("UTF-8 payload")
    }
}

/// A connected client of either version and what it has received.
#[allow(
    clippy::large_enum_variant,
    reason = "a test holds a few clients at most; the size difference costs nothing"
)]
pub enum Client {
    V311(rumqttc::AsyncClient, v311::Inbox),
    V5(rumqttc::v5::AsyncClient, v5::Inbox),
}

impl Client {
    /// A connected client whose session ends with the connection (v3.1.1 CleanSession = 1; v5
    /// Clean Start = 1 and no Session Expiry Interval).
    pub async fn connect(version: Version, port: u16, client_id: &str) -> Client {
        match version {
            Version::V311 => {
                let (client, inbox) = v311::connect(port, client_id).await;
                Client::V311(client, inbox)
            }
            Version::V5 => {
                let (client, inbox) = v5::connect(port, client_id).await;
                Client::V5(client, inbox)
            }
        }
    }

    /// A connected client with a session kept after the connection (v3.1.1: CleanSession =
    /// `clean_start`; v5: Clean Start = `clean_start` and [`SESSION_EXPIRY`]); with `manual_acks`
    /// it acknowledges nothing it receives. Returns the CONNACK's Session Present.
    pub async fn start_session(
        version: Version,
        port: u16,
        client_id: &str,
        clean_start: bool,
        manual_acks: bool,
    ) -> (Client, bool) {
        match version {
            Version::V311 => {
                let mut options = v311::options(port, client_id);
                options
                    .set_clean_session(clean_start)
                    .set_manual_acks(manual_acks);
                let (client, inbox, connack) = v311::start(options).await;
                (Client::V311(client, inbox), connack.session_present)
            }
            Version::V5 => {
                let mut options = v5::options(port, client_id);
                options
                    .set_clean_start(clean_start)
                    .set_session_expiry_interval(Some(SESSION_EXPIRY))
                    .set_manual_acks(manual_acks);
                let (client, inbox, connack) = v5::start(options).await;
                (Client::V5(client, inbox), connack.session_present)
            }
        }
    }

    /// Subscribes to one filter and waits for a successful SUBACK; returns the granted QoS.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> QoS {
        match self {
            Client::V311(client, inbox) => v311::subscribe(client, inbox, filter, qos).await,
            Client::V5(client, inbox) => {
                from_v5(v5::subscribe(client, inbox, filter, to_v5(qos)).await)
            }
        }
    }

    /// Unsubscribes from one filter and waits for the UNSUBACK (v5: with reason Success).
    pub async fn unsubscribe(&mut self, filter: &str) {
        match self {
            Client::V311(client, inbox) => v311::unsubscribe(client, inbox, filter).await,
            Client::V5(client, inbox) => v5::unsubscribe(client, inbox, filter).await,
        }
    }

    /// Publishes and, for QoS 1 and 2, waits until the broker has acknowledged the message.
    pub async fn publish(
        &mut self,
        topic: &str,
        qos: QoS,
        retain: bool,
        payload: impl Into<Vec<u8>>,
    ) {
        self.queue_publish(topic, qos, retain, payload).await;
        self.expect_publish_acknowledged(qos).await;
    }

    /// Hands a PUBLISH to the client without waiting for its acknowledgement.
    pub async fn queue_publish(
        &self,
        topic: &str,
        qos: QoS,
        retain: bool,
        payload: impl Into<Vec<u8>>,
    ) {
        let payload = payload.into();
        match self {
            Client::V311(client, _) => client
                .publish(topic, qos, retain, payload)
                .await
                .expect("queue PUBLISH"),
            Client::V5(client, _) => client
                .publish(topic, to_v5(qos), retain, payload)
                .await
                .expect("queue PUBLISH"),
        }
    }

    /// Waits for the acknowledgement that ends the publisher's side of one QoS 1 or 2 flow.
    pub async fn expect_publish_acknowledged(&mut self, qos: QoS) {
        match self {
            Client::V311(_, inbox) => v311::expect_publish_acknowledged(inbox, qos).await,
            Client::V5(_, inbox) => v5::expect_publish_acknowledged(inbox, to_v5(qos)).await,
        }
    }

    /// The next application message the broker sends to this client, within [`WAIT`].
    pub async fn expect_publish(&mut self) -> Message {
        match self {
            Client::V311(_, inbox) => from_v311_publish(v311::expect_publish(inbox, WAIT).await),
            Client::V5(_, inbox) => from_v5_publish(v5::expect_publish(inbox, WAIT).await),
        }
    }

    /// The next `count` application messages, in arrival order.
    pub async fn expect_publishes(&mut self, count: usize) -> Vec<Message> {
        let mut received = Vec::with_capacity(count);
        for _ in 0..count {
            received.push(self.expect_publish().await);
        }
        received
    }

    /// Fails if an application message arrives within [`QUIET`].
    pub async fn expect_no_publish(&mut self) {
        match self {
            Client::V311(_, inbox) => v311::expect_no_publish(inbox, QUIET).await,
            Client::V5(_, inbox) => v5::expect_no_publish(inbox, QUIET).await,
        }
    }

    /// Sends DISCONNECT and waits until the connection is closed.
    pub async fn disconnect(&mut self) {
        match self {
            Client::V311(client, inbox) => v311::disconnect(client, inbox).await,
            Client::V5(client, inbox) => v5::disconnect(client, inbox).await,
        }
    }

    /// Drops the network connection without DISCONNECT, as if the client had crashed.
    pub async fn drop_connection(self) {
        match self {
            Client::V311(_, inbox) => inbox.drop_connection().await,
            Client::V5(_, inbox) => inbox.drop_connection().await,
        }
    }
}

fn to_v5(qos: QoS) -> QoS5 {
    match qos {
        QoS::AtMostOnce => QoS5::AtMostOnce,
        QoS::AtLeastOnce => QoS5::AtLeastOnce,
        QoS::ExactlyOnce => QoS5::ExactlyOnce,
    }
}

fn from_v5(qos: QoS5) -> QoS {
    match qos {
        QoS5::AtMostOnce => QoS::AtMostOnce,
        QoS5::AtLeastOnce => QoS::AtLeastOnce,
        QoS5::ExactlyOnce => QoS::ExactlyOnce,
    }
}

fn from_v311_publish(publish: rumqttc::Publish) -> Message {
    Message {
        topic: publish.topic,
        payload: publish.payload.to_vec(),
        qos: publish.qos,
        retain: publish.retain,
        dup: publish.dup,
        pkid: publish.pkid,
    }
}

fn from_v5_publish(publish: rumqttc::v5::mqttbytes::v5::Publish) -> Message {
    Message {
        topic: v5::topic(&publish).to_owned(),
        payload: publish.payload.to_vec(),
        qos: from_v5(publish.qos),
        retain: publish.retain,
        dup: publish.dup,
        pkid: publish.pkid,
    }
}
