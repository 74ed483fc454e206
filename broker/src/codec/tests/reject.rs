//! One test per rule the decoder enforces, named after the normative statement where the
//! specification numbers it (`mqtt_3_8_3_5_...` is [MQTT-3.8.3-5]), after its section otherwise.

use super::super::{DecodeError, ProtocolVersion};
use super::{LEVELS, V3_1, V3_1_1, V5, decode_err, decode_one, frame, lp, props, sp, up};

const MQTT: &[u8] = b"\x00\x04MQTT";

fn malformed(bytes: &[u8], protocol: ProtocolVersion) {
    let err = decode_err(bytes, protocol);
    assert!(
        matches!(err, DecodeError::Malformed(_)),
        "{bytes:02X?}: {err:?}"
    );
}

fn protocol_error(bytes: &[u8], protocol: ProtocolVersion) {
    let err = decode_err(bytes, protocol);
    assert!(
        matches!(err, DecodeError::Protocol(_)),
        "{bytes:02X?}: {err:?}"
    );
}

fn topic_invalid(bytes: &[u8], protocol: ProtocolVersion) {
    let err = decode_err(bytes, protocol);
    assert!(
        matches!(err, DecodeError::TopicNameInvalid(_)),
        "{bytes:02X?}: {err:?}"
    );
}

/// A v5 CONNECT with the given flags, properties and payload.
fn connect5(flags: u8, properties: &[u8], payload: &[&[u8]]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = vec![
        MQTT,
        &[0x05],
        std::slice::from_ref(&flags),
        &[0x00, 0x00],
        properties,
    ];
    parts.extend_from_slice(payload);
    frame(0x10, &parts)
}

/// A 3.1.1 CONNECT with the given flags and payload.
fn connect4(flags: u8, payload: &[&[u8]]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = vec![MQTT, &[0x04], std::slice::from_ref(&flags), &[0x00, 0x00]];
    parts.extend_from_slice(payload);
    frame(0x10, &parts)
}

/// A v5 PUBLISH at QoS 0 on topic "t" with the given property block.
fn publish5(properties: &[u8]) -> Vec<u8> {
    frame(0x30, &[&lp(b"t"), properties])
}

// Fixed header (2.1).

#[test]
fn packet_type_0_is_reserved() {
    for level in LEVELS {
        malformed(&[0x00, 0x00], level);
    }
}

#[test]
fn mqtt_2_1_3_1_reserved_flags_must_match_table_2_2() {
    // CONNECT, CONNACK, PUBACK, PINGREQ, DISCONNECT with a stray flag bit.
    for first in [0x11u8, 0x28, 0x41, 0xC1, 0xE4] {
        malformed(&[first, 0x00], V3_1_1);
        malformed(&[first, 0x00], V5);
    }
    // The flags are checked as soon as the first byte is there.
    malformed(&[0xC8], V5);
}

#[test]
fn mqtt_3_6_1_1_pubrel_flags_must_be_0010() {
    malformed(&[0x60, 0x02, 0x00, 0x01], V3_1_1);
    malformed(&[0x63, 0x02, 0x00, 0x01], V5);
}

#[test]
fn mqtt_3_8_1_1_subscribe_flags_must_be_0010() {
    malformed(&frame(0x80, &[&[0x00, 0x01], &lp(b"a"), &[0x00]]), V3_1_1);
}

#[test]
fn mqtt_3_10_1_1_unsubscribe_flags_must_be_0010() {
    malformed(&frame(0xA0, &[&[0x00, 0x01], &lp(b"a")]), V3_1_1);
}

#[test]
fn auth_is_reserved_before_mqtt_5() {
    malformed(&[0xF0, 0x00], V3_1_1);
    malformed(&[0xF0, 0x00], V3_1);
}

#[test]
fn remaining_length_has_at_most_4_bytes() {
    // 1.5.5: a fifth byte is never part of a variable byte integer.
    malformed(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], V5);
    malformed(&[0xC0, 0x80, 0x80, 0x80, 0x80, 0x00], V3_1_1);
}

