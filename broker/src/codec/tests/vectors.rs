//! Hand-written vectors, one or more per packet type at each level, laid out field by field from
//! the specification's figures. Each one is decoded, cut at every length, and re-encoded.

use std::num::NonZeroU16;

use bytes::{Bytes, BytesMut};

use super::super::{
    Ack, AckProperties, Auth, AuthProperties, ConnAck, ConnAckProperties, Connect,
    ConnectProperties, DecodeError, Disconnect, DisconnectProperties, Packet, Publish,
    PublishProperties, QoS, ReasonCode, RetainHandling, SubAck, Subscribe, SubscriptionOptions,
    UnsubAck, Unsubscribe, Will, WillProperties, decode, sniff_connect_version,
};
use super::{
    LEVELS, V3_1, V3_1_1, V5, assert_prefixes_incomplete, assert_vector, decode_one, frame, lp,
    pid, props, s, sp, up,
};

const MQTT: &[u8] = b"\x00\x04MQTT";

fn connect(protocol: super::ProtocolVersion) -> Connect {
    Connect {
        protocol,
        clean_start: true,
        keep_alive: 60,
        client_id: s(""),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    }
}

fn publish(topic: &str, payload: &'static [u8]) -> Publish {
    Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: s(topic),
        packet_id: None,
        properties: PublishProperties::default(),
        payload: Bytes::from_static(payload),
    }
}

#[test]
fn connect_3_1_1_minimal() {
    // Clean session, keep alive 60, empty client id.
    let bytes = [
        0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x00,
    ];
    // `protocol` is ignored for CONNECT: it names its own level.
    for level in LEVELS {
        assert_vector(&bytes, level, Packet::Connect(Box::new(connect(V3_1_1))));
    }
}

