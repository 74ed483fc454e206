//! Durable sessions and retained messages (`storage`, docs/storage.md): what a stored session
//! holds and what retained messages the broker holds survive a crash (`kill -9`) and a restart;
//! an acknowledged message is never lost under `durability: sync`; what expired while the broker
//! was down is not brought back; a damaged store is refused, and repaired keeping what is valid.
//!
//! Each test runs the real broker binary on a store in its own temporary directory, and kills it
//! with SIGKILL: nothing is flushed or closed on the way down.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rumqttc::QoS;
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use support::client::{Client, Version};
use support::{TestBroker, v5};
use tempfile::TempDir;

/// A broker whose store lives in `data` (which outlives the broker's own directory).
async fn stored_broker(data: &TempDir, extra: &str) -> TestBroker {
    TestBroker::start_with(&format!(
        "storage:\n  dir: {}\n  durability: sync\n{extra}",
        data.path().display()
    ))
    .await
}

/// [MQTT-3.1.2-4], [MQTT-3.1.2-5] A session kept after its connection is resumed with its
/// subscriptions and the QoS 1 and 2 messages queued for it, and [MQTT-3.2.2-2] Session Present
/// says so, even though the broker was killed and restarted in between; [MQTT-3.3.1-5] a
/// retained message is still stored and [MQTT-3.3.1-8] delivered with RETAIN set to a new
/// subscription. (MQTT 3.1.1)
#[tokio::test]
async fn v311_a_stored_session_and_retained_messages_survive_kill_9() {
    a_stored_session_and_retained_messages_survive_kill_9(Version::V311).await;
}

/// The same for MQTT 5: [MQTT-3.1.2-5], [MQTT-3.2.2-3], [MQTT-3.3.1-5].
#[tokio::test]
async fn v5_a_stored_session_and_retained_messages_survive_kill_9() {
    a_stored_session_and_retained_messages_survive_kill_9(Version::V5).await;
}

async fn a_stored_session_and_retained_messages_survive_kill_9(version: Version) {
    let data = TempDir::new().unwrap();
    let mut broker = stored_broker(&data, "").await;
    let port = broker.port();
    // CleanSession = 0 (3.1.1) keeps the session after the connection; with nothing to resume,
    // Session Present is 0 [MQTT-3.2.2-3].
    let (mut subscriber, present) =
        Client::start_session(version, port, "keeper", false, false).await;
    assert!(!present);
    subscriber.subscribe("orders/#", QoS::ExactlyOnce).await;
    subscriber.disconnect().await;

    let mut publisher = Client::connect(version, port, "publisher").await;
    publisher
        .publish("config/site", QoS::AtLeastOnce, true, "retained")
        .await;
    publisher
        .publish("orders/1", QoS::AtLeastOnce, false, "one")
        .await;
    publisher
        .publish("orders/2", QoS::ExactlyOnce, false, "two")
        .await;
    publisher.drop_connection().await;

    broker.kill();
    broker.restart().await;

    let (mut subscriber, present) =
        Client::start_session(version, port, "keeper", false, false).await;
    assert!(present, "the session was not resumed after the restart");
    let queued = subscriber.expect_publishes(2).await;
    let received: Vec<(&str, &str, QoS)> = queued
        .iter()
        .map(|m| (m.topic.as_str(), m.payload(), m.qos))
        .collect();
    assert_eq!(
        received,
        [
            ("orders/1", "one", QoS::AtLeastOnce),
            ("orders/2", "two", QoS::ExactlyOnce)
        ]
    );
    subscriber.expect_no_publish().await;

    // The subscription itself came back too.
    let mut publisher = Client::connect(version, port, "publisher").await;
    publisher
        .publish("orders/3", QoS::AtLeastOnce, false, "three")
        .await;
    assert_eq!(subscriber.expect_publish().await.payload(), "three");

    let mut newcomer = Client::connect(version, port, "newcomer").await;
    newcomer.subscribe("config/#", QoS::AtLeastOnce).await;
    let retained = newcomer.expect_publish().await;
    assert_eq!(
        (retained.topic.as_str(), retained.payload(), retained.retain),
        ("config/site", "retained", true)
    );
}

