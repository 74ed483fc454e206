//! Codec tests: hand-written vectors laid out from the specification's packet diagrams
//! (`vectors`), one rejection test per rule the decoder enforces, named after its normative
//! statement (`reject`), encoder specifics (`encoding`) and property tests (`roundtrip`).

// A failed unwrap is a failed test, which is what it should be here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod encoding;
mod reject;
mod roundtrip;
mod vectors;

use bytes::BytesMut;
use bytestring::ByteString;

use super::{DecodeError, Packet, PacketId, ProtocolVersion, decode, encode};

const V3_1: ProtocolVersion = ProtocolVersion::V3_1;
const V3_1_1: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;
const LEVELS: [ProtocolVersion; 3] = [V3_1, V3_1_1, V5];

fn s(text: &str) -> ByteString {
    ByteString::from(text)
}

fn pid(value: u16) -> PacketId {
    PacketId::new(value).unwrap()
}

/// A frame: the first byte, a one-byte remaining length, then the body parts in order. Keeps the
/// vectors readable by field while the lengths stay exact.
fn frame(first: u8, parts: &[&[u8]]) -> Vec<u8> {
    let body: Vec<u8> = parts.concat();
    assert!(body.len() < 128, "frame() writes one length byte");
    let mut out = vec![first, body.len() as u8];
    out.extend(body);
    out
}

/// A length-prefixed string or binary field.
fn lp(data: &[u8]) -> Vec<u8> {
    let mut out = (data.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(data);
    out
}

/// A string or binary property: identifier, then the length-prefixed value.
fn sp(id: u8, data: &[u8]) -> Vec<u8> {
    [vec![id], lp(data)].concat()
}

/// A User Property.
fn up(name: &[u8], value: &[u8]) -> Vec<u8> {
    [vec![0x26], lp(name), lp(value)].concat()
}

/// A property block: its one-byte length, then the properties.
fn props(parts: &[&[u8]]) -> Vec<u8> {
    let body: Vec<u8> = parts.concat();
    assert!(body.len() < 128);
    let mut out = vec![body.len() as u8];
    out.extend(body);
    out
}

/// Decodes `bytes` as exactly one packet.
fn decode_one(bytes: &[u8], protocol: ProtocolVersion) -> Packet {
    let mut buf = BytesMut::from(bytes);
    let packet = decode(&mut buf, protocol, u32::MAX)
        .unwrap()
        .expect("a whole packet");
    assert!(buf.is_empty(), "decode left {} bytes", buf.len());
    packet
}

/// Decodes `bytes`, expecting an error.
fn decode_err(bytes: &[u8], protocol: ProtocolVersion) -> DecodeError {
    let mut buf = BytesMut::from(bytes);
    decode(&mut buf, protocol, u32::MAX).expect_err("a decode error")
}

fn encode_vec(packet: &Packet, protocol: ProtocolVersion) -> Vec<u8> {
    let mut buf = BytesMut::new();
    let size = encode(packet, protocol, u32::MAX, &mut buf).unwrap();
    assert_eq!(size, buf.len());
    assert_eq!(size, super::encoded_len(packet, protocol));
    buf.to_vec()
}

/// Every proper prefix of `bytes` needs more input and leaves the buffer as it was.
fn assert_prefixes_incomplete(bytes: &[u8], protocol: ProtocolVersion) {
    for end in 0..bytes.len() {
        let mut buf = BytesMut::from(&bytes[..end]);
        let result = decode(&mut buf, protocol, u32::MAX);
        assert_eq!(result, Ok(None), "prefix of {end} bytes");
        assert_eq!(
            &buf[..],
            &bytes[..end],
            "prefix of {end} bytes was consumed"
        );
    }
}

/// `bytes` decodes to `packet`, each of its prefixes is incomplete, and `packet` encodes back to
/// exactly `bytes`.
fn assert_vector(bytes: &[u8], protocol: ProtocolVersion, packet: Packet) {
    assert_eq!(decode_one(bytes, protocol), packet);
    assert_prefixes_incomplete(bytes, protocol);
    assert_eq!(encode_vec(&packet, protocol), bytes);
}
