//! MQTT 5 publish/subscribe against the real broker with `rumqttc::v5`: QoS levels, retained
//! messages, unsubscribe, wildcards, ordering and fan-in/fan-out. The v5-only features are in
//! `v5_features.rs`.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, UnsubAckReason};
use support::v5::*;
use support::{QUIET, TestBroker, WAIT};

const ALL_QOS: [QoS; 3] = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];

fn qos_name(qos: QoS) -> u8 {
    qos as u8
}

/// The lower of two QoS levels (`QoS` is only `PartialOrd`).
fn lower(a: QoS, b: QoS) -> QoS {
    if a <= b { a } else { b }
}

/// [MQTT-3.8.4-8] The QoS of a delivered message is the minimum of the QoS it was published
/// with and the QoS granted to the subscription; [MQTT-3.8.4-7] the SUBACK shows the granted QoS.
#[tokio::test]
async fn delivered_qos_is_the_minimum_of_publish_and_subscription_qos() {
    let broker = TestBroker::start().await;
    let (sub, mut sub_inbox) = connect(broker.port(), "subscriber").await;
    let filters: Vec<(String, QoS)> = ALL_QOS
        .iter()
        .map(|&q| (format!("qos/sub{}", qos_name(q)), q))
        .collect();
    for (filter, qos) in &filters {
        let granted = subscribe(&sub, &mut sub_inbox, filter, *qos).await;
        assert_eq!(granted, *qos, "the broker grants what was asked");
    }

    let (publisher, mut pub_inbox) = connect(broker.port(), "publisher").await;
    for (name, _) in &filters {
        for publish_qos in ALL_QOS {
            let payload = format!("published at {}", qos_name(publish_qos));
            publish(
                &publisher,
                &mut pub_inbox,
                name,
                publish_qos,
                false,
                payload,
            )
            .await;
        }
    }

    let mut delivered = BTreeMap::new();
    for message in expect_publishes(&mut sub_inbox, 9, WAIT).await {
        delivered.insert(
            (topic(&message).to_owned(), payload(&message).to_owned()),
            message.qos,
        );
    }
    for (name, sub_qos) in &filters {
        for publish_qos in ALL_QOS {
            let key = (
                name.clone(),
                format!("published at {}", qos_name(publish_qos)),
            );
            assert_eq!(
                delivered.get(&key),
                Some(&lower(*sub_qos, publish_qos)),
                "{key:?}"
            );
        }
    }
    expect_no_publish(&mut sub_inbox, QUIET).await;
}

/// [MQTT-3.3.1-5] A retained message is stored and [MQTT-3.3.1-9] sent to a new subscription
/// (Retain Handling 0) with RETAIN = 1 (§3.3.1.3), while [MQTT-3.3.1-12] an established
/// subscription without Retain As Published gets the same message with RETAIN = 0.
#[tokio::test]
async fn retained_message_is_sent_to_new_subscribers_with_retain_flag() {
    let broker = TestBroker::start().await;
    let (early, mut early_inbox) = connect(broker.port(), "early").await;
    subscribe(&early, &mut early_inbox, "sensors/temp", QoS::AtLeastOnce).await;

    let (publisher, mut pub_inbox) = connect(broker.port(), "publisher").await;
    publish(
        &publisher,
        &mut pub_inbox,
        "sensors/temp",
        QoS::AtLeastOnce,
        true,
        "21.5",
    )
    .await;
    let live = expect_publish(&mut early_inbox, WAIT).await;
    assert_eq!(payload(&live), "21.5");
    assert!(
        !live.retain,
        "live delivery to an established subscription has RETAIN = 0"
    );

    let (late, mut late_inbox) = connect(broker.port(), "late").await;
    subscribe(&late, &mut late_inbox, "sensors/+", QoS::AtLeastOnce).await;
    let stored = expect_publish(&mut late_inbox, WAIT).await;
    assert_eq!(topic(&stored), "sensors/temp");
    assert_eq!(payload(&stored), "21.5");
    assert_eq!(stored.qos, QoS::AtLeastOnce);
    assert!(
        stored.retain,
        "delivery for a new subscription has RETAIN = 1"
    );
}

