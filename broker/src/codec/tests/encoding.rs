//! Encoder specifics: short forms, the mapping to 3.x codes, size limits and buffer discipline.

use bytes::{Bytes, BytesMut};

use super::super::{
    Ack, AckProperties, Auth, AuthProperties, ConnAck, ConnAckProperties, Disconnect, EncodeError,
    Packet, Publish, PublishProperties, QoS, ReasonCode, SubAck, Subscribe, SubscriptionOptions,
    UnsubAck, encode, encoded_len,
};
use super::{V3_1, V3_1_1, V5, decode_one, encode_vec, pid, s};

fn publish(qos: QoS, packet_id: Option<u16>, payload: Vec<u8>) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: s("t"),
        packet_id: packet_id.map(pid),
        properties: PublishProperties::default(),
        payload: Bytes::from(payload),
    }
}

#[test]
fn v5_acks_use_the_shortest_form() {
    let ack = Ack::success(pid(5));
    assert_eq!(
        encode_vec(&Packet::PubAck(ack.clone()), V5),
        [0x40, 0x02, 0x00, 0x05]
    );
    let coded = Ack {
        reason_code: ReasonCode::QUOTA_EXCEEDED,
        ..ack.clone()
    };
    assert_eq!(
        encode_vec(&Packet::PubRec(coded), V5),
        [0x50, 0x03, 0x00, 0x05, 0x97]
    );
    // Success with properties needs the reason code byte to reach the property block.
    let with_props = Ack {
        properties: AckProperties {
            reason_string: None,
            user_properties: vec![(s("a"), s("b"))],
        },
        ..ack
    };
    let bytes = encode_vec(&Packet::PubComp(with_props.clone()), V5);
    assert_eq!(
        bytes,
        [
            0x70, 0x0B, 0x00, 0x05, 0x00, 0x07, 0x26, 0x00, 0x01, b'a', 0x00, 0x01, b'b'
        ]
    );
    assert_eq!(decode_one(&bytes, V5), Packet::PubComp(with_props));
}

#[test]
fn v5_disconnect_and_auth_use_the_shortest_form() {
    let normal = Disconnect::new(ReasonCode::NORMAL_DISCONNECTION);
    assert_eq!(encode_vec(&Packet::Disconnect(normal), V5), [0xE0, 0x00]);
    let busy = Disconnect::new(ReasonCode::SERVER_BUSY);
    assert_eq!(
        encode_vec(&Packet::Disconnect(busy), V5),
        [0xE0, 0x01, 0x89]
    );
    let reauth = Auth {
        reason_code: ReasonCode::RE_AUTHENTICATE,
        properties: AuthProperties::default(),
    };
    assert_eq!(encode_vec(&Packet::Auth(reauth), V5), [0xF0, 0x01, 0x19]);
}

#[test]
fn v3_leaves_out_what_the_level_lacks() {
    // DISCONNECT has no reason code, acknowledgements none either.
    let busy = Disconnect::new(ReasonCode::SERVER_BUSY);
    assert_eq!(encode_vec(&Packet::Disconnect(busy), V3_1_1), [0xE0, 0x00]);
    let refused = Ack {
        reason_code: ReasonCode::NOT_AUTHORIZED,
        ..Ack::success(pid(1))
    };
    assert_eq!(
        encode_vec(&Packet::PubAck(refused), V3_1_1),
        [0x40, 0x02, 0x00, 0x01]
    );
    // UNSUBACK has no payload.
    let unsuback = UnsubAck {
        packet_id: pid(2),
        properties: AckProperties::default(),
        reason_codes: vec![ReasonCode::SUCCESS],
    };
    assert_eq!(
        encode_vec(&Packet::UnsubAck(unsuback), V3_1_1),
        [0xB0, 0x02, 0x00, 0x02]
    );
    // SUBSCRIBE options carry only the QoS.
    let subscribe = Subscribe {
        packet_id: pid(3),
        subscription_identifier: Some(9),
        user_properties: vec![(s("k"), s("v"))],
        filters: vec![(
            s("a"),
            SubscriptionOptions {
                qos: QoS::ExactlyOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: super::super::RetainHandling::Never,
            },
        )],
    };
    assert_eq!(
        encode_vec(&Packet::Subscribe(subscribe), V3_1_1),
        [0x82, 0x06, 0x00, 0x03, 0x00, 0x01, b'a', 0x02]
    );
}

#[test]
fn v3_connack_maps_reason_codes_to_return_codes() {
    let connack = |reason_code| {
        Packet::ConnAck(ConnAck {
            session_present: false,
            reason_code,
            properties: ConnAckProperties::default(),
        })
    };
    assert_eq!(
        encode_vec(&connack(ReasonCode::BANNED), V3_1_1),
        [0x20, 0x02, 0x00, 0x05]
    );
    assert_eq!(
        encode_vec(&connack(ReasonCode::SERVER_BUSY), V3_1_1),
        [0x20, 0x02, 0x00, 0x03]
    );
    assert_eq!(
        encode_vec(&connack(ReasonCode::UNSUPPORTED_PROTOCOL_VERSION), V3_1),
        [0x20, 0x02, 0x00, 0x01]
    );
}

