//! PUBLISH (3.3) and its acknowledgements PUBACK, PUBREC, PUBREL and PUBCOMP (3.4 – 3.7).

use super::super::error::DecodeError;
use super::super::packet::{Ack, AckProperties, ProtocolVersion, Publish, PublishProperties, QoS};
use super::super::properties::{Property, Reader, read_properties, set_once};
use super::super::reason::ReasonCode;
use super::{check_response_topic, is_topic_name, packet_id, reason_code};

/// `flags` were checked with the fixed header: QoS is not 3 and DUP is clear at QoS 0.
pub(super) fn publish(
    flags: u8,
    r: &mut Reader,
    protocol: ProtocolVersion,
) -> Result<Publish, DecodeError> {
    let qos = QoS::from_bits((flags >> 1) & 0x03).ok_or(DecodeError::Malformed(
        "PUBLISH with both QoS bits set [MQTT-3.3.1-4]",
    ))?;
    let topic = r.string()?;
    // Only QoS 1 and 2 carry an identifier ([MQTT-2.2.1-2]).
    let packet_id = if qos == QoS::AtMostOnce {
        None
    } else {
        Some(packet_id(r)?)
    };
    let mut properties = PublishProperties::default();
    if protocol.is_v5() {
        read_properties(r, |p| apply_publish(&mut properties, p))?;
        check_response_topic(properties.response_topic.as_ref())?;
    }
    if topic.is_empty() {
        // A v5 sender may leave the name empty and let a Topic Alias stand for it (3.3.2.3.4);
        // whether that alias is known is for the connection to judge.
        if properties.topic_alias.is_none() {
            return Err(DecodeError::TopicNameInvalid(
                "empty topic name without a topic alias [MQTT-4.7.3-1]",
            ));
        }
    } else if !is_topic_name(&topic) {
        return Err(DecodeError::TopicNameInvalid(
            "topic name has a wildcard [MQTT-3.3.2-2]",
        ));
    }
    Ok(Publish {
        dup: flags & 0b1000 != 0,
        qos,
        retain: flags & 0b0001 != 0,
        topic,
        packet_id,
        properties,
        payload: r.rest(),
    })
}

/// Subscription Identifiers may repeat here because a server's PUBLISH carries one per matching
/// subscription (3.3.2.3.8); a client must send none [MQTT-3.3.4-6], which the connection checks
/// since the codec does not know the direction.
fn apply_publish(p: &mut PublishProperties, prop: Property) -> Result<(), DecodeError> {
    match prop {
        Property::PayloadFormatIndicator(v) => set_once(&mut p.payload_format_indicator, v),
        Property::MessageExpiryInterval(v) => set_once(&mut p.message_expiry_interval, v),
        Property::TopicAlias(v) => set_once(&mut p.topic_alias, v),
        Property::ResponseTopic(v) => set_once(&mut p.response_topic, v),
        Property::CorrelationData(v) => set_once(&mut p.correlation_data, v),
        Property::User(name, value) => {
            p.user_properties.push((name, value));
            Ok(())
        }
        Property::SubscriptionIdentifier(v) => {
            p.subscription_identifiers.push(v);
            Ok(())
        }
        Property::ContentType(v) => set_once(&mut p.content_type, v),
        _ => Err(DecodeError::Malformed(
            "property not allowed in PUBLISH (2.2.2.2)",
        )),
    }
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP; `allowed` lists the reason codes of that packet.
///
/// 3.x: exactly the packet identifier. 5.0: remaining length 2 means success without properties,
/// 3 a reason code without properties (3.4.2.1), more a reason code and a property block.
pub(super) fn ack(
    r: &mut Reader,
    protocol: ProtocolVersion,
    allowed: &[u8],
) -> Result<Ack, DecodeError> {
    let packet_id = packet_id(r)?;
    let mut properties = AckProperties::default();
    let reason_code = if protocol.is_v5() && !r.is_empty() {
        let code = reason_code(r, allowed)?;
        if !r.is_empty() {
            read_properties(r, |p| {
                apply_ack(
                    &mut properties,
                    p,
                    "property not allowed in an acknowledgement (2.2.2.2)",
                )
            })?;
        }
        code
    } else {
        ReasonCode::SUCCESS
    };
    Ok(Ack {
        packet_id,
        reason_code,
        properties,
    })
}

/// The properties of every acknowledgement: Reason String and User Property. `misplaced` is the
/// message for any other.
pub(super) fn apply_ack(
    p: &mut AckProperties,
    prop: Property,
    misplaced: &'static str,
) -> Result<(), DecodeError> {
    match prop {
        Property::ReasonString(v) => set_once(&mut p.reason_string, v),
        Property::User(name, value) => {
            p.user_properties.push((name, value));
            Ok(())
        }
        _ => Err(DecodeError::Malformed(misplaced)),
    }
}