/// [MQTT-3.3.1-5] A new retained message (here at QoS 0) replaces the one stored for its topic:
/// a new subscriber gets only the newest.
#[tokio::test]
async fn new_retained_message_replaces_the_previous_one() {
    let broker = TestBroker::start().await;
    let (publisher, mut pub_inbox) = connect(broker.port(), "publisher").await;
    publish(
        &publisher,
        &mut pub_inbox,
        "state",
        QoS::AtLeastOnce,
        true,
        "first",
    )
    .await;
    publish(
        &publisher,
        &mut pub_inbox,
        "state",
        QoS::AtMostOnce,
        true,
        "second",
    )
    .await;
    // A QoS 1 publish after the QoS 0 one: once it is acknowledged, the QoS 0 one was handled.
    publish(
        &publisher,
        &mut pub_inbox,
        "other",
        QoS::AtLeastOnce,
        true,
        "x",
    )
    .await;

    let (sub, mut sub_inbox) = connect(broker.port(), "subscriber").await;
    subscribe(&sub, &mut sub_inbox, "state", QoS::AtLeastOnce).await;
    let retained = expect_publish(&mut sub_inbox, WAIT).await;
    assert_eq!(payload(&retained), "second");
    assert!(retained.retain);
    expect_no_publish(&mut sub_inbox, QUIET).await;
}

/// [MQTT-3.3.1-6] A retained PUBLISH with an empty payload is delivered as normal and removes
/// the retained message; [MQTT-3.3.1-7] the empty message itself is not stored.
#[tokio::test]
async fn empty_retained_message_deletes_the_retained_message() {
    let broker = TestBroker::start().await;
    let (publisher, mut pub_inbox) = connect(broker.port(), "publisher").await;
    publish(
        &publisher,
        &mut pub_inbox,
        "lamp/state",
        QoS::AtLeastOnce,
        true,
        "on",
    )
    .await;
    publish(
        &publisher,
        &mut pub_inbox,
        "lamp/marker",
        QoS::AtLeastOnce,
        true,
        "m",
    )
    .await;

    let (watcher, mut watcher_inbox) = connect(broker.port(), "watcher").await;
    subscribe(&watcher, &mut watcher_inbox, "lamp/state", QoS::AtLeastOnce).await;
    assert_eq!(
        payload(&expect_publish(&mut watcher_inbox, WAIT).await),
        "on"
    );

    publish(
        &publisher,
        &mut pub_inbox,
        "lamp/state",
        QoS::AtLeastOnce,
        true,
        "",
    )
    .await;
    let deletion = expect_publish(&mut watcher_inbox, WAIT).await;
    assert_eq!(topic(&deletion), "lamp/state");
    assert!(
        deletion.payload.is_empty(),
        "the empty message is delivered as normal"
    );

    // The marker is the only retained message left under lamp/#.
    let (late, mut late_inbox) = connect(broker.port(), "late").await;
    subscribe(&late, &mut late_inbox, "lamp/#", QoS::AtLeastOnce).await;
    let only = expect_publish(&mut late_inbox, WAIT).await;
    assert_eq!(topic(&only), "lamp/marker");
    expect_no_publish(&mut late_inbox, QUIET).await;
}

/// [MQTT-3.3.1-8] A PUBLISH with RETAIN = 0 neither stores nor replaces the retained message.
#[tokio::test]
async fn non_retained_publish_leaves_the_retained_message_alone() {
    let broker = TestBroker::start().await;
    let (publisher, mut pub_inbox) = connect(broker.port(), "publisher").await;
    publish(
        &publisher,
        &mut pub_inbox,
        "config",
        QoS::AtLeastOnce,
        true,
        "v1",
    )
    .await;
    publish(
        &publisher,
        &mut pub_inbox,
        "config",
        QoS::AtLeastOnce,
        false,
        "v2",
    )
    .await;

    let (sub, mut sub_inbox) = connect(broker.port(), "subscriber").await;
    subscribe(&sub, &mut sub_inbox, "config", QoS::AtLeastOnce).await;
    assert_eq!(payload(&expect_publish(&mut sub_inbox, WAIT).await), "v1");
    expect_no_publish(&mut sub_inbox, QUIET).await;
}

/// [MQTT-3.10.4-1] UNSUBSCRIBE deletes the subscription with the identical filter and
/// [MQTT-3.10.4-2] the broker stops adding messages for it; other subscriptions go on.
#[tokio::test]
async fn unsubscribed_client_receives_no_further_messages() {
    let broker = TestBroker::start().await;
    let (sub, mut sub_inbox) = connect(broker.port(), "subscriber").await;
    subscribe(&sub, &mut sub_inbox, "news/#", QoS::AtLeastOnce).await;
    subscribe(&sub, &mut sub_inbox, "marker", QoS::AtLeastOnce).await;

    let (publisher, mut pub_inbox) = connect(broker.port(), "publisher").await;
    publish(
        &publisher,
        &mut pub_inbox,
        "news/a",
        QoS::AtLeastOnce,
        false,
        "before",
    )
    .await;
    assert_eq!(
        payload(&expect_publish(&mut sub_inbox, WAIT).await),
        "before"
    );

    unsubscribe(&sub, &mut sub_inbox, "news/#").await;
    publish(
        &publisher,
        &mut pub_inbox,
        "news/a",
        QoS::AtLeastOnce,
        false,
        "after",
    )
    .await;
    publish(
        &publisher,
        &mut pub_inbox,
        "marker",
        QoS::AtLeastOnce,
        false,
        "end",
    )
    .await;
    let next = expect_publish(&mut sub_inbox, WAIT).await;
    assert_eq!((topic(&next), payload(&next)), ("marker", "end"));
    expect_no_publish(&mut sub_inbox, QUIET).await;
}

