//! MQTT 5 clients (`rumqttc::v5`) for the tests: connect, subscribe, publish and wait for what the
//! broker sends back.

use std::time::Duration;

use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, ConnectReturnCode, DisconnectReasonCode, Filter, Packet, PubAckReason, PubCompReason,
    PubRecReason, Publish, PublishProperties, SubAck, SubscribeProperties, SubscribeReasonCode,
    UnsubAckReason,
};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, StateError};
use tokio::sync::mpsc;

use super::{Note, WAIT};

#[allow(
    unused_imports,
    reason = "every test file compiles this module on its own and uses only part of it"
)]
pub use super::expect::{
    expect_connack, expect_connection_closed, expect_no_publish, expect_publish, expect_publishes,
    expect_suback, next_publish_within,
};

/// What one v5 client has received.
pub type Inbox = super::Inbox<Packet, ConnectionError>;

impl super::expect::Packets for Packet {
    type ConnAck = ConnAck;
    type SubAck = SubAck;
    type Publish = Publish;

    fn as_connack(&self) -> Option<&ConnAck> {
        match self {
            Packet::ConnAck(c) => Some(c),
            _ => None,
        }
    }

    fn as_suback(&self) -> Option<&SubAck> {
        match self {
            Packet::SubAck(s) => Some(s),
            _ => None,
        }
    }

    fn as_publish(&self) -> Option<&Publish> {
        match self {
            Packet::Publish(p) => Some(p),
            _ => None,
        }
    }
}

/// Options for a client of the broker on `port`: clean start, no session expiry.
pub fn options(port: u16, client_id: &str) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    options
}

/// A client and its event loop, not yet connected (the connection opens when the loop is polled).
pub fn connect_v5(
    port: u16,
    client_id: &str,
    clean_start: bool,
    session_expiry: Option<u32>,
) -> (AsyncClient, EventLoop) {
    let mut options = options(port, client_id);
    options.set_clean_start(clean_start);
    options.set_session_expiry_interval(session_expiry);
    AsyncClient::new(options, 100)
}

/// Connects with `options` and waits for a successful CONNACK.
pub async fn start(options: MqttOptions) -> (AsyncClient, Inbox, ConnAck) {
    let (client, eventloop) = AsyncClient::new(options, 100);
    let mut inbox = spawn_inbox(eventloop);
    let connack = expect_connack(&mut inbox, WAIT).await;
    assert_eq!(connack.code, ConnectReturnCode::Success, "{connack:?}");
    (client, inbox, connack)
}

/// A connected client with a clean start and a session that ends with the connection.
pub async fn connect(port: u16, client_id: &str) -> (AsyncClient, Inbox) {
    let (client, inbox, _) = start(options(port, client_id)).await;
    (client, inbox)
}

/// A connected client that resumes (or creates) a session kept `session_expiry` seconds.
pub async fn connect_persistent(
    port: u16,
    client_id: &str,
    session_expiry: u32,
) -> (AsyncClient, Inbox, ConnAck) {
    let mut options = options(port, client_id);
    options.set_clean_start(false);
    options.set_session_expiry_interval(Some(session_expiry));
    start(options).await
}

/// Polls `eventloop` in a task that forwards every received packet (but PINGRESP) to an inbox.
/// The task ends at the first error, or right after the client has sent DISCONNECT so that the
/// connection closes from this side.
pub fn spawn_inbox(mut eventloop: EventLoop) -> Inbox {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            let note = match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PingResp(_))) => continue,
                Ok(Event::Incoming(packet)) => Note::Packet(packet),
                Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                    let _ = tx.send(Note::DisconnectSent);
                    return;
                }
                Ok(Event::Outgoing(_)) => continue,
                Err(e) => {
                    let _ = tx.send(Note::Failed(e));
                    return;
                }
            };
            if tx.send(note).is_err() {
                return;
            }
        }
    });
    Inbox::new(rx, task)
}

/// Waits for the broker to end the connection with DISCONNECT; returns its reason code.
pub async fn expect_server_disconnect(
    inbox: &mut Inbox,
    timeout: Duration,
) -> DisconnectReasonCode {
    match inbox.ended(timeout).await {
        Note::Failed(ConnectionError::MqttState(StateError::ServerDisconnect {
            reason_code,
            ..
        })) => reason_code,
        other => {
            panic!("expected a DISCONNECT from the broker, the connection ended with {other:?}")
        }
    }
}