/// With `durability: sync` a PUBACK goes out only once the message is on disk: every message a
/// publisher saw acknowledged before the broker was killed reaches the stored session after the
/// restart, in order [MQTT-4.6.0-6]. The publisher keeps many messages in flight, so that many
/// acknowledgements share each disk sync.
#[tokio::test]
async fn every_message_acknowledged_before_kill_9_is_delivered_after_the_restart() {
    const MESSAGES: usize = 300;
    let data = TempDir::new().unwrap();
    let mut broker = stored_broker(&data, "").await;
    let port = broker.port();
    let (mut subscriber, _) = Client::start_session(Version::V5, port, "ledger", true, false).await;
    subscriber.subscribe("ledger", QoS::AtLeastOnce).await;
    subscriber.disconnect().await;

    let mut publisher = Client::connect(Version::V5, port, "teller").await;
    for n in 0..MESSAGES {
        publisher
            .queue_publish("ledger", QoS::AtLeastOnce, false, format!("entry {n}"))
            .await;
    }
    for _ in 0..MESSAGES {
        publisher
            .expect_publish_acknowledged(QoS::AtLeastOnce)
            .await;
    }
    broker.kill();
    broker.restart().await;

    let (mut subscriber, present) =
        Client::start_session(Version::V5, port, "ledger", false, false).await;
    assert!(present);
    let received = subscriber.expect_publishes(MESSAGES).await;
    for (n, message) in received.iter().enumerate() {
        assert_eq!(message.payload(), format!("entry {n}"));
    }
    subscriber.expect_no_publish().await;
}

/// [MQTT-4.4.0-1] A QoS 1 or 2 message sent and not yet acknowledged is sent again when the
/// session resumes, under its original packet identifier, even across a crash of the broker: a
/// QoS 2 receiver recognises it by that identifier and does not deliver it twice
/// [MQTT-4.3.3-10]. Once PUBREC has arrived, only PUBREL is sent again [MQTT-4.3.3-6].
#[tokio::test]
async fn an_unacknowledged_message_is_resent_under_its_packet_id_after_kill_9() {
    let data = TempDir::new().unwrap();
    let mut broker = stored_broker(&data, "").await;
    let port = broker.port();
    // Three messages delivered and acknowledged first, so that the identifiers of the next two
    // are not the ones a fresh start would hand out anyway.
    let (mut subscriber, _) = Client::start_session(Version::V5, port, "slow", true, false).await;
    subscriber.subscribe("jobs", QoS::AtLeastOnce).await;
    let mut publisher = Client::connect(Version::V5, port, "boss").await;
    for job in ["warm-up 1", "warm-up 2", "warm-up 3"] {
        publisher
            .publish("jobs", QoS::AtLeastOnce, false, job)
            .await;
    }
    subscriber.expect_publishes(3).await;
    subscriber.disconnect().await;

    let (mut subscriber, _) = Client::start_session(Version::V5, port, "slow", false, true).await;
    subscriber.subscribe("jobs", QoS::ExactlyOnce).await;
    for job in ["first", "second"] {
        publisher
            .publish("jobs", QoS::ExactlyOnce, false, job)
            .await;
    }
    // Received, never acknowledged (manual acks).
    let sent = subscriber.expect_publishes(2).await;
    assert!(sent.iter().all(|m| m.pkid > 3), "{sent:?}");
    broker.kill();
    subscriber.drop_connection().await;
    broker.restart().await;

    let (mut subscriber, present) =
        Client::start_session(Version::V5, port, "slow", false, true).await;
    assert!(present);
    let resent = subscriber.expect_publishes(2).await;
    let ids = |messages: &[support::client::Message]| -> Vec<(String, u16)> {
        messages
            .iter()
            .map(|m| (m.payload().to_string(), m.pkid))
            .collect()
    };
    assert_eq!(ids(&resent), ids(&sent));
}

/// [MQTT-3.1.2-23] A session is kept for its Session Expiry Interval after its connection ends,
/// and no longer; the time the broker was down counts. [MQTT-3.3.2-5] A message whose expiry
/// interval passed while the broker was down is not delivered.
#[tokio::test]
async fn what_expired_while_the_broker_was_down_is_not_brought_back() {
    let data = TempDir::new().unwrap();
    let mut broker = stored_broker(&data, "").await;
    let port = broker.port();

    let mut brief = v5::options(port, "brief");
    brief
        .set_clean_start(true)
        .set_session_expiry_interval(Some(1));
    let (client, mut inbox, _) = v5::start(brief).await;
    v5::subscribe(
        &client,
        &mut inbox,
        "news",
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
    )
    .await;
    v5::disconnect(&client, &mut inbox).await;

    let (mut keeper, _) = Client::start_session(Version::V5, port, "keeper", true, false).await;
    keeper.subscribe("news", QoS::AtLeastOnce).await;
    keeper.disconnect().await;

    let (publisher, mut pub_inbox) = v5::connect(port, "press").await;
    let short = PublishProperties {
        message_expiry_interval: Some(1),
        ..PublishProperties::default()
    };
    v5::publish_with(
        &publisher,
        &mut pub_inbox,
        "news",
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        false,
        "stale soon",
        short,
    )
    .await;
    v5::publish(
        &publisher,
        &mut pub_inbox,
        "news",
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        false,
        "lasting",
    )
    .await;
    broker.kill();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    broker.restart().await;

    let mut again = v5::options(port, "brief");
    again
        .set_clean_start(false)
        .set_session_expiry_interval(Some(60));
    let (_client, _inbox, connack) = v5::start(again).await;
    assert!(!connack.session_present, "an expired session was resumed");

    let (mut keeper, present) =
        Client::start_session(Version::V5, port, "keeper", false, false).await;
    assert!(present);
    assert_eq!(keeper.expect_publish().await.payload(), "lasting");
    keeper.expect_no_publish().await;
}

