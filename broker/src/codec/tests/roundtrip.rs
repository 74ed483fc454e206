//! Property tests: any valid packet survives encode then decode at every level; decode never
//! panics on arbitrary bytes; a mutated valid packet either fails to decode or decodes to a packet
//! that itself round-trips; and a stream cut into arbitrary reads yields the same packets.

use std::num::NonZeroU16;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;

use super::super::{
    Ack, AckProperties, Auth, AuthProperties, ConnAck, ConnAckProperties, Connect,
    ConnectProperties, Disconnect, DisconnectProperties, Packet, PacketId, ProtocolVersion,
    Publish, PublishProperties, PublishView, QoS, ReasonCode, RetainHandling, SubAck, Subscribe,
    SubscriptionOptions, UnsubAck, Unsubscribe, Will, WillProperties, decode, encode,
    encode_publish, encoded_len,
};
use super::{LEVELS, V3_1};

/// Reason codes by packet, transcribed from the reason code sections of chapter 3.
const CONNACK_CODES: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];
const V3_CONNACK_CODES: &[u8] = &[0x00, 0x84, 0x85, 0x88, 0x86, 0x87];
const PUBACK_CODES: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const PUBREL_CODES: &[u8] = &[0x00, 0x92];
const SUBACK_CODES: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];
const V3_SUBACK_CODES: &[u8] = &[0x00, 0x01, 0x02, 0x80];
const UNSUBACK_CODES: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
const DISCONNECT_CODES: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];
const AUTH_CODES: &[u8] = &[0x00, 0x18, 0x19];

fn level() -> impl Strategy<Value = ProtocolVersion> {
    select(LEVELS.to_vec())
}

fn reason(codes: &'static [u8]) -> impl Strategy<Value = ReasonCode> {
    select(codes).prop_map(ReasonCode)
}

/// Any string the protocol allows: no U+0000, multi-byte characters included.
fn string() -> impl Strategy<Value = ByteString> {
    "[a-zA-Z0-9 /_$+#é€😀\u{1}\u{FEFF}-]{0,12}".prop_map(ByteString::from)
}

fn topic_name() -> impl Strategy<Value = ByteString> {
    "[a-z0-9/$é_ -]{1,16}".prop_map(ByteString::from)
}

fn topic_filter() -> impl Strategy<Value = ByteString> {
    "[a-z0-9/+#$é]{1,16}".prop_map(ByteString::from)
}

fn binary() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..16).prop_map(Bytes::from)
}

fn user_properties() -> impl Strategy<Value = Vec<(ByteString, ByteString)>> {
    vec((string(), string()), 0..3)
}

fn qos() -> impl Strategy<Value = QoS> {
    select(&[QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce][..])
}

fn packet_id() -> impl Strategy<Value = PacketId> {
    (1u16..).prop_map(|id| PacketId::new(id).unwrap())
}

fn subscription_identifier() -> impl Strategy<Value = u32> {
    1u32..=268_435_455
}

/// A v5 strategy at v5, the default value below it.
fn v5_only<T: Default + Clone + std::fmt::Debug + 'static>(
    protocol: ProtocolVersion,
    strategy: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<T> {
    if protocol.is_v5() {
        strategy.boxed()
    } else {
        Just(T::default()).boxed()
    }
}

/// Authentication Data only travels with an Authentication Method.
fn auth_pair() -> impl Strategy<Value = (Option<ByteString>, Option<Bytes>)> {
    (option::of(string()), option::of(binary()))
        .prop_map(|(method, data)| (method.clone(), data.filter(|_| method.is_some())))
}

fn connect_properties() -> impl Strategy<Value = ConnectProperties> {
    (
        option::of(any::<u32>()),
        option::of(any::<NonZeroU16>()),
        option::of(1u32..),
        option::of(any::<u16>()),
        option::of(any::<bool>()),
        option::of(any::<bool>()),
        user_properties(),
        auth_pair(),
    )
        .prop_map(
            |(expiry, receive, max_size, alias_max, response, problem, user, auth)| {
                ConnectProperties {
                    session_expiry_interval: expiry,
                    receive_maximum: receive,
                    maximum_packet_size: max_size,
                    topic_alias_maximum: alias_max,
                    request_response_information: response,
                    request_problem_information: problem,
                    user_properties: user,
                    authentication_method: auth.0,
                    authentication_data: auth.1,
                }
            },
        )
}

