//! SUBSCRIBE, SUBACK, UNSUBSCRIBE and UNSUBACK (3.8 – 3.11). Filters are checked only for being
//! present and non-empty here; wildcard placement is the topic module's, so that a v5 server can
//! refuse one filter and keep the others.

use bytestring::ByteString;

use super::super::error::DecodeError;
use super::super::packet::{
    AckProperties, ProtocolVersion, QoS, RetainHandling, SubAck, Subscribe, SubscriptionOptions,
    UnsubAck, Unsubscribe,
};
use super::super::properties::{Property, Reader, read_properties, set_once};
use super::super::reason::ReasonCode;
use super::publish::apply_ack;
use super::{packet_id, valid};

pub(super) fn subscribe(
    r: &mut Reader,
    protocol: ProtocolVersion,
) -> Result<Subscribe, DecodeError> {
    let packet_id = packet_id(r)?;
    let mut subscription_identifier = None;
    let mut user_properties = Vec::new();
    if protocol.is_v5() {
        read_properties(r, |prop| match prop {
            // Its range (1 ..= 268,435,455) was checked when it was read (3.8.2.1.2).
            Property::SubscriptionIdentifier(v) => set_once(&mut subscription_identifier, v),
            Property::User(name, value) => {
                user_properties.push((name, value));
                Ok(())
            }
            _ => Err(DecodeError::Malformed(
                "property not allowed in SUBSCRIBE (2.2.2.2)",
            )),
        })?;
    }
    // [MQTT-3.8.3-2] (3.1.1: [MQTT-3.8.3-3])
    if r.is_empty() {
        return Err(DecodeError::Protocol(
            "SUBSCRIBE without a topic filter [MQTT-3.8.3-2]",
        ));
    }
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = filter(r)?;
        let options = options(r.u8()?, protocol)?;
        filters.push((filter, options));
    }
    Ok(Subscribe {
        packet_id,
        subscription_identifier,
        user_properties,
        filters,
    })
}

/// A topic filter, which must be at least one character long [MQTT-4.7.3-1]. It parses, so an empty
/// one is a Protocol Error; the connection is closed rather than the filter refused because the
/// 3.1 and 3.1.1 SUBACK could not say why.
fn filter(r: &mut Reader) -> Result<ByteString, DecodeError> {
    let filter = r.string()?;
    if filter.is_empty() {
        return Err(DecodeError::Protocol("empty topic filter [MQTT-4.7.3-1]"));
    }
    Ok(filter)
}

/// The Subscription Options byte (3.8.3.1); 3.x knows only the requested QoS.
fn options(byte: u8, protocol: ProtocolVersion) -> Result<SubscriptionOptions, DecodeError> {
    if !protocol.is_v5() {
        if byte & 0xFC != 0 {
            return Err(DecodeError::Malformed(
                "reserved bits of the requested QoS byte set [MQTT-3-8.3-4]",
            ));
        }
        let qos =
            QoS::from_bits(byte).ok_or(DecodeError::Malformed("requested QoS 3 [MQTT-3-8.3-4]"))?;
        return Ok(SubscriptionOptions {
            qos,
            ..SubscriptionOptions::default()
        });
    }
    if byte & 0xC0 != 0 {
        return Err(DecodeError::Malformed(
            "reserved subscription option bits set [MQTT-3.8.3-5]",
        ));
    }
    let qos = QoS::from_bits(byte & 0x03).ok_or(DecodeError::Protocol(
        "subscription Maximum QoS 3 (3.8.3.1)",
    ))?;
    let retain_handling = match (byte >> 4) & 0x03 {
        0 => RetainHandling::OnSubscribe,
        1 => RetainHandling::OnNewSubscribe,
        2 => RetainHandling::Never,
        _ => {
            return Err(DecodeError::Protocol("Retain Handling 3 (3.8.3.1)"));
        }
    };
    Ok(SubscriptionOptions {
        qos,
        no_local: byte & 0x04 != 0,
        retain_as_published: byte & 0x08 != 0,
        retain_handling,
    })
}

pub(super) fn suback(r: &mut Reader, protocol: ProtocolVersion) -> Result<SubAck, DecodeError> {
    let packet_id = packet_id(r)?;
    let mut properties = AckProperties::default();
    let allowed = if protocol.is_v5() {
        read_properties(r, |p| {
            apply_ack(
                &mut properties,
                p,
                "property not allowed in SUBACK (2.2.2.2)",
            )
        })?;
        valid::SUBACK
    } else {
        // [MQTT-3.9.3-2]
        valid::V3_SUBACK
    };
    let reason_codes = reason_codes(r, allowed)?;
    Ok(SubAck {
        packet_id,
        properties,
        reason_codes,
    })
}

pub(super) fn unsubscribe(
    r: &mut Reader,
    protocol: ProtocolVersion,
) -> Result<Unsubscribe, DecodeError> {
    let packet_id = packet_id(r)?;
    let mut user_properties = Vec::new();
    if protocol.is_v5() {
        read_properties(r, |prop| match prop {
            Property::User(name, value) => {
                user_properties.push((name, value));
                Ok(())
            }
            _ => Err(DecodeError::Malformed(
                "property not allowed in UNSUBSCRIBE (2.2.2.2)",
            )),
        })?;
    }
    if r.is_empty() {
        return Err(DecodeError::Protocol(
            "UNSUBSCRIBE without a topic filter [MQTT-3.10.3-2]",
        ));
    }
    let mut filters = Vec::new();
    while !r.is_empty() {
        filters.push(filter(r)?);
    }
    Ok(Unsubscribe {
        packet_id,
        user_properties,
        filters,
    })
}

/// 3.x UNSUBACK is the packet identifier alone; 5.0 adds properties and one reason code per filter.
pub(super) fn unsuback(r: &mut Reader, protocol: ProtocolVersion) -> Result<UnsubAck, DecodeError> {
    let packet_id = packet_id(r)?;
    let mut properties = AckProperties::default();
    let mut reason_codes = Vec::new();
    if protocol.is_v5() {
        read_properties(r, |p| {
            apply_ack(
                &mut properties,
                p,
                "property not allowed in UNSUBACK (2.2.2.2)",
            )
        })?;
        reason_codes = self::reason_codes(r, valid::UNSUBACK)?;
    }
    Ok(UnsubAck {
        packet_id,
        properties,
        reason_codes,
    })
}

/// The rest of the frame as reason codes, each one `allowed`.
fn reason_codes(r: &mut Reader, allowed: &[u8]) -> Result<Vec<ReasonCode>, DecodeError> {
    r.rest()
        .iter()
        .map(|&code| {
            if allowed.contains(&code) {
                Ok(ReasonCode(code))
            } else {
                Err(DecodeError::Protocol(
                    "reason code not allowed in this packet (2.4)",
                ))
            }
        })
        .collect()
}
