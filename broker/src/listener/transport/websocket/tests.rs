//! WebSocket upgrade and framing against a tokio-tungstenite client over real sockets.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::Response;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use super::*;

type Client = WebSocketStream<TcpStream>;
type ClientResult = Result<(Client, Response<Option<Vec<u8>>>), tungstenite::Error>;

/// Upgrades a fresh socket at `path`, offering `subprotocols`, with [`accept`] on the server side.
async fn upgrade(
    path: &str,
    subprotocols: Option<&str>,
) -> (ClientResult, Result<WsStream<TcpStream>, WsError>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    if let Some(offered) = subprotocols {
        request
            .headers_mut()
            .insert(header::SEC_WEBSOCKET_PROTOCOL, offered.parse().unwrap());
    }
    let connect = async move {
        let tcp = TcpStream::connect(addr).await.unwrap();
        tokio_tungstenite::client_async(request, tcp).await
    };
    let serve = async {
        let (tcp, _) = listener.accept().await.unwrap();
        accept(tcp, "/mqtt").await
    };
    tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(connect, serve)
    })
    .await
    .unwrap()
}

async fn connected(subprotocols: Option<&str>) -> (Client, WsStream<TcpStream>) {
    let (client, server) = upgrade("/mqtt", subprotocols).await;
    (client.unwrap().0, server.unwrap())
}

fn chosen(response: &Response<Option<Vec<u8>>>) -> Option<&str> {
    response
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .map(|value| value.to_str().unwrap())
}

#[tokio::test]
async fn another_path_gets_404() {
    let (client, server) = upgrade("/other?x=1", Some("mqtt")).await;
    match client {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::NOT_FOUND)
        }
        other => panic!("expected 404, got {other:?}"),
    }
    match server {
        Err(error @ WsError::WrongPath { .. }) => {
            assert_eq!(error.kind(), "wrong_path");
            assert!(error.to_string().contains("/other"), "{error}");
        }
        other => panic!("expected WrongPath, got {:?}", other.err()),
    }
}

#[tokio::test]
async fn the_query_string_does_not_matter() {
    let (client, server) = upgrade("/mqtt?token=abc", None).await;
    client.unwrap();
    server.unwrap();
}

#[tokio::test]
async fn subprotocol_is_the_one_the_client_offered() {
    for (offered, expected) in [
        (Some("mqtt"), Some("mqtt")),
        (Some("mqttv3.1"), Some("mqttv3.1")),
        (Some("wamp, mqttv3.1,mqtt"), Some("mqtt")),
        (None, None),
    ] {
        let (client, server) = upgrade("/mqtt", offered).await;
        assert_eq!(chosen(&client.unwrap().1), expected, "offered {offered:?}");
        server.unwrap();
    }
}

#[tokio::test]
async fn a_packet_split_over_two_messages_and_two_packets_in_one_message() {
    let (mut client, mut server) = connected(Some("mqtt")).await;
    // PINGREQ split in two, then PINGREQ + DISCONNECT in one message.
    client.send(Message::binary(vec![0xc0])).await.unwrap();
    client.send(Message::binary(vec![0x00])).await.unwrap();
    client
        .send(Message::binary(vec![0xc0, 0x00, 0xe0, 0x00]))
        .await
        .unwrap();
    let mut first = [0u8; 2];
    server.read_exact(&mut first).await.unwrap();
    assert_eq!(first, [0xc0, 0x00]);
    let mut rest = [0u8; 4];
    server.read_exact(&mut rest).await.unwrap();
    assert_eq!(rest, [0xc0, 0x00, 0xe0, 0x00]);
}

#[tokio::test]
async fn a_message_fragmented_into_frames_reads_as_one() {
    let (mut client, mut server) = connected(Some("mqtt")).await;
    let first = Frame::message(vec![0xc0], OpCode::Data(Data::Binary), false);
    let last = Frame::message(vec![0x00], OpCode::Data(Data::Continue), true);
    client.send(Message::Frame(first)).await.unwrap();
    client.send(Message::Frame(last)).await.unwrap();
    let mut packet = [0u8; 2];
    server.read_exact(&mut packet).await.unwrap();
    assert_eq!(packet, [0xc0, 0x00]);
}

