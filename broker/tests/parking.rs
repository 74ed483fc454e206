//! Idle plain-TCP connections leave their task for the parking lot (`limits.park_after_idle_ms`)
//! and come back for whatever concerns them: the client's packets, deliveries, kicks, shutdown and
//! keep alive. Each test waits until the broker's `tern_connections_parked` gauge shows the client
//! parked, then checks the behaviour the specification asks of any connection.
//!
//! An embedded server, so that several brokers share the process's one parking lot as they would
//! in a program that embeds more than one.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use support::raw_v5::{self, packet, read_packet, string};
use support::{QUIET, WAIT};
use tern_broker::config::HttpConfig;
use tern_broker::{InlineClient, QoS, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// DISCONNECT reason codes (MQTT 5, 3.14.2.1).
const KEEP_ALIVE_TIMEOUT: u8 = 0x8D;
const SESSION_TAKEN_OVER: u8 = 0x8E;
const SERVER_SHUTTING_DOWN: u8 = 0x8B;

struct Broker {
    port: u16,
    http: SocketAddr,
    inline: InlineClient,
    shutdown: CancellationToken,
    run: JoinHandle<()>,
}

impl Broker {
    async fn start(park_after_idle_ms: u64) -> Broker {
        let mut config = support::embedded::loopback_config();
        config.limits.park_after_idle_ms = park_after_idle_ms;
        config.http = Some(HttpConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            ..HttpConfig::default()
        });
        let server = Server::builder(config).bind().await.unwrap();
        let port = server.local_addrs()[0].1.port();
        let http = server.http_addr().expect("HTTP endpoint");
        let inline = server.client();
        let shutdown = server.shutdown_token();
        let run = tokio::spawn(server.run(std::future::pending()));
        Broker {
            port,
            http,
            inline,
            shutdown,
            run,
        }
    }

    /// The `tern_connections_parked` gauge, read from `/metrics`.
    async fn parked(&self) -> i64 {
        let mut stream = TcpStream::connect(self.http).await.unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: test\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
            .lines()
            .find_map(|line| line.strip_prefix("tern_connections_parked "))
            .expect("the gauge is exported")
            .trim()
            .parse()
            .unwrap()
    }

    /// Waits until exactly `count` connections are parked.
    async fn wait_parked(&self, count: i64) {
        let deadline = Instant::now() + WAIT;
        loop {
            let parked = self.parked().await;
            if parked == count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{parked} connections parked, expected {count}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// An MQTT 5 client that sent CONNECT and got a successful CONNACK.
    async fn connect(&self, client_id: &str, keep_alive: u16, will: bool) -> TcpStream {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await.unwrap();
        stream
            .write_all(&connect(client_id, keep_alive, will))
            .await
            .unwrap();
        let connack = read_packet(&mut stream).await.expect("CONNACK");
        assert_eq!((connack.kind, connack.reason()), (2, 0), "CONNACK success");
        stream
    }
}

/// CONNECT (MQTT 5, 3.1): clean start, `keep_alive` seconds, and optionally a will on `will/<id>`.
fn connect(client_id: &str, keep_alive: u16, will: bool) -> Vec<u8> {
    let mut body = string(b"MQTT");
    let flags = if will { 0x02 | 0x04 } else { 0x02 };
    body.push(5);
    body.push(flags);
    body.extend(keep_alive.to_be_bytes());
    body.push(0); // no CONNECT properties
    body.extend(string(client_id.as_bytes()));
    if will {
        body.push(0); // no will properties
        body.extend(string(format!("will/{client_id}").as_bytes()));
        body.extend(string(b"gone"));
    }
    packet(0x10, body)
}

/// SUBSCRIBE (3.8) to one filter at QoS 0, packet identifier 1.
fn subscribe(filter: &str) -> Vec<u8> {
    let mut body = vec![0, 1, 0];
    body.extend(string(filter.as_bytes()));
    body.push(0);
    packet(0x82, body)
}

async fn expect_suback(stream: &mut TcpStream) {
    let suback = read_packet(stream).await.expect("SUBACK");
    assert_eq!(suback.kind, 9, "SUBACK");
}

/// The topic and payload of a QoS 0 PUBLISH received by an MQTT 5 client.
async fn expect_publish(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let publish = read_packet(stream).await.expect("PUBLISH");
    assert_eq!(publish.kind, 3, "PUBLISH");
    let topic_len = usize::from(u16::from_be_bytes([publish.body[0], publish.body[1]]));
    let topic = String::from_utf8(publish.body[2..2 + topic_len].to_vec()).unwrap();
    let (props_len, used) = raw_v5::read_varint(&publish.body[2 + topic_len..]);
    let payload = publish.body[2 + topic_len + used + props_len..].to_vec();
    (topic, payload)
}

/// The reason code of the DISCONNECT the server sends, then the end of the connection.
async fn expect_disconnect(stream: &mut TcpStream) -> u8 {
    let disconnect = read_packet(stream).await.expect("DISCONNECT");
    assert_eq!(disconnect.kind, 14, "DISCONNECT");
    assert!(
        read_packet(stream).await.is_none(),
        "the server closes the connection after DISCONNECT"
    );
    disconnect.reason()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_silent_after_connack_is_parked_and_still_gets_its_messages() {
    let broker = Broker::start(100).await;
    let mut subscriber = broker.connect("parked-sub", 60, false).await;
    broker.wait_parked(1).await;
    subscriber.write_all(&subscribe("parking/t")).await.unwrap();
    expect_suback(&mut subscriber).await;
    broker.wait_parked(1).await;

    // A message on a subscribed topic reaches the subscriber, parked or not.
    broker
        .inline
        .publish(
            "parking/t",
            Bytes::from_static(b"one"),
            QoS::AtMostOnce,
            false,
        )
        .unwrap();
    assert_eq!(
        expect_publish(&mut subscriber).await,
        ("parking/t".to_string(), b"one".to_vec())
    );
    broker.wait_parked(1).await;
    broker
        .inline
        .publish(
            "parking/t",
            Bytes::from_static(b"two"),
            QoS::AtMostOnce,
            false,
        )
        .unwrap();
    assert_eq!(expect_publish(&mut subscriber).await.1, b"two".to_vec());
}

/// A connection woken by its socket runs in its task again, and deliveries must wake that task, not
/// the lot (with a long idle interval, it stays out of the lot for the rest of the test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_connection_gets_deliveries_at_once() {
    let broker = Broker::start(60_000).await;
    let mut subscriber = broker.connect("resumed-sub", 60, false).await;
    // Silent after CONNACK: parked at once, whatever the interval.
    broker.wait_parked(1).await;
    subscriber.write_all(&subscribe("parking/r")).await.unwrap();
    expect_suback(&mut subscriber).await;
    assert_eq!(broker.parked().await, 0, "resumed by its SUBSCRIBE");
    for payload in [&b"a"[..], b"b", b"c"] {
        broker
            .inline
            .publish(
                "parking/r",
                Bytes::copy_from_slice(payload),
                QoS::AtMostOnce,
                false,
            )
            .unwrap();
        assert_eq!(expect_publish(&mut subscriber).await.1, payload.to_vec());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_client_gets_its_pingresp() {
    let broker = Broker::start(100).await;
    let mut client = broker.connect("parked-ping", 60, false).await;
    for _ in 0..3 {
        broker.wait_parked(1).await;
        // [MQTT-3.12.4-1] The Server MUST send a PINGRESP packet in response to a PINGREQ packet.
        client.write_all(&[0xC0, 0x00]).await.unwrap();
        let pingresp = read_packet(&mut client).await.expect("PINGRESP");
        assert_eq!(pingresp.kind, 13, "PINGRESP");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_still_ends_a_parked_connection_on_time() {
    let broker = Broker::start(100).await;
    let connected = Instant::now();
    // Keep alive 4 s: the server allows one and a half times that, 6 s.
    let mut client = broker.connect("parked-silent", 4, false).await;
    broker.wait_parked(1).await;
    // The broker says nothing until the deadline; wait for its first byte, then read the packet.
    tokio::time::timeout(2 * WAIT, client.peek(&mut [0; 1]))
        .await
        .expect("the server acts on the expired keep alive")
        .unwrap();
    // [MQTT-3.1.2-24] If the Server does not receive a packet within one and a half times the Keep
    // Alive, it MUST close the connection as if the network had failed (v5: DISCONNECT 0x8D).
    assert_eq!(expect_disconnect(&mut client).await, KEEP_ALIVE_TIMEOUT);
    let waited = connected.elapsed();
    assert!(
        waited >= Duration::from_secs(6),
        "closed after {waited:?}, before one and a half times the keep alive"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_connection_is_taken_over_by_a_new_one_with_its_client_identifier() {
    let broker = Broker::start(100).await;
    let mut first = broker.connect("parked-twice", 60, false).await;
    broker.wait_parked(1).await;
    let _second = broker.connect("parked-twice", 60, false).await;
    // [MQTT-3.1.4-3] The Server MUST disconnect the existing Client (v5: reason 0x8E).
    assert_eq!(expect_disconnect(&mut first).await, SESSION_TAKEN_OVER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_client_that_goes_away_has_its_will_published() {
    let broker = Broker::start(100).await;
    let mut watcher = broker.connect("will-watcher", 60, false).await;
    watcher
        .write_all(&subscribe("will/parked-will"))
        .await
        .unwrap();
    expect_suback(&mut watcher).await;
    let client = broker.connect("parked-will", 60, true).await;
    broker.wait_parked(2).await;
    drop(client);
    // [MQTT-3.1.2-8] The Will Message MUST be published when the Network Connection is closed
    // without DISCONNECT: the lot notices the parked socket's end.
    assert_eq!(
        expect_publish(&mut watcher).await,
        ("will/parked-will".to_string(), b"gone".to_vec())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_disconnects_parked_clients_and_waits_for_them() {
    let broker = Broker::start(100).await;
    let mut client = broker.connect("parked-at-shutdown", 60, false).await;
    broker.wait_parked(1).await;
    broker.shutdown.cancel();
    assert_eq!(expect_disconnect(&mut client).await, SERVER_SHUTTING_DOWN);
    tokio::time::timeout(WAIT, broker.run)
        .await
        .expect("the server stops once its parked connections have ended")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_parking_off_connections_keep_their_tasks() {
    let broker = Broker::start(0).await;
    let mut client = broker.connect("never-parked", 60, false).await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(broker.parked().await, 0);
    client.write_all(&[0xC0, 0x00]).await.unwrap();
    assert_eq!(read_packet(&mut client).await.expect("PINGRESP").kind, 13);
}