fn will_properties() -> impl Strategy<Value = WillProperties> {
    (
        option::of(any::<u32>()),
        option::of(0u8..=1),
        option::of(any::<u32>()),
        option::of(string()),
        option::of(topic_name()),
        option::of(binary()),
        user_properties(),
    )
        .prop_map(
            |(delay, format, expiry, content, response, correlation, user)| WillProperties {
                will_delay_interval: delay,
                payload_format_indicator: format,
                message_expiry_interval: expiry,
                content_type: content,
                response_topic: response,
                correlation_data: correlation,
                user_properties: user,
            },
        )
}

fn connect(protocol: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let will = (
        topic_name(),
        binary(),
        qos(),
        any::<bool>(),
        v5_only(protocol, will_properties()),
    )
        .prop_map(|(topic, payload, qos, retain, properties)| Will {
            topic,
            payload,
            qos,
            retain,
            properties,
        });
    (
        any::<bool>(),
        any::<u16>(),
        string(),
        option::of(will),
        option::of(string()),
        option::of(binary()),
        v5_only(protocol, connect_properties()),
    )
        .prop_map(
            move |(clean_start, keep_alive, client_id, will, username, password, properties)| {
                // Before v5 a password needs a user name [MQTT-3.1.2-22].
                let password = password.filter(|_| protocol.is_v5() || username.is_some());
                Packet::Connect(Box::new(Connect {
                    protocol,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties,
                }))
            },
        )
}

fn connack_properties() -> impl Strategy<Value = ConnAckProperties> {
    let limits = (
        option::of(any::<u32>()),
        option::of(any::<NonZeroU16>()),
        option::of(select(&[QoS::AtMostOnce, QoS::AtLeastOnce][..])),
        option::of(any::<bool>()),
        option::of(1u32..),
        option::of(any::<u16>()),
        option::of(any::<u16>()),
    );
    let features = (
        option::of(any::<bool>()),
        option::of(any::<bool>()),
        option::of(any::<bool>()),
    );
    let strings = (
        option::of(string()),
        option::of(string()),
        option::of(string()),
        option::of(string()),
        user_properties(),
        auth_pair(),
    );
    (limits, features, strings).prop_map(
        |(
            (expiry, receive, max_qos, retain, max_size, alias_max, keep_alive),
            (wildcard, sub_ids, shared),
            (assigned, reason, response, reference, user, auth),
        )| ConnAckProperties {
            session_expiry_interval: expiry,
            receive_maximum: receive,
            maximum_qos: max_qos,
            retain_available: retain,
            maximum_packet_size: max_size,
            assigned_client_identifier: assigned,
            topic_alias_maximum: alias_max,
            reason_string: reason,
            user_properties: user,
            wildcard_subscription_available: wildcard,
            subscription_identifiers_available: sub_ids,
            shared_subscription_available: shared,
            server_keep_alive: keep_alive,
            response_information: response,
            server_reference: reference,
            authentication_method: auth.0,
            authentication_data: auth.1,
        },
    )
}

fn connack(protocol: ProtocolVersion) -> impl Strategy<Value = Packet> {
    // 3.1 has no Session Present flag; 3.x return codes stand for six reason codes only.
    let session_present = if protocol == V3_1 {
        Just(false).boxed()
    } else {
        any::<bool>().boxed()
    };
    let code = if protocol.is_v5() {
        reason(CONNACK_CODES).boxed()
    } else {
        reason(V3_CONNACK_CODES).boxed()
    };
    (
        session_present,
        code,
        v5_only(protocol, connack_properties()),
    )
        .prop_map(|(session_present, reason_code, properties)| {
            Packet::ConnAck(ConnAck {
                session_present,
                reason_code,
                properties,
            })
        })
}