#[test]
fn remaining_length_must_match_the_packet_grammar() {
    // Too long: bytes left over after the last field.
    malformed(&[0xC0, 0x01, 0x00], V3_1_1);
    malformed(&[0x40, 0x03, 0x00, 0x01, 0x00], V3_1_1);
    malformed(&[0xE0, 0x01, 0x00], V3_1_1);
    malformed(&[0xB0, 0x03, 0x00, 0x01, 0x00], V3_1_1);
    malformed(&[0x20, 0x03, 0x00, 0x00, 0x00], V3_1_1);
    // Too short: the packet ends inside a field.
    malformed(&[0x40, 0x01, 0x00], V5);
    malformed(&[0x20, 0x01, 0x00], V3_1_1);
    malformed(&frame(0x30, &[&[0x00, 0x05, b'a']]), V3_1_1);
    malformed(&frame(0x32, &[&lp(b"a"), &[0x00]]), V3_1_1);
    // A v5 PUBLISH without its property length.
    malformed(&frame(0x30, &[&lp(b"a")]), V5);
}

// Strings (1.5.4).

#[test]
fn mqtt_1_5_4_1_strings_must_be_well_formed_utf8() {
    malformed(&connect4(0x02, &[&lp(&[0xC3, 0x28])]), V3_1_1);
    // An encoded surrogate, U+D800.
    malformed(&connect4(0x02, &[&lp(&[0xED, 0xA0, 0x80])]), V3_1_1);
    malformed(&frame(0x30, &[&lp(&[0xFF]), b"x"]), V3_1_1);
}

#[test]
fn mqtt_1_5_4_2_strings_must_not_contain_u0000() {
    malformed(&connect4(0x02, &[&lp(b"a\0b")]), V3_1_1);
    malformed(&frame(0x30, &[&lp(b"a\0"), b"x"]), V3_1_1);
    malformed(&frame(0x82, &[&[0x00, 0x01], &lp(b"\0"), &[0x00]]), V3_1_1);
    malformed(&publish5(&props(&[&up(b"k\0", b"v")])), V5);
}

// CONNECT (3.1).

#[test]
fn mqtt_3_1_2_1_unknown_protocol_name_is_refused() {
    malformed(
        &frame(0x10, &[&lp(b"MQTX"), &[0x04, 0x02, 0x00, 0x00], &lp(b"")]),
        V3_1_1,
    );
    malformed(
        &frame(0x10, &[&lp(b"mqtt"), &[0x04, 0x02, 0x00, 0x00], &lp(b"")]),
        V3_1_1,
    );
}

#[test]
fn mqtt_3_1_2_2_unknown_protocol_level_is_unsupported() {
    let cases: [(&[u8], u8); 4] = [(MQTT, 6), (MQTT, 3), (b"\x00\x06MQIsdp", 4), (MQTT, 0)];
    for (name, level) in cases {
        let bytes = frame(0x10, &[name, &[level, 0x02, 0x00, 0x00], &lp(b"")]);
        assert_eq!(
            decode_err(&bytes, V3_1_1),
            DecodeError::UnsupportedProtocol { level }
        );
    }
    // Refused as soon as the level is read, whatever follows.
    let bytes = frame(0x10, &[MQTT, &[0x07, 0xFF]]);
    assert_eq!(
        decode_err(&bytes, V5),
        DecodeError::UnsupportedProtocol { level: 7 }
    );
}

#[test]
fn mqtt_3_1_2_3_connect_reserved_flag_must_be_0() {
    malformed(&connect4(0x03, &[&lp(b"")]), V3_1_1);
    malformed(&connect5(0x03, &[0x00], &[&lp(b"")]), V5);
}

#[test]
fn mqtt_3_1_2_11_and_3_1_1_mqtt_3_1_2_13_will_qos_needs_a_will() {
    malformed(&connect4(0x0A, &[&lp(b"")]), V3_1_1);
    malformed(&connect5(0x12, &[0x00], &[&lp(b"")]), V5);
}

#[test]
fn mqtt_3_1_2_13_and_3_1_1_mqtt_3_1_2_15_will_retain_needs_a_will() {
    malformed(&connect4(0x22, &[&lp(b"")]), V3_1_1);
    malformed(&connect5(0x22, &[0x00], &[&lp(b"")]), V5);
}