/// Subscribes to one filter and waits for its SUBACK; returns the granted QoS.
pub async fn subscribe(client: &AsyncClient, inbox: &mut Inbox, filter: &str, qos: QoS) -> QoS {
    subscribe_with(client, inbox, Filter::new(filter, qos), None).await
}

/// Subscribes with full subscription options and properties; returns the granted QoS.
pub async fn subscribe_with(
    client: &AsyncClient,
    inbox: &mut Inbox,
    filter: Filter,
    properties: Option<SubscribeProperties>,
) -> QoS {
    let path = filter.path.clone();
    match properties {
        Some(properties) => {
            client
                .subscribe_many_with_properties([filter], properties)
                .await
        }
        None => client.subscribe_many([filter]).await,
    }
    .expect("queue SUBSCRIBE");
    let suback = expect_suback(inbox, WAIT).await;
    match suback.return_codes.as_slice() {
        [SubscribeReasonCode::Success(granted)] => *granted,
        other => panic!("SUBSCRIBE {path} refused: {other:?}"),
    }
}

/// Unsubscribes from one filter and waits for a successful UNSUBACK.
pub async fn unsubscribe(client: &AsyncClient, inbox: &mut Inbox, filter: &str) {
    client.unsubscribe(filter).await.expect("queue UNSUBSCRIBE");
    let reasons = inbox
        .next_matching("UNSUBACK", WAIT, |p| match p {
            Packet::UnsubAck(u) => Some(u.reasons.clone()),
            _ => None,
        })
        .await;
    assert_eq!(reasons, [UnsubAckReason::Success], "UNSUBSCRIBE {filter}");
}

/// Publishes and, for QoS 1 and 2, waits until the broker has acknowledged the message.
pub async fn publish(
    client: &AsyncClient,
    inbox: &mut Inbox,
    topic: &str,
    qos: QoS,
    retain: bool,
    payload: impl Into<bytes::Bytes>,
) {
    client
        .publish(topic, qos, retain, payload.into())
        .await
        .expect("queue PUBLISH");
    expect_publish_acknowledged(inbox, qos).await;
}

/// [`publish`] with PUBLISH properties.
pub async fn publish_with(
    client: &AsyncClient,
    inbox: &mut Inbox,
    topic: &str,
    qos: QoS,
    retain: bool,
    payload: impl Into<bytes::Bytes>,
    properties: PublishProperties,
) {
    client
        .publish_with_properties(topic, qos, retain, payload.into(), properties)
        .await
        .expect("queue PUBLISH");
    expect_publish_acknowledged(inbox, qos).await;
}

/// Waits for the acknowledgement that ends the publisher's side of one QoS 1 or 2 flow.
pub async fn expect_publish_acknowledged(inbox: &mut Inbox, qos: QoS) {
    match qos {
        QoS::AtMostOnce => {}
        QoS::AtLeastOnce => {
            let reason = inbox
                .next_matching("PUBACK", WAIT, |p| match p {
                    Packet::PubAck(ack) => Some(ack.reason),
                    _ => None,
                })
                .await;
            assert!(
                matches!(
                    reason,
                    PubAckReason::Success | PubAckReason::NoMatchingSubscribers
                ),
                "PUBACK {reason:?}"
            );
        }
        QoS::ExactlyOnce => {
            let reason = inbox
                .next_matching("PUBREC", WAIT, |p| match p {
                    Packet::PubRec(rec) => Some(rec.reason),
                    _ => None,
                })
                .await;
            assert!(
                matches!(
                    reason,
                    PubRecReason::Success | PubRecReason::NoMatchingSubscribers
                ),
                "PUBREC {reason:?}"
            );
            let reason = inbox
                .next_matching("PUBCOMP", WAIT, |p| match p {
                    Packet::PubComp(comp) => Some(comp.reason),
                    _ => None,
                })
                .await;
            assert_eq!(reason, PubCompReason::Success, "PUBCOMP");
        }
    }
}

/// Sends DISCONNECT (normal disconnection) and waits until the connection is closed.
pub async fn disconnect(client: &AsyncClient, inbox: &mut Inbox) {
    client.disconnect().await.expect("queue DISCONNECT");
    match inbox.ended(WAIT).await {
        Note::DisconnectSent => {}
        other => panic!("expected our DISCONNECT to end the connection, got {other:?}"),
    }
}

/// The topic of a received message as text.
pub fn topic(publish: &Publish) -> &str {
    std::str::from_utf8(&publish.topic).expect("UTF-8 topic")
}

/// The payload of a received message as text.
pub fn payload(publish: &Publish) -> &str {
    std::str::from_utf8(&publish.payload).expect("UTF-8 payload")
}
