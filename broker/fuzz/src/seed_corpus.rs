//! Writes a small seed corpus for the `decode` target: one encoded packet of each type at each
//! protocol level, with the optional fields and properties filled in so the fuzzer starts from
//! inputs that reach deep into the decoder. Run from `broker/fuzz`: `cargo run --bin seed-corpus`.

use std::num::NonZeroU16;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use tern_broker::codec::{
    Ack, AckProperties, Auth, AuthProperties, ConnAck, ConnAckProperties, Connect,
    ConnectProperties, Disconnect, DisconnectProperties, Packet, PacketId, ProtocolVersion,
    Publish, PublishProperties, QoS, ReasonCode, RetainHandling, SubAck, Subscribe,
    SubscriptionOptions, UnsubAck, Unsubscribe, Will, WillProperties, encode,
};

fn s(text: &str) -> ByteString {
    ByteString::from(text)
}

fn id(value: u16) -> PacketId {
    PacketId::new(value).expect("non-zero")
}

fn user() -> Vec<(ByteString, ByteString)> {
    vec![(s("k"), s("v"))]
}

fn acks() -> AckProperties {
    AckProperties {
        reason_string: Some(s("why")),
        user_properties: user(),
    }
}

fn connect(protocol: ProtocolVersion) -> Packet {
    Packet::Connect(Box::new(Connect {
        protocol,
        clean_start: true,
        keep_alive: 30,
        client_id: s("client"),
        will: Some(Will {
            topic: s("will/topic"),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: WillProperties {
                will_delay_interval: Some(5),
                payload_format_indicator: Some(1),
                message_expiry_interval: Some(60),
                content_type: Some(s("text/plain")),
                response_topic: Some(s("reply")),
                correlation_data: Some(Bytes::from_static(b"c")),
                user_properties: user(),
            },
        }),
        username: Some(s("user")),
        password: Some(Bytes::from_static(b"secret")),
        properties: ConnectProperties {
            session_expiry_interval: Some(3600),
            receive_maximum: NonZeroU16::new(10),
            maximum_packet_size: Some(4096),
            topic_alias_maximum: Some(8),
            request_response_information: Some(true),
            request_problem_information: Some(false),
            user_properties: user(),
            authentication_method: Some(s("SCRAM-SHA-1")),
            authentication_data: Some(Bytes::from_static(b"data")),
        },
    }))
}