#[test]
fn connect_3_1_1_with_will_user_and_password() {
    // User name, password, will retain, will QoS 1, will, clean session.
    let bytes = frame(
        0x10,
        &[
            MQTT,
            &[0x04, 0xEE, 0x00, 0x0A],
            &lp(b"c1"),
            &lp(b"a/b"),
            &lp(b"hi"),
            &lp(b"u"),
            &lp(b"pw"),
        ],
    );
    let expected = Connect {
        keep_alive: 10,
        client_id: s("c1"),
        will: Some(Will {
            topic: s("a/b"),
            payload: Bytes::from_static(b"hi"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: WillProperties::default(),
        }),
        username: Some(s("u")),
        password: Some(Bytes::from_static(b"pw")),
        ..connect(V3_1_1)
    };
    assert_vector(&bytes, V3_1_1, Packet::Connect(Box::new(expected)));
}

#[test]
fn connect_3_1_uses_mqisdp() {
    let bytes = frame(
        0x10,
        &[&lp(b"MQIsdp"), &[0x03, 0x02, 0x00, 0x3C], &lp(b"abc")],
    );
    let expected = Connect {
        client_id: s("abc"),
        ..connect(V3_1)
    };
    assert_vector(&bytes, V3_1_1, Packet::Connect(Box::new(expected)));
}

#[test]
fn connect_5_with_properties() {
    let properties = props(&[
        &[0x11, 0x00, 0x00, 0x00, 0x0A], // Session Expiry Interval 10
        &[0x21, 0x00, 0x14],             // Receive Maximum 20
        &[0x27, 0x00, 0x00, 0x10, 0x00], // Maximum Packet Size 4096
        &[0x22, 0x00, 0x05],             // Topic Alias Maximum 5
        &[0x19, 0x01],                   // Request Response Information
        &[0x17, 0x00],                   // Request Problem Information off
        &up(b"k", b"v"),                 // User Property
        &up(b"k", b"w"),                 // ... which may repeat
        &sp(0x15, b"SCRAM"),             // Authentication Method
        &sp(0x16, &[1, 2, 3]),           // Authentication Data
    ]);
    let bytes = frame(
        0x10,
        &[
            MQTT,
            &[0x05, 0xC2, 0x00, 0x1E],
            &properties,
            &lp(b"id"),
            &lp(b"u"),
            &lp(b"p"),
        ],
    );
    let expected = Connect {
        keep_alive: 30,
        client_id: s("id"),
        username: Some(s("u")),
        password: Some(Bytes::from_static(b"p")),
        properties: ConnectProperties {
            session_expiry_interval: Some(10),
            receive_maximum: NonZeroU16::new(20),
            maximum_packet_size: Some(4096),
            topic_alias_maximum: Some(5),
            request_response_information: Some(true),
            request_problem_information: Some(false),
            user_properties: vec![(s("k"), s("v")), (s("k"), s("w"))],
            authentication_method: Some(s("SCRAM")),
            authentication_data: Some(Bytes::from_static(&[1, 2, 3])),
        },
        ..connect(V5)
    };
    assert_vector(&bytes, V5, Packet::Connect(Box::new(expected)));
}

#[test]
fn connect_5_with_will_properties_and_password_without_user_name() {
    // MQTT 5 allows a password without a user name (3.1.2.9).
    let will_properties = props(&[
        &[0x18, 0x00, 0x00, 0x00, 0x05], // Will Delay Interval 5
        &[0x01, 0x01],                   // Payload Format Indicator: UTF-8
        &[0x02, 0x00, 0x00, 0x01, 0x00], // Message Expiry Interval 256
        &sp(0x03, b"text/plain"),        // Content Type
        &sp(0x08, b"re/ply"),            // Response Topic
        &sp(0x09, &[9, 9]),              // Correlation Data
    ]);
    // Password, will QoS 2, will, clean start.
    let bytes = frame(
        0x10,
        &[
            MQTT,
            &[0x05, 0x56, 0x00, 0x00, 0x00],
            &lp(b"x"),
            &will_properties,
            &lp(b"t"),
            &lp(b""),
            &lp(b"p"),
        ],
    );
    let expected = Connect {
        keep_alive: 0,
        client_id: s("x"),
        will: Some(Will {
            topic: s("t"),
            payload: Bytes::new(),
            qos: QoS::ExactlyOnce,
            retain: false,
            properties: WillProperties {
                will_delay_interval: Some(5),
                payload_format_indicator: Some(1),
                message_expiry_interval: Some(256),
                content_type: Some(s("text/plain")),
                response_topic: Some(s("re/ply")),
                correlation_data: Some(Bytes::from_static(&[9, 9])),
                user_properties: vec![],
            },
        }),
        password: Some(Bytes::from_static(b"p")),
        ..connect(V5)
    };
    assert_vector(&bytes, V5, Packet::Connect(Box::new(expected)));
}

#[test]
fn connack_3_1_1_and_3_1() {
    let accepted = ConnAck {
        session_present: true,
        reason_code: ReasonCode::SUCCESS,
        properties: ConnAckProperties::default(),
    };
    assert_vector(&[0x20, 0x02, 0x01, 0x00], V3_1_1, Packet::ConnAck(accepted));
    let refused = ConnAck {
        session_present: false,
        reason_code: ReasonCode::NOT_AUTHORIZED,
        properties: ConnAckProperties::default(),
    };
    assert_vector(
        &[0x20, 0x02, 0x00, 0x05],
        V3_1_1,
        Packet::ConnAck(refused.clone()),
    );
    assert_vector(&[0x20, 0x02, 0x00, 0x05], V3_1, Packet::ConnAck(refused));
    let unavailable = ConnAck {
        session_present: false,
        reason_code: ReasonCode::SERVER_UNAVAILABLE,
        properties: ConnAckProperties::default(),
    };
    assert_vector(
        &[0x20, 0x02, 0x00, 0x03],
        V3_1,
        Packet::ConnAck(unavailable),
    );
}

#[test]
fn connack_5_with_properties() {
    let properties = props(&[
        &[0x24, 0x01],       // Maximum QoS 1
        &[0x25, 0x00],       // Retain Available: no
        &sp(0x12, b"id"),    // Assigned Client Identifier
        &[0x13, 0x00, 0x3C], // Server Keep Alive 60
        &[0x28, 0x01],       // Wildcard Subscription Available
        &[0x29, 0x00],       // Subscription Identifiers Available: no
        &[0x2A, 0x01],       // Shared Subscription Available
        &sp(0x1A, b"info"),  // Response Information
        &sp(0x1C, b"other"), // Server Reference
        &sp(0x1F, b"why"),   // Reason String
    ]);
    let bytes = frame(0x20, &[&[0x00, 0x00], &properties]);
    let expected = ConnAck {
        session_present: false,
        reason_code: ReasonCode::SUCCESS,
        properties: ConnAckProperties {
            maximum_qos: Some(QoS::AtLeastOnce),
            retain_available: Some(false),
            assigned_client_identifier: Some(s("id")),
            server_keep_alive: Some(60),
            wildcard_subscription_available: Some(true),
            subscription_identifiers_available: Some(false),
            shared_subscription_available: Some(true),
            response_information: Some(s("info")),
            server_reference: Some(s("other")),
            reason_string: Some(s("why")),
            ..ConnAckProperties::default()
        },
    };
    // The encoder writes properties in its own order, so check decode and re-decode.
    assert_eq!(decode_one(&bytes, V5), Packet::ConnAck(expected.clone()));
    assert_prefixes_incomplete(&bytes, V5);
    let reencoded = super::encode_vec(&Packet::ConnAck(expected.clone()), V5);
    assert_eq!(reencoded.len(), bytes.len());
    assert_eq!(decode_one(&reencoded, V5), Packet::ConnAck(expected));

    let refused = ConnAck {
        session_present: false,
        reason_code: ReasonCode::BANNED,
        properties: ConnAckProperties::default(),
    };
    assert_vector(
        &[0x20, 0x03, 0x00, 0x8A, 0x00],
        V5,
        Packet::ConnAck(refused),
    );
}

#[test]
fn publish_qos_0_at_each_level() {
    let bytes = frame(0x30, &[&lp(b"a/b"), b"hi"]);
    for level in [V3_1, V3_1_1] {
        assert_vector(&bytes, level, Packet::Publish(publish("a/b", b"hi")));
    }
    let bytes = frame(0x30, &[&lp(b"a/b"), &[0x00], b"hi"]);
    assert_vector(&bytes, V5, Packet::Publish(publish("a/b", b"hi")));
}

#[test]
fn publish_qos_1_dup_retain_and_qos_2() {
    let bytes = frame(0x3B, &[&lp(b"a"), &[0x00, 0x0A], b"x"]);
    let expected = Publish {
        dup: true,
        qos: QoS::AtLeastOnce,
        retain: true,
        packet_id: Some(pid(10)),
        ..publish("a", b"x")
    };
    assert_vector(&bytes, V3_1_1, Packet::Publish(expected));

    let bytes = frame(0x34, &[&lp(b"a"), &[0xFF, 0xFF], &[0x00]]);
    let expected = Publish {
        qos: QoS::ExactlyOnce,
        packet_id: Some(pid(0xFFFF)),
        payload: Bytes::new(),
        ..publish("a", b"")
    };
    assert_vector(&bytes, V5, Packet::Publish(expected));
}

#[test]
fn publish_5_with_properties() {
    let properties = props(&[
        &[0x01, 0x01],                   // Payload Format Indicator
        &[0x02, 0x00, 0x00, 0x00, 0x3C], // Message Expiry Interval 60
        &[0x23, 0x00, 0x05],             // Topic Alias 5
        &sp(0x08, b"r"),                 // Response Topic
        &sp(0x09, b"c"),                 // Correlation Data
        &up(b"k", b"v"),                 // User Property
        &[0x0B, 0x02],                   // Subscription Identifier 2
        &[0x0B, 0x80, 0x01],             // ... and 128: a server sends one per subscription
        &sp(0x03, b"json"),              // Content Type
    ]);
    let bytes = frame(0x32, &[&lp(b"t"), &[0x00, 0x07], &properties, b"{}"]);
    let expected = Publish {
        qos: QoS::AtLeastOnce,
        packet_id: Some(pid(7)),
        properties: PublishProperties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(60),
            topic_alias: Some(5),
            response_topic: Some(s("r")),
            correlation_data: Some(Bytes::from_static(b"c")),
            user_properties: vec![(s("k"), s("v"))],
            subscription_identifiers: vec![2, 128],
            content_type: Some(s("json")),
        },
        ..publish("t", b"{}")
    };
    assert_vector(&bytes, V5, Packet::Publish(expected));
}

