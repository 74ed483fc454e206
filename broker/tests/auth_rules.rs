//! Rules of MQTT 5 authentication that only show with an authentication hook installed (the
//! `tern-broker` binary has none): the method repeated in every AUTH and in CONNACK, the AUTH
//! reason codes, AUTH against the client's Maximum Packet Size, a failed re-authentication, and
//! a Client Identifier a hook refuses. The server runs embedded; the client side is written byte
//! by byte from the specification's packet layouts, independent of the broker's codec.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod support;

use bytes::Bytes;
use tern_broker::hook::{AuthDecision, BoxFuture, ConnectRequest};
use tern_broker::{AuthStep, ClientInfo, EnhancedAuth, Hook, ReasonCode};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use support::embedded::start_with_hook;
use support::raw_v5::{Received, auth, connect, read_packet};

const METHOD: &str = "ECHO-BACK";
/// The Authenticate Reason Codes of MQTT 5 §3.15.2.1.
const AUTH_REASON_CODES: [u8; 3] = [0x00, 0x18, 0x19];

/// Challenges with a fixed nonce and accepts it sent back reversed; refuses Client Identifiers
/// that start with "refused-" with 0x85.
struct Gatekeeper;

struct EchoBack {
    challenged: bool,
}

impl EnhancedAuth for EchoBack {
    fn step(&mut self, data: Option<Bytes>) -> BoxFuture<'_, AuthStep> {
        Box::pin(async move {
            if !self.challenged {
                self.challenged = true;
                return AuthStep::Continue(Some(Bytes::from_static(b"nonce")));
            }
            if data.as_deref() == Some(&b"ecnon"[..]) {
                AuthStep::Success(None)
            } else {
                AuthStep::Failure(ReasonCode::NOT_AUTHORIZED)
            }
        })
    }
}

impl Hook for Gatekeeper {
    fn name(&self) -> &'static str {
        "gatekeeper"
    }

    fn authenticate<'a>(&'a self, request: &'a ConnectRequest<'a>) -> BoxFuture<'a, AuthDecision> {
        Box::pin(async move {
            if request.client.client_id.as_str().starts_with("refused-") {
                AuthDecision::Deny(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID)
            } else {
                AuthDecision::Continue
            }
        })
    }

    fn start_enhanced_auth(&self, method: &str, _: &ClientInfo) -> Option<Box<dyn EnhancedAuth>> {
        (method == METHOD)
            .then(|| Box::new(EchoBack { challenged: false }) as Box<dyn EnhancedAuth>)
    }
}

async fn start_server() -> (u16, tokio_util::sync::CancellationToken) {
    start_with_hook(Gatekeeper).await
}

/// Connects with the enhanced authentication method and answers the challenge correctly;
/// returns the stream after the CONNACK and every AUTH/CONNACK the server sent.
async fn authenticated(port: u16, client_id: &str, extra: &[u8]) -> (TcpStream, Vec<Received>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream
        .write_all(&connect(client_id, Some((METHOD, None)), extra))
        .await
        .unwrap();
    let challenge = read_packet(&mut stream).await.expect("AUTH challenge");
    assert_eq!(
        (challenge.kind, challenge.reason()),
        (15, 0x18),
        "continue authentication"
    );
    stream
        .write_all(&auth(0x18, METHOD, Some(b"ecnon")))
        .await
        .unwrap();
    let connack = read_packet(&mut stream).await.expect("CONNACK");
    assert_eq!(
        (connack.kind, connack.reason()),
        (2, 0x00),
        "CONNACK success"
    );
    (stream, vec![challenge, connack])
}

/// v5 [MQTT-4.12.0-5] [MQTT-3.15.2-1] [MQTT-4.12.1-1]: with an Authentication Method in CONNECT,
/// every AUTH the server sends (during CONNECT and during a re-authentication) and the successful
/// CONNACK carry that same method, and every AUTH has one of the Authenticate Reason Codes.
#[tokio::test]
async fn every_auth_and_the_connack_repeat_the_method() {
    let (port, shutdown) = start_server().await;
    let (mut stream, mut sent) = authenticated(port, "method-kept", &[]).await;
    stream.write_all(&auth(0x19, METHOD, None)).await.unwrap();
    let challenge = read_packet(&mut stream)
        .await
        .expect("re-authentication challenge");
    assert_eq!((challenge.kind, challenge.reason()), (15, 0x18));
    stream
        .write_all(&auth(0x18, METHOD, Some(b"ecnon")))
        .await
        .unwrap();
    let done = read_packet(&mut stream)
        .await
        .expect("re-authentication result");
    assert_eq!((done.kind, done.reason()), (15, 0x00), "AUTH success");
    sent.extend([challenge, done]);
    for packet in &sent {
        assert_eq!(
            packet.property(0x15).as_deref(),
            Some(METHOD.as_bytes()),
            "packet type {} without the CONNECT's Authentication Method",
            packet.kind
        );
        if packet.kind == 15 {
            assert!(
                AUTH_REASON_CODES.contains(&packet.reason()),
                "AUTH reason {:#x}",
                packet.reason()
            );
        }
    }
    shutdown.cancel();
}

