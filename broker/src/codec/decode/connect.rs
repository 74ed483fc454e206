//! CONNECT (3.1) and CONNACK (3.2). CONNECT names its own protocol level; CONNACK is read at the
//! level the connection negotiated.

use super::super::error::DecodeError;
use super::super::packet::{
    ConnAck, ConnAckProperties, Connect, ConnectProperties, ProtocolVersion, QoS, Will,
    WillProperties,
};
use super::super::properties::{Property, Reader, read_properties, set_once};
use super::super::reason::ReasonCode;
use super::{check_auth_pair, check_response_topic, is_topic_name, reason_code, valid};

/// The level a protocol name and level byte stand for. A known name with an unknown level is for
/// the server to answer with "unsupported protocol version" ([MQTT-3.1.2-2]); an unknown name may
/// be disconnected at once ([MQTT-3.1.2-1]), which this codec does by calling it malformed.
pub(super) fn protocol_version(name: &[u8], level: u8) -> Result<ProtocolVersion, DecodeError> {
    match (name, level) {
        (b"MQIsdp", 3) => Ok(ProtocolVersion::V3_1),
        (b"MQTT", 4) => Ok(ProtocolVersion::V3_1_1),
        (b"MQTT", 5) => Ok(ProtocolVersion::V5),
        (b"MQTT" | b"MQIsdp", _) => Err(DecodeError::UnsupportedProtocol { level }),
        _ => Err(DecodeError::Malformed(
            "protocol name is neither MQTT nor MQIsdp [MQTT-3.1.2-1]",
        )),
    }
}

/// The Connect Flags byte (3.1.2.3), checked.
struct ConnectFlags {
    clean_start: bool,
    will: Option<(QoS, bool)>,
    username: bool,
    password: bool,
}

impl ConnectFlags {
    fn parse(flags: u8, protocol: ProtocolVersion) -> Result<Self, DecodeError> {
        if flags & 0x01 != 0 {
            return Err(DecodeError::Malformed(
                "CONNECT reserved flag is set [MQTT-3.1.2-3]",
            ));
        }
        let will_flag = flags & 0x04 != 0;
        let will_qos = (flags >> 3) & 0x03;
        let will_retain = flags & 0x20 != 0;
        let username = flags & 0x80 != 0;
        let password = flags & 0x40 != 0;
        let will = if will_flag {
            let qos = QoS::from_bits(will_qos).ok_or(DecodeError::Malformed(
                "Will QoS 3 [MQTT-3.1.2-12] (3.1.1: [MQTT-3.1.2-14])",
            ))?;
            Some((qos, will_retain))
        } else if will_qos != 0 {
            return Err(DecodeError::Malformed(
                "Will QoS set without a will [MQTT-3.1.2-11] (3.1.1: [MQTT-3.1.2-13])",
            ));
        } else if will_retain {
            return Err(DecodeError::Malformed(
                "Will Retain set without a will [MQTT-3.1.2-13] (3.1.1: [MQTT-3.1.2-15])",
            ));
        } else {
            None
        };
        // MQTT 5 allows a password without a user name (3.1.2.9); the older levels do not.
        if password && !username && !protocol.is_v5() {
            return Err(DecodeError::Malformed(
                "password flag without user name flag [MQTT-3.1.2-22]",
            ));
        }
        Ok(Self {
            clean_start: flags & 0x02 != 0,
            will,
            username,
            password,
        })
    }
}