fn publish_properties() -> impl Strategy<Value = PublishProperties> {
    (
        option::of(0u8..=1),
        option::of(any::<u32>()),
        option::of(any::<u16>()),
        option::of(topic_name()),
        option::of(binary()),
        user_properties(),
        vec(subscription_identifier(), 0..3),
        option::of(string()),
    )
        .prop_map(
            |(format, expiry, alias, response, correlation, user, sub_ids, content)| {
                PublishProperties {
                    payload_format_indicator: format,
                    message_expiry_interval: expiry,
                    topic_alias: alias,
                    response_topic: response,
                    correlation_data: correlation,
                    user_properties: user,
                    subscription_identifiers: sub_ids,
                    content_type: content,
                }
            },
        )
}

fn publish(protocol: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        any::<bool>(),
        qos(),
        any::<bool>(),
        topic_name(),
        any::<bool>(),
        packet_id(),
        v5_only(protocol, publish_properties()),
        vec(any::<u8>(), 0..64),
    )
        .prop_map(
            |(dup, qos, retain, topic, drop_topic, id, properties, payload)| {
                let at_least_once = qos != QoS::AtMostOnce;
                // An empty topic name is valid only where a topic alias stands for it.
                let topic = if drop_topic && properties.topic_alias.is_some() {
                    ByteString::new()
                } else {
                    topic
                };
                Packet::Publish(Publish {
                    dup: dup && at_least_once,
                    qos,
                    retain,
                    topic,
                    packet_id: Some(id).filter(|_| at_least_once),
                    properties,
                    payload: Bytes::from(payload),
                })
            },
        )
}

fn ack_properties() -> impl Strategy<Value = AckProperties> {
    (option::of(string()), user_properties()).prop_map(|(reason_string, user_properties)| {
        AckProperties {
            reason_string,
            user_properties,
        }
    })
}

fn ack(protocol: ProtocolVersion, codes: &'static [u8]) -> impl Strategy<Value = Ack> {
    let code = if protocol.is_v5() {
        reason(codes).boxed()
    } else {
        Just(ReasonCode::SUCCESS).boxed()
    };
    (packet_id(), code, v5_only(protocol, ack_properties())).prop_map(
        |(packet_id, reason_code, properties)| Ack {
            packet_id,
            reason_code,
            properties,
        },
    )
}

fn subscription_options(protocol: ProtocolVersion) -> BoxedStrategy<SubscriptionOptions> {
    if !protocol.is_v5() {
        return qos()
            .prop_map(|qos| SubscriptionOptions {
                qos,
                ..SubscriptionOptions::default()
            })
            .boxed();
    }
    let handling = [
        RetainHandling::OnSubscribe,
        RetainHandling::OnNewSubscribe,
        RetainHandling::Never,
    ];
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        select(handling.to_vec()),
    )
        .prop_map(
            |(qos, no_local, retain_as_published, retain_handling)| SubscriptionOptions {
                qos,
                no_local,
                retain_as_published,
                retain_handling,
            },
        )
        .boxed()
}

fn subscribe(protocol: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        packet_id(),
        v5_only(protocol, option::of(subscription_identifier())),
        v5_only(protocol, user_properties()),
        vec((topic_filter(), subscription_options(protocol)), 1..4),
    )
        .prop_map(
            |(packet_id, subscription_identifier, user_properties, filters)| {
                Packet::Subscribe(Subscribe {
                    packet_id,
                    subscription_identifier,
                    user_properties,
                    filters,
                })
            },
        )
}

fn suback(protocol: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let codes = if protocol.is_v5() {
        SUBACK_CODES
    } else {
        V3_SUBACK_CODES
    };
    (
        packet_id(),
        v5_only(protocol, ack_properties()),
        vec(reason(codes), 0..4),
    )
        .prop_map(|(packet_id, properties, reason_codes)| {
            Packet::SubAck(SubAck {
                packet_id,
                properties,
                reason_codes,
            })
        })
}

fn unsubscribe(protocol: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        packet_id(),
        v5_only(protocol, user_properties()),
        vec(topic_filter(), 1..4),
    )
        .prop_map(|(packet_id, user_properties, filters)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                user_properties,
                filters,
            })
        })
}

