//! WebSocket listeners with `rumqttc`'s websocket transport: `Transport::Ws` against a `ws` listener
//! and `Transport::Wss` (rustls on the ring provider, trusting an rcgen test CA) against a `wss`
//! listener, for MQTT 5 and 3.1.1. rumqttc itself checks that the server answers the upgrade with
//! subprotocol `mqtt` (it refuses the connection otherwise). A path the listener does not serve is
//! refused.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod edge_support;
mod support;

use std::time::Duration;

use edge_support::{Authority, EdgeBroker, WAIT, Workdir, client_config, free_port, tls_yaml};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::{TlsConfiguration, Transport};
use support::{Note, v5, v311};

struct WsBroker {
    broker: EdgeBroker,
    tcp: u16,
    ws: u16,
    wss: u16,
    ca: Authority,
}

/// A broker with `mqtt` (tcp), `ws` and `wss` listeners; the WebSocket path is `path`.
async fn start(path: &str) -> WsBroker {
    let work = Workdir::new();
    let ca = Authority::new("edge-ws-ca");
    let (cert, key) = ca.server().write(&work, "server");
    let (tcp, ws, wss) = (free_port(), free_port(), free_port());
    let listeners = format!(
        "  - name: mqtt\n    bind: 127.0.0.1:{tcp}\n\
         \x20 - name: ws\n    protocol: ws\n    bind: 127.0.0.1:{ws}\n    websocket: {{path: {path}}}\n\
         \x20 - name: wss\n    protocol: wss\n    bind: 127.0.0.1:{wss}\n    websocket: {{path: {path}}}\n{}",
        tls_yaml(&cert, &key, "")
    );
    let broker = EdgeBroker::start(work, &listeners, "auth:\n  allow_anonymous: true\n", tcp).await;
    WsBroker {
        broker,
        tcp,
        ws,
        wss,
        ca,
    }
}

fn ws_transport(b: &WsBroker, secure: bool) -> (String, Transport) {
    if secure {
        (
            format!("wss://127.0.0.1:{}/mqtt", b.wss),
            Transport::wss_with_config(TlsConfiguration::Rustls(client_config(&b.ca, None))),
        )
    } else {
        (format!("ws://127.0.0.1:{}/mqtt", b.ws), Transport::Ws)
    }
}

async fn v5_roundtrip(secure: bool) {
    let b = start("/mqtt").await;
    let (url, transport) = ws_transport(&b, secure);
    let id = if secure { "wss-v5" } else { "ws-v5" };
    let mut options = rumqttc::v5::MqttOptions::new(id, url, 0);
    options.set_keep_alive(Duration::from_secs(30));
    // rumqttc reads at most 10 kB per packet unless told otherwise (and then announces it).
    options.set_max_packet_size(Some(1 << 20));
    options.set_transport(transport);
    let (client, mut inbox, _) = v5::start(options).await;
    v5::subscribe(&client, &mut inbox, "web/#", QoS::ExactlyOnce).await;
    v5::publish(
        &client,
        &mut inbox,
        "web/self",
        QoS::ExactlyOnce,
        false,
        "from ws",
    )
    .await;
    assert_eq!(
        v5::payload(&v5::expect_publish(&mut inbox, WAIT).await),
        "from ws"
    );
    let (tcp, mut tcp_inbox) = v5::connect(b.tcp, "tcp-peer").await;
    v5::publish(
        &tcp,
        &mut tcp_inbox,
        "web/tcp",
        QoS::AtLeastOnce,
        false,
        vec![7u8; 100_000],
    )
    .await;
    let big = v5::expect_publish(&mut inbox, WAIT).await;
    assert_eq!(
        big.payload.len(),
        100_000,
        "a message larger than one frame's 16-bit length"
    );
    let (status, body) = b.broker.admin("GET", &format!("/clients/{id}"), None).await;
    assert_eq!(status, 200, "{body}");
    let shown: serde_json::Value = serde_json::from_str(&body).unwrap();
    let listener = if secure { "wss" } else { "ws" };
    assert_eq!(shown["client"]["listener"], listener, "{body}");
}

/// rumqttc v5 over `Transport::Ws`: CONNECT, SUBSCRIBE, QoS 2 to itself, and a 100 kB message from
/// a TCP client; the admin API shows the client on the `ws` listener.
#[tokio::test]
async fn rumqttc_v5_over_ws() {
    v5_roundtrip(false).await;
}

/// The same over `Transport::Wss` with TLS trusting the test CA, on the `wss` listener.
#[tokio::test]
async fn rumqttc_v5_over_wss() {
    v5_roundtrip(true).await;
}

/// rumqttc's MQTT 3.1.1 client over `ws` and `wss`: subscribe and get its own QoS 1 message.
#[tokio::test]
async fn rumqttc_v311_over_ws_and_wss() {
    let b = start("/mqtt").await;
    for secure in [false, true] {
        let (url, transport) = ws_transport(&b, secure);
        let id = format!("ws-v311-{secure}");
        let mut options = rumqttc::MqttOptions::new(&id, url, 0);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_transport(transport);
        let (client, mut inbox, _) = v311::start(options).await;
        v311::subscribe(&client, &mut inbox, "old/#", rumqttc::QoS::AtLeastOnce).await;
        v311::publish(
            &client,
            &mut inbox,
            "old/t",
            rumqttc::QoS::AtLeastOnce,
            false,
            "3.1.1",
        )
        .await;
        assert_eq!(
            &v311::expect_publish(&mut inbox, WAIT).await.payload[..],
            b"3.1.1"
        );
    }
}

/// `websocket.path: /custom`: rumqttc connects on `/custom`; asking for `/mqtt` fails the upgrade
/// (404), so the client never gets a CONNACK and no session exists.
#[tokio::test]
async fn only_the_configured_path_is_served() {
    let b = start("/custom").await;
    let mut options =
        rumqttc::v5::MqttOptions::new("on-path", format!("ws://127.0.0.1:{}/custom", b.ws), 0);
    options.set_transport(Transport::Ws);
    let (_client, _inbox, _) = v5::start(options).await;

    let mut options =
        rumqttc::v5::MqttOptions::new("off-path", format!("ws://127.0.0.1:{}/mqtt", b.ws), 0);
    options.set_transport(Transport::Ws);
    let (_client, eventloop) = rumqttc::v5::AsyncClient::new(options, 10);
    let mut inbox = v5::spawn_inbox(eventloop);
    match inbox.ended(WAIT).await {
        Note::Failed(error) => assert!(
            matches!(error, rumqttc::v5::ConnectionError::Websocket(_)),
            "expected a WebSocket handshake error, got {error:?}"
        ),
        other => panic!("the upgrade on a wrong path should fail, got {other:?}"),
    }
    let (status, _) = b.broker.admin("GET", "/clients/off-path", None).await;
    assert_eq!(status, 404);
}
