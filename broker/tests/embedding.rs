//! The library API: a server embedded in a test program, a custom hook deciding authorization, and
//! the inline client exchanging messages with a real network client (rumqttc).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet};
use tern_broker::{Access, ClientInfo, Hook, Message, QoS, ReasonCode, Server};
use tokio::sync::mpsc;

use support::embedded::loopback_config;

const WAIT: Duration = Duration::from_secs(5);

/// Denies publishes under `deny/`, and records connects, disconnects and accepted publishes.
#[derive(Default)]
struct RecordingPolicy {
    connects: Arc<AtomicUsize>,
    disconnects: Arc<AtomicUsize>,
    published: Arc<AtomicUsize>,
}

impl Hook for RecordingPolicy {
    fn name(&self) -> &'static str {
        "recording-policy"
    }
    fn authorize_publish(&self, _: &ClientInfo, topic: &str, _: QoS, _: bool) -> Access {
        if topic.starts_with("deny/") {
            Access::Deny
        } else {
            Access::Continue
        }
    }
    fn on_connect(&self, _: &ClientInfo, _: bool) {
        self.connects.fetch_add(1, Ordering::SeqCst);
    }
    fn on_disconnect(&self, _: &ClientInfo, _: Option<ReasonCode>) {
        self.disconnects.fetch_add(1, Ordering::SeqCst);
    }
    fn on_publish(&self, _: Option<&ClientInfo>, _: &Message) {
        self.published.fetch_add(1, Ordering::SeqCst);
    }
}

/// Connects a rumqttc v3.1.1 client and forwards its incoming publishes to a channel.
async fn network_client(
    port: u16,
    id: &str,
) -> (AsyncClient, mpsc::UnboundedReceiver<rumqttc::Publish>) {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let (tx, rx) = mpsc::unbounded_channel();
    let (connected_tx, connected_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut connected = Some(connected_tx);
        while let Ok(event) = eventloop.poll().await {
            match event {
                Event::Incoming(Packet::ConnAck(_)) => {
                    if let Some(tx) = connected.take() {
                        let _ = tx.send(());
                    }
                }
                Event::Incoming(Packet::Publish(p)) => {
                    let _ = tx.send(p);
                }
                _ => {}
            }
        }
    });
    tokio::time::timeout(WAIT, connected_rx)
        .await
        .unwrap()
        .unwrap();
    (client, rx)
}