#[test]
fn publish_5_empty_topic_with_topic_alias() {
    // 3.3.2.3.4: the alias stands in for the topic name.
    let bytes = frame(0x30, &[&lp(b""), &props(&[&[0x23, 0x00, 0x01]]), b"p"]);
    let expected = Publish {
        properties: PublishProperties {
            topic_alias: Some(1),
            ..PublishProperties::default()
        },
        ..publish("", b"p")
    };
    assert_vector(&bytes, V5, Packet::Publish(expected));
}

#[test]
fn publish_payload_shares_the_read_buffer() {
    let bytes = frame(0x30, &[&lp(b"a"), b"payload"]);
    let mut buf = BytesMut::from(&bytes[..]);
    let start = buf.as_ptr() as usize;
    let Some(Packet::Publish(publish)) = decode(&mut buf, V3_1_1, u32::MAX).unwrap() else {
        panic!("not a PUBLISH");
    };
    // Zero-copy: the payload points into the original allocation.
    assert_eq!(publish.payload.as_ptr() as usize, start + 5);
}

#[test]
fn acks_3_x_are_the_packet_identifier() {
    for level in [V3_1, V3_1_1] {
        assert_vector(
            &[0x40, 0x02, 0x00, 0x01],
            level,
            Packet::PubAck(super::super::Ack::success(pid(1))),
        );
        assert_vector(
            &[0x50, 0x02, 0x12, 0x34],
            level,
            Packet::PubRec(Ack::success(pid(0x1234))),
        );
        assert_vector(
            &[0x62, 0x02, 0x00, 0x01],
            level,
            Packet::PubRel(Ack::success(pid(1))),
        );
        assert_vector(
            &[0x70, 0x02, 0x00, 0x01],
            level,
            Packet::PubComp(Ack::success(pid(1))),
        );
    }
}

