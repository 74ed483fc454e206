//! Publish/subscribe scenarios that MQTT 3.1.1 and MQTT 5 share, written once against
//! [`Client`]: `rumqttc_v311.rs` and `rumqttc_v5.rs` run each with their own version and cite the
//! statements of their own standard. A scenario takes the version and starts its own broker.

use std::collections::{BTreeMap, BTreeSet};

use rumqttc::QoS;

use super::TestBroker;
use super::client::{Client, Version};

const ALL_QOS: [QoS; 3] = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];

/// The lower of two QoS levels (`QoS` is only `PartialOrd`).
fn lower(a: QoS, b: QoS) -> QoS {
    if a <= b { a } else { b }
}

/// Subscriptions at QoS 0, 1 and 2 each get messages published at QoS 0, 1 and 2 at the lower of
/// the two levels, and the SUBACK grants what was asked. v3.1.1 asks for the three filters in one
/// SUBSCRIBE, v5 in one SUBSCRIBE each.
pub async fn delivered_qos_is_the_minimum_of_publish_and_subscription_qos(v: Version) {
    let broker = TestBroker::start().await;
    let mut sub = Client::connect(v, broker.port(), "subscriber").await;
    let filters: Vec<(String, QoS)> = ALL_QOS
        .iter()
        .map(|&q| (format!("qos/sub{}", q as u8), q))
        .collect();
    match &mut sub {
        Client::V311(client, inbox) => {
            let requested: Vec<(&str, QoS)> =
                filters.iter().map(|(f, q)| (f.as_str(), *q)).collect();
            let granted = super::v311::subscribe_many(client, inbox, &requested).await;
            assert_eq!(granted, ALL_QOS, "the broker grants what was asked");
        }
        Client::V5(..) => {
            for (filter, qos) in &filters {
                let granted = sub.subscribe(filter, *qos).await;
                assert_eq!(granted, *qos, "the broker grants what was asked");
            }
        }
    }

    let mut publisher = Client::connect(v, broker.port(), "publisher").await;
    for (topic, _) in &filters {
        for publish_qos in ALL_QOS {
            let payload = format!("published at {}", publish_qos as u8);
            publisher.publish(topic, publish_qos, false, payload).await;
        }
    }

    let mut delivered = BTreeMap::new();
    for message in sub.expect_publishes(9).await {
        delivered.insert(
            (message.topic.clone(), message.payload().to_owned()),
            message.qos,
        );
    }
    for (topic, sub_qos) in &filters {
        for publish_qos in ALL_QOS {
            let key = (topic.clone(), format!("published at {}", publish_qos as u8));
            assert_eq!(
                delivered.get(&key),
                Some(&lower(*sub_qos, publish_qos)),
                "{key:?}"
            );
        }
    }
    sub.expect_no_publish().await;
}

/// A retained message reaches an established subscription live with RETAIN = 0 and a later
/// wildcard subscription from the store with RETAIN = 1.
pub async fn retained_message_is_sent_to_new_subscribers_with_retain_flag(v: Version) {
    let broker = TestBroker::start().await;
    let mut early = Client::connect(v, broker.port(), "early").await;
    early.subscribe("sensors/temp", QoS::AtLeastOnce).await;

    let mut publisher = Client::connect(v, broker.port(), "publisher").await;
    publisher
        .publish("sensors/temp", QoS::AtLeastOnce, true, "21.5")
        .await;
    let live = early.expect_publish().await;
    assert_eq!(live.payload(), "21.5");
    assert!(
        !live.retain,
        "live delivery to an established subscription has RETAIN = 0"
    );

    let mut late = Client::connect(v, broker.port(), "late").await;
    late.subscribe("sensors/+", QoS::AtLeastOnce).await;
    let stored = late.expect_publish().await;
    assert_eq!(stored.topic, "sensors/temp");
    assert_eq!(stored.payload(), "21.5");
    assert_eq!(stored.qos, QoS::AtLeastOnce);
    assert!(
        stored.retain,
        "delivery for a new subscription has RETAIN = 1"
    );
}

/// A retained QoS 0 message replaces the retained QoS 1 message before it.
pub async fn new_retained_message_replaces_the_previous_one(v: Version) {
    let broker = TestBroker::start().await;
    let mut publisher = Client::connect(v, broker.port(), "publisher").await;
    publisher
        .publish("state", QoS::AtLeastOnce, true, "first")
        .await;
    publisher
        .publish("state", QoS::AtMostOnce, true, "second")
        .await;
    // A QoS 1 publish after the QoS 0 one: once it is acknowledged, the QoS 0 one was handled.
    publisher
        .publish("other", QoS::AtLeastOnce, true, "x")
        .await;

    let mut sub = Client::connect(v, broker.port(), "subscriber").await;
    sub.subscribe("state", QoS::AtLeastOnce).await;
    let retained = sub.expect_publish().await;
    assert_eq!(retained.payload(), "second");
    assert!(retained.retain);
    sub.expect_no_publish().await;
}

