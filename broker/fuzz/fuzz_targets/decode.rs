//! Fuzz target for the MQTT decoder: arbitrary bytes are decoded at every protocol level with a
//! small maximum packet size; whatever decodes must re-encode and decode back to itself, and a
//! decoder asking for more input must leave the buffer alone.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tern_broker::codec::{Packet, ProtocolVersion, decode, encode, sniff_connect_version};

const LEVELS: [ProtocolVersion; 3] = [
    ProtocolVersion::V3_1,
    ProtocolVersion::V3_1_1,
    ProtocolVersion::V5,
];

/// Small enough to reach the size check often, large enough for every packet type.
const MAX_PACKET_SIZE: u32 = 4096;

fuzz_target!(|data: &[u8]| {
    let sniffed = sniff_connect_version(data);
    for protocol in LEVELS {
        let mut buf = BytesMut::from(data);
        let mut first = true;
        loop {
            let before = buf.clone();
            match decode(&mut buf, protocol, MAX_PACKET_SIZE) {
                Ok(Some(packet)) => {
                    if let (true, Packet::Connect(connect)) = (first, &packet) {
                        // A CONNECT that decodes is one whose level can be sniffed.
                        assert_eq!(sniffed, Some(connect.protocol));
                    }
                    round_trip(&packet, protocol);
                }
                Ok(None) => {
                    assert_eq!(before, buf, "an incomplete packet was consumed");
                    break;
                }
                Err(_) => break,
            }
            first = false;
        }
    }
});

fn round_trip(packet: &Packet, protocol: ProtocolVersion) {
    let mut out = BytesMut::new();
    let size = encode(packet, protocol, u32::MAX, &mut out).expect("a decoded packet encodes");
    assert_eq!(size, out.len());
    let again = decode(&mut out, protocol, u32::MAX).expect("a re-encoded packet decodes");
    assert_eq!(again.as_ref(), Some(packet));
    assert!(out.is_empty(), "re-encoded packet left bytes behind");
}
