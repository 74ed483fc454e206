//! A will is published on its client's behalf, so it passes what that client's own PUBLISH on its
//! topic would: `$SYS` and the ACL, at CONNECT and again when it fires. Seen by `rumqttc` clients
//! (MQTT 5 and 3.1.1) against the real binary, with an ACL file and the admin API's reload; and the
//! admin API's own publish, which may not write under `$SYS` either.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod edge_support;
mod support;

use edge_support::{EdgeBroker, WAIT, Workdir, free_port};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, LastWill, Packet, PubAckReason};
use rumqttc::v5::{AsyncClient, ConnectionError, MqttOptions};
use support::{Note, QUIET, v5, v311};

/// Anyone may subscribe to anything; a client may publish only under `status/{its id}`, and
/// anyone under `public/`.
const ACL: &str =
    "allow all subscribe #\nallow all publish status/%c\nallow all publish public/#\n";

async fn start(acl: &str) -> (EdgeBroker, u16) {
    let work = Workdir::new();
    let acl = work.write("acl.txt", acl);
    let port = free_port();
    let extra = format!(
        "auth:\n  allow_anonymous: true\n  acl_file: {}\n  reload_poll_secs: 0\n",
        acl.display()
    );
    let listeners = format!("  - name: mqtt\n    bind: 127.0.0.1:{port}\n");
    let broker = EdgeBroker::start(work, &listeners, &extra, port).await;
    (broker, port)
}

fn with_will(port: u16, id: &str, topic: &str, retain: bool) -> MqttOptions {
    let mut options = v5::options(port, id);
    options.set_last_will(LastWill::new(topic, "gone", QoS::AtLeastOnce, retain, None));
    options
}

/// The CONNACK code of a refused MQTT 5 connection attempt.
async fn refused_v5(options: MqttOptions) -> ConnectReturnCode {
    let (_client, eventloop) = AsyncClient::new(options, 10);
    let mut inbox = v5::spawn_inbox(eventloop);
    match inbox.ended(WAIT).await {
        Note::Failed(ConnectionError::ConnectionRefused(code)) => code,
        other => panic!("expected a refusing CONNACK, got {other:?}"),
    }
}

/// A client whose PUBLISH to another's topic is refused (0x87) cannot get a message there through
/// its will either: CONNACK 0x87 *Not authorized* [MQTT-3.2.2-6], [MQTT-3.2.2-7], and no session.
/// Its will on its own topic is accepted and published when it drops.
#[tokio::test]
async fn a_will_the_acl_would_refuse_as_a_publish_refuses_the_connection() {
    let (_broker, port) = start(ACL).await;
    let (watcher, mut watcher_inbox) = v5::connect(port, "watcher").await;
    v5::subscribe(&watcher, &mut watcher_inbox, "#", QoS::AtLeastOnce).await;

    let (mallory, mut mallory_inbox) = v5::connect(port, "mallory").await;
    mallory
        .publish("status/alice", QoS::AtLeastOnce, false, "forged")
        .await
        .unwrap();
    let ack = mallory_inbox
        .next_matching("PUBACK", WAIT, |p| match p {
            Packet::PubAck(ack) => Some(ack.reason),
            _ => None,
        })
        .await;
    assert_eq!(ack, PubAckReason::NotAuthorized, "the PUBLISH is refused");
    drop(mallory_inbox);

    let forged = with_will(port, "mallory-2", "status/alice", false);
    assert_eq!(refused_v5(forged).await, ConnectReturnCode::NotAuthorized);

    let (_device, device_inbox, _) =
        v5::start(with_will(port, "dev-1", "status/dev-1", false)).await;
    device_inbox.drop_connection().await;
    let will = v5::expect_publish(&mut watcher_inbox, WAIT).await;
    assert_eq!(
        will.topic, "status/dev-1",
        "the allowed will still goes out"
    );
    v5::expect_no_publish(&mut watcher_inbox, QUIET).await;
}

/// `$SYS` is the broker's own: a retained will there is refused for MQTT 5 (0x87) and MQTT 3.1.1
/// (return code 5, *not authorized*) even where the ACL lets the client publish everywhere, and
/// the broker's `$SYS/broker/version` is not replaced.
#[tokio::test]
async fn a_will_under_sys_is_refused_whatever_the_acl_allows() {
    let (_broker, port) = start("allow all both #\n").await;
    let forged = with_will(port, "forger", "$SYS/broker/version", true);
    assert_eq!(refused_v5(forged).await, ConnectReturnCode::NotAuthorized);

    let mut v3 = v311::options(port, "forger-v3");
    v3.set_last_will(rumqttc::LastWill::new(
        "$SYS/broker/version",
        "evil",
        rumqttc::QoS::AtLeastOnce,
        true,
    ));
    let (_client, eventloop) = rumqttc::AsyncClient::new(v3, 10);
    let mut inbox = v311::spawn_inbox(eventloop);
    match inbox.ended(WAIT).await {
        Note::Failed(rumqttc::ConnectionError::ConnectionRefused(code)) => {
            assert_eq!(code, rumqttc::ConnectReturnCode::NotAuthorized);
        }
        other => panic!("expected a refusing CONNACK, got {other:?}"),
    }
}

/// A will accepted at CONNECT is checked again when it fires: after a reload that took the right
/// away, the connection drops and nothing is published, while a publish the new ACL allows goes
/// through to the same subscriber.
#[tokio::test]
async fn a_will_is_checked_again_when_it_fires_after_a_reload() {
    let (broker, port) = start(ACL).await;
    let (watcher, mut watcher_inbox) = v5::connect(port, "watcher").await;
    v5::subscribe(&watcher, &mut watcher_inbox, "#", QoS::AtLeastOnce).await;
    let (_device, device_inbox, _) =
        v5::start(with_will(port, "dev-1", "status/dev-1", false)).await;

    broker.work.write(
        "acl.txt",
        "allow all subscribe #\nallow all publish public/#\n",
    );
    let (status, body) = broker.admin("POST", "/reload", None).await;
    assert_eq!(status, 200, "{body}");

    device_inbox.drop_connection().await;
    let (other, mut other_inbox) = v5::connect(port, "other").await;
    v5::publish(
        &other,
        &mut other_inbox,
        "public/news",
        QoS::AtLeastOnce,
        false,
        "still here",
    )
    .await;
    let next = v5::expect_publish(&mut watcher_inbox, WAIT).await;
    assert_eq!(next.topic, "public/news");
    v5::expect_no_publish(&mut watcher_inbox, QUIET).await;
}

/// The admin API publishes with every right but one: nothing under `$SYS` (403), so that what a
/// client reads there is the broker's word.
#[tokio::test]
async fn the_admin_api_may_not_publish_under_sys() {
    let (broker, _port) = start(ACL).await;
    let body = r#"{"topic": "$SYS/broker/version", "payload": "evil", "retain": true}"#;
    let (status, text) = broker.admin("POST", "/publish", Some(body)).await;
    assert_eq!(status, 403, "{text}");
    let body = r#"{"topic": "status/anyone", "payload": "ok"}"#;
    let (status, text) = broker.admin("POST", "/publish", Some(body)).await;
    assert_eq!(
        status, 200,
        "the ACL does not bind the token holder: {text}"
    );
}