/// A retained empty message is delivered to the subscribers and deletes the retained message.
pub async fn empty_retained_message_deletes_the_retained_message(v: Version) {
    let broker = TestBroker::start().await;
    let mut publisher = Client::connect(v, broker.port(), "publisher").await;
    publisher
        .publish("lamp/state", QoS::AtLeastOnce, true, "on")
        .await;
    publisher
        .publish("lamp/marker", QoS::AtLeastOnce, true, "m")
        .await;

    let mut watcher = Client::connect(v, broker.port(), "watcher").await;
    watcher.subscribe("lamp/state", QoS::AtLeastOnce).await;
    assert_eq!(watcher.expect_publish().await.payload(), "on");

    publisher
        .publish("lamp/state", QoS::AtLeastOnce, true, "")
        .await;
    let deletion = watcher.expect_publish().await;
    assert_eq!(deletion.topic, "lamp/state");
    assert!(
        deletion.payload.is_empty(),
        "the empty message is delivered as normal"
    );

    // The marker is the only retained message left under lamp/#.
    let mut late = Client::connect(v, broker.port(), "late").await;
    late.subscribe("lamp/#", QoS::AtLeastOnce).await;
    let only = late.expect_publish().await;
    assert_eq!(only.topic, "lamp/marker");
    late.expect_no_publish().await;
}

/// A message published with RETAIN = 0 leaves the retained message of its topic as it was.
pub async fn non_retained_publish_leaves_the_retained_message_alone(v: Version) {
    let broker = TestBroker::start().await;
    let mut publisher = Client::connect(v, broker.port(), "publisher").await;
    publisher
        .publish("config", QoS::AtLeastOnce, true, "v1")
        .await;
    publisher
        .publish("config", QoS::AtLeastOnce, false, "v2")
        .await;

    let mut sub = Client::connect(v, broker.port(), "subscriber").await;
    sub.subscribe("config", QoS::AtLeastOnce).await;
    assert_eq!(sub.expect_publish().await.payload(), "v1");
    sub.expect_no_publish().await;
}

/// After UNSUBSCRIBE from `news/#` only the other subscription (`marker`) still delivers.
pub async fn unsubscribed_client_receives_no_further_messages(v: Version) {
    let broker = TestBroker::start().await;
    let mut sub = Client::connect(v, broker.port(), "subscriber").await;
    sub.subscribe("news/#", QoS::AtLeastOnce).await;
    sub.subscribe("marker", QoS::AtLeastOnce).await;

    let mut publisher = Client::connect(v, broker.port(), "publisher").await;
    publisher
        .publish("news/a", QoS::AtLeastOnce, false, "before")
        .await;
    assert_eq!(sub.expect_publish().await.payload(), "before");

    sub.unsubscribe("news/#").await;
    publisher
        .publish("news/a", QoS::AtLeastOnce, false, "after")
        .await;
    publisher
        .publish("marker", QoS::AtLeastOnce, false, "end")
        .await;
    let next = sub.expect_publish().await;
    assert_eq!((next.topic.as_str(), next.payload()), ("marker", "end"));
    sub.expect_no_publish().await;
}

/// Six filters with `+` and `#` at various levels each receive exactly the matching topics.
pub async fn wildcard_filters_match_by_level(v: Version) {
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
        let mut client = Client::connect(v, broker.port(), &format!("sub{i}")).await;
        client.subscribe(filter, QoS::AtLeastOnce).await;
        subscribers.push(client);
    }

    let mut publisher = Client::connect(v, broker.port(), "publisher").await;
    for topic in topics {
        publisher
            .publish(topic, QoS::AtLeastOnce, false, topic)
            .await;
    }

    for ((filter, expected), client) in cases.iter().zip(subscribers.iter_mut()) {
        let received: BTreeSet<String> = client
            .expect_publishes(expected.len())
            .await
            .into_iter()
            .map(|p| p.topic)
            .collect();
        let expected: BTreeSet<String> = expected.iter().map(|t| t.to_string()).collect();
        assert_eq!(received, expected, "filter {filter}");
        client.expect_no_publish().await;
    }
}