#[test]
fn mqtt_3_1_2_12_and_3_1_1_mqtt_3_1_2_14_will_qos_3_is_refused() {
    malformed(&connect4(0x1E, &[&lp(b""), &lp(b"t"), &lp(b"")]), V3_1_1);
    malformed(
        &connect5(0x1E, &[0x00], &[&lp(b""), &sp(0x00, b"t"), &lp(b"")]),
        V5,
    );
}

#[test]
fn mqtt_3_1_2_22_password_needs_a_user_name_before_mqtt_5() {
    malformed(&connect4(0x42, &[&lp(b""), &lp(b"pw")]), V3_1_1);
    let v3_1 = frame(
        0x10,
        &[
            &lp(b"MQIsdp"),
            &[0x03, 0x42, 0x00, 0x00],
            &lp(b"c"),
            &lp(b"pw"),
        ],
    );
    malformed(&v3_1, V3_1);
    // MQTT 5 allows it (3.1.2.9).
    decode_one(&connect5(0x42, &[0x00], &[&lp(b""), &lp(b"pw")]), V5);
}

#[test]
fn will_topic_must_be_a_valid_topic_name() {
    // [MQTT-3.3.2-2]: no wildcards; [MQTT-4.7.3-1]: at least one character.
    for topic in [&b"a/+"[..], b"#", b""] {
        malformed(&connect4(0x06, &[&lp(b""), &lp(topic), &lp(b"")]), V3_1_1);
        malformed(
            &connect5(0x06, &[0x00], &[&lp(b""), &sp(0x00, topic), &lp(b"")]),
            V5,
        );
    }
}

#[test]
fn connect_payload_fields_must_all_be_present() {
    // mqtt-3.1.2-9 (will), -17 (user name), -19 (password): a flag promises a field.
    malformed(&connect4(0x06, &[&lp(b"")]), V3_1_1);
    malformed(&connect4(0x82, &[&lp(b"")]), V3_1_1);
    malformed(&connect4(0xC2, &[&lp(b""), &lp(b"u")]), V3_1_1);
}

// CONNACK (3.2).

#[test]
fn mqtt_3_2_2_1_connack_reserved_flags_must_be_0() {
    malformed(&[0x20, 0x02, 0x02, 0x00], V3_1_1);
    malformed(&[0x20, 0x03, 0x80, 0x00, 0x00], V5);
}

#[test]
fn connack_return_code_must_be_known() {
    // 3.2.2.3: 6-255 are reserved; in v5 only the CONNACK reason codes of 3.2.2.2 are allowed.
    protocol_error(&[0x20, 0x02, 0x00, 0x06], V3_1_1);
    protocol_error(&[0x20, 0x03, 0x00, 0x10, 0x00], V5);
    protocol_error(&[0x20, 0x03, 0x00, 0x04, 0x00], V5);
}

// PUBLISH (3.3).

#[test]
fn mqtt_3_3_1_4_publish_qos_3_is_malformed() {
    malformed(&frame(0x36, &[&lp(b"a"), &[0x00, 0x01]]), V3_1_1);
    malformed(&[0x36], V5);
}

#[test]
fn mqtt_3_3_1_2_dup_must_be_0_at_qos_0() {
    malformed(&frame(0x38, &[&lp(b"a"), b"x"]), V3_1_1);
    malformed(&frame(0x38, &[&lp(b"a"), &[0x00]]), V5);
}

#[test]
fn mqtt_3_3_2_2_topic_name_must_not_contain_wildcards() {
    for topic in [&b"a/+"[..], b"#", b"a/#", b"+"] {
        topic_invalid(&frame(0x30, &[&lp(topic), b"x"]), V3_1_1);
        topic_invalid(&frame(0x30, &[&lp(topic), &[0x00], b"x"]), V5);
    }
}

#[test]
fn mqtt_4_7_3_1_empty_topic_name_needs_a_topic_alias() {
    topic_invalid(&frame(0x30, &[&lp(b""), b"x"]), V3_1_1);
    topic_invalid(&frame(0x30, &[&lp(b""), b"x"]), V3_1);
    topic_invalid(&frame(0x30, &[&lp(b""), &[0x00], b"x"]), V5);
    // 3.3.2.3.4: with a Topic Alias it is allowed.
    decode_one(
        &frame(0x30, &[&lp(b""), &[0x03, 0x23, 0x00, 0x01], b"x"]),
        V5,
    );
}