/// [MQTT-3.1.2-8] A will is published when the network connection closes without DISCONNECT; a
/// crash of the broker closes it too. The will of a client whose stored session was attached when
/// the broker was killed goes out after the restart (its Will Delay Interval, 0 here, counting
/// from then), to a subscriber whose stored session was away.
#[tokio::test]
async fn the_will_of_a_client_connected_when_the_broker_crashed_goes_out_after_the_restart() {
    use rumqttc::v5::mqttbytes::QoS as QoS5;
    let data = TempDir::new().unwrap();
    let mut broker = stored_broker(&data, "").await;
    let port = broker.port();
    let (mut watcher, _) = Client::start_session(Version::V5, port, "watcher", true, false).await;
    watcher.subscribe("status/#", QoS::AtLeastOnce).await;
    watcher.disconnect().await;

    let mut options = v5::options(port, "sensor");
    options
        .set_clean_start(true)
        .set_session_expiry_interval(Some(3600))
        .set_last_will(rumqttc::v5::mqttbytes::v5::LastWill::new(
            "status/sensor",
            "lost",
            QoS5::AtLeastOnce,
            false,
            None,
        ));
    let (sensor, mut inbox, _) = v5::start(options).await;
    // Under `durability: sync` this SUBACK comes once the subscription is on disk, and with it
    // the will, which was stored before.
    v5::subscribe(&sensor, &mut inbox, "commands", QoS5::AtLeastOnce).await;
    broker.kill();
    broker.restart().await;

    let (mut watcher, present) =
        Client::start_session(Version::V5, port, "watcher", false, false).await;
    assert!(present);
    let will = watcher.expect_publish().await;
    assert_eq!(
        (will.topic.as_str(), will.payload()),
        ("status/sensor", "lost")
    );
}

/// A damaged store is never read as valid data: the broker refuses to start and names the file
/// and the repair command; `tern-broker storage check` fails on it; `tern-broker storage repair`
/// drops what is damaged and keeps the rest, which the broker then serves.
#[tokio::test]
async fn a_damaged_store_is_refused_then_repaired_keeping_what_is_valid() {
    const DAMAGED: &str = "DAMAGED-PAYLOAD-0123456789";
    let data = TempDir::new().unwrap();
    let mut broker = stored_broker(&data, "").await;
    let port = broker.port();
    let (mut subscriber, _) = Client::start_session(Version::V5, port, "reader", true, false).await;
    subscriber.subscribe("pages", QoS::AtLeastOnce).await;
    subscriber.disconnect().await;
    let mut publisher = Client::connect(Version::V5, port, "writer").await;
    for payload in ["kept 1", DAMAGED, "kept 2"] {
        publisher
            .publish("pages", QoS::AtLeastOnce, false, payload)
            .await;
    }
    publisher.disconnect().await;
    assert!(broker.stop_gracefully().await.success());

    let file = data.path().join("tern.redb");
    let flipped = flip_every_copy(&file, DAMAGED.as_bytes());
    assert!(flipped > 0, "the payload is not in the file");

    assert!(!storage_command("check", data.path()).status.success());
    broker.restart_expecting_failure().await;
    let log = broker.log();
    assert!(
        log.contains(&file.display().to_string()) && log.contains("storage repair"),
        "the refusal does not name the file and the repair command:\n{log}"
    );

    let repair = storage_command("repair", data.path());
    assert!(
        repair.status.success(),
        "{}",
        String::from_utf8_lossy(&repair.stderr)
    );
    assert!(storage_command("check", data.path()).status.success());
    broker.restart().await;
    let (mut subscriber, present) =
        Client::start_session(Version::V5, port, "reader", false, false).await;
    assert!(present);
    let payloads: Vec<String> = subscriber
        .expect_publishes(2)
        .await
        .iter()
        .map(|m| m.payload().to_string())
        .collect();
    assert_eq!(payloads, ["kept 1", "kept 2"]);
    subscriber.expect_no_publish().await;
}

