//! Encoding: writes one packet into an output buffer at a given protocol level.
//!
//! This is the delivery hot path, so it allocates nothing beyond reserving room in the buffer: the
//! exact size is computed first from the fields (property blocks are measured, not built), checked
//! against the peer's maximum packet size, and only then written. MQTT 5 acknowledgements, DISCONNECT
//! and AUTH use the short forms the specification allows. Fields that 3.1 and 3.1.1 lack (properties,
//! most reason codes) are left out at those levels.

use bytes::{BufMut, BytesMut};

use super::MAX_REMAINING_LENGTH;
use super::error::EncodeError;
use super::packet::{
    Ack, AckProperties, AuthProperties, ConnAckProperties, Connect, ConnectProperties,
    DisconnectProperties, Packet, PacketId, ProtocolVersion, PublishView, QoS, Subscribe,
    SubscriptionOptions, Unsubscribe, WillProperties,
};
use super::properties::{
    Properties, PropertySink, Value, block_len, id, properties_len, put_binary, put_len,
    put_properties, put_string, var_int_len,
};
use super::reason::ReasonCode;

/// The largest packet any level can carry: type byte, four length bytes and the largest body.
const MAX_PACKET_SIZE: usize = 1 + 4 + MAX_REMAINING_LENGTH;

/// Writes `packet` at the end of `buf` and returns its size. If it would exceed `max_packet_size`
/// (the peer's limit, fixed header included) or cannot be encoded, `buf` keeps its contents.
///
/// CONNECT is written at the level in `Connect::protocol`; every other packet at `protocol`.
pub fn encode(
    packet: &Packet,
    protocol: ProtocolVersion,
    max_packet_size: u32,
    buf: &mut BytesMut,
) -> Result<usize, EncodeError> {
    let layout = Layout::of(packet, protocol)?;
    write_checked(&layout, max_packet_size, buf, |buf| {
        write(packet, protocol, &layout, buf)
    })
}

/// [`encode`] for a PUBLISH given by its parts, as the broker sends deliveries.
pub fn encode_publish(
    publish: &PublishView<'_>,
    protocol: ProtocolVersion,
    max_packet_size: u32,
    buf: &mut BytesMut,
) -> Result<usize, EncodeError> {
    let layout = publish_layout(publish, protocol.is_v5())?;
    write_checked(&layout, max_packet_size, buf, |buf| {
        buf.put_u8(publish_first_byte(publish));
        put_len(buf, layout.remaining)?;
        write_publish(publish, protocol.is_v5(), &layout, buf)
    })
}

/// Writes a packet measured as `layout` if it fits `max_packet_size`; rolls `buf` back if it
/// turns out not to be encodable.
fn write_checked(
    layout: &Layout,
    max_packet_size: u32,
    buf: &mut BytesMut,
    write: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
) -> Result<usize, EncodeError> {
    let size = layout.total();
    let max = usize::try_from(max_packet_size)
        .unwrap_or(usize::MAX)
        .min(MAX_PACKET_SIZE);
    if layout.remaining > MAX_REMAINING_LENGTH || size > max {
        return Err(EncodeError::TooLarge {
            size,
            max: u32::try_from(max).unwrap_or(u32::MAX),
        });
    }
    let start = buf.len();
    buf.reserve(size);
    match write(buf) {
        Ok(()) => Ok(size),
        Err(e) => {
            // A field too long for its length prefix is only found while writing.
            buf.truncate(start);
            Err(e)
        }
    }
}

/// The size `packet` takes at `protocol`, fixed header included; 0 when it cannot be sent at that
/// level (AUTH before MQTT 5, a PUBLISH whose QoS and packet identifier disagree).
pub fn encoded_len(packet: &Packet, protocol: ProtocolVersion) -> usize {
    Layout::of(packet, protocol).map_or(0, |layout| layout.total())
}

/// Sizes measured before writing, so each is computed once.
struct Layout {
    /// The remaining length of the fixed header.
    remaining: usize,
    /// The packet's property block contents (v5), without its length prefix.
    props: usize,
    /// CONNECT only: the will property block contents (v5).
    will_props: usize,
}