fn unsuback(protocol: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        packet_id(),
        v5_only(protocol, ack_properties()),
        v5_only(protocol, vec(reason(UNSUBACK_CODES), 0..4)),
    )
        .prop_map(|(packet_id, properties, reason_codes)| {
            Packet::UnsubAck(UnsubAck {
                packet_id,
                properties,
                reason_codes,
            })
        })
}

fn disconnect(protocol: ProtocolVersion) -> BoxedStrategy<Packet> {
    if !protocol.is_v5() {
        return Just(Packet::Disconnect(Disconnect::new(
            ReasonCode::NORMAL_DISCONNECTION,
        )))
        .boxed();
    }
    let properties = (
        option::of(any::<u32>()),
        option::of(string()),
        user_properties(),
        option::of(string()),
    )
        .prop_map(|(expiry, reason, user, reference)| DisconnectProperties {
            session_expiry_interval: expiry,
            reason_string: reason,
            user_properties: user,
            server_reference: reference,
        });
    (reason(DISCONNECT_CODES), properties)
        .prop_map(|(reason_code, properties)| {
            Packet::Disconnect(Disconnect {
                reason_code,
                properties,
            })
        })
        .boxed()
}

fn auth() -> impl Strategy<Value = Packet> {
    (
        reason(AUTH_CODES),
        auth_pair(),
        option::of(string()),
        user_properties(),
    )
        .prop_map(
            |(reason_code, (method, data), reason_string, user_properties)| {
                Packet::Auth(Auth {
                    reason_code,
                    properties: AuthProperties {
                        authentication_method: method,
                        authentication_data: data,
                        reason_string,
                        user_properties,
                    },
                })
            },
        )
}

/// Any valid packet at `protocol`.
fn packet(protocol: ProtocolVersion) -> BoxedStrategy<Packet> {
    let common = prop_oneof![
        connect(protocol),
        connack(protocol),
        publish(protocol),
        ack(protocol, PUBACK_CODES).prop_map(Packet::PubAck),
        ack(protocol, PUBACK_CODES).prop_map(Packet::PubRec),
        ack(protocol, PUBREL_CODES).prop_map(Packet::PubRel),
        ack(protocol, PUBREL_CODES).prop_map(Packet::PubComp),
        subscribe(protocol),
        suback(protocol),
        unsubscribe(protocol),
        unsuback(protocol),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        disconnect(protocol),
    ];
    if protocol.is_v5() {
        prop_oneof![13 => common, 1 => auth()].boxed()
    } else {
        common.boxed()
    }
}

fn level_and_packet() -> impl Strategy<Value = (ProtocolVersion, Packet)> {
    level().prop_flat_map(|protocol| (Just(protocol), packet(protocol)))
}

fn encode_all(packet: &Packet, protocol: ProtocolVersion) -> BytesMut {
    let mut buf = BytesMut::new();
    encode(packet, protocol, u32::MAX, &mut buf).unwrap();
    buf
}

/// Decodes packets off `buf` until it needs more input or fails; checks the buffer is untouched
/// when more input is needed, and that whatever decodes also round-trips.
fn drain(buf: &mut BytesMut, protocol: ProtocolVersion, max: u32) -> Result<(), TestCaseError> {
    loop {
        let before = buf.clone();
        match decode(buf, protocol, max) {
            Ok(Some(packet)) => check_reencodes(&packet, protocol)?,
            Ok(None) => {
                prop_assert_eq!(&before, buf);
                return Ok(());
            }
            Err(_) => return Ok(()),
        }
    }
}