#[test]
fn acks_5_short_and_long_forms() {
    // Remaining length 2: success, no properties (3.4.2.1).
    assert_vector(
        &[0x40, 0x02, 0x00, 0x01],
        V5,
        Packet::PubAck(Ack::success(pid(1))),
    );
    // Remaining length 3: a reason code, no properties.
    let no_subscribers = Ack {
        reason_code: ReasonCode::NO_MATCHING_SUBSCRIBERS,
        ..Ack::success(pid(1))
    };
    assert_vector(
        &[0x40, 0x03, 0x00, 0x01, 0x10],
        V5,
        Packet::PubAck(no_subscribers.clone()),
    );
    // An explicit empty property block is the same packet.
    assert_eq!(
        decode_one(&[0x40, 0x04, 0x00, 0x01, 0x10, 0x00], V5),
        Packet::PubAck(no_subscribers)
    );
    // A reason code and properties.
    let bytes = frame(0x50, &[&[0x00, 0x01, 0x80], &props(&[&sp(0x1F, b"bad")])]);
    let refused = Ack {
        reason_code: ReasonCode::UNSPECIFIED_ERROR,
        properties: AckProperties {
            reason_string: Some(s("bad")),
            user_properties: vec![],
        },
        ..Ack::success(pid(1))
    };
    assert_vector(&bytes, V5, Packet::PubRec(refused));
    let not_found = Ack {
        reason_code: ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
        ..Ack::success(pid(2))
    };
    assert_vector(
        &[0x62, 0x03, 0x00, 0x02, 0x92],
        V5,
        Packet::PubRel(not_found.clone()),
    );
    assert_vector(
        &[0x70, 0x03, 0x00, 0x02, 0x92],
        V5,
        Packet::PubComp(not_found),
    );
}

