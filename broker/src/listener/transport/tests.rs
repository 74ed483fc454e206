//! The whole stack as a listener would build it: PROXY header, then TLS, then WebSocket, carrying
//! MQTT bytes both ways, with a browser-like client (ALPN "http/1.1", subprotocol "mqtt").

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::test_pki::{Authority, client_config};
use super::tls::TlsTerminator;
use super::{proxy, websocket};
use crate::config::TlsSettings;

/// What `connection::serve` asks of a stream.
fn assert_servable<S: AsyncRead + AsyncWrite + Send + Unpin>(stream: S) -> S {
    stream
}

#[tokio::test]
async fn proxy_then_tls_then_websocket_carries_mqtt() {
    let (server_ca, client_ca) = (Authority::new("server ca"), Authority::new("client ca"));
    let (server, device) = (server_ca.server("broker"), client_ca.client("device-9"));
    let dir = tempfile::TempDir::new().unwrap();
    let settings = TlsSettings {
        cert_file: dir.path().join("tls.crt"),
        key_file: dir.path().join("tls.key"),
        client_ca_file: Some(dir.path().join("ca.crt")),
        require_client_certificate: true,
        use_identity_as_username: true,
    };
    std::fs::write(&settings.cert_file, &server.cert_pem).unwrap();
    std::fs::write(&settings.key_file, &server.key_pem).unwrap();
    std::fs::write(dir.path().join("ca.crt"), &client_ca.pem).unwrap();
    let terminator = TlsTerminator::load(&settings).unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls_client = client_config(&server_ca, Some(&device), &[b"http/1.1"]);
    let client = tokio::spawn(async move {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"PROXY TCP4 203.0.113.9 192.0.2.1 40000 8084\r\n")
            .await
            .unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let tls = tokio_rustls::TlsConnector::from(tls_client)
            .connect(name, tcp)
            .await
            .unwrap();
        let mut request = "wss://localhost/mqtt".into_client_request().unwrap();
        request
            .headers_mut()
            .insert("sec-websocket-protocol", "mqtt".parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::client_async(request, tls).await.unwrap();
        ws.send(Message::binary(vec![0xc0, 0x00])).await.unwrap();
        let reply = ws.next().await.unwrap().unwrap();
        ws.close(None).await.unwrap();
        reply
    });

    let (mut tcp, _) = listener.accept().await.unwrap();
    let stack = async {
        let header = proxy::read_header(&mut tcp).await.unwrap();
        let (tls, identity) = terminator.accept(tcp).await.unwrap();
        (
            header,
            identity,
            websocket::accept(tls, "/mqtt").await.unwrap(),
        )
    };
    let (header, identity, stream) = tokio::time::timeout(Duration::from_secs(10), stack)
        .await
        .unwrap();
    assert_eq!(header.source, "203.0.113.9:40000".parse().ok());
    assert_eq!(identity.as_deref(), Some("device-9"));

    let (mut reader, mut writer) = tokio::io::split(assert_servable(stream));
    let mut pingreq = [0u8; 2];
    reader.read_exact(&mut pingreq).await.unwrap();
    assert_eq!(pingreq, [0xc0, 0x00]);
    writer.write_all(&[0xd0, 0x00]).await.unwrap();
    writer.flush().await.unwrap();
    assert_eq!(client.await.unwrap(), Message::binary(vec![0xd0, 0x00]));
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
}