#[test]
fn v3_1_connack_has_no_session_present_flag() {
    let connack = Packet::ConnAck(ConnAck {
        session_present: true,
        reason_code: ReasonCode::SUCCESS,
        properties: ConnAckProperties::default(),
    });
    assert_eq!(encode_vec(&connack, V3_1), [0x20, 0x02, 0x00, 0x00]);
    assert_eq!(encode_vec(&connack, V3_1_1), [0x20, 0x02, 0x01, 0x00]);
    // ... and a 3.1 CONNACK with bit 0 set decodes without it.
    let Packet::ConnAck(decoded) = decode_one(&[0x20, 0x02, 0x01, 0x00], V3_1) else {
        panic!("not a CONNACK");
    };
    assert!(!decoded.session_present);
}

#[test]
fn v3_suback_maps_failures_to_0x80() {
    let suback = SubAck {
        packet_id: pid(4),
        properties: AckProperties::default(),
        reason_codes: vec![ReasonCode::GRANTED_QOS_2, ReasonCode::NOT_AUTHORIZED],
    };
    assert_eq!(
        encode_vec(&Packet::SubAck(suback), V3_1_1),
        [0x90, 0x04, 0x00, 0x04, 0x02, 0x80]
    );
}

#[test]
fn auth_cannot_be_sent_before_v5() {
    let auth = Packet::Auth(Auth {
        reason_code: ReasonCode::SUCCESS,
        properties: AuthProperties::default(),
    });
    let mut buf = BytesMut::from(&b"kept"[..]);
    assert_eq!(
        encode(&auth, V3_1_1, u32::MAX, &mut buf),
        Err(EncodeError::NotInProtocol("AUTH"))
    );
    assert_eq!(&buf[..], b"kept");
    assert_eq!(encoded_len(&auth, V3_1_1), 0);
}

#[test]
fn too_large_leaves_the_buffer_untouched() {
    let packet = Packet::Publish(publish(QoS::AtMostOnce, None, vec![0; 10]));
    let size = encoded_len(&packet, V5);
    assert_eq!(size, 2 + 3 + 1 + 10);
    let mut buf = BytesMut::from(&b"kept"[..]);
    assert_eq!(
        encode(&packet, V5, size as u32 - 1, &mut buf),
        Err(EncodeError::TooLarge {
            size,
            max: size as u32 - 1
        })
    );
    assert_eq!(&buf[..], b"kept");
    // Exactly at the limit is fine, and the packet is appended.
    assert_eq!(encode(&packet, V5, size as u32, &mut buf), Ok(size));
    assert_eq!(buf.len(), 4 + size);
    assert_eq!(&buf[..4], b"kept");
}

#[test]
fn field_too_long_leaves_the_buffer_untouched() {
    let mut long = publish(QoS::AtMostOnce, None, vec![]);
    long.topic = s(&"a".repeat(65_536));
    let mut buf = BytesMut::from(&b"kept"[..]);
    assert_eq!(
        encode(&Packet::Publish(long), V3_1_1, u32::MAX, &mut buf),
        Err(EncodeError::FieldTooLong("topic name"))
    );
    assert_eq!(&buf[..], b"kept");
    // A long user property in a v5 property block, found while writing the block.
    let mut props = publish(QoS::AtMostOnce, None, vec![]);
    props.properties.user_properties = vec![(s("k"), s(&"v".repeat(70_000)))];
    assert_eq!(
        encode(&Packet::Publish(props), V5, u32::MAX, &mut buf),
        Err(EncodeError::FieldTooLong("user property"))
    );
    assert_eq!(&buf[..], b"kept");
}

#[test]
fn publish_qos_and_packet_identifier_must_agree() {
    let mut buf = BytesMut::new();
    for packet in [
        publish(QoS::AtLeastOnce, None, vec![]),
        publish(QoS::AtMostOnce, Some(1), vec![]),
    ] {
        let result = encode(&Packet::Publish(packet), V5, u32::MAX, &mut buf);
        assert!(
            matches!(result, Err(EncodeError::InvalidField(_))),
            "{result:?}"
        );
        assert!(buf.is_empty());
    }
}

#[test]
fn subscription_identifier_above_the_variable_byte_integer_range_is_refused() {
    let mut packet = publish(QoS::AtMostOnce, None, vec![]);
    packet.properties.subscription_identifiers = vec![268_435_456];
    let mut buf = BytesMut::new();
    let result = encode(&Packet::Publish(packet), V5, u32::MAX, &mut buf);
    assert!(
        matches!(result, Err(EncodeError::InvalidField(_))),
        "{result:?}"
    );
    assert!(buf.is_empty());
}

#[test]
fn remaining_length_uses_the_fewest_bytes() {
    // Topic "t" and a QoS 0 v3 PUBLISH: remaining length = 3 + payload.
    for (payload, header) in [
        (124, 2),
        (125, 3),
        (16_380, 3),
        (16_381, 4),
        (2_097_148, 4),
        (2_097_149, 5),
    ] {
        let packet = Packet::Publish(publish(QoS::AtMostOnce, None, vec![0; payload]));
        let bytes = encode_vec(&packet, V3_1_1);
        assert_eq!(bytes.len(), header + 3 + payload, "payload {payload}");
        assert_eq!(decode_one(&bytes, V3_1_1), packet);
    }
}

#[test]
fn largest_remaining_length_is_enforced() {
    // One byte more than 268,435,455 cannot be expressed at all.
    let packet = Packet::Publish(publish(QoS::AtMostOnce, None, vec![0; 268_435_455 - 3 + 1]));
    let mut buf = BytesMut::new();
    let result = encode(&packet, V3_1_1, u32::MAX, &mut buf);
    assert!(
        matches!(result, Err(EncodeError::TooLarge { .. })),
        "{result:?}"
    );
    assert!(buf.is_empty());
}