#[test]
fn subscribe_3_x() {
    let bytes = frame(
        0x82,
        &[&[0x00, 0x0A], &lp(b"a/#"), &sp(0x01, b"b"), &[0x02]],
    );
    let qos = |qos| SubscriptionOptions {
        qos,
        ..SubscriptionOptions::default()
    };
    let expected = Subscribe {
        packet_id: pid(10),
        subscription_identifier: None,
        user_properties: vec![],
        filters: vec![
            (s("a/#"), qos(QoS::AtLeastOnce)),
            (s("b"), qos(QoS::ExactlyOnce)),
        ],
    };
    for level in [V3_1, V3_1_1] {
        assert_vector(&bytes, level, Packet::Subscribe(expected.clone()));
    }
}

#[test]
fn subscribe_5_with_options_and_identifier() {
    // QoS 1, No Local, Retain As Published, Retain Handling 2.
    let bytes = frame(
        0x82,
        &[
            &[0x00, 0x0A],
            &props(&[&[0x0B, 0x80, 0x01], &up(b"k", b"v")]),
            &lp(b"a"),
            &sp(0x2D, b"+/b"),
            &[0x10],
        ],
    );
    let expected = Subscribe {
        packet_id: pid(10),
        subscription_identifier: Some(128),
        user_properties: vec![(s("k"), s("v"))],
        filters: vec![
            (
                s("a"),
                SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: RetainHandling::Never,
                },
            ),
            (
                s("+/b"),
                SubscriptionOptions {
                    retain_handling: RetainHandling::OnNewSubscribe,
                    ..SubscriptionOptions::default()
                },
            ),
        ],
    };
    assert_vector(&bytes, V5, Packet::Subscribe(expected));
}

#[test]
fn suback_at_each_level() {
    let expected = SubAck {
        packet_id: pid(10),
        properties: AckProperties::default(),
        reason_codes: vec![ReasonCode::GRANTED_QOS_1, ReasonCode::UNSPECIFIED_ERROR],
    };
    for level in [V3_1, V3_1_1] {
        assert_vector(
            &[0x90, 0x04, 0x00, 0x0A, 0x01, 0x80],
            level,
            Packet::SubAck(expected.clone()),
        );
    }
    let expected = SubAck {
        reason_codes: vec![
            ReasonCode::GRANTED_QOS_0,
            ReasonCode::GRANTED_QOS_2,
            ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED,
        ],
        ..expected
    };
    assert_vector(
        &[0x90, 0x06, 0x00, 0x0A, 0x00, 0x00, 0x02, 0xA2],
        V5,
        Packet::SubAck(expected),
    );
}

#[test]
fn unsubscribe_at_each_level() {
    let expected = Unsubscribe {
        packet_id: pid(11),
        user_properties: vec![],
        filters: vec![s("a"), s("b/+")],
    };
    let bytes = frame(0xA2, &[&[0x00, 0x0B], &lp(b"a"), &lp(b"b/+")]);
    for level in [V3_1, V3_1_1] {
        assert_vector(&bytes, level, Packet::Unsubscribe(expected.clone()));
    }
    let bytes = frame(
        0xA2,
        &[
            &[0x00, 0x0B],
            &props(&[&up(b"k", b"v")]),
            &lp(b"a"),
            &lp(b"b/+"),
        ],
    );
    let expected = Unsubscribe {
        user_properties: vec![(s("k"), s("v"))],
        ..expected
    };
    assert_vector(&bytes, V5, Packet::Unsubscribe(expected));
}

