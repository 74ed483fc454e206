//! Sessions that outlive a connection, for MQTT 3.1.1 and 5: kept subscriptions, messages queued
//! while offline, redelivery of unacknowledged messages, clean starts, the offline queue limit and
//! session takeover by a second connection with the same client id.

mod support;

use rumqttc::QoS;
use rumqttc::v5::mqttbytes::v5::DisconnectReasonCode;
use support::client::{Client, Version};
use support::{QUIET, TestBroker, WAIT, v5, v311};

const HOUR: u32 = 3600;

/// [MQTT-3.1.2-4] With CleanSession = 0 the broker resumes the stored session,
/// [MQTT-3.1.2-5] having stored the QoS 1 and 2 messages that matched its subscriptions while the
/// client was away; [MQTT-3.2.2-3] the first CONNACK has Session Present = 0 and
/// [MQTT-3.2.2-2] the resuming one Session Present = 1. (MQTT 3.1.1)
#[tokio::test]
async fn v311_persistent_session_keeps_subscriptions_and_queues_messages_while_offline() {
    persistent_session_keeps_subscriptions_and_queues_messages(Version::V311).await;
}

/// [MQTT-3.1.2-6] CleanSession = 1 discards the previous session, [MQTT-3.2.2-1] with Session
/// Present = 0: its subscriptions are gone. (MQTT 3.1.1)
#[tokio::test]
async fn v311_clean_session_discards_the_previous_session() {
    clean_start_discards_the_previous_session(Version::V311).await;
}

/// [MQTT-3.1.2-5] With Clean Start = 0 the broker resumes the session kept for
/// [MQTT-3.1.2-23] a non-zero Session Expiry Interval, with its subscriptions and the QoS 1 and 2
/// messages queued meanwhile; [MQTT-3.2.2-3] Session Present says whether a session existed.
#[tokio::test]
async fn v5_persistent_session_keeps_subscriptions_and_queues_messages_while_offline() {
    persistent_session_keeps_subscriptions_and_queues_messages(Version::V5).await;
}

/// [MQTT-3.1.2-4] Clean Start = 1 discards the existing session and [MQTT-3.2.2-2] the CONNACK
/// has Session Present = 0.
#[tokio::test]
async fn v5_clean_start_discards_the_previous_session() {
    clean_start_discards_the_previous_session(Version::V5).await;
}

/// [MQTT-4.1.0-2] A session whose expiry interval is absent (0) ends with its network
/// connection (§3.1.2.11.2): Clean Start = 0 on the next connection finds no session.
#[tokio::test]
async fn v5_session_without_expiry_ends_with_the_connection() {
    use rumqttc::v5::mqttbytes::QoS;
    let broker = TestBroker::start().await;
    let (sub, eventloop) = v5::connect_v5(broker.port(), "mayfly", false, None);
    let mut sub_inbox = v5::spawn_inbox(eventloop);
    v5::expect_connack(&mut sub_inbox, WAIT).await;
    v5::subscribe(&sub, &mut sub_inbox, "notes", QoS::AtLeastOnce).await;
    v5::disconnect(&sub, &mut sub_inbox).await;

    let (publisher, mut pub_inbox) = v5::connect(broker.port(), "publisher").await;
    v5::publish(
        &publisher,
        &mut pub_inbox,
        "notes",
        QoS::AtLeastOnce,
        false,
        "lost",
    )
    .await;

    let (_sub, eventloop) = v5::connect_v5(broker.port(), "mayfly", false, None);
    let mut sub_inbox = v5::spawn_inbox(eventloop);
    let connack = v5::expect_connack(&mut sub_inbox, WAIT).await;
    assert!(!connack.session_present);
    v5::expect_no_publish(&mut sub_inbox, QUIET).await;
}

/// [MQTT-4.4.0-1] On reconnecting with CleanSession = 0 the broker resends unacknowledged QoS 1
/// and QoS 2 PUBLISH packets with their original packet identifiers, [MQTT-3.3.1-1] with DUP = 1.
/// (MQTT 3.1.1)
#[tokio::test]
async fn v311_unacknowledged_messages_are_redelivered_with_dup_after_reconnect() {
    unacknowledged_messages_are_redelivered_with_dup(Version::V311).await;
}

