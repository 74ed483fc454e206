//! The limits that bound what clients can make the broker hold, against the real binary: retained
//! messages, session queues in bytes (per session and broker-wide), retained messages sent on
//! subscribe, subscriptions per client, and bytes held in packets not yet whole. Each is seen as
//! the clients see it (reason codes, what arrives) and in the counter `/metrics` keeps for it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod edge_support;
mod support;

use edge_support::{EdgeBroker, WAIT, Workdir, free_port, wait_until};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, PubAckReason, SubscribeReasonCode};
use support::raw_v5::{self, read_packet, remaining_length, string};
use support::{QUIET, v5, v311};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A broker with anonymous access, its HTTP endpoint on, and `limits` (YAML lines under
/// `limits:`, each indented two spaces).
async fn start(limits: &str) -> (EdgeBroker, u16) {
    let port = free_port();
    let listeners = format!("  - name: mqtt\n    bind: 127.0.0.1:{port}\n");
    let extra = format!("auth:\n  allow_anonymous: true\nlimits:\n{limits}");
    let broker = EdgeBroker::start(Workdir::new(), &listeners, &extra, port).await;
    (broker, port)
}

/// One sample from `/metrics`, 0 when absent.
async fn metric(broker: &EdgeBroker, name_and_labels: &str) -> f64 {
    let (status, text) = edge_support::http(broker.http_port, "GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    text.lines()
        .find_map(|line| line.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// PUBACK's reason for one QoS 1 publish.
async fn puback(
    client: &rumqttc::v5::AsyncClient,
    inbox: &mut v5::Inbox,
    topic: &str,
    retain: bool,
) -> PubAckReason {
    client
        .publish(topic, QoS::AtLeastOnce, retain, "retained")
        .await
        .unwrap();
    inbox
        .next_matching("PUBACK", WAIT, |p| match p {
            Packet::PubAck(ack) => Some(ack.reason),
            _ => None,
        })
        .await
}

/// With room for two retained messages, an MQTT 5 publisher's third on a new topic gets PUBACK
/// 0x97 *Quota exceeded* and goes nowhere, neither stored nor delivered (a reason code of 0x80
/// or more means the PUBLISH was not accepted, §3.4.2.1); replacing a stored topic still works.
/// An MQTT 3.1.1 publisher, which has no negative acknowledgement, is acknowledged and its
/// message delivered live but not retained.
#[tokio::test]
async fn the_retained_store_is_bounded_and_says_so_to_mqtt5_publishers() {
    let (broker, port) = start("  max_retained_messages: 2\n").await;
    let (watcher, mut watcher_inbox) = v5::connect(port, "watcher").await;
    v5::subscribe(&watcher, &mut watcher_inbox, "r/#", QoS::AtLeastOnce).await;
    let (publisher, mut inbox) = v5::connect(port, "publisher").await;
    for topic in ["r/a", "r/b", "r/a"] {
        let reason = puback(&publisher, &mut inbox, topic, true).await;
        assert_eq!(reason, PubAckReason::Success, "{topic}");
        v5::expect_publish(&mut watcher_inbox, WAIT).await;
    }
    let reason = puback(&publisher, &mut inbox, "r/c", true).await;
    assert_eq!(reason, PubAckReason::QuotaExceeded);

    let (old, mut old_inbox) = v311::connect(port, "old").await;
    v311::publish(
        &old,
        &mut old_inbox,
        "r/d",
        rumqttc::QoS::AtLeastOnce,
        true,
        "live",
    )
    .await;
    let live = v5::expect_publish(&mut watcher_inbox, WAIT).await;
    assert_eq!(
        live.topic, "r/d",
        "the refused MQTT 5 message was not delivered"
    );

    let (late, mut late_inbox) = v5::connect(port, "late").await;
    v5::subscribe(&late, &mut late_inbox, "r/#", QoS::AtLeastOnce).await;
    let mut topics: Vec<_> = v5::expect_publishes(&mut late_inbox, 2, WAIT)
        .await
        .into_iter()
        .map(|p| String::from_utf8(p.topic.to_vec()).unwrap())
        .collect();
    topics.sort();
    assert_eq!(topics, ["r/a", "r/b"]);
    v5::expect_no_publish(&mut late_inbox, QUIET).await;
    let refused = r#"tern_limit_hits_total{limit="max_retained_messages"}"#;
    assert_eq!(metric(&broker, refused).await, 2.0);
}

/// An offline session under `max_queued_bytes` keeps what fits, dropping its oldest messages
/// for new ones (`drop_oldest`); under `max_queued_bytes_total` alone the new ones are dropped
/// whatever the policy. Four messages of 4,001 bytes each (topic and payload): two fit in 10,000
/// bytes of the session's budget, and in 8,000 of the broker's (whose count leaves out each
/// queue's first 4 KiB and steps by 4 KiB).
#[tokio::test]
async fn queues_are_bounded_in_bytes_per_session_and_broker_wide() {
    for (limit, bytes, kept) in [
        ("max_queued_bytes", 10_000, ["3", "4"]),
        ("max_queued_bytes_total", 8_000, ["1", "2"]),
    ] {
        let (broker, port) = start(&format!("  {limit}: {bytes}\n")).await;
        let (sleeper, mut inbox, _) = v5::connect_persistent(port, "sleeper", 600).await;
        v5::subscribe(&sleeper, &mut inbox, "t", QoS::AtLeastOnce).await;
        v5::disconnect(&sleeper, &mut inbox).await;

        let (publisher, mut publisher_inbox) = v5::connect(port, "publisher").await;
        for n in 1..=4u8 {
            let mut payload = vec![b'.'; 4_000];
            payload[0] = b'0' + n;
            v5::publish(
                &publisher,
                &mut publisher_inbox,
                "t",
                QoS::AtLeastOnce,
                false,
                payload,
            )
            .await;
        }
        let (_sleeper, mut inbox, connack) = v5::connect_persistent(port, "sleeper", 600).await;
        assert!(connack.session_present);
        let firsts: Vec<_> = v5::expect_publishes(&mut inbox, 2, WAIT)
            .await
            .into_iter()
            .map(|p| (p.payload[0] as char).to_string())
            .collect();
        assert_eq!(firsts, kept, "{limit}");
        v5::expect_no_publish(&mut inbox, QUIET).await;
        let hits = format!("tern_limit_hits_total{{limit=\"{limit}\"}}");
        assert!(metric(&broker, &hits).await >= 2.0, "{hits}");
    }
}

/// A subscription whose filter matches more retained messages than the session's queue holds
/// gets what fits, the first ones, and the rest are counted as not sent rather than pushing one
/// another out.
#[tokio::test]
async fn retained_messages_beyond_the_queue_are_counted_not_churned() {
    let (broker, port) = start("  max_queued_messages: 5\n").await;
    let (publisher, mut inbox) = v5::connect(port, "publisher").await;
    for n in 0..10 {
        let topic = format!("r/{n}");
        v5::publish(
            &publisher,
            &mut inbox,
            &topic,
            QoS::AtLeastOnce,
            true,
            "kept",
        )
        .await;
    }
    let (late, mut late_inbox) = v5::connect(port, "late").await;
    v5::subscribe(&late, &mut late_inbox, "r/#", QoS::AtLeastOnce).await;
    v5::expect_publishes(&mut late_inbox, 5, WAIT).await;
    v5::expect_no_publish(&mut late_inbox, QUIET).await;
    let unsent = r#"tern_messages_dropped_total{reason="retained_queue_full"}"#;
    assert_eq!(metric(&broker, unsent).await, 5.0);
    let churned = r#"tern_messages_dropped_total{reason="queue_full_oldest"}"#;
    assert_eq!(metric(&broker, churned).await, 0.0);
}

/// Without configuration a client may hold 1,000 subscriptions: the 1,001st filter of one
/// SUBSCRIBE gets 0x97 *Quota exceeded* while the others are granted (§3.9.3).
#[tokio::test]
async fn subscriptions_per_client_are_bounded_by_default() {
    let (_broker, port) = start("  max_queued_messages: 10000\n").await;
    let (client, mut inbox) = v5::connect(port, "collector").await;
    let filters = (0..1_001).map(|n| Filter::new(format!("f/{n}"), QoS::AtMostOnce));
    client.subscribe_many(filters).await.unwrap();
    let suback = v5::expect_suback(&mut inbox, WAIT).await;
    assert_eq!(suback.return_codes.len(), 1_001);
    assert!(
        suback.return_codes[..1_000]
            .iter()
            .all(|code| *code == SubscribeReasonCode::Success(QoS::AtMostOnce))
    );
    assert_eq!(
        suback.return_codes[1_000],
        SubscribeReasonCode::QuotaExceeded
    );
}

/// The start of a PUBLISH of `len` bytes of payload on topic `t`, QoS 1, packet id 1: its fixed
/// header declares the whole packet; the body is cut after `sent` bytes of payload.
fn partial_publish(len: usize, sent: usize) -> Vec<u8> {
    let mut head = string(b"t");
    head.extend([0, 1, 0]); // packet id 1, no properties
    let mut packet = vec![0x32];
    packet.extend(remaining_length(head.len() + len));
    packet.extend(head);
    packet.extend(std::iter::repeat_n(b'p', sent));
    packet
}

async fn connected_raw(port: u16, id: &str) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream
        .write_all(&raw_v5::connect(id, None, &[]))
        .await
        .unwrap();
    let connack = read_packet(&mut stream).await.expect("CONNACK");
    assert_eq!((connack.kind, connack.reason()), (2, 0));
    stream
}

/// Two connections each start a 200,000-byte PUBLISH under a broker-wide budget of 300,000 bytes
/// of unfinished packets (counted in blocks of 64 KiB): the first holds 150,000 bytes of its
/// packet, the second would take the total past the budget and gets DISCONNECT 0x97 *Quota
/// exceeded*; the first finishes its packet and is acknowledged.
#[tokio::test]
async fn bytes_in_unfinished_packets_are_bounded_broker_wide() {
    let (broker, port) =
        start("  max_partial_packet_bytes: 300000\n  max_packet_size: 1000000\n").await;
    let mut first = connected_raw(port, "first").await;
    let whole = partial_publish(200_000, 200_000);
    let cut = partial_publish(200_000, 150_000).len();
    first.write_all(&whole[..cut]).await.unwrap();
    wait_until("the first connection's bytes counted", || async {
        metric(&broker, "tern_partial_packet_bytes").await >= 150_000.0
    })
    .await;

    let mut second = connected_raw(port, "second").await;
    // The broker may close while this is still being written.
    let _ = second.write_all(&whole[..cut]).await;
    let disconnect = read_packet(&mut second).await.expect("DISCONNECT");
    assert_eq!((disconnect.kind, disconnect.reason()), (14, 0x97));

    first.write_all(&whole[cut..]).await.unwrap();
    let puback = read_packet(&mut first).await.expect("PUBACK");
    assert_eq!(puback.kind, 4, "the first connection goes on");
    let hits = r#"tern_limit_hits_total{limit="max_partial_packet_bytes"}"#;
    assert_eq!(metric(&broker, hits).await, 1.0);
    wait_until("the bytes given back", || async {
        metric(&broker, "tern_partial_packet_bytes").await == 0.0
    })
    .await;
}
