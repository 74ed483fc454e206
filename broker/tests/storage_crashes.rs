//! The crash checker of `durability: sync` (docs/storage.md): publishers send QoS 1 and 2
//! messages as fast as the broker acknowledges them while a subscriber with a stored session
//! receives them, and the broker is killed with SIGKILL at a random moment, restarted, and killed
//! again, round after round. Afterwards every message that was acknowledged to its publisher
//! (PUBACK; PUBREC for QoS 2) has reached the subscriber, and no QoS 2 message reached it twice.
//!
//! The subscriber is Debian's `mosquitto_sub` with a persistent session, one process for the whole
//! run that reconnects by itself after each restart. libmosquitto keeps the receiver's side of QoS 2
//! as the specification describes it [MQTT-4.3.3-9], [MQTT-4.3.3-10]: a PUBLISH under a packet
//! identifier that got PUBREC and no PUBREL yet is the same message again and is not delivered
//! twice; that state belongs to the client's session and outlives its reconnects, as the broker's
//! side outlives its restarts. (rumqttc forgets it on every reconnect, and takes the PUBREL the
//! broker must send again after a reconnect [MQTT-4.4.0-1] for a protocol error.)

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use support::TestBroker;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};

const ROUNDS: usize = 8;
const PUBLISHERS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_and_no_qos2_message_repeats_across_repeated_kill_9() {
    let data = TempDir::new().unwrap();
    let mut broker = TestBroker::start_with(&format!(
        "storage:\n  dir: {}\n  durability: sync\nlimits:\n  max_queued_messages: 1000000\n",
        data.path().display()
    ))
    .await;
    let port = broker.port();
    let mut subscriber = Subscriber::start(port);
    subscriber.wait_until_subscribed(port).await;

    let mut acknowledged: BTreeMap<String, QoS> = BTreeMap::new();
    for round in 0..ROUNDS {
        let (stop, stopped) = watch::channel(false);
        let publishers: Vec<_> = (0..PUBLISHERS)
            .map(|p| {
                let stopped = stopped.clone();
                tokio::spawn(publish_until_stopped(port, round, p, stopped))
            })
            .collect();
        let load_for = Duration::from_millis(fastrand::u64(200..800));
        tokio::time::sleep(load_for).await;
        broker.kill();
        let _ = stop.send(true);
        for publisher in publishers {
            acknowledged.extend(publisher.await.unwrap());
        }
        broker.restart().await;
    }
    assert!(
        acknowledged.len() > ROUNDS * PUBLISHERS,
        "too little load to check anything: {} acknowledged",
        acknowledged.len()
    );

    // Whatever is still queued for the subscriber comes now.
    let received = subscriber.finish().await;
    let lost: Vec<&String> = acknowledged
        .keys()
        .filter(|payload| !received.contains_key(*payload))
        .collect();
    let repeated: Vec<(&String, usize)> = acknowledged
        .iter()
        .filter(|(_, qos)| **qos == QoS::ExactlyOnce)
        .filter_map(|(payload, _)| {
            let count = received.get(payload).copied().unwrap_or(0);
            (count > 1).then_some((payload, count))
        })
        .collect();
    eprintln!(
        "{ROUNDS} kills: {} messages acknowledged, {} distinct received",
        acknowledged.len(),
        received.len()
    );
    assert!(
        lost.is_empty(),
        "{} acknowledged and lost, among them {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    assert!(
        repeated.is_empty(),
        "{} QoS 2 messages delivered more than once, among them {:?}",
        repeated.len(),
        &repeated[..repeated.len().min(10)]
    );
}

/// `mosquitto_sub` with a persistent session and a QoS 2 subscription, printing each payload it
/// delivers on a line of its own.
struct Subscriber {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    received: BTreeMap<String, usize>,
}

impl Subscriber {
    fn start(port: u16) -> Self {
        let mut child = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args([
                "-V", "mqttv311", "-i", "checker", "-c", "-q", "2", "-t", "load/#",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("mosquitto_sub (Debian's mosquitto-clients) runs");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            child,
            lines,
            received: BTreeMap::new(),
        }
    }

    /// Publishes probes until one arrives: the subscription is in place.
    async fn wait_until_subscribed(&mut self, port: u16) {
        let mut options = MqttOptions::new("prober", "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(30));
        let (client, mut events) = AsyncClient::new(options, 10);
        tokio::spawn(async move { while events.poll().await.is_ok() {} });
        for _ in 0..100 {
            client
                .publish("load/probe", QoS::AtMostOnce, false, "probe")
                .await
                .unwrap();
            if let Ok(Some(line)) =
                tokio::time::timeout(Duration::from_millis(100), self.lines.recv()).await
            {
                assert_eq!(line, "probe");
                return;
            }
        }
        panic!("mosquitto_sub never received a probe");
    }

    /// Reads what arrives until nothing has for a while, stops the subscriber, and returns how
    /// often each payload was delivered.
    async fn finish(mut self) -> BTreeMap<String, usize> {
        while let Ok(Some(line)) =
            tokio::time::timeout(Duration::from_secs(3), self.lines.recv()).await
        {
            *self.received.entry(line).or_default() += 1;
        }
        let _ = self.child.kill().await;
        while let Ok(line) = self.lines.try_recv() {
            *self.received.entry(line).or_default() += 1;
        }
        self.received.remove("probe");
        self.received
    }
}

/// One publisher: a message at a time, QoS 1 and 2 in turn, each counted as acknowledged once
/// PUBACK (QoS 1) or PUBREC (QoS 2) arrives; stops when the broker goes or `stopped` says so.
async fn publish_until_stopped(
    port: u16,
    round: usize,
    publisher: usize,
    stopped: watch::Receiver<bool>,
) -> BTreeMap<String, QoS> {
    let mut acknowledged = BTreeMap::new();
    let mut options = MqttOptions::new(format!("publisher-{publisher}"), "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(options, 10);
    let mut pending: BTreeSet<u16> = BTreeSet::new();
    for n in 0.. {
        if *stopped.borrow() {
            break;
        }
        let qos = if n % 2 == 0 {
            QoS::AtLeastOnce
        } else {
            QoS::ExactlyOnce
        };
        let payload = format!("r{round}-p{publisher}-{n}");
        if client
            .publish(format!("load/{publisher}"), qos, false, payload.clone())
            .await
            .is_err()
        {
            break;
        }
        // Wait for this message's acknowledgement (the one message in flight).
        let acked = loop {
            let event = match tokio::time::timeout(Duration::from_secs(5), events.poll()).await {
                Ok(Ok(event)) => event,
                _ => break false,
            };
            match event {
                Event::Outgoing(Outgoing::Publish(pkid)) => {
                    pending.insert(pkid);
                }
                Event::Incoming(Packet::PubAck(ack)) if pending.remove(&ack.pkid) => break true,
                Event::Incoming(Packet::PubRec(ack)) if pending.remove(&ack.pkid) => break true,
                _ => {}
            }
        };
        if !acked {
            break;
        }
        acknowledged.insert(payload, qos);
    }
    acknowledged
}