/// A decoded packet encodes and decodes back to itself.
fn check_reencodes(packet: &Packet, protocol: ProtocolVersion) -> Result<(), TestCaseError> {
    let mut buf = BytesMut::new();
    let size = encode(packet, protocol, u32::MAX, &mut buf);
    prop_assert_eq!(size, Ok(buf.len()));
    let again = decode(&mut buf, protocol, u32::MAX);
    prop_assert_eq!(again, Ok(Some(packet.clone())));
    prop_assert!(buf.is_empty());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn every_valid_packet_round_trips((protocol, packet) in level_and_packet()) {
        let mut buf = encode_all(&packet, protocol);
        prop_assert_eq!(buf.len(), encoded_len(&packet, protocol));
        let decoded = decode(&mut buf, protocol, u32::MAX);
        prop_assert_eq!(decoded, Ok(Some(packet)));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn a_stream_cut_anywhere_decodes_to_the_same_packets(
        (protocol, packets) in level().prop_flat_map(|p| (Just(p), vec(packet(p), 1..5))),
        cuts in vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let mut stream = BytesMut::new();
        for packet in &packets {
            encode(packet, protocol, u32::MAX, &mut stream).unwrap();
        }
        let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut.index(stream.len() + 1)).collect();
        cuts.push(stream.len());
        cuts.sort_unstable();
        // Feed the stream in reads ending at each cut, decoding whatever is whole.
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        let mut fed = 0;
        for cut in cuts {
            buf.extend_from_slice(&stream[fed..cut]);
            fed = cut;
            while let Some(packet) = decode(&mut buf, protocol, u32::MAX).unwrap() {
                decoded.push(packet);
            }
        }
        prop_assert_eq!(decoded, packets);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(
        protocol in level(),
        bytes in vec(any::<u8>(), 0..96),
        max in prop_oneof![Just(u32::MAX), 0u32..128],
    ) {
        let mut buf = BytesMut::from(&bytes[..]);
        drain(&mut buf, protocol, max)?;
    }

    #[test]
    fn a_mutated_packet_fails_or_round_trips(
        (protocol, packet) in level_and_packet(),
        edits in vec((any::<prop::sample::Index>(), 1u8..=255, 0u8..3), 1..4),
    ) {
        let mut bytes = encode_all(&packet, protocol).to_vec();
        for (at, value, kind) in edits {
            let i = at.index(bytes.len());
            match kind {
                0 => bytes[i] ^= value,
                1 => bytes.insert(i, value),
                _ => { bytes.remove(i); }
            }
            if bytes.is_empty() {
                break;
            }
        }
        let mut buf = BytesMut::from(&bytes[..]);
        drain(&mut buf, protocol, u32::MAX)?;
    }
}

#[test]
fn the_largest_property_values_round_trip() {
    let packet = Packet::Publish(Publish {
        dup: true,
        qos: QoS::ExactlyOnce,
        retain: true,
        topic: ByteString::from("a".repeat(65_535)),
        packet_id: PacketId::new(u16::MAX),
        properties: PublishProperties {
            message_expiry_interval: Some(u32::MAX),
            subscription_identifiers: vec![268_435_455, 2_097_152, 16_384, 128, 1],
            ..PublishProperties::default()
        },
        payload: Bytes::from(vec![0xFF; 70_000]),
    });
    let mut buf = encode_all(&packet, ProtocolVersion::V5);
    assert_eq!(
        decode(&mut buf, ProtocolVersion::V5, u32::MAX),
        Ok(Some(packet))
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// A delivery is encoded from the shared message's parts; its own expiry, alias and
    /// subscription identifiers stand in for the shared properties' ones, byte for byte.
    #[test]
    fn a_publish_encoded_from_its_parts_is_the_packet_they_make(
        (protocol, packet) in level().prop_flat_map(|p| (Just(p), publish(p))),
        shared in publish_properties(),
        expiry in option::of(any::<u32>()),
        alias in option::of(1u16..),
        subscription_ids in vec(subscription_identifier(), 0..3),
    ) {
        let Packet::Publish(mut publish) = packet else {
            return Err(TestCaseError::fail("the strategy makes PUBLISH packets"));
        };
        let view = PublishView {
            properties: &shared,
            message_expiry_interval: expiry,
            topic_alias: alias,
            subscription_identifiers: &subscription_ids,
            ..PublishView::from(&publish)
        };
        let mut from_parts = BytesMut::new();
        let size = encode_publish(&view, protocol, u32::MAX, &mut from_parts).unwrap();
        publish.properties = PublishProperties {
            message_expiry_interval: expiry,
            topic_alias: alias,
            subscription_identifiers: subscription_ids.clone(),
            ..shared.clone()
        };
        let whole = encode_all(&Packet::Publish(publish), protocol);
        prop_assert_eq!(size, whole.len());
        prop_assert_eq!(from_parts, whole);
    }
}
