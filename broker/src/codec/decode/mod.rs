//! Decoding: takes one whole packet off the front of a read buffer, checking everything the
//! specification asks of a receiver of the packet's encoding. This file reads the fixed header and
//! hands the body to the module of the packet's family; it never allocates before a whole frame is
//! there and never panics on input.
//!
//! Error kinds follow the specification's terminology (1.2): a packet that cannot be parsed is
//! Malformed; one that parses but carries a value the protocol forbids is a Protocol Error.

mod connect;
mod disconnect;
mod publish;
mod subscribe;

use bytes::{Buf, Bytes, BytesMut};
use bytestring::ByteString;

use super::error::DecodeError;
use super::packet::{Packet, PacketId, ProtocolVersion};
use super::properties::{Reader, parse_var_int};
use super::reason::ReasonCode;

/// Control packet types (2.1.2).
mod kind {
    pub const CONNECT: u8 = 1;
    pub const CONNACK: u8 = 2;
    pub const PUBLISH: u8 = 3;
    pub const PUBACK: u8 = 4;
    pub const PUBREC: u8 = 5;
    pub const PUBREL: u8 = 6;
    pub const PUBCOMP: u8 = 7;
    pub const SUBSCRIBE: u8 = 8;
    pub const SUBACK: u8 = 9;
    pub const UNSUBSCRIBE: u8 = 10;
    pub const UNSUBACK: u8 = 11;
    pub const PINGREQ: u8 = 12;
    pub const PINGRESP: u8 = 13;
    pub const DISCONNECT: u8 = 14;
    pub const AUTH: u8 = 15;
}

/// The reason codes each packet may carry (2.4 and each packet's reason code section). Any other
/// value parses but is not allowed by the protocol, so it is a Protocol Error (1.2).
mod valid {
    pub const CONNACK: &[u8] = &[
        0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95,
        0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
    ];
    /// PUBACK and PUBREC.
    pub const PUBACK: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
    /// PUBREL and PUBCOMP.
    pub const PUBREL: &[u8] = &[0x00, 0x92];
    pub const SUBACK: &[u8] = &[
        0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
    ];
    pub const UNSUBACK: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
    pub const DISCONNECT: &[u8] = &[
        0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94,
        0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
    ];
    pub const AUTH: &[u8] = &[0x00, 0x18, 0x19];
    /// SUBACK return codes of 3.1 and 3.1.1 [MQTT-3.9.3-2].
    pub const V3_SUBACK: &[u8] = &[0x00, 0x01, 0x02, 0x80];
}

/// Takes one whole packet off the front of `buf`, or returns `Ok(None)` and leaves `buf` untouched
/// when more bytes are needed.
///
/// `protocol` is the level negotiated by CONNECT; CONNECT itself names its level and ignores it.
/// A packet larger than `max_packet_size` (fixed header included) is refused as soon as its
/// remaining length has arrived. On an error the connection is to be closed; how much of `buf` was
/// consumed is then unspecified.
pub fn decode(
    buf: &mut BytesMut,
    protocol: ProtocolVersion,
    max_packet_size: u32,
) -> Result<Option<Packet>, DecodeError> {
    let Some(header) = FixedHeader::parse(buf, protocol)? else {
        return Ok(None);
    };
    if header.total_len > usize::try_from(max_packet_size).unwrap_or(usize::MAX) {
        return Err(DecodeError::TooLarge {
            size: header.total_len,
            max: max_packet_size,
        });
    }
    if buf.len() < header.total_len {
        return Ok(None);
    }
    let mut frame = buf.split_to(header.total_len).freeze();
    frame.advance(header.header_len);
    let mut r = Reader::new(frame);
    let packet = read_body(&header, &mut r, protocol)?;
    r.finish()?;
    Ok(Some(packet))
}

/// The protocol level of the CONNECT at the front of `buf`, if its fixed header, protocol name and
/// level are there and valid; lets the server answer a malformed CONNECT in the client's format.
pub fn sniff_connect_version(buf: &[u8]) -> Option<ProtocolVersion> {
    let (&first, rest) = buf.split_first()?;
    if first != kind::CONNECT << 4 {
        return None;
    }
    let (remaining, used) = parse_var_int(rest).ok()??;
    let body = rest.get(used..)?;
    let name_len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    let name = body.get(2..2 + name_len)?;
    let level = *body.get(2 + name_len)?;
    if 3 + name_len > usize::try_from(remaining).ok()? {
        return None;
    }
    connect::protocol_version(name, level).ok()
}

/// The parts of a fixed header (2.1) the decoder needs.
struct FixedHeader {
    packet_type: u8,
    flags: u8,
    /// Bytes taken by the fixed header itself.
    header_len: usize,
    /// Bytes taken by the whole packet.
    total_len: usize,
}

impl FixedHeader {
    /// `Ok(None)` while the fixed header is incomplete. The first byte is checked as soon as it is
    /// there, so garbage is refused without waiting for more.
    fn parse(buf: &[u8], protocol: ProtocolVersion) -> Result<Option<Self>, DecodeError> {
        let Some((&first, rest)) = buf.split_first() else {
            return Ok(None);
        };
        let packet_type = first >> 4;
        let flags = first & 0x0F;
        check_flags(packet_type, flags, protocol)?;
        let Some((remaining, used)) = parse_var_int(rest)? else {
            return Ok(None);
        };
        let header_len = 1 + used;
        // A variable byte integer is below 2^28, so this cannot overflow a usize.
        let total_len = header_len + remaining as usize;
        Ok(Some(Self {
            packet_type,
            flags,
            header_len,
            total_len,
        }))
    }
}

