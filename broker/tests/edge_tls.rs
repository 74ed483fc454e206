//! TLS listeners with `rumqttc` over rustls (ring provider, passed explicitly): a client trusting the
//! test CA connects to a `protocol: tls` listener (MQTT 5 and 3.1.1); mutual TLS accepts a client
//! certificate signed by `client_ca_file` and refuses a client without one or with one from another
//! CA; a certificate rotated on disk and reloaded through the admin API is served to new handshakes
//! while a connected rumqttc client keeps its session. Certificates are made with rcgen when the
//! tests run.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod edge_support;
mod support;

use std::sync::Arc;

use edge_support::{
    Authority, EdgeBroker, Leaf, WAIT, Workdir, client_config, free_port, tls_yaml,
};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::ConnectReturnCode;
use rumqttc::{TlsConfiguration, Transport};
use support::v5;
use support::{Note, v311};

struct TlsBroker {
    broker: EdgeBroker,
    tcp: u16,
    tls: u16,
}

/// A broker with a plain TCP listener and a TLS listener serving `server` (its `tls:` section
/// gets `tls_extra` appended).
async fn start(work: Workdir, server: &Leaf, tls_extra: &str) -> TlsBroker {
    let (tcp, tls) = (free_port(), free_port());
    let (cert, key) = server.write(&work, "server");
    let listeners = format!(
        "  - name: mqtt\n    bind: 127.0.0.1:{tcp}\n  - name: tls\n    protocol: tls\n    bind: 127.0.0.1:{tls}\n{}",
        tls_yaml(&cert, &key, tls_extra)
    );
    let broker = EdgeBroker::start(work, &listeners, "auth:\n  allow_anonymous: true\n", tcp).await;
    TlsBroker { broker, tcp, tls }
}

fn tls_options_v5(
    port: u16,
    id: &str,
    config: Arc<rustls::ClientConfig>,
) -> rumqttc::v5::MqttOptions {
    let mut options = rumqttc::v5::MqttOptions::new(id, "127.0.0.1", port);
    options.set_keep_alive(std::time::Duration::from_secs(30));
    options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)));
    options
}

/// A rumqttc v5 client over TLS, trusting the test CA, connects (CONNACK success), subscribes,
/// and receives a QoS 1 message published by a plain-TCP client.
#[tokio::test]
async fn rumqttc_v5_connects_over_tls_trusting_the_test_ca() {
    let ca = Authority::new("edge-ca");
    let b = start(Workdir::new(), &ca.server(), "").await;
    let options = tls_options_v5(b.tls, "tls-v5", client_config(&ca, None));
    let (client, mut inbox, _) = v5::start(options).await;
    v5::subscribe(&client, &mut inbox, "secure/#", QoS::AtLeastOnce).await;
    let (publisher, mut pub_inbox) = v5::connect(b.tcp, "tcp-pub").await;
    v5::publish(
        &publisher,
        &mut pub_inbox,
        "secure/a",
        QoS::AtLeastOnce,
        false,
        "over tls",
    )
    .await;
    let got = v5::expect_publish(&mut inbox, WAIT).await;
    assert_eq!(
        (v5::topic(&got), v5::payload(&got)),
        ("secure/a", "over tls")
    );
    let (status, body) = b.broker.admin("GET", "/clients/tls-v5", None).await;
    assert_eq!(status, 200, "{body}");
    let shown: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(shown["client"]["listener"], "tls", "{body}");
}

/// The same with rumqttc's MQTT 3.1.1 client over TLS.
#[tokio::test]
async fn rumqttc_v311_connects_over_tls_trusting_the_test_ca() {
    let ca = Authority::new("edge-ca");
    let b = start(Workdir::new(), &ca.server(), "").await;
    let mut options = v311::options(b.tls, "tls-v311");
    options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
        client_config(&ca, None),
    )));
    let (client, mut inbox, _) = v311::start(options).await;
    v311::subscribe(&client, &mut inbox, "secure/#", rumqttc::QoS::AtLeastOnce).await;
    v311::publish(
        &client,
        &mut inbox,
        "secure/b",
        rumqttc::QoS::AtLeastOnce,
        false,
        "v311 tls",
    )
    .await;
    let got = v311::expect_publish(&mut inbox, WAIT).await;
    assert_eq!(&got.payload[..], b"v311 tls");
}

/// A client that does not trust the server's CA fails the handshake on its side: no CONNACK.
#[tokio::test]
async fn a_client_trusting_another_ca_does_not_connect() {
    let ca = Authority::new("edge-ca");
    let other = Authority::new("other-ca");
    let b = start(Workdir::new(), &ca.server(), "").await;
    let options = tls_options_v5(b.tls, "untrusting", client_config(&other, None));
    let (_client, eventloop) = rumqttc::v5::AsyncClient::new(options, 10);
    let mut inbox = v5::spawn_inbox(eventloop);
    let error = v5::expect_connection_closed(&mut inbox, WAIT).await;
    assert!(
        matches!(error, rumqttc::v5::ConnectionError::Tls(_)),
        "expected a TLS error, got {error:?}"
    );
}