/// `#` and `+/status` do not receive `$app/status`; `$app/#` does.
pub async fn wildcards_do_not_match_topics_starting_with_dollar(v: Version) {
    let broker = TestBroker::start().await;
    let mut all = Client::connect(v, broker.port(), "all").await;
    all.subscribe("#", QoS::AtLeastOnce).await;
    let mut plus = Client::connect(v, broker.port(), "plus").await;
    plus.subscribe("+/status", QoS::AtLeastOnce).await;
    let mut dollar = Client::connect(v, broker.port(), "dollar").await;
    dollar.subscribe("$app/#", QoS::AtLeastOnce).await;

    let mut publisher = Client::connect(v, broker.port(), "publisher").await;
    publisher
        .publish("$app/status", QoS::AtLeastOnce, false, "hidden")
        .await;
    publisher
        .publish("app/status", QoS::AtLeastOnce, false, "visible")
        .await;

    assert_eq!(dollar.expect_publish().await.payload(), "hidden");
    for client in [&mut all, &mut plus] {
        let first = client.expect_publish().await;
        assert_eq!(first.topic, "app/status");
        client.expect_no_publish().await;
    }
}

/// 200 QoS 1 messages from one publisher arrive in the order they were published.
pub async fn qos1_messages_on_one_topic_arrive_in_publish_order(v: Version) {
    let broker = TestBroker::start().await;
    let mut sub = Client::connect(v, broker.port(), "subscriber").await;
    sub.subscribe("ordered", QoS::AtLeastOnce).await;

    let mut publisher = Client::connect(v, broker.port(), "publisher").await;
    const COUNT: usize = 200;
    for i in 0..COUNT {
        publisher
            .queue_publish("ordered", QoS::AtLeastOnce, false, i.to_string())
            .await;
    }
    for _ in 0..COUNT {
        publisher
            .expect_publish_acknowledged(QoS::AtLeastOnce)
            .await;
    }
    let received: Vec<usize> = sub
        .expect_publishes(COUNT)
        .await
        .iter()
        .map(|p| p.payload().parse().expect("a sequence number"))
        .collect();
    assert_eq!(received, (0..COUNT).collect::<Vec<_>>());
}

/// 50 subscribers of one topic each receive all 10 messages, in order.
pub async fn every_one_of_fifty_subscribers_receives_each_message(v: Version) {
    let broker = TestBroker::start().await;
    let mut subscribers = Vec::new();
    for i in 0..50 {
        let mut client = Client::connect(v, broker.port(), &format!("fan{i}")).await;
        client.subscribe("broadcast", QoS::AtLeastOnce).await;
        subscribers.push(client);
    }
    let mut publisher = Client::connect(v, broker.port(), "publisher").await;
    for i in 0..10 {
        publisher
            .publish("broadcast", QoS::AtLeastOnce, false, format!("{i}"))
            .await;
    }
    for (i, client) in subscribers.iter_mut().enumerate() {
        let received: Vec<String> = client
            .expect_publishes(10)
            .await
            .iter()
            .map(|p| p.payload().to_owned())
            .collect();
        let expected: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        assert_eq!(received, expected, "subscriber fan{i}");
    }
}

/// Ten concurrent publishers of 50 QoS 1 messages each: the `load/#` subscriber gets every
/// message once, each publisher's in its order.
pub async fn wildcard_subscriber_receives_every_message_from_many_publishers(v: Version) {
    const PUBLISHERS: usize = 10;
    const EACH: usize = 50;
    let broker = TestBroker::start().await;
    let mut sub = Client::connect(v, broker.port(), "collector").await;
    sub.subscribe("load/#", QoS::AtLeastOnce).await;

    let port = broker.port();
    let mut senders = Vec::new();
    for p in 0..PUBLISHERS {
        senders.push(tokio::spawn(async move {
            let mut client = Client::connect(v, port, &format!("pub{p}")).await;
            for seq in 0..EACH {
                client
                    .queue_publish(
                        &format!("load/{p}"),
                        QoS::AtLeastOnce,
                        false,
                        seq.to_string(),
                    )
                    .await;
            }
            for _ in 0..EACH {
                client.expect_publish_acknowledged(QoS::AtLeastOnce).await;
            }
            client.disconnect().await;
        }));
    }
    for sender in senders {
        sender.await.expect("publisher task");
    }

    let mut per_publisher: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for message in sub.expect_publishes(PUBLISHERS * EACH).await {
        let seq = message.payload().parse().expect("a sequence number");
        per_publisher.entry(message.topic).or_default().push(seq);
    }
    assert_eq!(per_publisher.len(), PUBLISHERS);
    for (topic, seqs) in per_publisher {
        assert_eq!(seqs, (0..EACH).collect::<Vec<_>>(), "messages on {topic}");
    }
    sub.expect_no_publish().await;
}