impl Layout {
    fn total(&self) -> usize {
        1 + var_int_len(self.remaining) + self.remaining
    }

    fn of(packet: &Packet, protocol: ProtocolVersion) -> Result<Self, EncodeError> {
        let v5 = protocol.is_v5();
        // The property block only exists in v5.
        let block = |len: usize| if v5 { block_len(len) } else { 0 };
        Ok(match packet {
            Packet::Connect(connect) => connect_layout(connect),
            Packet::ConnAck(connack) => {
                let props = measured(v5, &connack.properties);
                Self::simple(2 + block(props), props)
            }
            Packet::Publish(publish) => publish_layout(&PublishView::from(publish), v5)?,
            Packet::PubAck(ack)
            | Packet::PubRec(ack)
            | Packet::PubRel(ack)
            | Packet::PubComp(ack) => {
                if v5 {
                    let props = properties_len(&ack.properties);
                    Self::simple(2 + short_form_len(ack.reason_code, props), props)
                } else {
                    Self::simple(2, 0)
                }
            }
            Packet::Subscribe(subscribe) => {
                let props = measured(v5, subscribe);
                let filters: usize = subscribe.filters.iter().map(|(f, _)| 2 + f.len() + 1).sum();
                Self::simple(2 + block(props) + filters, props)
            }
            Packet::SubAck(suback) => {
                let props = measured(v5, &suback.properties);
                Self::simple(2 + block(props) + suback.reason_codes.len(), props)
            }
            Packet::Unsubscribe(unsubscribe) => {
                let props = measured(v5, unsubscribe);
                let filters: usize = unsubscribe.filters.iter().map(|f| 2 + f.len()).sum();
                Self::simple(2 + block(props) + filters, props)
            }
            Packet::UnsubAck(unsuback) => {
                // 3.x UNSUBACK is the packet identifier alone.
                let props = measured(v5, &unsuback.properties);
                let codes = if v5 { unsuback.reason_codes.len() } else { 0 };
                Self::simple(2 + block(props) + codes, props)
            }
            Packet::PingReq | Packet::PingResp => Self::simple(0, 0),
            Packet::Disconnect(disconnect) => {
                if v5 {
                    let props = properties_len(&disconnect.properties);
                    Self::simple(short_form_len(disconnect.reason_code, props), props)
                } else {
                    Self::simple(0, 0)
                }
            }
            Packet::Auth(auth) => {
                if !v5 {
                    return Err(EncodeError::NotInProtocol("AUTH"));
                }
                let props = properties_len(&auth.properties);
                Self::simple(short_form_len(auth.reason_code, props), props)
            }
        })
    }

    fn simple(remaining: usize, props: usize) -> Self {
        Self {
            remaining,
            props,
            will_props: 0,
        }
    }
}

/// The length of a property set's contents, or 0 below v5 where there are no properties.
fn measured(v5: bool, props: &impl Properties) -> usize {
    if v5 { properties_len(props) } else { 0 }
}

/// The length of a v5 reason code and property block that may be left out: nothing for success
/// without properties, the code alone without properties (3.4.2.1, 3.14.2.1, 3.15.2.1).
fn short_form_len(reason_code: ReasonCode, props: usize) -> usize {
    match (props, reason_code) {
        (0, ReasonCode::SUCCESS) => 0,
        (0, _) => 1,
        _ => 1 + block_len(props),
    }
}

fn connect_layout(connect: &Connect) -> Layout {
    let v5 = connect.protocol.is_v5();
    let name_len = protocol_name(connect.protocol).len();
    // Protocol name, level, flags, keep alive.
    let mut remaining = 2 + name_len + 1 + 1 + 2;
    let mut props = 0;
    let mut will_props = 0;
    if v5 {
        props = properties_len(&connect.properties);
        remaining += block_len(props);
    }
    remaining += 2 + connect.client_id.len();
    if let Some(will) = &connect.will {
        if v5 {
            will_props = properties_len(&will.properties);
            remaining += block_len(will_props);
        }
        remaining += 2 + will.topic.len() + 2 + will.payload.len();
    }
    if let Some(username) = &connect.username {
        remaining += 2 + username.len();
    }
    if let Some(password) = &connect.password {
        remaining += 2 + password.len();
    }
    Layout {
        remaining,
        props,
        will_props,
    }
}