/// [MQTT-3.10.4-5] UNSUBSCRIBE of a filter the client never subscribed to is still answered,
/// with reason code 0x11 (No subscription existed).
#[tokio::test]
async fn unsubscribe_without_subscription_is_still_acknowledged() {
    let broker = TestBroker::start().await;
    let (client, mut inbox) = connect(broker.port(), "client").await;
    client
        .unsubscribe("never/subscribed")
        .await
        .expect("queue UNSUBSCRIBE");
    let reasons = inbox
        .next_matching("UNSUBACK", WAIT, |p| match p {
            Packet::UnsubAck(u) => Some(u.reasons.clone()),
            _ => None,
        })
        .await;
    assert_eq!(reasons, [UnsubAckReason::NoSubscriptionExisted]);
}

/// [MQTT-3.3.2-3] Messages go exactly to the subscriptions whose filter matches the topic name:
/// `+` matches one whole level, `#` the parent level and any number of levels below (§4.7.1).
#[tokio::test]
async fn wildcard_filters_match_by_level() {
    let broker = TestBroker::start().await;
    let topics = ["a", "a/b", "a/b/c", "a/b/d", "a/b/c/d", "x", "a//c"];
    let cases: [(&str, &[&str]); 6] = [
        ("a/+/c", &["a/b/c", "a//c"]),
        ("a/#", &["a", "a/b", "a/b/c", "a/b/d", "a/b/c/d", "a//c"]),
        ("+", &["a", "x"]),
        ("#", &topics),
        ("+/b/#", &["a/b", "a/b/c", "a/b/d", "a/b/c/d"]),
        ("a/b/c", &["a/b/c"]),
    ];
    let mut subscribers = Vec::new();
    for (i, (filter, _)) in cases.iter().enumerate() {
        let (client, mut inbox) = connect(broker.port(), &format!("sub{i}")).await;
        subscribe(&client, &mut inbox, filter, QoS::AtLeastOnce).await;
        subscribers.push((client, inbox));
    }

    let (publisher, mut pub_inbox) = connect(broker.port(), "publisher").await;
    for name in topics {
        publish(
            &publisher,
            &mut pub_inbox,
            name,
            QoS::AtLeastOnce,
            false,
            name,
        )
        .await;
    }

    for ((filter, expected), (_client, inbox)) in cases.iter().zip(subscribers.iter_mut()) {
        let received: BTreeSet<String> = expect_publishes(inbox, expected.len(), WAIT)
            .await
            .into_iter()
            .map(|p| topic(&p).to_owned())
            .collect();
        let expected: BTreeSet<String> = expected.iter().map(|t| t.to_string()).collect();
        assert_eq!(received, expected, "filter {filter}");
        expect_no_publish(inbox, QUIET).await;
    }
}

/// [MQTT-4.7.2-1] Filters starting with a wildcard do not match topic names starting with `$`;
/// a filter that names the `$` level does.
#[tokio::test]
async fn wildcards_do_not_match_topics_starting_with_dollar() {
    let broker = TestBroker::start().await;
    let (all, mut all_inbox) = connect(broker.port(), "all").await;
    subscribe(&all, &mut all_inbox, "#", QoS::AtLeastOnce).await;
    let (plus, mut plus_inbox) = connect(broker.port(), "plus").await;
    subscribe(&plus, &mut plus_inbox, "+/status", QoS::AtLeastOnce).await;
    let (dollar, mut dollar_inbox) = connect(broker.port(), "dollar").await;
    subscribe(&dollar, &mut dollar_inbox, "$app/#", QoS::AtLeastOnce).await;

    let (publisher, mut pub_inbox) = connect(broker.port(), "publisher").await;
    publish(
        &publisher,
        &mut pub_inbox,
        "$app/status",
        QoS::AtLeastOnce,
        false,
        "hidden",
    )
    .await;
    publish(
        &publisher,
        &mut pub_inbox,
        "app/status",
        QoS::AtLeastOnce,
        false,
        "visible",
    )
    .await;

    assert_eq!(
        payload(&expect_publish(&mut dollar_inbox, WAIT).await),
        "hidden"
    );
    for inbox in [&mut all_inbox, &mut plus_inbox] {
        let first = expect_publish(inbox, WAIT).await;
        assert_eq!(topic(&first), "app/status");
        expect_no_publish(inbox, QUIET).await;
    }
}