pub(super) fn connect(r: &mut Reader) -> Result<Connect, DecodeError> {
    let name = r.binary()?;
    let level = r.u8()?;
    let protocol = protocol_version(&name, level)?;
    let flags = ConnectFlags::parse(r.u8()?, protocol)?;
    let keep_alive = r.u16()?;
    let mut properties = ConnectProperties::default();
    if protocol.is_v5() {
        read_properties(r, |p| apply_connect(&mut properties, p))?;
        check_auth_pair(
            properties.authentication_method.as_ref(),
            properties.authentication_data.as_ref(),
        )?;
    }
    // Payload order: client id, will, user name, password ([MQTT-3.1.3-1]).
    let client_id = r.string()?;
    let will = match flags.will {
        Some((qos, retain)) => Some(will(r, protocol, qos, retain)?),
        None => None,
    };
    let username = if flags.username {
        Some(r.string()?)
    } else {
        None
    };
    let password = if flags.password {
        Some(r.binary()?)
    } else {
        None
    };
    Ok(Connect {
        protocol,
        clean_start: flags.clean_start,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

fn will(
    r: &mut Reader,
    protocol: ProtocolVersion,
    qos: QoS,
    retain: bool,
) -> Result<Will, DecodeError> {
    let mut properties = WillProperties::default();
    if protocol.is_v5() {
        read_properties(r, |p| apply_will(&mut properties, p))?;
        check_response_topic(properties.response_topic.as_ref())?;
    }
    let topic = r.string()?;
    // The will is published under this name, so it obeys the Topic Name rules.
    if !is_topic_name(&topic) {
        return Err(DecodeError::Malformed(
            "Will Topic is empty or has a wildcard [MQTT-4.7.3-1] [MQTT-3.3.2-2]",
        ));
    }
    let payload = r.binary()?;
    Ok(Will {
        topic,
        payload,
        qos,
        retain,
        properties,
    })
}

fn apply_connect(p: &mut ConnectProperties, prop: Property) -> Result<(), DecodeError> {
    match prop {
        Property::SessionExpiryInterval(v) => set_once(&mut p.session_expiry_interval, v),
        Property::ReceiveMaximum(v) => set_once(&mut p.receive_maximum, v),
        Property::MaximumPacketSize(v) => set_once(&mut p.maximum_packet_size, v),
        Property::TopicAliasMaximum(v) => set_once(&mut p.topic_alias_maximum, v),
        Property::RequestResponseInformation(v) => set_once(&mut p.request_response_information, v),
        Property::RequestProblemInformation(v) => set_once(&mut p.request_problem_information, v),
        Property::User(name, value) => {
            p.user_properties.push((name, value));
            Ok(())
        }
        Property::AuthenticationMethod(v) => set_once(&mut p.authentication_method, v),
        Property::AuthenticationData(v) => set_once(&mut p.authentication_data, v),
        _ => Err(DecodeError::Malformed(
            "property not allowed in CONNECT (2.2.2.2)",
        )),
    }
}

fn apply_will(p: &mut WillProperties, prop: Property) -> Result<(), DecodeError> {
    match prop {
        Property::WillDelayInterval(v) => set_once(&mut p.will_delay_interval, v),
        Property::PayloadFormatIndicator(v) => set_once(&mut p.payload_format_indicator, v),
        Property::MessageExpiryInterval(v) => set_once(&mut p.message_expiry_interval, v),
        Property::ContentType(v) => set_once(&mut p.content_type, v),
        Property::ResponseTopic(v) => set_once(&mut p.response_topic, v),
        Property::CorrelationData(v) => set_once(&mut p.correlation_data, v),
        Property::User(name, value) => {
            p.user_properties.push((name, value));
            Ok(())
        }
        _ => Err(DecodeError::Malformed(
            "property not allowed in the will properties (2.2.2.2)",
        )),
    }
}

pub(super) fn connack(r: &mut Reader, protocol: ProtocolVersion) -> Result<ConnAck, DecodeError> {
    let flags = r.u8()?;
    if flags & 0xFE != 0 {
        return Err(DecodeError::Malformed(
            "CONNACK acknowledge flags have reserved bits set [MQTT-3.2.2-1]",
        ));
    }
    let mut properties = ConnAckProperties::default();
    let reason_code = if protocol.is_v5() {
        let code = reason_code(r, valid::CONNACK)?;
        read_properties(r, |p| apply_connack(&mut properties, p))?;
        check_auth_pair(
            properties.authentication_method.as_ref(),
            properties.authentication_data.as_ref(),
        )?;
        code
    } else {
        ReasonCode::from_v3_connack(r.u8()?).ok_or(DecodeError::Protocol(
            "CONNACK return code is reserved (3.2.2.3)",
        ))?
    };
    Ok(ConnAck {
        // 3.1 has no Session Present flag: that byte is unused there, so bit 0 means nothing.
        session_present: flags & 0x01 != 0 && protocol != ProtocolVersion::V3_1,
        reason_code,
        properties,
    })
}

fn apply_connack(p: &mut ConnAckProperties, prop: Property) -> Result<(), DecodeError> {
    match prop {
        Property::SessionExpiryInterval(v) => set_once(&mut p.session_expiry_interval, v),
        Property::ReceiveMaximum(v) => set_once(&mut p.receive_maximum, v),
        Property::MaximumQos(v) => set_once(&mut p.maximum_qos, v),
        Property::RetainAvailable(v) => set_once(&mut p.retain_available, v),
        Property::MaximumPacketSize(v) => set_once(&mut p.maximum_packet_size, v),
        Property::AssignedClientIdentifier(v) => set_once(&mut p.assigned_client_identifier, v),
        Property::TopicAliasMaximum(v) => set_once(&mut p.topic_alias_maximum, v),
        Property::ReasonString(v) => set_once(&mut p.reason_string, v),
        Property::User(name, value) => {
            p.user_properties.push((name, value));
            Ok(())
        }
        Property::WildcardSubscriptionAvailable(v) => {
            set_once(&mut p.wildcard_subscription_available, v)
        }
        Property::SubscriptionIdentifierAvailable(v) => {
            set_once(&mut p.subscription_identifiers_available, v)
        }
        Property::SharedSubscriptionAvailable(v) => {
            set_once(&mut p.shared_subscription_available, v)
        }
        Property::ServerKeepAlive(v) => set_once(&mut p.server_keep_alive, v),
        Property::ResponseInformation(v) => set_once(&mut p.response_information, v),
        Property::ServerReference(v) => set_once(&mut p.server_reference, v),
        Property::AuthenticationMethod(v) => set_once(&mut p.authentication_method, v),
        Property::AuthenticationData(v) => set_once(&mut p.authentication_data, v),
        _ => Err(DecodeError::Malformed(
            "property not allowed in CONNACK (2.2.2.2)",
        )),
    }
}
