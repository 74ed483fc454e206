//! Will messages, for MQTT 3.1.1 and 5: published when a connection ends without DISCONNECT,
//! discarded on DISCONNECT, retained when asked, and (v5) deferred by the Will Delay Interval.

mod support;

use rumqttc::v5::mqttbytes::v5::{LastWill, LastWillProperties};
use support::{QUIET, TestBroker, WAIT, v5, v311};

/// [MQTT-3.1.2-8] The will is published when the network connection closes without DISCONNECT.
/// (MQTT 3.1.1)
#[tokio::test]
async fn v311_will_is_published_when_the_connection_drops() {
    use rumqttc::{LastWill, QoS};
    let broker = TestBroker::start().await;
    let (watcher, mut watcher_inbox) = v311::connect(broker.port(), "watcher").await;
    v311::subscribe(&watcher, &mut watcher_inbox, "status/+", QoS::AtLeastOnce).await;

    let mut options = v311::options(broker.port(), "device");
    options.set_last_will(LastWill::new(
        "status/device",
        "gone",
        QoS::AtLeastOnce,
        false,
    ));
    let (_device, device_inbox, _) = v311::start(options).await;
    device_inbox.drop_connection().await;

    let will = v311::expect_publish(&mut watcher_inbox, WAIT).await;
    assert_eq!(
        (will.topic.as_str(), v311::payload(&will)),
        ("status/device", "gone")
    );
    assert_eq!(will.qos, QoS::AtLeastOnce);
}

/// [MQTT-3.14.4-3] On DISCONNECT the broker discards the will without publishing it.
/// (MQTT 3.1.1)
#[tokio::test]
async fn v311_will_is_discarded_on_normal_disconnect() {
    use rumqttc::{LastWill, QoS};
    let broker = TestBroker::start().await;
    let (watcher, mut watcher_inbox) = v311::connect(broker.port(), "watcher").await;
    v311::subscribe(&watcher, &mut watcher_inbox, "status/+", QoS::AtLeastOnce).await;

    let mut options = v311::options(broker.port(), "device");
    options.set_last_will(LastWill::new(
        "status/device",
        "gone",
        QoS::AtLeastOnce,
        false,
    ));
    let (device, mut device_inbox, _) = v311::start(options).await;
    v311::disconnect(&device, &mut device_inbox).await;

    // Another client's message on the same filter shows the watcher is being served.
    let (other, mut other_inbox) = v311::connect(broker.port(), "other").await;
    v311::publish(
        &other,
        &mut other_inbox,
        "status/other",
        QoS::AtLeastOnce,
        false,
        "here",
    )
    .await;
    let next = v311::expect_publish(&mut watcher_inbox, WAIT).await;
    assert_eq!(next.topic, "status/other");
    v311::expect_no_publish(&mut watcher_inbox, QUIET).await;
}

/// [MQTT-3.1.2-17] A will with Will Retain = 1 is published as a retained message. (MQTT 3.1.1)
#[tokio::test]
async fn v311_retained_will_is_kept_for_later_subscribers() {
    use rumqttc::{LastWill, QoS};
    let broker = TestBroker::start().await;
    let (watcher, mut watcher_inbox) = v311::connect(broker.port(), "watcher").await;
    v311::subscribe(&watcher, &mut watcher_inbox, "status/+", QoS::AtLeastOnce).await;

    let mut options = v311::options(broker.port(), "device");
    options.set_last_will(LastWill::new(
        "status/device",
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    let (_device, device_inbox, _) = v311::start(options).await;
    device_inbox.drop_connection().await;
    v311::expect_publish(&mut watcher_inbox, WAIT).await;

    let (late, mut late_inbox) = v311::connect(broker.port(), "late").await;
    v311::subscribe(&late, &mut late_inbox, "status/device", QoS::AtLeastOnce).await;
    let retained = v311::expect_publish(&mut late_inbox, WAIT).await;
    assert_eq!(v311::payload(&retained), "offline");
    assert!(retained.retain);
}

/// [MQTT-3.1.2-8] A v5 will is published once the connection has closed and its Will Delay
/// Interval has passed; [MQTT-3.1.2-15] with Will Retain it is retained.
#[tokio::test]
async fn v5_will_is_published_after_its_delay() {
    use rumqttc::v5::mqttbytes::QoS;
    let broker = TestBroker::start().await;
    let (watcher, mut watcher_inbox) = v5::connect(broker.port(), "watcher").await;
    v5::subscribe(&watcher, &mut watcher_inbox, "status/+", QoS::AtLeastOnce).await;

    let mut options = v5::options(broker.port(), "device");
    options
        .set_session_expiry_interval(Some(3600))
        .set_last_will(device_will(1, true));
    let (_device, device_inbox, _) = v5::start(options).await;
    device_inbox.drop_connection().await;

    let will = v5::expect_publish(&mut watcher_inbox, WAIT).await;
    assert_eq!(
        (v5::topic(&will), v5::payload(&will)),
        ("status/device", "gone")
    );
    let (late, mut late_inbox) = v5::connect(broker.port(), "late").await;
    v5::subscribe(&late, &mut late_inbox, "status/device", QoS::AtLeastOnce).await;
    assert!(v5::expect_publish(&mut late_inbox, WAIT).await.retain);
}

/// [MQTT-3.1.3-9] If the client reconnects to its session before the Will Delay Interval has
/// passed, the will is not sent.
#[tokio::test]
async fn v5_reconnect_within_the_will_delay_cancels_the_will() {
    use rumqttc::v5::mqttbytes::QoS;
    let broker = TestBroker::start().await;
    let (watcher, mut watcher_inbox) = v5::connect(broker.port(), "watcher").await;
    v5::subscribe(&watcher, &mut watcher_inbox, "status/+", QoS::AtLeastOnce).await;

    // A delay far longer than this test runs, so the reconnect is surely within it.
    let mut options = v5::options(broker.port(), "device");
    options
        .set_clean_start(false)
        .set_session_expiry_interval(Some(3600))
        .set_last_will(device_will(300, false));
    let (_device, device_inbox, _) = v5::start(options).await;
    device_inbox.drop_connection().await;

    let (device, mut device_inbox, connack) =
        v5::connect_persistent(broker.port(), "device", 3600).await;
    assert!(connack.session_present);
    v5::publish(
        &device,
        &mut device_inbox,
        "status/device",
        QoS::AtLeastOnce,
        false,
        "back",
    )
    .await;
    assert_eq!(
        v5::payload(&v5::expect_publish(&mut watcher_inbox, WAIT).await),
        "back"
    );
    v5::expect_no_publish(&mut watcher_inbox, QUIET).await;
}

/// The v5 will of the client "device": "gone" on `status/device` at QoS 1, published `delay`
/// seconds after the connection is lost.
fn device_will(delay: u32, retain: bool) -> LastWill {
    let properties = LastWillProperties {
        delay_interval: Some(delay),
        payload_format_indicator: None,
        message_expiry_interval: None,
        content_type: None,
        response_topic: None,
        correlation_data: None,
        user_properties: Vec::new(),
    };
    LastWill::new(
        "status/device",
        "gone",
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        retain,
        Some(properties),
    )
}