/// Mutual TLS (`require_client_certificate: true`, `client_ca_file`): a rumqttc client presenting
/// a certificate signed by that CA connects and works; one without a certificate, and one whose
/// certificate comes from another CA, never get a CONNACK.
#[tokio::test]
async fn mutual_tls_accepts_ca_signed_clients_and_refuses_others() {
    let ca = Authority::new("edge-ca");
    let other = Authority::new("other-ca");
    let work = Workdir::new();
    let ca_file = work.write("client-ca.pem", &ca.pem);
    let extra = format!(
        "      client_ca_file: {}\n      require_client_certificate: true\n",
        ca_file.display()
    );
    let b = start(work, &ca.server(), &extra).await;

    let good = ca.client("device-1");
    let options = tls_options_v5(b.tls, "mtls-good", client_config(&ca, Some(&good)));
    let (client, mut inbox, _) = v5::start(options).await;
    v5::subscribe(&client, &mut inbox, "m/#", QoS::AtLeastOnce).await;
    v5::publish(
        &client,
        &mut inbox,
        "m/1",
        QoS::AtLeastOnce,
        false,
        "mutual",
    )
    .await;
    assert_eq!(
        v5::payload(&v5::expect_publish(&mut inbox, WAIT).await),
        "mutual"
    );

    let intruder = other.client("intruder");
    for (id, config) in [
        ("mtls-none", client_config(&ca, None)),
        ("mtls-other-ca", client_config(&ca, Some(&intruder))),
    ] {
        let (_client, eventloop) =
            rumqttc::v5::AsyncClient::new(tls_options_v5(b.tls, id, config), 10);
        let mut inbox = v5::spawn_inbox(eventloop);
        match inbox.ended(WAIT).await {
            Note::Failed(error) => {
                // Whatever the client saw (an alert, a reset, EOF), it must not be a CONNACK.
                assert!(
                    !matches!(error, rumqttc::v5::ConnectionError::ConnectionRefused(_)),
                    "{id}: {error:?}"
                );
            }
            other => panic!("{id}: the connection should have failed, got {other:?}"),
        }
        let (status, _) = b.broker.admin("GET", &format!("/clients/{id}"), None).await;
        assert_eq!(status, 404, "{id} must not have a session");
    }
}

/// Certificate rotation through `POST /api/v1/reload`: the cert and key files are replaced (new
/// key, same CA); the reload reports `tls` changed; a new TLS handshake (tokio-rustls) is served
/// the new certificate's DER; the rumqttc client connected before the rotation stays connected
/// and keeps receiving; a new rumqttc client connects.
#[tokio::test]
async fn certificate_rotation_keeps_connected_clients() {
    let ca = Authority::new("edge-ca");
    let first = ca.server();
    let b = start(Workdir::new(), &first, "").await;
    assert_eq!(served_certificate(b.tls, &ca).await, first.der);

    let (old, mut old_inbox, _) =
        v5::start(tls_options_v5(b.tls, "rot-old", client_config(&ca, None))).await;
    v5::subscribe(&old, &mut old_inbox, "rot/#", QoS::AtLeastOnce).await;

    let second = ca.server();
    second.write(&b.broker.work, "server");
    let (status, body) = b.broker.admin("POST", "/reload", None).await;
    assert_eq!(status, 200, "{body}");
    let reloaded: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        reloaded["reloaded"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!({"name": "tls", "changed": true, "error": null})),
        "{body}"
    );
    assert_eq!(served_certificate(b.tls, &ca).await, second.der);

    let (publisher, mut pub_inbox) = v5::connect(b.tcp, "rot-pub").await;
    v5::publish(
        &publisher,
        &mut pub_inbox,
        "rot/after",
        QoS::AtLeastOnce,
        false,
        "still here",
    )
    .await;
    assert_eq!(
        v5::payload(&v5::expect_publish(&mut old_inbox, WAIT).await),
        "still here"
    );

    let (new, mut new_inbox, connack) =
        v5::start(tls_options_v5(b.tls, "rot-new", client_config(&ca, None))).await;
    assert_eq!(connack.code, ConnectReturnCode::Success);
    v5::subscribe(&new, &mut new_inbox, "rot/#", QoS::AtLeastOnce).await;
    v5::publish(
        &publisher,
        &mut pub_inbox,
        "rot/both",
        QoS::AtLeastOnce,
        false,
        "both",
    )
    .await;
    assert_eq!(
        v5::payload(&v5::expect_publish(&mut new_inbox, WAIT).await),
        "both"
    );
    assert_eq!(
        v5::payload(&v5::expect_publish(&mut old_inbox, WAIT).await),
        "both"
    );
}

/// The certificate a fresh handshake on `port` is served, via tokio-rustls.
async fn served_certificate(
    port: u16,
    ca: &Authority,
) -> rustls_pki_types::CertificateDer<'static> {
    let connector = tokio_rustls::TlsConnector::from(client_config(ca, None));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio::time::timeout(WAIT, connector.connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("handshake");
    tls.get_ref().1.peer_certificates().expect("a certificate")[0]
        .clone()
        .into_owned()
}