/// A PUBLISH carries a packet identifier exactly when its QoS is 1 or 2 ([MQTT-2.2.1-2]).
fn check_packet_id(qos: QoS, packet_id: Option<PacketId>) -> Result<(), EncodeError> {
    match (qos, packet_id) {
        (QoS::AtMostOnce, None) => Ok(()),
        (QoS::AtMostOnce, Some(_)) => Err(EncodeError::InvalidField(
            "packet identifier on a QoS 0 PUBLISH",
        )),
        (_, None) => Err(EncodeError::InvalidField(
            "QoS 1 or 2 PUBLISH without a packet identifier",
        )),
        (_, Some(_)) => Ok(()),
    }
}

fn publish_layout(publish: &PublishView<'_>, v5: bool) -> Result<Layout, EncodeError> {
    check_packet_id(publish.qos, publish.packet_id)?;
    let props = measured(v5, publish);
    let block = if v5 { block_len(props) } else { 0 };
    let id_len = if publish.qos == QoS::AtMostOnce { 0 } else { 2 };
    let remaining = 2 + publish.topic.len() + id_len + block + publish.payload.len();
    Ok(Layout::simple(remaining, props))
}

fn protocol_name(protocol: ProtocolVersion) -> &'static str {
    match protocol {
        ProtocolVersion::V3_1 => "MQIsdp",
        ProtocolVersion::V3_1_1 | ProtocolVersion::V5 => "MQTT",
    }
}

/// The first byte of the fixed header: type and flags (2.1.2, 2.1.3).
fn first_byte(packet: &Packet) -> u8 {
    match packet {
        Packet::Connect(_) => 0x10,
        Packet::ConnAck(_) => 0x20,
        Packet::Publish(p) => publish_first_byte(&PublishView::from(p)),
        Packet::PubAck(_) => 0x40,
        Packet::PubRec(_) => 0x50,
        Packet::PubRel(_) => 0x62,
        Packet::PubComp(_) => 0x70,
        Packet::Subscribe(_) => 0x82,
        Packet::SubAck(_) => 0x90,
        Packet::Unsubscribe(_) => 0xA2,
        Packet::UnsubAck(_) => 0xB0,
        Packet::PingReq => 0xC0,
        Packet::PingResp => 0xD0,
        Packet::Disconnect(_) => 0xE0,
        Packet::Auth(_) => 0xF0,
    }
}

fn publish_first_byte(p: &PublishView<'_>) -> u8 {
    0x30 | (u8::from(p.dup) << 3) | ((p.qos as u8) << 1) | u8::from(p.retain)
}