#[test]
fn unsuback_at_each_level() {
    let bare = UnsubAck {
        packet_id: pid(11),
        properties: AckProperties::default(),
        reason_codes: vec![],
    };
    for level in [V3_1, V3_1_1] {
        assert_vector(
            &[0xB0, 0x02, 0x00, 0x0B],
            level,
            Packet::UnsubAck(bare.clone()),
        );
    }
    let expected = UnsubAck {
        reason_codes: vec![ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED],
        ..bare
    };
    assert_vector(
        &[0xB0, 0x05, 0x00, 0x0B, 0x00, 0x00, 0x11],
        V5,
        Packet::UnsubAck(expected),
    );
}

#[test]
fn ping_at_each_level() {
    for level in LEVELS {
        assert_vector(&[0xC0, 0x00], level, Packet::PingReq);
        assert_vector(&[0xD0, 0x00], level, Packet::PingResp);
    }
}

#[test]
fn disconnect_at_each_level() {
    let normal = Disconnect::new(ReasonCode::NORMAL_DISCONNECTION);
    for level in LEVELS {
        assert_vector(&[0xE0, 0x00], level, Packet::Disconnect(normal.clone()));
    }
    let with_will = Disconnect::new(ReasonCode::DISCONNECT_WITH_WILL_MESSAGE);
    assert_vector(&[0xE0, 0x01, 0x04], V5, Packet::Disconnect(with_will));
    let bytes = frame(
        0xE0,
        &[
            &[0x8E],
            &props(&[
                &[0x11, 0x00, 0x00, 0x00, 0x00],
                &sp(0x1F, b"r"),
                &sp(0x1C, b"s"),
            ]),
        ],
    );
    let taken_over = Disconnect {
        reason_code: ReasonCode::SESSION_TAKEN_OVER,
        properties: DisconnectProperties {
            session_expiry_interval: Some(0),
            reason_string: Some(s("r")),
            user_properties: vec![],
            server_reference: Some(s("s")),
        },
    };
    assert_vector(&bytes, V5, Packet::Disconnect(taken_over));
}

#[test]
fn auth_5() {
    let success = Auth {
        reason_code: ReasonCode::SUCCESS,
        properties: AuthProperties::default(),
    };
    assert_vector(&[0xF0, 0x00], V5, Packet::Auth(success));
    let bytes = frame(
        0xF0,
        &[&[0x18], &props(&[&sp(0x15, b"SCRAM"), &sp(0x16, &[1, 2])])],
    );
    let step = Auth {
        reason_code: ReasonCode::CONTINUE_AUTHENTICATION,
        properties: AuthProperties {
            authentication_method: Some(s("SCRAM")),
            authentication_data: Some(Bytes::from_static(&[1, 2])),
            reason_string: None,
            user_properties: vec![],
        },
    };
    assert_vector(&bytes, V5, Packet::Auth(step));
}

#[test]
fn non_minimal_remaining_length_is_accepted() {
    // [MQTT-1.5.5-1] binds the sender; a receiver loses nothing by accepting 0x80 0x00 for 0.
    assert_eq!(decode_one(&[0xC0, 0x80, 0x00], V3_1_1), Packet::PingReq);
    assert_eq!(
        decode_one(&[0xC0, 0x80, 0x80, 0x80, 0x00], V5),
        Packet::PingReq
    );
}

#[test]
fn multi_byte_remaining_length() {
    // 200 bytes of payload: remaining length 205 = 0xCD 0x01.
    let mut bytes = vec![0x30, 0xCD, 0x01];
    bytes.extend(lp(b"abc"));
    bytes.extend([7u8; 200]);
    let expected = Publish {
        payload: Bytes::from(vec![7u8; 200]),
        ..publish("abc", b"")
    };
    assert_vector(&bytes, V3_1_1, Packet::Publish(expected));
}