/// [MQTT-4.4.0-1] On reconnecting with Clean Start = 0 to a present session the broker resends
/// unacknowledged QoS 1 and QoS 2 PUBLISH packets with their original packet identifiers,
/// [MQTT-3.3.1-1] with DUP = 1.
#[tokio::test]
async fn v5_unacknowledged_messages_are_redelivered_with_dup_after_reconnect() {
    unacknowledged_messages_are_redelivered_with_dup(Version::V5).await;
}

/// The offline queue is bounded by `limits.max_queued_messages` (DESIGN §2: QoS 1/2 kept up to a
/// limit, then dropped and counted): of 20 QoS 1 messages sent while the subscriber is away it
/// gets at most 5, and at least one. [MQTT-3.1.2-5] still requires that some are stored.
#[tokio::test]
async fn offline_queue_keeps_at_most_max_queued_messages() {
    use rumqttc::v5::mqttbytes::QoS;
    let broker = TestBroker::start_with("limits:\n  max_queued_messages: 5\n").await;
    let (sub, mut sub_inbox, _) = v5::connect_persistent(broker.port(), "away", HOUR).await;
    v5::subscribe(&sub, &mut sub_inbox, "feed", QoS::AtLeastOnce).await;
    v5::disconnect(&sub, &mut sub_inbox).await;

    let (publisher, mut pub_inbox) = v5::connect(broker.port(), "publisher").await;
    for i in 0..20 {
        v5::publish(
            &publisher,
            &mut pub_inbox,
            "feed",
            QoS::AtLeastOnce,
            false,
            format!("{i}"),
        )
        .await;
    }

    let (_sub, mut sub_inbox, connack) = v5::connect_persistent(broker.port(), "away", HOUR).await;
    assert!(connack.session_present);
    let first = v5::expect_publish(&mut sub_inbox, WAIT).await;
    let mut received = vec![v5::payload(&first).parse::<u32>().expect("a number")];
    while let Some(next) = v5::next_publish_within(&mut sub_inbox, QUIET).await {
        received.push(v5::payload(&next).parse().expect("a number"));
    }
    eprintln!("queued messages delivered on reconnect: {received:?}");
    assert!(
        (1..=5).contains(&received.len()),
        "expected between 1 and 5 queued messages, got {received:?}"
    );
    assert!(
        received.is_sorted(),
        "queued messages keep their order: {received:?}"
    );
    if !support::mosquitto_mode() {
        // Tern's default `limits.queue_overflow: drop_oldest` (docs/configuration.md) keeps the
        // newest. Mosquitto keeps the oldest: it drops new messages once its queue is full.
        let newest: Vec<u32> = (20 - received.len() as u32..20).collect();
        assert_eq!(received, newest, "the newest messages are kept");
    }
}

/// [MQTT-3.1.4-2] A second connection with the same client id makes the broker close the first.
/// (MQTT 3.1.1)
#[tokio::test]
async fn v311_second_connection_with_same_client_id_closes_the_first() {
    use rumqttc::QoS;
    let broker = TestBroker::start().await;
    let (_first, mut first_inbox) = v311::connect(broker.port(), "twin").await;
    let (second, mut second_inbox) = v311::connect(broker.port(), "twin").await;
    v311::expect_connection_closed(&mut first_inbox, WAIT).await;

    // The new connection is fully usable.
    v311::subscribe(&second, &mut second_inbox, "echo", QoS::AtLeastOnce).await;
    v311::publish(
        &second,
        &mut second_inbox,
        "echo",
        QoS::AtLeastOnce,
        false,
        "hi",
    )
    .await;
    assert_eq!(
        v311::payload(&v311::expect_publish(&mut second_inbox, WAIT).await),
        "hi"
    );
}