fn write(
    packet: &Packet,
    protocol: ProtocolVersion,
    layout: &Layout,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    let v5 = protocol.is_v5();
    buf.put_u8(first_byte(packet));
    put_len(buf, layout.remaining)?;
    match packet {
        Packet::Connect(connect) => write_connect(connect, layout, buf)?,
        Packet::ConnAck(connack) => {
            // 3.1 has no Session Present flag; that byte is unused there.
            let session_present = connack.session_present && protocol != ProtocolVersion::V3_1;
            buf.put_u8(u8::from(session_present));
            if v5 {
                buf.put_u8(connack.reason_code.0);
                put_properties(buf, &connack.properties, layout.props)?;
            } else {
                buf.put_u8(connack.reason_code.to_v3_connack());
            }
        }
        Packet::Publish(publish) => write_publish(&PublishView::from(publish), v5, layout, buf)?,
        Packet::PubAck(ack) | Packet::PubRec(ack) | Packet::PubRel(ack) | Packet::PubComp(ack) => {
            write_ack(ack, v5, layout, buf)?;
        }
        Packet::Subscribe(subscribe) => {
            buf.put_u16(subscribe.packet_id.get());
            if v5 {
                put_properties(buf, subscribe, layout.props)?;
            }
            for (filter, options) in &subscribe.filters {
                put_string(buf, filter, "topic filter")?;
                buf.put_u8(options_byte(options, v5));
            }
        }
        Packet::SubAck(suback) => {
            buf.put_u16(suback.packet_id.get());
            if v5 {
                put_properties(buf, &suback.properties, layout.props)?;
                buf.extend(suback.reason_codes.iter().map(|code| code.0));
            } else {
                buf.extend(suback.reason_codes.iter().map(|code| code.to_v3_suback()));
            }
        }
        Packet::Unsubscribe(unsubscribe) => {
            buf.put_u16(unsubscribe.packet_id.get());
            if v5 {
                put_properties(buf, unsubscribe, layout.props)?;
            }
            for filter in &unsubscribe.filters {
                put_string(buf, filter, "topic filter")?;
            }
        }
        Packet::UnsubAck(unsuback) => {
            buf.put_u16(unsuback.packet_id.get());
            if v5 {
                put_properties(buf, &unsuback.properties, layout.props)?;
                buf.extend(unsuback.reason_codes.iter().map(|code| code.0));
            }
        }
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(disconnect) => {
            if v5 {
                write_short_form(disconnect.reason_code, &disconnect.properties, layout, buf)?;
            }
        }
        // Layout::of refused AUTH before v5.
        Packet::Auth(auth) => write_short_form(auth.reason_code, &auth.properties, layout, buf)?,
    }
    Ok(())
}

fn write_connect(
    connect: &Connect,
    layout: &Layout,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    let v5 = connect.protocol.is_v5();
    put_string(buf, protocol_name(connect.protocol), "protocol name")?;
    buf.put_u8(connect.protocol.level());
    let mut flags = u8::from(connect.clean_start) << 1;
    if let Some(will) = &connect.will {
        flags |= 0x04 | ((will.qos as u8) << 3) | (u8::from(will.retain) << 5);
    }
    if connect.password.is_some() {
        flags |= 0x40;
    }
    if connect.username.is_some() {
        flags |= 0x80;
    }
    buf.put_u8(flags);
    buf.put_u16(connect.keep_alive);
    if v5 {
        put_properties(buf, &connect.properties, layout.props)?;
    }
    put_string(buf, &connect.client_id, "client identifier")?;
    if let Some(will) = &connect.will {
        if v5 {
            put_properties(buf, &will.properties, layout.will_props)?;
        }
        put_string(buf, &will.topic, "will topic")?;
        put_binary(buf, &will.payload, "will payload")?;
    }
    if let Some(username) = &connect.username {
        put_string(buf, username, "user name")?;
    }
    if let Some(password) = &connect.password {
        put_binary(buf, password, "password")?;
    }
    Ok(())
}

/// A PUBLISH's variable header and payload.
fn write_publish(
    publish: &PublishView<'_>,
    v5: bool,
    layout: &Layout,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    put_string(buf, publish.topic, "topic name")?;
    if let Some(packet_id) = publish.packet_id {
        buf.put_u16(packet_id.get());
    }
    if v5 {
        put_properties(buf, publish, layout.props)?;
    }
    buf.put_slice(publish.payload);
    Ok(())
}

fn write_ack(ack: &Ack, v5: bool, layout: &Layout, buf: &mut BytesMut) -> Result<(), EncodeError> {
    buf.put_u16(ack.packet_id.get());
    if v5 {
        write_short_form(ack.reason_code, &ack.properties, layout, buf)?;
    }
    Ok(())
}

