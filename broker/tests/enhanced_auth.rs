//! MQTT 5 enhanced authentication (4.12) delegated to a hook: a challenge/response exchange through
//! AUTH packets, re-authentication, and the refusals. The client side is written byte by byte from the
//! specification's packet layouts, independent of the broker's codec.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

use std::time::Duration;

use bytes::Bytes;
use tern_broker::config::ListenerConfig;
use tern_broker::hook::BoxFuture;
use tern_broker::{AuthStep, ClientInfo, Config, EnhancedAuth, Hook, ReasonCode, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const METHOD: &str = "REVERSE";
const WAIT: Duration = Duration::from_secs(5);

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
    let config = Config {
        listeners: vec![ListenerConfig {
            name: "test".into(),
            bind: "127.0.0.1:0".parse().unwrap(),
            ..ListenerConfig::default()
        }],
        ..Config::default()
    };
    let server = Server::builder(config)
        .hook(ReverseChallenge)
        .bind()
        .await
        .unwrap();
    let port = server.local_addrs()[0].1.port();
    let token = server.shutdown_token();
    tokio::spawn(server.run(std::future::pending()));
    (port, token)
}

// ---- hand-built MQTT 5 packets (sections 2.1.4, 2.2.2, 3.1, 3.15) ----

fn remaining_length(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            return out;
        }
    }
}

fn string(s: &[u8]) -> Vec<u8> {
    let mut out = (s.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(s);
    out
}

fn packet(first_byte: u8, body: Vec<u8>) -> Vec<u8> {
    let mut out = vec![first_byte];
    out.extend(remaining_length(body.len()));
    out.extend(body);
    out
}

/// Authentication Method (0x15) and optional Authentication Data (0x16) as a property block.
fn auth_properties(method: &str, data: Option<&[u8]>) -> Vec<u8> {
    let mut props = vec![0x15];
    props.extend(string(method.as_bytes()));
    if let Some(data) = data {
        props.push(0x16);
        props.extend(string(data));
    }
    let mut out = remaining_length(props.len());
    out.extend(props);
    out
}

fn connect(client_id: &str, method: &str, data: Option<&[u8]>) -> Vec<u8> {
    let mut body = string(b"MQTT");
    body.extend([5, 0x02, 0, 30]); // level 5, clean start, keep alive 30
    body.extend(auth_properties(method, data));
    body.extend(string(client_id.as_bytes()));
    packet(0x10, body)
}

fn auth(reason: u8, method: &str, data: Option<&[u8]>) -> Vec<u8> {
    let mut body = vec![reason];
    body.extend(auth_properties(method, data));
    packet(0xF0, body)
}

/// A received packet: its type nibble, and the body after the fixed header.
struct Received {
    kind: u8,
    body: Vec<u8>,
}

impl Received {
    /// The reason code: byte 1 of CONNACK, byte 0 of AUTH and DISCONNECT.
    fn reason(&self) -> u8 {
        match self.kind {
            2 => self.body[1],
            _ => self.body.first().copied().unwrap_or(0),
        }
    }

    /// The value of a binary/string property (identifier `id`) in the packet's property block.
    fn property(&self, id: u8) -> Option<Vec<u8>> {
        let start = if self.kind == 2 { 2 } else { 1 };
        let (len, used) = read_varint(&self.body[start..]);
        let props = &self.body[start + used..start + used + len];
        let mut i = 0;
        while i < props.len() {
            let pid = props[i];
            i += 1;
            match pid {
                0x15 | 0x16 | 0x1F => {
                    let n = u16::from_be_bytes([props[i], props[i + 1]]) as usize;
                    if pid == id {
                        return Some(props[i + 2..i + 2 + n].to_vec());
                    }
                    i += 2 + n;
                }
                0x11 | 0x27 => i += 4,
                0x21 | 0x22 | 0x13 => i += 2,
                0x24 | 0x25 | 0x28 | 0x29 | 0x2A => i += 1,
                0x12 | 0x1A | 0x1C => {
                    let n = u16::from_be_bytes([props[i], props[i + 1]]) as usize;
                    i += 2 + n;
                }
                0x26 => {
                    let n = u16::from_be_bytes([props[i], props[i + 1]]) as usize;
                    i += 2 + n;
                    let m = u16::from_be_bytes([props[i], props[i + 1]]) as usize;
                    i += 2 + m;
                }
                other => panic!("unexpected property {other:#x}"),
            }
        }
        None
    }
}

fn read_varint(bytes: &[u8]) -> (usize, usize) {
    let (mut value, mut shift, mut used) = (0usize, 0, 0);
    for byte in bytes {
        value |= usize::from(byte & 0x7F) << shift;
        shift += 7;
        used += 1;
        if byte & 0x80 == 0 {
            break;
        }
    }
    (value, used)
}

async fn read_packet(stream: &mut TcpStream) -> Option<Received> {
    tokio::time::timeout(WAIT, async {
        let first = stream.read_u8().await.ok()?;
        let (mut len, mut shift) = (0usize, 0);
        loop {
            let byte = stream.read_u8().await.ok()?;
            len |= usize::from(byte & 0x7F) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0; len];
        stream.read_exact(&mut body).await.ok()?;
        Some(Received {
            kind: first >> 4,
            body,
        })
    })
    .await
    .expect("no packet and no close in time")
}

/// [MQTT-4.12.0-2], [MQTT-4.12.0-3]: the server answers a CONNECT carrying an Authentication Method with
/// AUTH 0x18 (continue) carrying the same method, and finishes with CONNACK carrying it too.
#[tokio::test]
async fn challenge_response_exchange_connects() {
    let (port, shutdown) = start_server().await;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream
        .write_all(&connect("auth-ok", METHOD, None))
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
        .write_all(&connect("auth-bad", METHOD, None))
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
        .write_all(&connect("auth-unknown", "SCRAM-SHA-1", Some(b"x")))
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
        .write_all(&connect("auth-switch", METHOD, None))
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