#[tokio::test]
async fn inline_client_and_network_client_exchange_messages_through_hooks() {
    let policy = RecordingPolicy::default();
    let (connects, disconnects, published) = (
        policy.connects.clone(),
        policy.disconnects.clone(),
        policy.published.clone(),
    );
    let server = Server::builder(loopback_config())
        .hook(policy)
        .bind()
        .await
        .unwrap();
    let port = server.local_addrs()[0].1.port();
    let inline = server.client();
    let shutdown = server.shutdown_token();
    let running = tokio::spawn(server.run(std::future::pending()));

    let mut from_network = inline.subscribe("net/#", QoS::AtLeastOnce).unwrap();
    let mut denied = inline.subscribe("deny/#", QoS::AtLeastOnce).unwrap();
    let (client, mut to_network) = network_client(port, "embedded-test").await;
    client
        .subscribe("inline/#", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();

    // Network → inline, after a denied publish that must not arrive. Both go over one connection,
    // in order, so once the allowed one arrived the denied one was already decided.
    client
        .publish("deny/x", rumqttc::QoS::AtLeastOnce, false, "no")
        .await
        .unwrap();
    client
        .publish("net/a", rumqttc::QoS::AtLeastOnce, false, "from network")
        .await
        .unwrap();
    let message = tokio::time::timeout(WAIT, from_network.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&message.topic[..], "net/a");
    assert_eq!(&message.payload[..], b"from network");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), denied.recv())
            .await
            .is_err(),
        "a publish the hook denied was delivered"
    );

    // Inline → network; retried until the network client's SUBSCRIBE has been applied.
    let received = tokio::time::timeout(WAIT, async {
        loop {
            inline
                .publish("inline/b", "from inline", QoS::AtLeastOnce, false)
                .unwrap();
            if let Ok(Some(p)) =
                tokio::time::timeout(Duration::from_millis(100), to_network.recv()).await
            {
                break p;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(received.topic, "inline/b");
    assert_eq!(&received.payload[..], b"from inline");

    assert_eq!(connects.load(Ordering::SeqCst), 1);
    assert!(
        published.load(Ordering::SeqCst) >= 2,
        "on_publish saw the accepted messages"
    );
    client.disconnect().await.unwrap();
    tokio::time::timeout(WAIT, async {
        while disconnects.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("on_disconnect was not called");

    shutdown.cancel();
    tokio::time::timeout(WAIT, running).await.unwrap().unwrap();
}

#[tokio::test]
async fn inline_publish_rejects_invalid_topic_names() {
    let server = Server::builder(loopback_config()).bind().await.unwrap();
    let inline = server.client();
    assert!(inline.publish("a/+", "x", QoS::AtMostOnce, false).is_err());
    assert!(inline.publish("", "x", QoS::AtMostOnce, false).is_err());
    assert!(inline.publish("a/b", "x", QoS::AtMostOnce, false).is_ok());
}

#[path = "../examples/memory_store/store.rs"]
mod memory_store;

/// A store the embedding program brings (`tern_broker::storage::Store`, here the example's tables
/// in memory) keeps what the built-in one does: a session kept after its connection, its
/// subscription and the QoS 1 message queued for it while away are there for a second server
/// started on the same store [MQTT-3.1.2-4], [MQTT-3.1.2-5], with Session Present = 1
/// [MQTT-3.2.2-2].
#[tokio::test]
async fn a_store_the_program_brings_keeps_a_session_and_its_queue_across_servers() {
    use memory_store::MemoryStore;
    use tern_broker::storage::Table;

    let store = MemoryStore::default();
    let first = Server::builder(loopback_config())
        .store(store.clone())
        .bind()
        .await
        .unwrap();
    let port = first.local_addrs()[0].1.port();
    let inline = first.client();
    let token = first.shutdown_token();
    let running = tokio::spawn(first.run(std::future::pending()));

    let (reader, mut events) = persistent_client(port).await;
    assert!(!next_connack(&mut events).await.session_present);
    reader
        .subscribe("news", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    wait_for(&mut events, |p| {
        matches!(p, Packet::SubAck(_)).then_some(())
    })
    .await;
    reader.disconnect().await.unwrap();
    drop(events);
    tokio::time::sleep(Duration::from_millis(100)).await;
    inline
        .publish("news", "while away", QoS::AtLeastOnce, false)
        .unwrap();
    token.cancel();
    running.await.unwrap();
    assert_eq!(store.rows(Table::Sessions), 1);
    assert_eq!(store.rows(Table::Subscriptions), 1);
    assert_eq!(store.rows(Table::Deliveries), 1);

    let mut config = loopback_config();
    config.listeners[0].bind = format!("127.0.0.1:{port}").parse().unwrap();
    let second = Server::builder(config)
        .store(store.clone())
        .bind()
        .await
        .unwrap();
    let token = second.shutdown_token();
    let running = tokio::spawn(second.run(std::future::pending()));
    let (_reader, mut events) = persistent_client(port).await;
    assert!(next_connack(&mut events).await.session_present);
    let publish = wait_for(&mut events, |p| match p {
        Packet::Publish(publish) => Some(publish.clone()),
        _ => None,
    })
    .await;
    assert_eq!(
        (publish.topic.as_str(), &publish.payload[..]),
        ("news", &b"while away"[..])
    );
    token.cancel();
    running.await.unwrap();
}

/// A v3.1.1 client with CleanSession = 0 (a session kept after the connection).
async fn persistent_client(port: u16) -> (AsyncClient, rumqttc::EventLoop) {
    let mut options = MqttOptions::new("reader", "127.0.0.1", port);
    options.set_clean_session(false);
    let (client, events) = AsyncClient::new(options, 10);
    (client, events)
}

async fn next_connack(events: &mut rumqttc::EventLoop) -> rumqttc::ConnAck {
    wait_for(events, |p| match p {
        Packet::ConnAck(ack) => Some(ack.clone()),
        _ => None,
    })
    .await
}

/// Polls the event loop until `pick` takes an incoming packet, within [`WAIT`].
async fn wait_for<T>(
    events: &mut rumqttc::EventLoop,
    mut pick: impl FnMut(&Packet) -> Option<T>,
) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Event::Incoming(packet) = events.poll().await.unwrap()
                && let Some(found) = pick(&packet)
            {
                return found;
            }
        }
    })
    .await
    .unwrap()
}
