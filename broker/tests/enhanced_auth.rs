//! MQTT 5 enhanced authentication (4.12) delegated to a hook: a challenge/response exchange through
//! AUTH packets, re-authentication, and the refusals. The client side is written byte by byte from the
//! specification's packet layouts, independent of the broker's codec.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod support;

use bytes::Bytes;
use tern_broker::hook::BoxFuture;
use tern_broker::{AuthStep, ClientInfo, EnhancedAuth, Hook, ReasonCode};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use support::embedded::start_with_hook;
use support::raw_v5::{auth, connect, read_packet};

const METHOD: &str = "REVERSE";

/// Challenges the client with a nonce and accepts the nonce reversed.
struct ReverseChallenge;

struct ReverseExchange {
    nonce: Option<Vec<u8>>,
}

impl EnhancedAuth for ReverseExchange {
    fn step(&mut self, data: Option<Bytes>) -> BoxFuture<'_, AuthStep> {
        Box::pin(async move {
            match self.nonce.take() {
                None => {
                    let nonce = b"tern-nonce".to_vec();
                    self.nonce = Some(nonce.clone());
                    AuthStep::Continue(Some(Bytes::from(nonce)))
                }
                Some(nonce) => {
                    let expected: Vec<u8> = nonce.iter().rev().copied().collect();
                    if data.as_deref() == Some(&expected[..]) {
                        AuthStep::Success(Some(Bytes::from_static(b"welcome")))
                    } else {
                        AuthStep::Failure(ReasonCode::NOT_AUTHORIZED)
                    }
                }
            }
        })
    }
}

impl Hook for ReverseChallenge {
    fn name(&self) -> &'static str {
        "reverse-challenge"
    }
    fn start_enhanced_auth(&self, method: &str, _: &ClientInfo) -> Option<Box<dyn EnhancedAuth>> {
        (method == METHOD)
            .then(|| Box::new(ReverseExchange { nonce: None }) as Box<dyn EnhancedAuth>)
    }
}

async fn start_server() -> (u16, tokio_util::sync::CancellationToken) {
    start_with_hook(ReverseChallenge).await
}

/// [MQTT-4.12.0-2], [MQTT-4.12.0-3]: the server answers a CONNECT carrying an Authentication Method with
/// AUTH 0x18 (continue) carrying the same method, and finishes with CONNACK carrying it too.
#[tokio::test]
async fn challenge_response_exchange_connects() {
    let (port, shutdown) = start_server().await;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream
        .write_all(&connect("auth-ok", Some((METHOD, None)), &[]))
        .await
        .unwrap();

    let challenge = read_packet(&mut stream).await.expect("AUTH challenge");
    assert_eq!(challenge.kind, 15, "expected AUTH");
    assert_eq!(challenge.reason(), 0x18, "continue authentication");
    assert_eq!(challenge.property(0x15).as_deref(), Some(METHOD.as_bytes()));
    let nonce = challenge.property(0x16).expect("challenge data");

    let answer: Vec<u8> = nonce.iter().rev().copied().collect();
    stream
        .write_all(&auth(0x18, METHOD, Some(&answer)))
        .await
        .unwrap();
    let connack = read_packet(&mut stream).await.expect("CONNACK");
    assert_eq!(connack.kind, 2);
    assert_eq!(connack.reason(), 0x00);
    assert_eq!(connack.property(0x15).as_deref(), Some(METHOD.as_bytes()));
    assert_eq!(connack.property(0x16).as_deref(), Some(&b"welcome"[..]));

    // Re-authentication (4.12.1): AUTH 0x19 starts a new exchange on the live connection.
    stream.write_all(&auth(0x19, METHOD, None)).await.unwrap();
    let challenge = read_packet(&mut stream).await.expect("re-auth challenge");
    assert_eq!((challenge.kind, challenge.reason()), (15, 0x18));
    let nonce = challenge.property(0x16).unwrap();
    let answer: Vec<u8> = nonce.iter().rev().copied().collect();
    stream
        .write_all(&auth(0x18, METHOD, Some(&answer)))
        .await
        .unwrap();
    let done = read_packet(&mut stream).await.expect("re-auth result");
    assert_eq!((done.kind, done.reason()), (15, 0x00), "AUTH success");
    shutdown.cancel();
}

/// A wrong answer is refused with the hook's reason code, and the connection closes [MQTT-3.2.2-7].
#[tokio::test]
async fn wrong_response_is_refused() {
    let (port, shutdown) = start_server().await;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream
        .write_all(&connect("auth-bad", Some((METHOD, None)), &[]))
        .await
        .unwrap();
    let _challenge = read_packet(&mut stream).await.expect("AUTH challenge");
    stream
        .write_all(&auth(0x18, METHOD, Some(b"wrong")))
        .await
        .unwrap();
    let connack = read_packet(&mut stream).await.expect("CONNACK");
    assert_eq!((connack.kind, connack.reason()), (2, 0x87));
    assert!(
        read_packet(&mut stream).await.is_none(),
        "connection closed"
    );
    shutdown.cancel();
}

/// An Authentication Method no hook supports gets CONNACK 0x8C Bad authentication method.
#[tokio::test]
async fn unknown_method_is_a_bad_authentication_method() {
    let (port, shutdown) = start_server().await;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream
        .write_all(&connect(
            "auth-unknown",
            Some(("SCRAM-SHA-1", Some(b"x"))),
            &[],
        ))
        .await
        .unwrap();
    let connack = read_packet(&mut stream).await.expect("CONNACK");
    assert_eq!((connack.kind, connack.reason()), (2, 0x8C));
    assert!(
        read_packet(&mut stream).await.is_none(),
        "connection closed"
    );
    shutdown.cancel();
}

/// Re-authentication must use the method of the CONNECT [MQTT-4.12.1-1]; another is a protocol error.
#[tokio::test]
async fn reauthentication_with_another_method_is_a_protocol_error() {
    let (port, shutdown) = start_server().await;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream
        .write_all(&connect("auth-switch", Some((METHOD, None)), &[]))
        .await
        .unwrap();
    let challenge = read_packet(&mut stream).await.unwrap();
    let answer: Vec<u8> = challenge
        .property(0x16)
        .unwrap()
        .iter()
        .rev()
        .copied()
        .collect();
    stream
        .write_all(&auth(0x18, METHOD, Some(&answer)))
        .await
        .unwrap();
    assert_eq!(read_packet(&mut stream).await.unwrap().reason(), 0x00);

    stream.write_all(&auth(0x19, "OTHER", None)).await.unwrap();
    let disconnect = read_packet(&mut stream).await.expect("DISCONNECT");
    assert_eq!((disconnect.kind, disconnect.reason()), (14, 0x82));
    shutdown.cancel();
}