/// [MQTT-4.6.0-5] [MQTT-4.6.0-6] Every topic is an ordered topic: QoS 1 messages from one
/// publisher reach a subscriber in the order they were published.
#[tokio::test]
async fn qos1_messages_on_one_topic_arrive_in_publish_order() {
    let broker = TestBroker::start().await;
    let (sub, mut sub_inbox) = connect(broker.port(), "subscriber").await;
    subscribe(&sub, &mut sub_inbox, "ordered", QoS::AtLeastOnce).await;

    let (publisher, mut pub_inbox) = connect(broker.port(), "publisher").await;
    const COUNT: usize = 200;
    for i in 0..COUNT {
        publisher
            .publish("ordered", QoS::AtLeastOnce, false, i.to_string())
            .await
            .expect("queue PUBLISH");
    }
    for _ in 0..COUNT {
        expect_publish_acknowledged(&mut pub_inbox, QoS::AtLeastOnce).await;
    }
    let received: Vec<usize> = expect_publishes(&mut sub_inbox, COUNT, WAIT)
        .await
        .iter()
        .map(|p| payload(p).parse().expect("a sequence number"))
        .collect();
    assert_eq!(received, (0..COUNT).collect::<Vec<_>>());
}

/// [MQTT-4.5.0-1] The broker adds a message to the session of every client with a matching
/// subscription: 50 subscribers each receive every message, in order.
#[tokio::test]
async fn every_one_of_fifty_subscribers_receives_each_message() {
    let broker = TestBroker::start().await;
    let mut subscribers = Vec::new();
    for i in 0..50 {
        let (client, mut inbox) = connect(broker.port(), &format!("fan{i}")).await;
        subscribe(&client, &mut inbox, "broadcast", QoS::AtLeastOnce).await;
        subscribers.push((client, inbox));
    }
    let (publisher, mut pub_inbox) = connect(broker.port(), "publisher").await;
    for i in 0..10 {
        publish(
            &publisher,
            &mut pub_inbox,
            "broadcast",
            QoS::AtLeastOnce,
            false,
            format!("{i}"),
        )
        .await;
    }
    for (i, (_client, inbox)) in subscribers.iter_mut().enumerate() {
        let received: Vec<String> = expect_publishes(inbox, 10, WAIT)
            .await
            .iter()
            .map(|p| payload(p).to_owned())
            .collect();
        let expected: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        assert_eq!(received, expected, "subscriber fan{i}");
    }
}

/// [MQTT-4.5.0-1] [MQTT-4.6.0-6] Ten publishers sending QoS 1 at once to one wildcard
/// subscriber: every message arrives exactly once, each publisher's in its own order.
#[tokio::test]
async fn wildcard_subscriber_receives_every_message_from_many_publishers() {
    const PUBLISHERS: usize = 10;
    const EACH: usize = 50;
    let broker = TestBroker::start().await;
    let (sub, mut sub_inbox) = connect(broker.port(), "collector").await;
    subscribe(&sub, &mut sub_inbox, "load/#", QoS::AtLeastOnce).await;

    let port = broker.port();
    let mut senders = Vec::new();
    for p in 0..PUBLISHERS {
        senders.push(tokio::spawn(async move {
            let (client, mut inbox) = connect(port, &format!("pub{p}")).await;
            for seq in 0..EACH {
                client
                    .publish(
                        format!("load/{p}"),
                        QoS::AtLeastOnce,
                        false,
                        seq.to_string(),
                    )
                    .await
                    .expect("queue PUBLISH");
            }
            for _ in 0..EACH {
                expect_publish_acknowledged(&mut inbox, QoS::AtLeastOnce).await;
            }
            disconnect(&client, &mut inbox).await;
        }));
    }
    for sender in senders {
        sender.await.expect("publisher task");
    }

    let mut per_publisher: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for message in expect_publishes(&mut sub_inbox, PUBLISHERS * EACH, WAIT).await {
        let seq = payload(&message).parse().expect("a sequence number");
        per_publisher
            .entry(topic(&message).to_owned())
            .or_default()
            .push(seq);
    }
    assert_eq!(per_publisher.len(), PUBLISHERS);
    for (name, seqs) in per_publisher {
        assert_eq!(seqs, (0..EACH).collect::<Vec<_>>(), "messages on {name}");
    }
    expect_no_publish(&mut sub_inbox, QUIET).await;
}