fn packets(protocol: ProtocolVersion) -> Vec<(&'static str, Packet)> {
    let v5 = protocol.is_v5();
    let code = |v5_code: ReasonCode| if v5 { v5_code } else { ReasonCode::SUCCESS };
    let mut out = vec![
        ("connect", connect(protocol)),
        (
            "connack",
            Packet::ConnAck(ConnAck {
                session_present: protocol != ProtocolVersion::V3_1,
                reason_code: ReasonCode::SUCCESS,
                properties: ConnAckProperties {
                    maximum_qos: Some(QoS::AtLeastOnce),
                    retain_available: Some(true),
                    assigned_client_identifier: Some(s("auto-1")),
                    server_keep_alive: Some(60),
                    shared_subscription_available: Some(false),
                    ..ConnAckProperties::default()
                },
            }),
        ),
        (
            "publish",
            Packet::Publish(Publish {
                dup: true,
                qos: QoS::ExactlyOnce,
                retain: true,
                topic: s("sensors/1/temp"),
                packet_id: Some(id(7)),
                properties: PublishProperties {
                    payload_format_indicator: Some(1),
                    message_expiry_interval: Some(10),
                    topic_alias: Some(3),
                    response_topic: Some(s("reply/1")),
                    correlation_data: Some(Bytes::from_static(b"x")),
                    user_properties: user(),
                    subscription_identifiers: vec![1, 200],
                    content_type: Some(s("json")),
                },
                payload: Bytes::from_static(b"{\"t\":21.5}"),
            }),
        ),
        (
            "puback",
            Packet::PubAck(Ack {
                packet_id: id(7),
                reason_code: code(ReasonCode::NO_MATCHING_SUBSCRIBERS),
                properties: if v5 { acks() } else { AckProperties::default() },
            }),
        ),
        ("pubrec", Packet::PubRec(Ack::success(id(8)))),
        (
            "pubrel",
            Packet::PubRel(Ack {
                reason_code: code(ReasonCode::PACKET_IDENTIFIER_NOT_FOUND),
                ..Ack::success(id(9))
            }),
        ),
        ("pubcomp", Packet::PubComp(Ack::success(id(9)))),
        (
            "subscribe",
            Packet::Subscribe(Subscribe {
                packet_id: id(10),
                subscription_identifier: v5.then_some(200),
                user_properties: if v5 { user() } else { vec![] },
                filters: vec![
                    (
                        s("sensors/+/temp"),
                        SubscriptionOptions {
                            qos: QoS::AtLeastOnce,
                            no_local: v5,
                            retain_as_published: v5,
                            retain_handling: if v5 {
                                RetainHandling::OnNewSubscribe
                            } else {
                                RetainHandling::OnSubscribe
                            },
                        },
                    ),
                    (s("$share/g/a/#"), SubscriptionOptions::default()),
                ],
            }),
        ),
        (
            "suback",
            Packet::SubAck(SubAck {
                packet_id: id(10),
                properties: if v5 { acks() } else { AckProperties::default() },
                reason_codes: vec![ReasonCode::GRANTED_QOS_1, ReasonCode::UNSPECIFIED_ERROR],
            }),
        ),
        (
            "unsubscribe",
            Packet::Unsubscribe(Unsubscribe {
                packet_id: id(11),
                user_properties: if v5 { user() } else { vec![] },
                filters: vec![s("sensors/+/temp"), s("a/#")],
            }),
        ),
        (
            "unsuback",
            Packet::UnsubAck(UnsubAck {
                packet_id: id(11),
                properties: if v5 { acks() } else { AckProperties::default() },
                reason_codes: if v5 {
                    vec![ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED]
                } else {
                    vec![]
                },
            }),
        ),
        ("pingreq", Packet::PingReq),
        ("pingresp", Packet::PingResp),
        (
            "disconnect",
            Packet::Disconnect(Disconnect {
                reason_code: code(ReasonCode::SERVER_SHUTTING_DOWN),
                properties: if v5 {
                    DisconnectProperties {
                        session_expiry_interval: Some(0),
                        reason_string: Some(s("bye")),
                        user_properties: user(),
                        server_reference: Some(s("other:1883")),
                    }
                } else {
                    DisconnectProperties::default()
                },
            }),
        ),
    ];
    if v5 {
        out.push((
            "auth",
            Packet::Auth(Auth {
                reason_code: ReasonCode::CONTINUE_AUTHENTICATION,
                properties: AuthProperties {
                    authentication_method: Some(s("SCRAM-SHA-1")),
                    authentication_data: Some(Bytes::from_static(b"challenge")),
                    reason_string: None,
                    user_properties: vec![],
                },
            }),
        ));
    }
    out
}

fn main() -> std::io::Result<()> {
    let dir = Path::new("corpus/decode");
    std::fs::create_dir_all(dir)?;
    let mut written = 0;
    for protocol in [
        ProtocolVersion::V3_1,
        ProtocolVersion::V3_1_1,
        ProtocolVersion::V5,
    ] {
        let mut session = BytesMut::new();
        for (name, packet) in packets(protocol) {
            let mut buf = BytesMut::new();
            encode(&packet, protocol, u32::MAX, &mut buf).expect("seed packets encode");
            session.extend_from_slice(&buf);
            std::fs::write(dir.join(format!("{name}-v{}", protocol.level())), &buf)?;
            written += 1;
        }
        // Several packets in one input, as they arrive on a connection.
        std::fs::write(dir.join(format!("session-v{}", protocol.level())), &session)?;
        written += 1;
    }
    println!("wrote {written} seeds to {}", dir.display());
    Ok(())
}
