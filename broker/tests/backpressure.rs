//! Backpressure towards publishers (docs/behaviour.md, "Backpressure"): a connected subscriber
//! whose queue backs up slows the publishers feeding it instead of losing their messages, and
//! the wait is bounded, so a subscriber that stops reading or leaves does not stall them.
//!
//! The subscriber uses manual acknowledgements and a small Receive Maximum, so the broker may
//! send it only a few QoS 1 messages at a time [MQTT-3.3.4-9] and the rest waits in its session
//! queue: the test decides when that queue drains by deciding when to acknowledge.
//!
//! Tern's own behaviour (the MQTT specification leaves flow control between clients to the
//! server), so these tests do not run against the reference broker.

#![allow(clippy::expect_used, reason = "test code: a panic is a test failure")]

mod support;

use std::ops::Range;
use std::time::Instant;

use rumqttc::v5::AsyncClient;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish};
use support::{QUIET, TestBroker, WAIT, skip_on_mosquitto, v5};

/// Messages each test publishes: far more than the queue and the marks below.
const MESSAGES: usize = 300;
/// The subscriber's Receive Maximum.
const SUBSCRIBER_WINDOW: u16 = 5;
/// How long a member is read from before the next one is.
const SHORT: std::time::Duration = std::time::Duration::from_millis(50);

/// A broker configuration with these limits and the default `backlog_max_delay_ms`.
fn config(max_queued: usize, high_water: usize, max_pause_ms: u64) -> String {
    format!(
        "limits:\n  max_queued_messages: {max_queued}\n  backlog_high_water: {high_water}\n  backlog_max_pause_ms: {max_pause_ms}\n"
    )
}

/// `config` with `backlog_max_delay_ms` set: 0 pauses by length only.
fn config_with_delay(
    max_queued: usize,
    high_water: usize,
    max_pause_ms: u64,
    delay_ms: u64,
) -> String {
    format!(
        "{}  backlog_max_delay_ms: {delay_ms}\n",
        config(max_queued, high_water, max_pause_ms)
    )
}

/// A subscriber to `topic` that acknowledges only when the test says so.
async fn slow_subscriber(port: u16, client_id: &str, topic: &str) -> (AsyncClient, v5::Inbox) {
    let mut options = v5::options(port, client_id);
    options.set_manual_acks(true);
    options.set_receive_maximum(Some(SUBSCRIBER_WINDOW));
    let (client, mut inbox, _) = v5::start(options).await;
    v5::subscribe(&client, &mut inbox, topic, QoS::AtLeastOnce).await;
    (client, inbox)
}

/// Queues `MESSAGES` QoS 1 messages numbered from 0 without waiting for their PUBACKs.
async fn publish_all(publisher: &AsyncClient, topic: &str) {
    publish_numbered(publisher, topic, 0..MESSAGES).await;
}

/// Queues QoS 1 messages whose payloads are the numbers in `numbers`, without waiting for PUBACKs.
async fn publish_numbered(publisher: &AsyncClient, topic: &str, numbers: Range<usize>) {
    for i in numbers {
        publisher
            .publish(topic, QoS::AtLeastOnce, false, format!("{i}"))
            .await
            .expect("queue PUBLISH");
    }
}

/// PUBACKs that arrive until none has for `QUIET`.
async fn pubacks_until_quiet(inbox: &mut v5::Inbox) -> usize {
    let mut count = 0;
    while inbox
        .next_matching_within("PUBACK", QUIET, |p| {
            matches!(p, Packet::PubAck(_)).then_some(())
        })
        .await
        .is_some()
    {
        count += 1;
    }
    count
}

/// Waits for `count` PUBACKs, all within `WAIT`.
async fn expect_pubacks(inbox: &mut v5::Inbox, count: usize) {
    let deadline = Instant::now() + WAIT;
    for received in 0..count {
        let left = deadline.saturating_duration_since(Instant::now());
        let ack = inbox
            .next_matching_within("PUBACK", left, |p| {
                matches!(p, Packet::PubAck(_)).then_some(())
            })
            .await;
        assert!(
            ack.is_some(),
            "{received} of {count} PUBACKs within {WAIT:?}"
        );
    }
}

/// Receives and acknowledges until `count` messages came in; returns their payloads in order.
async fn receive_and_ack(client: &AsyncClient, inbox: &mut v5::Inbox, count: usize) -> Vec<usize> {
    let mut received = Vec::with_capacity(count);
    while received.len() < count {
        let publish: Publish = v5::expect_publish(inbox, WAIT).await;
        received.push(v5::payload(&publish).parse().expect("a number"));
        client.ack(&publish).await.expect("queue PUBACK");
    }
    received
}