#[test]
fn mqtt_2_2_1_3_packet_identifier_must_not_be_0() {
    protocol_error(&frame(0x32, &[&lp(b"a"), &[0x00, 0x00]]), V3_1_1);
    protocol_error(&[0x40, 0x02, 0x00, 0x00], V3_1_1);
    protocol_error(&[0x62, 0x02, 0x00, 0x00], V5);
    protocol_error(&frame(0x82, &[&[0x00, 0x00], &lp(b"a"), &[0x00]]), V3_1_1);
    protocol_error(&frame(0xA2, &[&[0x00, 0x00], &lp(b"a")]), V3_1_1);
    protocol_error(&[0x90, 0x03, 0x00, 0x00, 0x00], V3_1_1);
    protocol_error(&[0xB0, 0x02, 0x00, 0x00], V3_1_1);
}

#[test]
fn mqtt_3_3_2_14_response_topic_must_be_a_topic_name() {
    protocol_error(&publish5(&props(&[&sp(0x08, b"a/#")])), V5);
    protocol_error(&publish5(&props(&[&sp(0x08, b"")])), V5);
    let will_props = props(&[&sp(0x08, b"+")]);
    protocol_error(
        &connect5(0x06, &[0x00], &[&lp(b""), &will_props, &lp(b"t"), &lp(b"")]),
        V5,
    );
}

// Acknowledgements (3.4 - 3.7).

#[test]
fn acks_3_x_have_remaining_length_2() {
    for first in [0x40u8, 0x50, 0x62, 0x70] {
        malformed(&[first, 0x03, 0x00, 0x01, 0x00], V3_1_1);
        malformed(&[first, 0x01, 0x00], V3_1);
        malformed(&[first, 0x00], V3_1_1);
    }
}

#[test]
fn ack_reason_codes_must_be_the_packets_own() {
    // 3.4.2.1 and 3.5.2.1 do not list 0x92; 3.6.2.1 and 3.7.2.1 list only 0x00 and 0x92.
    protocol_error(&[0x40, 0x03, 0x00, 0x01, 0x92], V5);
    protocol_error(&[0x50, 0x03, 0x00, 0x01, 0x01], V5);
    protocol_error(&[0x62, 0x03, 0x00, 0x01, 0x10], V5);
    protocol_error(&[0x70, 0x03, 0x00, 0x01, 0x80], V5);
}

// SUBSCRIBE (3.8) and UNSUBSCRIBE (3.10).

#[test]
fn mqtt_3_8_3_2_and_3_1_1_mqtt_3_8_3_3_subscribe_needs_a_filter() {
    protocol_error(&[0x82, 0x02, 0x00, 0x01], V3_1_1);
    protocol_error(&[0x82, 0x03, 0x00, 0x01, 0x00], V5);
}

#[test]
fn mqtt_3_10_3_2_unsubscribe_needs_a_filter() {
    protocol_error(&[0xA2, 0x02, 0x00, 0x01], V3_1_1);
    protocol_error(&[0xA2, 0x03, 0x00, 0x01, 0x00], V5);
}

#[test]
fn mqtt_4_7_3_1_topic_filters_must_not_be_empty() {
    protocol_error(&frame(0x82, &[&[0x00, 0x01], &lp(b""), &[0x00]]), V3_1_1);
    protocol_error(&frame(0x82, &[&[0x00, 0x01, 0x00], &lp(b""), &[0x00]]), V5);
    protocol_error(&frame(0xA2, &[&[0x00, 0x01], &lp(b"a"), &lp(b"")]), V3_1_1);
}

#[test]
fn subscribe_filter_without_options_is_malformed() {
    malformed(&frame(0x82, &[&[0x00, 0x01], &lp(b"a")]), V3_1_1);
}