/// [MQTT-3.1.4-3] When a client id connects again the broker sends the existing connection a
/// DISCONNECT with reason code 0x8E (Session taken over) and closes it.
#[tokio::test]
async fn v5_takeover_sends_session_taken_over_to_the_first_connection() {
    let broker = TestBroker::start().await;
    let (_first, mut first_inbox) = v5::connect(broker.port(), "twin").await;
    let (_second, _second_inbox) = v5::connect(broker.port(), "twin").await;
    expect_taken_over(&mut first_inbox).await;
}

/// [MQTT-3.1.4-3] [MQTT-3.1.2-5] A takeover with Clean Start = 0 moves the live session to the
/// new connection: [MQTT-3.2.2-3] Session Present = 1 and its subscriptions still deliver.
#[tokio::test]
async fn v5_takeover_with_clean_start_0_keeps_the_session() {
    use rumqttc::v5::mqttbytes::QoS;
    let broker = TestBroker::start().await;
    let (first, mut first_inbox, _) = v5::connect_persistent(broker.port(), "mover", HOUR).await;
    v5::subscribe(&first, &mut first_inbox, "moves", QoS::AtLeastOnce).await;

    let (_second, mut second_inbox, connack) =
        v5::connect_persistent(broker.port(), "mover", HOUR).await;
    assert!(connack.session_present);
    expect_taken_over(&mut first_inbox).await;

    let (publisher, mut pub_inbox) = v5::connect(broker.port(), "publisher").await;
    v5::publish(
        &publisher,
        &mut pub_inbox,
        "moves",
        QoS::AtLeastOnce,
        false,
        "here",
    )
    .await;
    assert_eq!(
        v5::payload(&v5::expect_publish(&mut second_inbox, WAIT).await),
        "here"
    );
}

/// The first connection of a taken-over client id ends with DISCONNECT 0x8E.
async fn expect_taken_over(first_inbox: &mut v5::Inbox) {
    if support::mosquitto_mode() {
        // Mosquitto 2.0.11 closes the old connection without the DISCONNECT 0x8E (Session taken
        // over) that [MQTT-3.1.4-3] describes; only the close is checked against it.
        v5::expect_connection_closed(first_inbox, WAIT).await;
        return;
    }
    let reason = v5::expect_server_disconnect(first_inbox, WAIT).await;
    assert_eq!(reason, DisconnectReasonCode::SessionTakenOver);
}

/// A persistent session (Session Present = 0 at first, 1 on resuming) keeps its subscription and
/// the QoS 1 and 2 messages published while the client was away, then goes on delivering.
async fn persistent_session_keeps_subscriptions_and_queues_messages(v: Version) {
    let broker = TestBroker::start().await;
    let (mut sub, session_present) =
        Client::start_session(v, broker.port(), "sleeper", false, false).await;
    assert!(!session_present, "no session existed yet");
    sub.subscribe("mail/#", QoS::ExactlyOnce).await;
    sub.disconnect().await;

    let mut publisher = Client::connect(v, broker.port(), "publisher").await;
    publisher
        .publish("mail/a", QoS::AtLeastOnce, false, "one")
        .await;
    publisher
        .publish("mail/a", QoS::ExactlyOnce, false, "two")
        .await;

    let (mut sub, session_present) =
        Client::start_session(v, broker.port(), "sleeper", false, false).await;
    assert!(session_present, "the stored session is resumed");
    let queued = sub.expect_publishes(2).await;
    let got: Vec<_> = queued.iter().map(|p| (p.payload(), p.qos)).collect();
    assert_eq!(got, [("one", QoS::AtLeastOnce), ("two", QoS::ExactlyOnce)]);

    // The subscription itself survived: new messages flow without a new SUBSCRIBE.
    publisher
        .publish("mail/b", QoS::AtLeastOnce, false, "three")
        .await;
    assert_eq!(sub.expect_publish().await.payload(), "three");
}