/// The subscriber acknowledges everything: all `MESSAGES` arrive, in order [MQTT-4.6.0-5], and
/// the publisher, which had `acknowledged` PUBACKs, gets the rest.
async fn catch_up(
    subscriber: &AsyncClient,
    sub_inbox: &mut v5::Inbox,
    pub_inbox: &mut v5::Inbox,
    acknowledged: usize,
) {
    let received = receive_and_ack(subscriber, sub_inbox, MESSAGES).await;
    assert_eq!(
        received,
        (0..MESSAGES).collect::<Vec<_>>(),
        "every message, in order"
    );
    expect_pubacks(pub_inbox, MESSAGES - acknowledged).await;
}

/// The publisher is not read from while the subscriber's queue is backlogged: it gets PUBACKs for
/// only part of what it sent. Once the subscriber acknowledges, everything arrives, in order
/// [MQTT-4.6.0-5], and nothing was dropped at the queue's limit.
#[tokio::test]
async fn a_slow_subscriber_slows_the_publisher_and_loses_nothing() {
    if skip_on_mosquitto("Tern's backpressure") {
        return;
    }
    // The queue holds 50; publishers wait from 20 queued until 10, and for up to a minute.
    let broker = TestBroker::start_with(&config(50, 20, 60_000)).await;
    let (subscriber, mut sub_inbox) = slow_subscriber(broker.port(), "slow", "feed").await;
    let (publisher, mut pub_inbox) = v5::connect(broker.port(), "fast").await;

    publish_all(&publisher, "feed").await;
    let acknowledged = pubacks_until_quiet(&mut pub_inbox).await;
    assert!(
        acknowledged < MESSAGES,
        "while the subscriber acknowledges nothing, the publisher must not get through all \
         {MESSAGES} messages (it got {acknowledged} PUBACKs): the queue holds only 50"
    );

    catch_up(&subscriber, &mut sub_inbox, &mut pub_inbox, acknowledged).await;
}

/// A queue far below the high-water mark still counts as backlogged once it spans
/// `backlog_max_delay_ms` of publishing: the publisher is paused, and goes on, losing nothing,
/// once the subscriber catches up.
#[tokio::test]
async fn a_subscriber_falling_behind_in_time_slows_the_publisher() {
    if skip_on_mosquitto("Tern's backpressure") {
        return;
    }
    // The length alone would never pause anyone here: 300 messages against a mark of 5,000.
    // The delay is long enough that the first batch, however slow the machine, is not paused.
    let broker = TestBroker::start_with(&config_with_delay(10_000, 5_000, 60_000, 200)).await;
    let (subscriber, mut sub_inbox) = slow_subscriber(broker.port(), "behind", "feed").await;
    let (publisher, mut pub_inbox) = v5::connect(broker.port(), "steady").await;

    // A first batch queues up within a few milliseconds; the next comes well after the delay.
    let first = MESSAGES / 3;
    publish_numbered(&publisher, "feed", 0..first).await;
    expect_pubacks(&mut pub_inbox, first).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    publish_numbered(&publisher, "feed", first..MESSAGES).await;
    let acknowledged = first + pubacks_until_quiet(&mut pub_inbox).await;
    assert!(
        acknowledged < MESSAGES,
        "once the subscriber's queue spans more than 200 ms, the publisher must not be read \
         (it got {acknowledged} of {MESSAGES} PUBACKs)"
    );

    catch_up(&subscriber, &mut sub_inbox, &mut pub_inbox, acknowledged).await;
}

/// Many publishers paused by one subscriber all go on as it drains, a few at a time: every
/// message arrives, each publisher's in its order [MQTT-4.6.0-5], and every publisher gets all
/// its PUBACKs. (Waiters who were never woken would wait the minute-long pause.)
#[tokio::test]
async fn publishers_paused_together_all_go_on_as_the_subscriber_drains() {
    if skip_on_mosquitto("Tern's backpressure") {
        return;
    }
    const PUBLISHERS: usize = 10;
    let broker = TestBroker::start_with(&config(50, 20, 60_000)).await;
    let (subscriber, mut sub_inbox) = slow_subscriber(broker.port(), "slow", "feed/+").await;
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let (publisher, inbox) = v5::connect(broker.port(), &format!("fast-{p}")).await;
        publish_all(&publisher, &format!("feed/{p}")).await;
        publishers.push((publisher, inbox));
    }

    let mut next = [0_usize; PUBLISHERS];
    for _ in 0..PUBLISHERS * MESSAGES {
        let publish: Publish = v5::expect_publish(&mut sub_inbox, WAIT).await;
        let topic = std::str::from_utf8(&publish.topic).expect("UTF-8 topic");
        let p: usize = topic["feed/".len()..].parse().expect("publisher number");
        let i: usize = v5::payload(&publish).parse().expect("a number");
        assert_eq!(i, next[p], "publisher {p}'s messages in order");
        next[p] += 1;
        subscriber.ack(&publish).await.expect("queue PUBACK");
    }
    for (_, inbox) in &mut publishers {
        expect_pubacks(inbox, MESSAGES).await;
    }
}