#[tokio::test]
async fn each_write_is_one_binary_message() {
    let (mut client, mut server) = connected(Some("mqtt")).await;
    server.write_all(&[0xd0, 0x00]).await.unwrap();
    server.write_all(&[0x20, 0x02, 0x00, 0x00]).await.unwrap();
    server.flush().await.unwrap();
    assert_eq!(
        client.next().await.unwrap().unwrap(),
        Message::binary(vec![0xd0, 0x00])
    );
    assert_eq!(
        client.next().await.unwrap().unwrap(),
        Message::binary(vec![0x20, 0x02, 0x00, 0x00])
    );
}

#[tokio::test]
async fn a_small_read_buffer_takes_a_message_in_pieces() {
    let (mut client, mut server) = connected(None).await;
    client
        .send(Message::binary(b"0123456789".to_vec()))
        .await
        .unwrap();
    let mut piece = [0u8; 3];
    let mut all = Vec::new();
    while all.len() < 10 {
        let n = server.read(&mut piece).await.unwrap();
        all.extend_from_slice(&piece[..n]);
    }
    assert_eq!(all, b"0123456789");
}

#[tokio::test]
async fn pings_are_answered_and_skipped() {
    let (mut client, mut server) = connected(Some("mqtt")).await;
    client
        .send(Message::Ping(Bytes::from_static(b"hi")))
        .await
        .unwrap();
    client
        .send(Message::binary(vec![0xc0, 0x00]))
        .await
        .unwrap();
    let mut packet = [0u8; 2];
    server.read_exact(&mut packet).await.unwrap();
    assert_eq!(packet, [0xc0, 0x00]);
    assert_eq!(
        client.next().await.unwrap().unwrap(),
        Message::Pong(Bytes::from_static(b"hi"))
    );
}

#[tokio::test]
async fn a_text_message_closes_with_1003_and_fails_the_read() {
    let (mut client, mut server) = connected(Some("mqtt")).await;
    client.send(Message::text("CONNECT")).await.unwrap();
    let error = server.read(&mut [0u8; 16]).await.unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    assert_eq!(
        server.read(&mut [0u8; 16]).await.unwrap_err().kind(),
        io::ErrorKind::InvalidData
    );
    match client.next().await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Unsupported),
        other => panic!("expected close 1003, got {other:?}"),
    }
}

#[tokio::test]
async fn a_close_from_the_client_is_end_of_stream_and_gets_its_reply() {
    let (mut client, mut server) = connected(Some("mqtt")).await;
    client
        .send(Message::binary(vec![0xe0, 0x00]))
        .await
        .unwrap();
    client.close(None).await.unwrap();
    let mut received = Vec::new();
    let read =
        tokio::time::timeout(Duration::from_secs(5), server.read_to_end(&mut received)).await;
    read.unwrap().unwrap();
    assert_eq!(received, [0xe0, 0x00]);
    // The server's reply completes the client's closing handshake.
    let reply = tokio::time::timeout(Duration::from_secs(5), client.next())
        .await
        .unwrap();
    assert!(matches!(reply, Some(Ok(Message::Close(_)))), "{reply:?}");
}

#[tokio::test]
async fn shutdown_sends_a_normal_close() {
    let (mut client, mut server) = connected(Some("mqtt")).await;
    server.shutdown().await.unwrap();
    match client.next().await {
        Some(Ok(Message::Close(frame))) => {
            assert!(frame.is_none_or(|f| f.code == CloseCode::Normal))
        }
        other => panic!("expected a close, got {other:?}"),
    }
}

#[test]
fn settings_default_to_the_mqtt_path() {
    use crate::config::WebSocketSettings;
    let settings: WebSocketSettings = serde_yaml::from_str("{}").unwrap();
    assert_eq!(settings, WebSocketSettings::default());
    assert_eq!(settings.path, "/mqtt");
    assert!(serde_yaml::from_str::<WebSocketSettings>("path: /ws\nsubprotocol: mqtt\n").is_err());
}