/// The optional reason code and property block measured by [`short_form_len`].
fn write_short_form(
    reason_code: ReasonCode,
    props: &impl Properties,
    layout: &Layout,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    if layout.props > 0 {
        buf.put_u8(reason_code.0);
        put_properties(buf, props, layout.props)?;
    } else if reason_code != ReasonCode::SUCCESS {
        buf.put_u8(reason_code.0);
    }
    Ok(())
}

/// The Subscription Options byte (3.8.3.1); 3.x carries only the requested QoS.
fn options_byte(options: &SubscriptionOptions, v5: bool) -> u8 {
    let qos = options.qos as u8;
    if !v5 {
        return qos;
    }
    qos | (u8::from(options.no_local) << 2)
        | (u8::from(options.retain_as_published) << 3)
        | ((options.retain_handling as u8) << 4)
}

fn flag(value: bool) -> Value<'static> {
    Value::Byte(u8::from(value))
}

impl Properties for ConnectProperties {
    fn visit(&self, s: &mut impl PropertySink) {
        s.opt(
            id::SESSION_EXPIRY_INTERVAL,
            self.session_expiry_interval.map(Value::Four),
        );
        s.opt(
            id::RECEIVE_MAXIMUM,
            self.receive_maximum.map(|v| Value::Two(v.get())),
        );
        s.opt(
            id::MAXIMUM_PACKET_SIZE,
            self.maximum_packet_size.map(Value::Four),
        );
        s.opt(
            id::TOPIC_ALIAS_MAXIMUM,
            self.topic_alias_maximum.map(Value::Two),
        );
        s.opt(
            id::REQUEST_RESPONSE_INFORMATION,
            self.request_response_information.map(flag),
        );
        s.opt(
            id::REQUEST_PROBLEM_INFORMATION,
            self.request_problem_information.map(flag),
        );
        s.user_properties(&self.user_properties);
        s.opt(
            id::AUTHENTICATION_METHOD,
            self.authentication_method.as_deref().map(Value::Str),
        );
        s.opt(
            id::AUTHENTICATION_DATA,
            self.authentication_data.as_deref().map(Value::Binary),
        );
    }
}

impl Properties for WillProperties {
    fn visit(&self, s: &mut impl PropertySink) {
        s.opt(
            id::WILL_DELAY_INTERVAL,
            self.will_delay_interval.map(Value::Four),
        );
        s.opt(
            id::PAYLOAD_FORMAT_INDICATOR,
            self.payload_format_indicator.map(Value::Byte),
        );
        s.opt(
            id::MESSAGE_EXPIRY_INTERVAL,
            self.message_expiry_interval.map(Value::Four),
        );
        s.opt(
            id::CONTENT_TYPE,
            self.content_type.as_deref().map(Value::Str),
        );
        s.opt(
            id::RESPONSE_TOPIC,
            self.response_topic.as_deref().map(Value::Str),
        );
        s.opt(
            id::CORRELATION_DATA,
            self.correlation_data.as_deref().map(Value::Binary),
        );
        s.user_properties(&self.user_properties);
    }
}