#[test]
fn mqtt_3_1_1_mqtt_3_8_3_4_requested_qos_byte_reserved_bits_and_qos_3() {
    for options in [0x03u8, 0x04, 0x40, 0x80] {
        malformed(
            &frame(0x82, &[&[0x00, 0x01], &lp(b"a"), &[options]]),
            V3_1_1,
        );
        malformed(&frame(0x82, &[&[0x00, 0x01], &lp(b"a"), &[options]]), V3_1);
    }
}

#[test]
fn mqtt_3_8_3_5_subscription_options_reserved_bits_must_be_0() {
    for options in [0x40u8, 0x80] {
        malformed(
            &frame(0x82, &[&[0x00, 0x01, 0x00], &lp(b"a"), &[options]]),
            V5,
        );
    }
}

#[test]
fn subscription_maximum_qos_3_is_a_protocol_error() {
    // 3.8.3.1: "It is a Protocol Error if the Maximum QoS field has the value 3."
    protocol_error(&frame(0x82, &[&[0x00, 0x01, 0x00], &lp(b"a"), &[0x03]]), V5);
}

#[test]
fn retain_handling_3_is_a_protocol_error() {
    // 3.8.3.1: "It is a Protocol Error to send a Retain Handling value of 3."
    protocol_error(&frame(0x82, &[&[0x00, 0x01, 0x00], &lp(b"a"), &[0x30]]), V5);
}

#[test]
fn mqtt_3_9_3_2_suback_return_codes_are_0_1_2_or_0x80() {
    protocol_error(&[0x90, 0x03, 0x00, 0x01, 0x03], V3_1_1);
    protocol_error(&[0x90, 0x03, 0x00, 0x01, 0x87], V3_1_1);
    protocol_error(&[0x90, 0x04, 0x00, 0x01, 0x00, 0x11], V5);
    protocol_error(&[0xB0, 0x04, 0x00, 0x01, 0x00, 0x01], V5);
}

// PINGREQ, PINGRESP, DISCONNECT, AUTH (3.12 - 3.15).

#[test]
fn ping_has_remaining_length_0() {
    malformed(&[0xC0, 0x01, 0x00], V5);
    malformed(&[0xD0, 0x01, 0x00], V3_1_1);
}

#[test]
fn disconnect_reason_code_must_be_a_disconnect_code() {
    // 3.14.2.1 does not list 0x01 (a SUBACK code) or 0x84 (a CONNACK code).
    protocol_error(&[0xE0, 0x01, 0x01], V5);
    protocol_error(&[0xE0, 0x01, 0x84], V5);
}

#[test]
fn auth_reason_code_must_be_an_auth_code() {
    protocol_error(&[0xF0, 0x01, 0x80], V5);
}

// Properties (2.2.2).

#[test]
fn unknown_property_identifier_is_malformed() {
    malformed(&publish5(&props(&[&[0x05, 0x00]])), V5);
    malformed(&publish5(&props(&[&[0x80, 0x01, 0x00]])), V5);
}

#[test]
fn property_not_valid_for_the_packet_type_is_malformed() {
    // 2.2.2.2: Topic Alias in CONNECT, Session Expiry Interval in PUBLISH, Will Delay in CONNECT,
    // Server Reference in SUBSCRIBE, Reason String in UNSUBSCRIBE, Topic Alias in DISCONNECT.
    malformed(
        &connect5(0x02, &props(&[&[0x23, 0x00, 0x01]]), &[&lp(b"")]),
        V5,
    );
    malformed(&publish5(&props(&[&[0x11, 0x00, 0x00, 0x00, 0x01]])), V5);
    malformed(
        &connect5(
            0x02,
            &props(&[&[0x18, 0x00, 0x00, 0x00, 0x01]]),
            &[&lp(b"")],
        ),
        V5,
    );
    malformed(
        &frame(
            0x82,
            &[
                &[0x00, 0x01],
                &props(&[&sp(0x1C, b"s")]),
                &lp(b"a"),
                &[0x00],
            ],
        ),
        V5,
    );
    malformed(
        &frame(
            0xA2,
            &[&[0x00, 0x01], &props(&[&sp(0x1F, b"s")]), &lp(b"a")],
        ),
        V5,
    );
    malformed(&frame(0xE0, &[&[0x00], &props(&[&[0x23, 0x00, 0x01]])]), V5);
    malformed(
        &frame(
            0x40,
            &[
                &[0x00, 0x01, 0x00],
                &props(&[&[0x11, 0x00, 0x00, 0x00, 0x01]]),
            ],
        ),
        V5,
    );
    malformed(&frame(0xF0, &[&[0x18], &props(&[&[0x24, 0x00]])]), V5);
}