/// Inverts one byte in every copy of `needle` in `file`; returns how many copies there were.
fn flip_every_copy(file: &Path, needle: &[u8]) -> usize {
    let mut bytes = std::fs::read(file).unwrap();
    let mut copies = 0;
    let mut at = 0;
    while let Some(found) = bytes[at..]
        .windows(needle.len())
        .position(|window| window == needle)
    {
        let index = at + found + needle.len() / 2;
        bytes[index] ^= 0xFF;
        copies += 1;
        at = index + 1;
    }
    std::fs::write(file, bytes).unwrap();
    copies
}

fn storage_command(action: &str, dir: &Path) -> std::process::Output {
    let output = Command::new(env!("CARGO_BIN_EXE_tern-broker"))
        .args(["storage", action])
        .arg(dir)
        .output()
        .unwrap();
    eprintln!(
        "tern-broker storage {action}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs {
    dir: TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = TempDir::new().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tern-test"])
            .arg(dir.path())
            .status()
            .expect("mount(8) runs");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (CAP_SYS_ADMIN): the full-disk test cannot run"
        );
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// The CONNACK code of a refused MQTT 5 connection attempt.
async fn refused_v5(
    options: rumqttc::v5::MqttOptions,
) -> rumqttc::v5::mqttbytes::v5::ConnectReturnCode {
    let (_client, eventloop) = rumqttc::v5::AsyncClient::new(options, 10);
    let mut inbox = v5::spawn_inbox(eventloop);
    match inbox.ended(support::WAIT).await {
        support::Note::Failed(rumqttc::v5::ConnectionError::ConnectionRefused(code)) => code,
        other => panic!("expected a refusing CONNACK, got {other:?}"),
    }
}

/// The HTTP endpoint's answer to `GET path`: status and body.
async fn http_get(port: u16, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// Polls `GET path` until `done` holds for the answer, within a generous bound.
async fn wait_for_http(port: u16, path: &str, done: impl Fn(u16, &str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = http_get(port, path).await;
        if done(status, &body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "GET {path} still answers {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A full disk: the store's commits fail, `tern_storage_failing` is 1 and `/readyz` answers 503;
/// the acknowledgements of what was accepted before are held until it is on disk, and new QoS 1
/// messages are refused with 0x97 *Quota exceeded* (MQTT 5, §3.4.2.1), so nothing is acknowledged
/// that is not on disk. Once space returns the broker goes on by itself: the held acknowledgements
/// go out, readiness comes back, and exactly the acknowledged messages reach the stored session,
/// after a crash too [MQTT-3.1.2-5].
#[tokio::test]
async fn a_full_disk_holds_acknowledgements_and_the_broker_recovers_when_space_returns() {
    use rumqttc::v5::mqttbytes::QoS as QoS5;
    const MESSAGES: usize = 100;
    const PAYLOAD: usize = 64 * 1024;
    // Declared first, so that it is unmounted after the broker has stopped.
    let disk = Tmpfs::mount("64m");
    let ballast = disk.path().join("ballast");
    std::fs::write(&ballast, vec![0u8; 60 << 20]).unwrap();
    let http_port = support::free_port();
    let mut broker = TestBroker::start_with(&format!(
        "storage:\n  dir: {}\n  durability: sync\nhttp:\n  bind: 127.0.0.1:{http_port}\n\
         limits:\n  max_queued_bytes: 104857600\n",
        disk.path().join("store").display()
    ))
    .await;
    let port = broker.port();
    wait_for_http(http_port, "/readyz", |status, _| status == 200).await;

    let mut reader = v5::options(port, "hoard");
    reader
        .set_clean_start(true)
        .set_session_expiry_interval(Some(3600))
        .set_max_packet_size(Some(1 << 20));
    let (client, mut inbox, _) = v5::start(reader.clone()).await;
    v5::subscribe(&client, &mut inbox, "bulk", QoS5::AtLeastOnce).await;
    v5::disconnect(&client, &mut inbox).await;

    // A stored session that is connected when the disk fills up.
    let mut lister = v5::options(port, "lister");
    lister
        .set_clean_start(true)
        .set_session_expiry_interval(Some(3600));
    let (lister, mut lister_inbox, _) = v5::start(lister).await;

    let mut writer = v5::options(port, "writer");
    writer.set_max_packet_size(Some(1 << 20));
    let (publisher, mut pub_inbox, _) = v5::start(writer).await;
    for n in 0..MESSAGES {
        let mut payload = vec![b'.'; PAYLOAD];
        payload[..8].copy_from_slice(format!("{n:08}").as_bytes());
        publisher
            .publish("bulk", QoS5::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }
    // About 4 MiB free for 6.4 MiB of messages: commits fail.
    wait_for_http(http_port, "/readyz", |status, body| {
        status == 503 && body.contains("storage failing")
    })
    .await;
    let metrics = http_get(http_port, "/metrics").await.1;
    assert!(metrics.contains("tern_storage_failing 1"), "{metrics}");
    assert!(
        !metrics.contains("tern_storage_commit_failures_total 0"),
        "{metrics}"
    );
    // A message sent while the disk is full is refused at once (the writer's window may still be
    // full of held ones, so it comes from another client).
    const LATE: usize = 5;
    let (late, mut late_inbox, _) = v5::start(v5::options(port, "latecomer")).await;
    for n in 0..LATE {
        late.publish("bulk", QoS5::AtLeastOnce, false, format!("late {n}"))
            .await
            .unwrap();
        let reason = late_inbox
            .next_matching("PUBACK", support::WAIT, |p| match p {
                rumqttc::v5::mqttbytes::v5::Packet::PubAck(ack) => Some(ack.reason),
                _ => None,
            })
            .await;
        assert_eq!(
            reason,
            rumqttc::v5::mqttbytes::v5::PubAckReason::QuotaExceeded
        );
    }

    // A new session to keep is refused at CONNECT, and a stored session's SUBSCRIBE per filter,
    // with 0x97 (§3.2.2.2, §3.9.3): neither could be kept.
    let mut keeper = v5::options(port, "newcomer");
    keeper.set_session_expiry_interval(Some(3600));
    assert_eq!(
        refused_v5(keeper).await,
        rumqttc::v5::mqttbytes::v5::ConnectReturnCode::QuotaExceeded
    );
    lister.subscribe("news", QoS5::AtLeastOnce).await.unwrap();
    let suback = v5::expect_suback(&mut lister_inbox, support::WAIT).await;
    assert_eq!(
        suback.return_codes,
        [rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::QuotaExceeded]
    );

    std::fs::remove_file(&ballast).unwrap();
    // rumqttc numbers the PUBLISHes 1, 2, … (100 fit in its window): packet id n + 1 is message n.
    let mut accepted = Vec::new();
    let mut refused = 0;
    for _ in 0..MESSAGES {
        let (pkid, reason) = pub_inbox
            .next_matching("PUBACK", support::WAIT, |p| match p {
                rumqttc::v5::mqttbytes::v5::Packet::PubAck(ack) => Some((ack.pkid, ack.reason)),
                _ => None,
            })
            .await;
        match reason {
            rumqttc::v5::mqttbytes::v5::PubAckReason::Success => {
                accepted.push(usize::from(pkid) - 1)
            }
            rumqttc::v5::mqttbytes::v5::PubAckReason::QuotaExceeded => refused += 1,
            other => panic!("PUBACK {pkid}: {other:?}"),
        }
    }
    accepted.sort_unstable();
    assert!(!accepted.is_empty(), "{refused} refused, none accepted");
    wait_for_http(http_port, "/readyz", |status, _| status == 200).await;
    let metrics = http_get(http_port, "/metrics").await.1;
    assert!(metrics.contains("tern_storage_failing 0"), "{metrics}");
    assert!(
        metrics.contains(&format!(
            "tern_messages_dropped_total{{reason=\"storage_failing\"}} {}",
            refused + LATE
        )),
        "{metrics}"
    );

    // Everything acknowledged is on disk: it survives a crash too.
    broker.kill();
    broker.restart().await;
    reader.set_clean_start(false);
    let (_client, mut inbox, connack) = v5::start(reader).await;
    assert!(connack.session_present);
    for n in accepted {
        let publish = inbox
            .next_matching("PUBLISH", support::WAIT, |p| match p {
                rumqttc::v5::mqttbytes::v5::Packet::Publish(publish) => Some(publish.clone()),
                _ => None,
            })
            .await;
        assert_eq!(&publish.payload[..8], format!("{n:08}").as_bytes());
    }
    let refused_one = inbox
        .next_matching_within("PUBLISH", support::QUIET, |p| {
            matches!(p, rumqttc::v5::mqttbytes::v5::Packet::Publish(_)).then_some(())
        })
        .await;
    assert!(refused_one.is_none(), "a refused message was delivered");
}