/// A clean start over a persistent session answers Session Present = 0 and drops the old
/// subscription: neither the message queued meanwhile nor a new one arrives.
async fn clean_start_discards_the_previous_session(v: Version) {
    let broker = TestBroker::start().await;
    let (mut sub, _) = Client::start_session(v, broker.port(), "forgetful", false, false).await;
    sub.subscribe("notes", QoS::AtLeastOnce).await;
    sub.disconnect().await;

    let mut publisher = Client::connect(v, broker.port(), "publisher").await;
    publisher
        .publish("notes", QoS::AtLeastOnce, false, "queued")
        .await;

    let (mut sub, session_present) =
        Client::start_session(v, broker.port(), "forgetful", true, false).await;
    assert!(!session_present);
    publisher
        .publish("notes", QoS::AtLeastOnce, false, "live")
        .await;
    sub.expect_no_publish().await;
}

/// A subscriber that acknowledges nothing and drops its connection gets the QoS 1 and 2
/// messages again on resuming its session: same payload, packet identifier and QoS, DUP = 1.
async fn unacknowledged_messages_are_redelivered_with_dup(v: Version) {
    let broker = TestBroker::start().await;
    let (mut sub, _) = Client::start_session(v, broker.port(), "slowpoke", false, true).await;
    sub.subscribe("work", QoS::ExactlyOnce).await;

    let mut publisher = Client::connect(v, broker.port(), "publisher").await;
    publisher
        .publish("work", QoS::AtLeastOnce, false, "at least once")
        .await;
    publisher
        .publish("work", QoS::ExactlyOnce, false, "exactly once")
        .await;
    let first = sub.expect_publishes(2).await;
    assert!(first.iter().all(|p| !p.dup), "first delivery has DUP = 0");
    sub.drop_connection().await;

    let (mut sub, session_present) =
        Client::start_session(v, broker.port(), "slowpoke", false, false).await;
    assert!(session_present);
    let again = sub.expect_publishes(2).await;
    for (before, after) in first.iter().zip(&again) {
        assert_eq!(after.payload(), before.payload());
        assert_eq!(after.pkid, before.pkid, "original packet identifier");
        assert_eq!(after.qos, before.qos);
        assert!(after.dup, "redelivery has DUP = 1: {after:?}");
    }
}

/// A DISCONNECT that reached the broker before a new CONNECT with the same client id decides what
/// the new connection finds: with Session Expiry 0 the session ended with its connection
/// [MQTT-3.1.2-23], so Clean Start 0 gets Session Present 0 [MQTT-3.2.2-2], even when the CONNECT
/// arrives on the new socket right behind the DISCONNECT on the old one. Each round sends the two
/// back to back, which makes the broker handle them in either order if it does not take care.
#[tokio::test]
async fn v5_a_disconnect_sent_before_reconnecting_is_acted_on_first() {
    use support::raw_v5::{connect, packet, read_packet, string};
    use tokio::io::AsyncWriteExt;

    let broker = TestBroker::start().await;
    let resume = |id: &str| {
        let mut body = string(b"MQTT");
        body.extend([5, 0x00, 0, 30]); // Clean Start 0, no Session Expiry: the session ends with it
        body.push(0); // no properties
        body.extend(string(id.as_bytes()));
        packet(0x10, body)
    };
    let disconnect = packet(0xE0, vec![0x00, 0x00]);
    for round in 0..40 {
        let id = format!("again-{round}");
        let mut first = tokio::net::TcpStream::connect(("127.0.0.1", broker.port()))
            .await
            .unwrap();
        first.write_all(&connect(&id, None, &[])).await.unwrap();
        let connack = read_packet(&mut first).await.expect("CONNACK");
        assert_eq!((connack.kind, connack.reason()), (2, 0));
        let mut second = tokio::net::TcpStream::connect(("127.0.0.1", broker.port()))
            .await
            .unwrap();
        first.write_all(&disconnect).await.unwrap();
        second.write_all(&resume(&id)).await.unwrap();
        let connack = read_packet(&mut second).await.expect("CONNACK");
        assert_eq!(connack.kind, 2);
        assert_eq!(
            connack.body[0] & 1,
            0,
            "round {round}: Session Present 1 for a session that ended with its connection"
        );
    }
}