impl Properties for ConnAckProperties {
    fn visit(&self, s: &mut impl PropertySink) {
        s.opt(
            id::SESSION_EXPIRY_INTERVAL,
            self.session_expiry_interval.map(Value::Four),
        );
        s.opt(
            id::RECEIVE_MAXIMUM,
            self.receive_maximum.map(|v| Value::Two(v.get())),
        );
        s.opt(
            id::MAXIMUM_QOS,
            self.maximum_qos.map(|q| Value::Byte(q as u8)),
        );
        s.opt(id::RETAIN_AVAILABLE, self.retain_available.map(flag));
        s.opt(
            id::MAXIMUM_PACKET_SIZE,
            self.maximum_packet_size.map(Value::Four),
        );
        s.opt(
            id::ASSIGNED_CLIENT_IDENTIFIER,
            self.assigned_client_identifier.as_deref().map(Value::Str),
        );
        s.opt(
            id::TOPIC_ALIAS_MAXIMUM,
            self.topic_alias_maximum.map(Value::Two),
        );
        s.opt(
            id::REASON_STRING,
            self.reason_string.as_deref().map(Value::Str),
        );
        s.user_properties(&self.user_properties);
        s.opt(
            id::WILDCARD_SUBSCRIPTION_AVAILABLE,
            self.wildcard_subscription_available.map(flag),
        );
        s.opt(
            id::SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            self.subscription_identifiers_available.map(flag),
        );
        s.opt(
            id::SHARED_SUBSCRIPTION_AVAILABLE,
            self.shared_subscription_available.map(flag),
        );
        s.opt(
            id::SERVER_KEEP_ALIVE,
            self.server_keep_alive.map(Value::Two),
        );
        s.opt(
            id::RESPONSE_INFORMATION,
            self.response_information.as_deref().map(Value::Str),
        );
        s.opt(
            id::SERVER_REFERENCE,
            self.server_reference.as_deref().map(Value::Str),
        );
        s.opt(
            id::AUTHENTICATION_METHOD,
            self.authentication_method.as_deref().map(Value::Str),
        );
        s.opt(
            id::AUTHENTICATION_DATA,
            self.authentication_data.as_deref().map(Value::Binary),
        );
    }
}

impl Properties for PublishView<'_> {
    fn visit(&self, s: &mut impl PropertySink) {
        let shared = self.properties;
        s.opt(
            id::PAYLOAD_FORMAT_INDICATOR,
            shared.payload_format_indicator.map(Value::Byte),
        );
        s.opt(
            id::MESSAGE_EXPIRY_INTERVAL,
            self.message_expiry_interval.map(Value::Four),
        );
        s.opt(id::TOPIC_ALIAS, self.topic_alias.map(Value::Two));
        s.opt(
            id::RESPONSE_TOPIC,
            shared.response_topic.as_deref().map(Value::Str),
        );
        s.opt(
            id::CORRELATION_DATA,
            shared.correlation_data.as_deref().map(Value::Binary),
        );
        s.user_properties(&shared.user_properties);
        for &identifier in self.subscription_identifiers {
            s.put(id::SUBSCRIPTION_IDENTIFIER, Value::VarInt(identifier));
        }
        s.opt(
            id::CONTENT_TYPE,
            shared.content_type.as_deref().map(Value::Str),
        );
    }
}

impl Properties for AckProperties {
    fn visit(&self, s: &mut impl PropertySink) {
        s.opt(
            id::REASON_STRING,
            self.reason_string.as_deref().map(Value::Str),
        );
        s.user_properties(&self.user_properties);
    }
}

impl Properties for Subscribe {
    fn visit(&self, s: &mut impl PropertySink) {
        s.opt(
            id::SUBSCRIPTION_IDENTIFIER,
            self.subscription_identifier.map(Value::VarInt),
        );
        s.user_properties(&self.user_properties);
    }
}

impl Properties for Unsubscribe {
    fn visit(&self, s: &mut impl PropertySink) {
        s.user_properties(&self.user_properties);
    }
}

impl Properties for DisconnectProperties {
    fn visit(&self, s: &mut impl PropertySink) {
        s.opt(
            id::SESSION_EXPIRY_INTERVAL,
            self.session_expiry_interval.map(Value::Four),
        );
        s.opt(
            id::REASON_STRING,
            self.reason_string.as_deref().map(Value::Str),
        );
        s.user_properties(&self.user_properties);
        s.opt(
            id::SERVER_REFERENCE,
            self.server_reference.as_deref().map(Value::Str),
        );
    }
}

impl Properties for AuthProperties {
    fn visit(&self, s: &mut impl PropertySink) {
        s.opt(
            id::AUTHENTICATION_METHOD,
            self.authentication_method.as_deref().map(Value::Str),
        );
        s.opt(
            id::AUTHENTICATION_DATA,
            self.authentication_data.as_deref().map(Value::Binary),
        );
        s.opt(
            id::REASON_STRING,
            self.reason_string.as_deref().map(Value::Str),
        );
        s.user_properties(&self.user_properties);
    }
}