#[test]
fn two_packets_in_one_buffer_come_out_one_at_a_time() {
    let mut buf = BytesMut::from(&[0xC0, 0x00, 0xD0, 0x00, 0xE0][..]);
    assert_eq!(decode(&mut buf, V3_1_1, 16), Ok(Some(Packet::PingReq)));
    assert_eq!(decode(&mut buf, V3_1_1, 16), Ok(Some(Packet::PingResp)));
    assert_eq!(decode(&mut buf, V3_1_1, 16), Ok(None));
    assert_eq!(&buf[..], &[0xE0]);
}

#[test]
fn too_large_is_reported_before_the_body_arrives() {
    // A PUBLISH announcing 200 bytes of remaining length, of which none have arrived.
    let mut buf = BytesMut::from(&[0x30, 0xC8, 0x01][..]);
    assert_eq!(
        decode(&mut buf, V5, 100),
        Err(DecodeError::TooLarge {
            size: 203,
            max: 100
        })
    );
    // The limit counts the whole packet, fixed header included.
    let bytes = frame(0x30, &[&lp(b"a"), b"xyz"]);
    let size = bytes.len() as u32;
    let mut buf = BytesMut::from(&bytes[..]);
    assert!(matches!(decode(&mut buf, V3_1_1, size), Ok(Some(_))));
    let mut buf = BytesMut::from(&bytes[..]);
    assert_eq!(
        decode(&mut buf, V3_1_1, size - 1),
        Err(DecodeError::TooLarge {
            size: size as usize,
            max: size - 1
        })
    );
}

#[test]
fn sniff_reads_the_level_of_a_connect() {
    let v5 = frame(0x10, &[MQTT, &[0x05, 0x03, 0x00, 0x00]]);
    // The reserved flag is set, so decoding fails, but the level can still be read.
    assert_eq!(sniff_connect_version(&v5), Some(V5));
    assert!(matches!(decode_one_err(&v5), DecodeError::Malformed(_)));
    // Only the fixed header, protocol name and level need to be there.
    assert_eq!(sniff_connect_version(&v5[..9]), Some(V5));
    assert_eq!(sniff_connect_version(&v5[..8]), None);
    let v3 = frame(0x10, &[&lp(b"MQIsdp"), &[0x03]]);
    assert_eq!(sniff_connect_version(&v3), Some(V3_1));
    let v4 = frame(0x10, &[MQTT, &[0x04]]);
    assert_eq!(sniff_connect_version(&v4), Some(V3_1_1));
}

#[test]
fn sniff_refuses_anything_else() {
    assert_eq!(sniff_connect_version(&[]), None);
    // Wrong flags, wrong type, unknown level, unknown name.
    assert_eq!(sniff_connect_version(&frame(0x11, &[MQTT, &[0x05]])), None);
    assert_eq!(sniff_connect_version(&frame(0x30, &[MQTT, &[0x05]])), None);
    assert_eq!(sniff_connect_version(&frame(0x10, &[MQTT, &[0x06]])), None);
    assert_eq!(
        sniff_connect_version(&frame(0x10, &[&lp(b"MQTX"), &[0x04]])),
        None
    );
    // A remaining length too short to hold the name and level.
    assert_eq!(
        sniff_connect_version(&[0x10, 0x03, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04]),
        None
    );
    // A length prefix pointing past the end, and a runaway remaining length.
    assert_eq!(sniff_connect_version(&[0x10, 0x7F, 0xFF, 0xFF]), None);
    assert_eq!(
        sniff_connect_version(&[0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]),
        None
    );
}

fn decode_one_err(bytes: &[u8]) -> DecodeError {
    super::decode_err(bytes, V5)
}