/// v5 [MQTT-4.12.1-2] [MQTT-4.13.2-1]: a re-authentication that fails (a wrong answer) ends the
/// connection: the server sends DISCONNECT with a reason code of 0x80 or more, then closes.
#[tokio::test]
async fn failed_reauthentication_closes_the_connection() {
    let (port, shutdown) = start_server().await;
    let (mut stream, _) = authenticated(port, "reauth-fails", &[]).await;
    stream.write_all(&auth(0x19, METHOD, None)).await.unwrap();
    let challenge = read_packet(&mut stream)
        .await
        .expect("re-authentication challenge");
    assert_eq!((challenge.kind, challenge.reason()), (15, 0x18));
    stream
        .write_all(&auth(0x18, METHOD, Some(b"wrong")))
        .await
        .unwrap();
    let disconnect = read_packet(&mut stream).await.expect("DISCONNECT");
    assert_eq!(disconnect.kind, 14, "expected DISCONNECT");
    assert!(
        disconnect.reason() >= 0x80,
        "DISCONNECT reason {:#x}",
        disconnect.reason()
    );
    assert!(
        read_packet(&mut stream).await.is_none(),
        "connection still open"
    );
    shutdown.cancel();
}

/// v5 [MQTT-3.15.2-2] [MQTT-3.15.2-3] [MQTT-3.1.2-24]: to a client whose Maximum Packet Size is
/// 40 bytes, every AUTH the server sends fits, so it carries no Reason String or User Property
/// that would take it over.
#[tokio::test]
async fn auth_fits_the_client_maximum_packet_size() {
    const MAX: usize = 40;
    let (port, shutdown) = start_server().await;
    let max_packet_size = [0x27, 0, 0, 0, MAX as u8];
    let (mut stream, mut sent) = authenticated(port, "small-auth", &max_packet_size).await;
    stream.write_all(&auth(0x19, METHOD, None)).await.unwrap();
    sent.push(
        read_packet(&mut stream)
            .await
            .expect("re-authentication challenge"),
    );
    stream
        .write_all(&auth(0x18, METHOD, Some(b"ecnon")))
        .await
        .unwrap();
    sent.push(
        read_packet(&mut stream)
            .await
            .expect("re-authentication result"),
    );
    for packet in sent.iter().filter(|p| p.kind == 15) {
        assert!(
            packet.size() <= MAX,
            "{}-byte AUTH over Maximum Packet Size {MAX}",
            packet.size()
        );
        assert!(packet.property(0x1F).is_none(), "AUTH with a Reason String");
    }
    shutdown.cancel();
}

/// v5 [MQTT-3.1.3-8] [MQTT-3.2.2-6] [MQTT-3.2.2-7]: a Client Identifier the server refuses (here
/// through a hook) gets CONNACK 0x85 (Client Identifier not valid) with Session Present 0, and
/// the connection is closed.
#[tokio::test]
async fn refused_client_identifier_gets_0x85_and_close() {
    let (port, shutdown) = start_server().await;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream
        .write_all(&connect("refused-id", None, &[]))
        .await
        .unwrap();
    let connack = read_packet(&mut stream).await.expect("CONNACK");
    assert_eq!((connack.kind, connack.reason()), (2, 0x85));
    assert_eq!(connack.body[0], 0, "Session Present must be 0");
    assert!(
        read_packet(&mut stream).await.is_none(),
        "connection still open"
    );

    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream
        .write_all(&connect("accepted-id", None, &[]))
        .await
        .unwrap();
    let connack = read_packet(&mut stream).await.expect("CONNACK");
    assert_eq!(
        (connack.kind, connack.reason()),
        (2, 0x00),
        "another identifier is accepted"
    );
    shutdown.cancel();
}