/// Publishers woken together each bring the share they were woken for (8 messages) before a
/// backlog pauses them again, whichever runs first: otherwise the first takes all the room and the
/// others go round their pause for a message each.
#[tokio::test]
async fn publishers_woken_together_each_bring_their_share() {
    if skip_on_mosquitto("Tern's backpressure") {
        return;
    }
    // Publishers wait from 20 queued until 10, by length only, for up to a minute.
    let broker = TestBroker::start_with(&config_with_delay(1_000, 20, 60_000, 0)).await;
    let (subscriber, mut sub_inbox) = slow_subscriber(broker.port(), "slow", "feed/+").await;
    let (first, mut first_inbox) = v5::connect(broker.port(), "first").await;
    let (second, mut second_inbox) = v5::connect(broker.port(), "second").await;
    publish_numbered(&first, "feed/1", 0..MESSAGES).await;
    let first_before = pubacks_until_quiet(&mut first_inbox).await;
    publish_numbered(&second, "feed/2", 0..MESSAGES).await;
    let second_before = pubacks_until_quiet(&mut second_inbox).await;
    assert!(
        first_before < MESSAGES && second_before < MESSAGES,
        "both publishers are paused ({first_before} and {second_before} PUBACKs)"
    );

    // The queue holds 21 (20 from the first publisher, one from the second; the subscriber's
    // window holds 5 more). Eleven acknowledgements take it to the low-water mark, 10, and the
    // room up to 20 wakes both waiters, one per 8 messages.
    for _ in 0..11 {
        let publish: Publish = v5::expect_publish(&mut sub_inbox, WAIT).await;
        subscriber.ack(&publish).await.expect("queue PUBACK");
    }
    let first_after = pubacks_until_quiet(&mut first_inbox).await;
    let second_after = pubacks_until_quiet(&mut second_inbox).await;
    assert!(
        first_after >= 8 && second_after >= 8,
        "each woken publisher brings 8 messages before pausing again (they brought \
         {first_after} and {second_after})"
    );
}

/// A subscriber that stops acknowledging is waited for once, for `backlog_max_pause_ms`; after
/// that the publisher goes on at full speed and the subscriber's queue overflows as configured.
#[tokio::test]
async fn a_subscriber_that_stops_reading_costs_the_publisher_one_pause() {
    if skip_on_mosquitto("Tern's backpressure") {
        return;
    }
    // Were every publish to wait the 300 ms pause, the 300 messages would take 90 s.
    let broker = TestBroker::start_with(&config(50, 20, 300)).await;
    let (_subscriber, _sub_inbox) = slow_subscriber(broker.port(), "stuck", "feed").await;
    let (publisher, mut pub_inbox) = v5::connect(broker.port(), "fast").await;

    publish_all(&publisher, "feed").await;
    expect_pubacks(&mut pub_inbox, MESSAGES).await;
}

/// Publishers waiting for a subscriber are released when it disconnects, without waiting out
/// the pause: its queue is now an offline session's (or gone).
#[tokio::test]
async fn a_subscriber_that_leaves_releases_the_publisher() {
    if skip_on_mosquitto("Tern's backpressure") {
        return;
    }
    let broker = TestBroker::start_with(&config(50, 20, 60_000)).await;
    let (_subscriber, sub_inbox) = slow_subscriber(broker.port(), "leaving", "feed").await;
    let (publisher, mut pub_inbox) = v5::connect(broker.port(), "fast").await;

    publish_all(&publisher, "feed").await;
    let acknowledged = pubacks_until_quiet(&mut pub_inbox).await;
    assert!(
        acknowledged < MESSAGES,
        "the publisher waits for the subscriber"
    );

    sub_inbox.drop_connection().await;
    expect_pubacks(&mut pub_inbox, MESSAGES - acknowledged).await;
}

/// A client's own subscription never pauses it: its deliveries are written while it waits, but
/// waiting for its own queue would wait for itself.
#[tokio::test]
async fn a_client_is_not_paused_by_its_own_backlog() {
    if skip_on_mosquitto("Tern's backpressure") {
        return;
    }
    let broker = TestBroker::start_with(&config(50, 20, 60_000)).await;
    let (client, mut inbox) = slow_subscriber(broker.port(), "echo", "echo").await;

    publish_all(&client, "echo").await;
    expect_pubacks(&mut inbox, MESSAGES).await;
}