#[test]
fn repeated_property_is_a_protocol_error() {
    let twice = props(&[&[0x11, 0, 0, 0, 1], &[0x11, 0, 0, 0, 2]]);
    protocol_error(&connect5(0x02, &twice, &[&lp(b"")]), V5);
    protocol_error(
        &publish5(&props(&[&[0x23, 0x00, 0x01], &[0x23, 0x00, 0x02]])),
        V5,
    );
    let sub_ids = props(&[&[0x0B, 0x01], &[0x0B, 0x02]]);
    protocol_error(
        &frame(0x82, &[&[0x00, 0x01], &sub_ids, &lp(b"a"), &[0x00]]),
        V5,
    );
    let reasons = props(&[&sp(0x1F, b"a"), &sp(0x1F, b"b")]);
    protocol_error(&frame(0x40, &[&[0x00, 0x01, 0x00], &reasons]), V5);
}

#[test]
fn user_properties_and_publish_subscription_identifiers_may_repeat() {
    decode_one(&publish5(&props(&[&up(b"k", b"v"), &up(b"k", b"v")])), V5);
    decode_one(&publish5(&props(&[&[0x0B, 0x01], &[0x0B, 0x01]])), V5);
}

#[test]
fn property_values_out_of_range_are_protocol_errors() {
    let bad_connect = [
        &[0x21u8, 0x00, 0x00][..],       // Receive Maximum 0 (3.1.2.11.3)
        &[0x27, 0x00, 0x00, 0x00, 0x00], // Maximum Packet Size 0 (3.1.2.11.4)
        &[0x17, 0x02],                   // Request Problem Information 2 (3.1.2.11.7)
        &[0x19, 0x02],                   // Request Response Information 2 (3.1.2.11.6)
    ];
    for property in bad_connect {
        protocol_error(&connect5(0x02, &props(&[property]), &[&lp(b"")]), V5);
    }
    // Payload Format Indicator 2 (3.3.2.3.2); Subscription Identifier 0 (3.3.2.3.8).
    protocol_error(&publish5(&props(&[&[0x01, 0x02]])), V5);
    protocol_error(&publish5(&props(&[&[0x0B, 0x00]])), V5);
    protocol_error(
        &frame(
            0x82,
            &[&[0x00, 0x01], &props(&[&[0x0B, 0x00]]), &lp(b"a"), &[0x00]],
        ),
        V5,
    );
    // Maximum QoS 2, then each 0/1 byte of CONNACK set to 2 (3.2.2.3.4 - 3.2.2.3.13).
    for id in [0x24u8, 0x25, 0x28, 0x29, 0x2A] {
        protocol_error(&frame(0x20, &[&[0x00, 0x00], &props(&[&[id, 0x02]])]), V5);
    }
}

#[test]
fn authentication_data_needs_a_method() {
    // 3.1.2.11.10, 3.2.2.3.18, 3.15.2.2.3.
    let data = props(&[&sp(0x16, b"x")]);
    protocol_error(&connect5(0x02, &data, &[&lp(b"")]), V5);
    protocol_error(&frame(0x20, &[&[0x00, 0x00], &data]), V5);
    protocol_error(&frame(0xF0, &[&[0x18], &data]), V5);
}

#[test]
fn property_block_must_fit_in_the_packet() {
    // Property length 10 with 3 bytes of properties left in the frame.
    malformed(&frame(0x30, &[&lp(b"t"), &[0x0A, 0x23, 0x00, 0x01]]), V5);
    // A property value cut off by the end of the block.
    malformed(&publish5(&[0x02, 0x23, 0x00]), V5);
    // A Subscription Identifier longer than 4 bytes.
    malformed(
        &publish5(&props(&[&[0x0B, 0x80, 0x80, 0x80, 0x80, 0x01]])),
        V5,
    );
}