/// The fixed-header flags of Table 2-2: reserved values must be exactly as listed, or the packet
/// is malformed ([MQTT-2.1.3-1] in 5.0, [MQTT-2.2.2-1]/[MQTT-2.2.2-2] in 3.1.1).
fn check_flags(packet_type: u8, flags: u8, protocol: ProtocolVersion) -> Result<(), DecodeError> {
    let expected = match packet_type {
        0 => return Err(DecodeError::Malformed("packet type 0 is reserved")),
        kind::PUBLISH => {
            if flags & 0b0110 == 0b0110 {
                return Err(DecodeError::Malformed(
                    "PUBLISH with both QoS bits set [MQTT-3.3.1-4]",
                ));
            }
            if flags & 0b0110 == 0 && flags & 0b1000 != 0 {
                return Err(DecodeError::Malformed(
                    "DUP set on a QoS 0 PUBLISH [MQTT-3.3.1-2]",
                ));
            }
            return Ok(());
        }
        // [MQTT-3.6.1-1], [MQTT-3.8.1-1], [MQTT-3.10.1-1]
        kind::PUBREL | kind::SUBSCRIBE | kind::UNSUBSCRIBE => 0b0010,
        kind::AUTH if !protocol.is_v5() => {
            return Err(DecodeError::Malformed(
                "packet type 15 is reserved before MQTT 5",
            ));
        }
        _ => 0,
    };
    if flags == expected {
        Ok(())
    } else {
        Err(DecodeError::Malformed(
            "reserved fixed header flags have the wrong value [MQTT-2.1.3-1]",
        ))
    }
}

fn read_body(
    header: &FixedHeader,
    r: &mut Reader,
    protocol: ProtocolVersion,
) -> Result<Packet, DecodeError> {
    Ok(match header.packet_type {
        kind::CONNECT => Packet::Connect(Box::new(connect::connect(r)?)),
        kind::CONNACK => Packet::ConnAck(connect::connack(r, protocol)?),
        kind::PUBLISH => Packet::Publish(publish::publish(header.flags, r, protocol)?),
        kind::PUBACK => Packet::PubAck(publish::ack(r, protocol, valid::PUBACK)?),
        kind::PUBREC => Packet::PubRec(publish::ack(r, protocol, valid::PUBACK)?),
        kind::PUBREL => Packet::PubRel(publish::ack(r, protocol, valid::PUBREL)?),
        kind::PUBCOMP => Packet::PubComp(publish::ack(r, protocol, valid::PUBREL)?),
        kind::SUBSCRIBE => Packet::Subscribe(subscribe::subscribe(r, protocol)?),
        kind::SUBACK => Packet::SubAck(subscribe::suback(r, protocol)?),
        kind::UNSUBSCRIBE => Packet::Unsubscribe(subscribe::unsubscribe(r, protocol)?),
        kind::UNSUBACK => Packet::UnsubAck(subscribe::unsuback(r, protocol)?),
        // No variable header and no payload: `finish` checks the remaining length is 0.
        kind::PINGREQ => Packet::PingReq,
        kind::PINGRESP => Packet::PingResp,
        kind::DISCONNECT => Packet::Disconnect(disconnect::disconnect(r, protocol)?),
        kind::AUTH => Packet::Auth(disconnect::auth(r)?),
        // Type 0 was refused with the flags; a u8 shifted right by 4 has no other value.
        _ => return Err(DecodeError::Malformed("packet type 0 is reserved")),
    })
}

/// A packet identifier, which is never 0 ([MQTT-2.2.1-3] in 5.0, [MQTT-2.3.1-1] in 3.1.1).
fn packet_id(r: &mut Reader) -> Result<PacketId, DecodeError> {
    PacketId::new(r.u16()?).ok_or(DecodeError::Protocol("packet identifier 0 [MQTT-2.2.1-3]"))
}

/// A reason code byte, which must be one the packet may carry.
fn reason_code(r: &mut Reader, allowed: &[u8]) -> Result<ReasonCode, DecodeError> {
    let code = r.u8()?;
    if allowed.contains(&code) {
        Ok(ReasonCode(code))
    } else {
        Err(DecodeError::Protocol(
            "reason code not allowed in this packet (2.4)",
        ))
    }
}

/// A Topic Name is at least one character long [MQTT-4.7.3-1] and has no wildcard [MQTT-3.3.2-2].
fn is_topic_name(topic: &str) -> bool {
    !topic.is_empty() && !topic.bytes().any(|b| b == b'+' || b == b'#')
}

/// A Response Topic is a Topic Name [MQTT-3.3.2-14]; it parses, so a bad one is a Protocol Error.
fn check_response_topic(topic: Option<&ByteString>) -> Result<(), DecodeError> {
    match topic {
        Some(topic) if !is_topic_name(topic) => Err(DecodeError::Protocol(
            "Response Topic is empty or has a wildcard [MQTT-3.3.2-14]",
        )),
        _ => Ok(()),
    }
}

/// "It is a Protocol Error to include Authentication Data if there is no Authentication Method"
/// (3.1.2.11.10, 3.2.2.3.18, 3.15.2.2.3).
fn check_auth_pair(method: Option<&ByteString>, data: Option<&Bytes>) -> Result<(), DecodeError> {
    if data.is_some() && method.is_none() {
        Err(DecodeError::Protocol(
            "Authentication Data without Authentication Method",
        ))
    } else {
        Ok(())
    }
}
