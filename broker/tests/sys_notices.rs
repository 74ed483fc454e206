//! `$SYS/broker/clients/{id}/connected` notices carry one client's input (its id) to every other
//! client that watches them: whatever that id is, what the watchers are sent must be valid for them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod support;

use rumqttc::v5::mqttbytes::QoS;
use support::raw_v5::{connect, read_packet};
use support::{TestBroker, WAIT, skip_on_mosquitto, v5};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A client id of 65,535 bytes, the most a UTF-8 string field holds, is a valid CONNECT; the
/// notice about it still has a topic of at most 65,535 bytes [MQTT-4.7.3-3] and reaches the
/// watcher, which stays connected and gets the next notice too.
#[tokio::test]
async fn a_client_id_of_65535_bytes_does_not_break_the_notice_watchers() {
    if skip_on_mosquitto("Tern's $SYS client notices") {
        return;
    }
    let broker = TestBroker::start().await;
    let mut options = v5::options(broker.port(), "watcher");
    options.set_max_packet_size(Some(1 << 20));
    let (watcher, mut inbox, _) = v5::start(options).await;
    v5::subscribe(
        &watcher,
        &mut inbox,
        "$SYS/broker/clients/+/connected",
        QoS::AtMostOnce,
    )
    .await;

    let long_id = "x".repeat(65_535);
    let mut stream = TcpStream::connect(("127.0.0.1", broker.port()))
        .await
        .unwrap();
    stream
        .write_all(&connect(&long_id, None, &[]))
        .await
        .unwrap();
    let connack = read_packet(&mut stream).await.expect("CONNACK");
    assert_eq!((connack.kind, connack.reason()), (2, 0x00));

    let notice = v5::expect_publish(&mut inbox, WAIT).await;
    let topic = std::str::from_utf8(&notice.topic).unwrap();
    assert!(topic.starts_with("$SYS/broker/clients/xxx"), "{topic}");
    assert!(topic.len() < 256, "a short topic, {} bytes", topic.len());
    let body: serde_json::Value = serde_json::from_slice(&notice.payload).unwrap();
    assert_eq!(body["client_id"].as_str(), Some(long_id.as_str()));

    let (_next, _next_inbox) = v5::connect(broker.port(), "next").await;
    let notice = v5::expect_publish(&mut inbox, WAIT).await;
    assert_eq!(notice.topic, "$SYS/broker/clients/next/connected");
}
