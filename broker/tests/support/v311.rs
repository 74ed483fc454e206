//! MQTT 3.1.1 clients (`rumqttc`'s v4 client) for the tests: connect, subscribe, publish and
//! wait for what the broker sends back.

use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnAck, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions,
    Outgoing, Packet, Publish, QoS, SubAck, SubscribeFilter, SubscribeReasonCode,
};
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

/// What one v3.1.1 client has received.
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

/// Options for a client of the broker on `port`, with a clean session.
pub fn options(port: u16, client_id: &str) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    options
}

/// Polls `eventloop` in a task that forwards every received packet (but PINGRESP) to an inbox.
/// The task ends at the first error, or right after the client has sent DISCONNECT so that the
/// connection closes from this side.
pub fn spawn_inbox(mut eventloop: EventLoop) -> Inbox {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            let note = match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PingResp)) => continue,
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

/// Connects with `options` and waits for an accepting CONNACK.
pub async fn start(options: MqttOptions) -> (AsyncClient, Inbox, ConnAck) {
    let (client, eventloop) = AsyncClient::new(options, 100);
    let mut inbox = spawn_inbox(eventloop);
    let connack = expect_connack(&mut inbox, WAIT).await;
    assert_eq!(connack.code, ConnectReturnCode::Success, "{connack:?}");
    (client, inbox, connack)
}

/// A connected client with CleanSession = 1.
pub async fn connect(port: u16, client_id: &str) -> (AsyncClient, Inbox) {
    let (client, inbox, _) = start(options(port, client_id)).await;
    (client, inbox)
}

/// A connected client with CleanSession = 0: it resumes (or creates) a persistent session.
pub async fn connect_persistent(port: u16, client_id: &str) -> (AsyncClient, Inbox, ConnAck) {
    let mut options = options(port, client_id);
    options.set_clean_session(false);
    start(options).await
}

/// Subscribes to one filter and waits for its SUBACK; returns the granted QoS.
pub async fn subscribe(client: &AsyncClient, inbox: &mut Inbox, filter: &str, qos: QoS) -> QoS {
    subscribe_many(client, inbox, &[(filter, qos)])
        .await
        .pop()
        .expect("one return code")
}

/// Subscribes to several filters in one SUBSCRIBE; returns the granted QoS of each.
pub async fn subscribe_many(
    client: &AsyncClient,
    inbox: &mut Inbox,
    filters: &[(&str, QoS)],
) -> Vec<QoS> {
    let request = filters
        .iter()
        .map(|(path, qos)| SubscribeFilter::new((*path).to_owned(), *qos));
    client
        .subscribe_many(request)
        .await
        .expect("queue SUBSCRIBE");
    let suback = expect_suback(inbox, WAIT).await;
    assert_eq!(suback.return_codes.len(), filters.len(), "{suback:?}");
    suback
        .return_codes
        .iter()
        .zip(filters)
        .map(|(code, (path, _))| match code {
            SubscribeReasonCode::Success(granted) => *granted,
            SubscribeReasonCode::Failure => panic!("SUBSCRIBE {path} refused"),
        })
        .collect()
}

/// Unsubscribes from one filter and waits for the UNSUBACK.
pub async fn unsubscribe(client: &AsyncClient, inbox: &mut Inbox, filter: &str) {
    client.unsubscribe(filter).await.expect("queue UNSUBSCRIBE");
    inbox
        .next_matching("UNSUBACK", WAIT, |p| match p {
            Packet::UnsubAck(_) => Some(()),
            _ => None,
        })
        .await;
}

/// Publishes and, for QoS 1 and 2, waits until the broker has acknowledged the message.
pub async fn publish(
    client: &AsyncClient,
    inbox: &mut Inbox,
    topic: &str,
    qos: QoS,
    retain: bool,
    payload: impl Into<Vec<u8>>,
) {
    client
        .publish(topic, qos, retain, payload)
        .await
        .expect("queue PUBLISH");
    expect_publish_acknowledged(inbox, qos).await;
}

/// Waits for the acknowledgement that ends the publisher's side of one QoS 1 or 2 flow.
pub async fn expect_publish_acknowledged(inbox: &mut Inbox, qos: QoS) {
    let (what, wanted): (&str, fn(&Packet) -> bool) = match qos {
        QoS::AtMostOnce => return,
        QoS::AtLeastOnce => ("PUBACK", |p| matches!(p, Packet::PubAck(_))),
        QoS::ExactlyOnce => ("PUBCOMP", |p| matches!(p, Packet::PubComp(_))),
    };
    inbox
        .next_matching(what, WAIT, |p| wanted(p).then_some(()))
        .await;
}

/// Sends DISCONNECT and waits until the connection is closed.
pub async fn disconnect(client: &AsyncClient, inbox: &mut Inbox) {
    client.disconnect().await.expect("queue DISCONNECT");
    match inbox.ended(WAIT).await {
        Note::DisconnectSent => {}
        other => panic!("expected our DISCONNECT to end the connection, got {other:?}"),
    }
}

/// The payload of a received message as text.
pub fn payload(publish: &Publish) -> &str {
    std::str::from_utf8(&publish.payload).expect("UTF-8 payload")
}
