//! Graceful shutdown of the broker process on SIGTERM, as Kubernetes stops a pod.

mod support;

use rumqttc::v5::mqttbytes::v5::DisconnectReasonCode;
use support::{TestBroker, WAIT, mosquitto_mode, v5, v311};

/// On SIGTERM the broker tells each v5 client why it goes away, with DISCONNECT reason code 0x8B
/// (Server shutting down, §3.14.2.1; [MQTT-3.14.2-1] a server DISCONNECT uses a listed reason
/// code), and the process exits with status 0 (DESIGN §3, "Leaving").
#[tokio::test]
async fn sigterm_sends_server_shutting_down_to_v5_clients_and_exits_cleanly() {
    let mut broker = TestBroker::start().await;
    let (_client, mut inbox) = v5::connect(broker.port(), "bystander").await;

    let status = broker.stop_gracefully().await;
    assert!(status.success(), "exit status {status}");
    if mosquitto_mode() {
        // Mosquitto 2.0.11 closes connections on SIGTERM without a DISCONNECT; only the close
        // is checked against it.
        v5::expect_connection_closed(&mut inbox, WAIT).await;
        return;
    }
    let reason = v5::expect_server_disconnect(&mut inbox, WAIT).await;
    assert_eq!(reason, DisconnectReasonCode::ServerShuttingDown);
}

/// On SIGTERM the broker closes v3.1.1 connections (that protocol has no server DISCONNECT) and
/// exits with status 0.
#[tokio::test]
async fn sigterm_closes_v311_connections_and_exits_cleanly() {
    let mut broker = TestBroker::start().await;
    let (_client, mut inbox) = v311::connect(broker.port(), "bystander").await;

    let status = broker.stop_gracefully().await;
    assert!(status.success(), "exit status {status}");
    v311::expect_connection_closed(&mut inbox, WAIT).await;
}

/// A broker with no clients exits with status 0 on SIGTERM.
#[tokio::test]
async fn sigterm_on_an_idle_broker_exits_with_status_zero() {
    let mut broker = TestBroker::start().await;
    let status = broker.stop_gracefully().await;
    assert!(status.success(), "exit status {status}");
}
