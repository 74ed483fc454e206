//! MQTT 3.1.1 publish/subscribe against the real broker with `rumqttc`'s v4 client: QoS levels,
//! retained messages, unsubscribe, wildcards, ordering and fan-in/fan-out. The scenarios are
//! shared with `rumqttc_v5.rs` and live in `support/pubsub.rs`; each test here cites the 3.1.1
//! statements it checks.

mod support;

use support::client::Version;
use support::pubsub;

/// [MQTT-3.8.4-6] The QoS of a delivered message is the minimum of the QoS it was published
/// with and the QoS granted to the subscription; [MQTT-3.8.4-5] the SUBACK shows the granted QoS.
#[tokio::test]
async fn v311_delivered_qos_is_the_minimum_of_publish_and_subscription_qos() {
    pubsub::delivered_qos_is_the_minimum_of_publish_and_subscription_qos(Version::V311).await;
}

/// [MQTT-3.3.1-5] A retained message is stored; [MQTT-3.3.1-6] it is sent to a new subscription,
/// [MQTT-3.3.1-8] with RETAIN = 1, while [MQTT-3.3.1-9] an established subscription gets the
/// same message with RETAIN = 0.
#[tokio::test]
async fn v311_retained_message_is_sent_to_new_subscribers_with_retain_flag() {
    pubsub::retained_message_is_sent_to_new_subscribers_with_retain_flag(Version::V311).await;
}

/// [MQTT-3.3.1-5] [MQTT-3.3.1-7] A new retained message (here at QoS 0) replaces the one stored
/// for its topic: a new subscriber gets only the newest.
#[tokio::test]
async fn v311_new_retained_message_replaces_the_previous_one() {
    pubsub::new_retained_message_replaces_the_previous_one(Version::V311).await;
}

/// [MQTT-3.3.1-10] A retained PUBLISH with an empty payload is delivered as normal and removes
/// the retained message; [MQTT-3.3.1-11] the empty message itself is not stored.
#[tokio::test]
async fn v311_empty_retained_message_deletes_the_retained_message() {
    pubsub::empty_retained_message_deletes_the_retained_message(Version::V311).await;
}

/// [MQTT-3.3.1-12] A PUBLISH with RETAIN = 0 neither stores nor replaces the retained message.
#[tokio::test]
async fn v311_non_retained_publish_leaves_the_retained_message_alone() {
    pubsub::non_retained_publish_leaves_the_retained_message_alone(Version::V311).await;
}

/// [MQTT-3.10.4-1] UNSUBSCRIBE deletes the subscription with the identical filter and
/// [MQTT-3.10.4-2] the broker stops adding messages for it; other subscriptions go on.
#[tokio::test]
async fn v311_unsubscribed_client_receives_no_further_messages() {
    pubsub::unsubscribed_client_receives_no_further_messages(Version::V311).await;
}

/// [MQTT-3.3.2-3] Messages go exactly to the subscriptions whose filter matches the topic name:
/// `+` matches one whole level, `#` the parent level and any number of levels below (§4.7.1).
#[tokio::test]
async fn v311_wildcard_filters_match_by_level() {
    pubsub::wildcard_filters_match_by_level(Version::V311).await;
}

/// [MQTT-4.7.2-1] Filters starting with a wildcard do not match topic names starting with `$`;
/// a filter that names the `$` level does.
#[tokio::test]
async fn v311_wildcards_do_not_match_topics_starting_with_dollar() {
    pubsub::wildcards_do_not_match_topics_starting_with_dollar(Version::V311).await;
}

/// [MQTT-4.6.0-5] [MQTT-4.6.0-6] Every topic is an ordered topic: QoS 1 messages from one
/// publisher reach a subscriber in the order they were published.
#[tokio::test]
async fn v311_qos1_messages_on_one_topic_arrive_in_publish_order() {
    pubsub::qos1_messages_on_one_topic_arrive_in_publish_order(Version::V311).await;
}

/// [MQTT-4.5.0-1] The broker adds a message to the session of every client with a matching
/// subscription: 50 subscribers each receive every message, in order.
#[tokio::test]
async fn v311_every_one_of_fifty_subscribers_receives_each_message() {
    pubsub::every_one_of_fifty_subscribers_receives_each_message(Version::V311).await;
}

/// [MQTT-4.5.0-1] [MQTT-4.6.0-6] Ten publishers sending QoS 1 at once to one wildcard
/// subscriber: every message arrives exactly once, each publisher's in its own order.
#[tokio::test]
async fn v311_wildcard_subscriber_receives_every_message_from_many_publishers() {
    pubsub::wildcard_subscriber_receives_every_message_from_many_publishers(Version::V311).await;
}