/// A shared subscription's messages go to members that keep up: once one member's queue is
/// backlogged, the other member gets every message, and the publisher is not held back.
#[tokio::test]
async fn a_shared_group_passes_over_a_backlogged_member() {
    if skip_on_mosquitto("Tern's backpressure") {
        return;
    }
    const HIGH_WATER: usize = 100;
    let broker = TestBroker::start_with(&config(1_000, HIGH_WATER, 300)).await;
    let filter = "$share/workers/jobs";
    let (publisher, mut pub_inbox) = v5::connect(broker.port(), "producer").await;

    // Alone in the group, the member that never acknowledges takes its window and then a queue
    // up to the high-water mark. Should its queue get there early (its connection lagging to take
    // the window), the publisher waits one short pause and the member is then stalled: either way
    // every message is acknowledged.
    let (_stuck, _stuck_inbox) = slow_subscriber(broker.port(), "stuck-worker", filter).await;
    let backlog = usize::from(SUBSCRIBER_WINDOW) + HIGH_WATER;
    publish_numbered(&publisher, "jobs", 0..backlog).await;
    expect_pubacks(&mut pub_inbox, backlog).await;

    // One message at a time, so the second member's own queue never nears the mark: each goes
    // to it. Round robin alone would give the stuck member every other one, and this would
    // fail on the first of those.
    let (worker, mut worker_inbox) = v5::connect(broker.port(), "worker").await;
    v5::subscribe(&worker, &mut worker_inbox, filter, QoS::AtLeastOnce).await;
    for i in backlog..MESSAGES {
        publish_numbered(&publisher, "jobs", i..i + 1).await;
        let publish: Publish = v5::expect_publish(&mut worker_inbox, WAIT).await;
        assert_eq!(v5::payload(&publish), format!("{i}"), "message {i}");
    }
    expect_pubacks(&mut pub_inbox, MESSAGES - backlog).await;
}

/// When every member of a shared group is backlogged there is no one to pass to: the publisher
/// waits, as for a single subscriber, and nothing is dropped at the members' queue limit.
#[tokio::test]
async fn a_shared_group_with_every_member_backlogged_slows_the_publisher() {
    if skip_on_mosquitto("Tern's backpressure") {
        return;
    }
    // Each member's queue holds 50; publishers wait from 20 queued.
    let broker = TestBroker::start_with(&config(50, 20, 60_000)).await;
    let filter = "$share/workers/jobs";
    let mut members = Vec::new();
    for name in ["worker-a", "worker-b"] {
        members.push(slow_subscriber(broker.port(), name, filter).await);
    }
    let (publisher, mut pub_inbox) = v5::connect(broker.port(), "producer").await;

    publish_all(&publisher, "jobs").await;
    let acknowledged = pubacks_until_quiet(&mut pub_inbox).await;
    assert!(
        acknowledged < MESSAGES,
        "with both members acknowledging nothing, the publisher must not get through all \
         {MESSAGES} messages (it got {acknowledged} PUBACKs): their queues hold 100"
    );

    // Both members acknowledge from now on: every message reaches one of them, each member's
    // share in order [MQTT-4.6.0-5].
    let deadline = Instant::now() + WAIT;
    let mut received = vec![Vec::new(); members.len()];
    while received.iter().map(Vec::len).sum::<usize>() < MESSAGES {
        assert!(
            Instant::now() < deadline,
            "only {} of {MESSAGES} messages within {WAIT:?}",
            received.iter().map(Vec::len).sum::<usize>()
        );
        for ((member, inbox), got) in members.iter_mut().zip(&mut received) {
            while let Some(publish) = v5::next_publish_within(inbox, SHORT).await {
                got.push(v5::payload(&publish).parse::<usize>().expect("a number"));
                member.ack(&publish).await.expect("queue PUBACK");
            }
        }
    }
    for got in &received {
        assert!(got.is_sorted(), "a member's messages in order: {got:?}");
    }
    let mut all: Vec<usize> = received.concat();
    all.sort_unstable();
    assert_eq!(all, (0..MESSAGES).collect::<Vec<_>>(), "every message once");
    expect_pubacks(&mut pub_inbox, MESSAGES - acknowledged).await;
}

#[tokio::test]
async fn a_zero_high_water_mark_turns_backpressure_off() {
    if skip_on_mosquitto("Tern's backpressure") {
        return;
    }
    let broker = TestBroker::start_with(&config(50, 0, 60_000)).await;
    let (_subscriber, _sub_inbox) = slow_subscriber(broker.port(), "slow", "feed").await;
    let (publisher, mut pub_inbox) = v5::connect(broker.port(), "fast").await;

    publish_all(&publisher, "feed").await;
    expect_pubacks(&mut pub_inbox, MESSAGES).await;
}
