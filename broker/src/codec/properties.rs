//! The wire's primitive fields (1.5) and MQTT 5 properties (2.2.2), shared by decode and encode.
//!
//! Decoding goes through [`Reader`], a bounds-checked cursor over one frame that slices `Bytes` instead
//! of copying; running off its end is a malformed packet, never a panic. Encoding writes straight into
//! the output buffer, and every property set is described once ([`Properties::visit`]) so that its
//! measured length and its written bytes cannot disagree.

use std::num::NonZeroU16;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::error::{DecodeError, EncodeError};
use super::packet::QoS;

/// The largest value a variable byte integer can hold (1.5.5).
pub(super) const MAX_VAR_INT: u32 = 268_435_455;

/// Property identifiers (2.2.2.2).
pub(super) mod id {
    pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTHENTICATION_METHOD: u8 = 0x15;
    pub const AUTHENTICATION_DATA: u8 = 0x16;
    pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    pub const RESPONSE_INFORMATION: u8 = 0x1A;
    pub const SERVER_REFERENCE: u8 = 0x1C;
    pub const REASON_STRING: u8 = 0x1F;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}

const SHORT: DecodeError = DecodeError::Malformed("packet ends inside a field");

/// Parses a variable byte integer (1.5.5) from the front of `bytes`: `Ok(None)` when it is cut off,
/// otherwise the value and the number of bytes it used. Non-minimal encodings are accepted: minimality
/// binds the sender [MQTT-1.5.5-1], and nothing is gained by refusing them.
pub(super) fn parse_var_int(bytes: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value = 0u32;
    for (i, &byte) in bytes.iter().take(4).enumerate() {
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    if bytes.len() >= 4 {
        Err(DecodeError::Malformed(
            "variable byte integer longer than 4 bytes",
        ))
    } else {
        Ok(None)
    }
}

/// How many bytes `value` takes as a variable byte integer. Values above [`MAX_VAR_INT`] count as 4;
/// callers that may meet them check the range themselves.
pub(super) fn var_int_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// A bounds-checked cursor over the body of one frame.
pub(super) struct Reader {
    buf: Bytes,
}

impl Reader {
    pub(super) fn new(buf: Bytes) -> Self {
        Self { buf }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Fails unless every byte of the frame was consumed: the remaining length must match the
    /// packet's grammar exactly.
    pub(super) fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Malformed(
                "remaining length longer than the packet's fields",
            ))
        }
    }

    pub(super) fn u8(&mut self) -> Result<u8, DecodeError> {
        if self.buf.is_empty() {
            return Err(SHORT);
        }
        Ok(self.buf.get_u8())
    }

    pub(super) fn u16(&mut self) -> Result<u16, DecodeError> {
        if self.buf.len() < 2 {
            return Err(SHORT);
        }
        Ok(self.buf.get_u16())
    }

    pub(super) fn u32(&mut self) -> Result<u32, DecodeError> {
        if self.buf.len() < 4 {
            return Err(SHORT);
        }
        Ok(self.buf.get_u32())
    }

    pub(super) fn var_int(&mut self) -> Result<u32, DecodeError> {
        match parse_var_int(&self.buf)? {
            Some((value, used)) => {
                self.buf.advance(used);
                Ok(value)
            }
            None => Err(SHORT),
        }
    }

    /// The next `len` bytes, shared with the frame.
    pub(super) fn take(&mut self, len: usize) -> Result<Bytes, DecodeError> {
        if self.buf.len() < len {
            return Err(SHORT);
        }
        Ok(self.buf.split_to(len))
    }

    /// Everything left in the frame (a PUBLISH payload, a list of reason codes).
    pub(super) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// Binary Data (1.5.6): a two-byte length and that many bytes.
    pub(super) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// UTF-8 Encoded String (1.5.4): well-formed UTF-8, which excludes surrogates [MQTT-1.5.4-1],
    /// and no U+0000 [MQTT-1.5.4-2].
    pub(super) fn string(&mut self) -> Result<ByteString, DecodeError> {
        let raw = self.binary()?;
        if raw.contains(&0) {
            return Err(DecodeError::Malformed(
                "string contains U+0000 [MQTT-1.5.4-2]",
            ));
        }
        ByteString::try_from(raw)
            .map_err(|_| DecodeError::Malformed("string is not valid UTF-8 [MQTT-1.5.4-1]"))
    }
}

/// One decoded property, its value already checked against the range the specification allows.
#[derive(Debug)]
pub(super) enum Property {
    PayloadFormatIndicator(u8),
    MessageExpiryInterval(u32),
    ContentType(ByteString),
    ResponseTopic(ByteString),
    CorrelationData(Bytes),
    SubscriptionIdentifier(u32),
    SessionExpiryInterval(u32),
    AssignedClientIdentifier(ByteString),
    ServerKeepAlive(u16),
    AuthenticationMethod(ByteString),
    AuthenticationData(Bytes),
    RequestProblemInformation(bool),
    WillDelayInterval(u32),
    RequestResponseInformation(bool),
    ResponseInformation(ByteString),
    ServerReference(ByteString),
    ReasonString(ByteString),
    ReceiveMaximum(NonZeroU16),
    TopicAliasMaximum(u16),
    TopicAlias(u16),
    MaximumQos(QoS),
    RetainAvailable(bool),
    /// A User Property: name and value.
    User(ByteString, ByteString),
    MaximumPacketSize(u32),
    WildcardSubscriptionAvailable(bool),
    SubscriptionIdentifierAvailable(bool),
    SharedSubscriptionAvailable(bool),
}

/// A byte that must be 0 or 1. The property sections call any other value a Protocol Error.
fn flag(r: &mut Reader, what: &'static str) -> Result<bool, DecodeError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::Protocol(what)),
    }
}

fn read_property(r: &mut Reader) -> Result<Property, DecodeError> {
    use Property as P;
    // The identifier is a variable byte integer (2.2.2.2); every defined one fits in one byte.
    let identifier = r.var_int()?;
    let identifier = u8::try_from(identifier)
        .map_err(|_| DecodeError::Malformed("unknown property identifier"))?;
    Ok(match identifier {
        id::PAYLOAD_FORMAT_INDICATOR => match r.u8()? {
            value @ (0 | 1) => P::PayloadFormatIndicator(value),
            _ => return Err(DecodeError::Protocol("Payload Format Indicator not 0 or 1")),
        },
        id::MESSAGE_EXPIRY_INTERVAL => P::MessageExpiryInterval(r.u32()?),
        id::CONTENT_TYPE => P::ContentType(r.string()?),
        id::RESPONSE_TOPIC => P::ResponseTopic(r.string()?),
        id::CORRELATION_DATA => P::CorrelationData(r.binary()?),
        id::SUBSCRIPTION_IDENTIFIER => match r.var_int()? {
            0 => return Err(DecodeError::Protocol("Subscription Identifier of 0")),
            value => P::SubscriptionIdentifier(value),
        },
        id::SESSION_EXPIRY_INTERVAL => P::SessionExpiryInterval(r.u32()?),
        id::ASSIGNED_CLIENT_IDENTIFIER => P::AssignedClientIdentifier(r.string()?),
        id::SERVER_KEEP_ALIVE => P::ServerKeepAlive(r.u16()?),
        id::AUTHENTICATION_METHOD => P::AuthenticationMethod(r.string()?),
        id::AUTHENTICATION_DATA => P::AuthenticationData(r.binary()?),
        id::REQUEST_PROBLEM_INFORMATION => {
            P::RequestProblemInformation(flag(r, "Request Problem Information not 0 or 1")?)
        }
        id::WILL_DELAY_INTERVAL => P::WillDelayInterval(r.u32()?),
        id::REQUEST_RESPONSE_INFORMATION => {
            P::RequestResponseInformation(flag(r, "Request Response Information not 0 or 1")?)
        }
        id::RESPONSE_INFORMATION => P::ResponseInformation(r.string()?),
        id::SERVER_REFERENCE => P::ServerReference(r.string()?),
        id::REASON_STRING => P::ReasonString(r.string()?),
        id::RECEIVE_MAXIMUM => P::ReceiveMaximum(
            NonZeroU16::new(r.u16()?).ok_or(DecodeError::Protocol("Receive Maximum of 0"))?,
        ),
        id::TOPIC_ALIAS_MAXIMUM => P::TopicAliasMaximum(r.u16()?),
        // 0 is outside every alias range; the connection checks the range and answers 0x94.
        id::TOPIC_ALIAS => P::TopicAlias(r.u16()?),
        id::MAXIMUM_QOS => match r.u8()? {
            0 => P::MaximumQos(QoS::AtMostOnce),
            1 => P::MaximumQos(QoS::AtLeastOnce),
            _ => return Err(DecodeError::Protocol("Maximum QoS not 0 or 1")),
        },
        id::RETAIN_AVAILABLE => P::RetainAvailable(flag(r, "Retain Available not 0 or 1")?),
        id::USER_PROPERTY => {
            let name = r.string()?;
            P::User(name, r.string()?)
        }
        id::MAXIMUM_PACKET_SIZE => match r.u32()? {
            0 => return Err(DecodeError::Protocol("Maximum Packet Size of 0")),
            value => P::MaximumPacketSize(value),
        },
        id::WILDCARD_SUBSCRIPTION_AVAILABLE => {
            P::WildcardSubscriptionAvailable(flag(r, "Wildcard Subscription Available not 0 or 1")?)
        }
        id::SUBSCRIPTION_IDENTIFIER_AVAILABLE => P::SubscriptionIdentifierAvailable(flag(
            r,
            "Subscription Identifier Available not 0 or 1",
        )?),
        id::SHARED_SUBSCRIPTION_AVAILABLE => {
            P::SharedSubscriptionAvailable(flag(r, "Shared Subscription Available not 0 or 1")?)
        }
        // "A Control Packet which contains an Identifier which is not valid for its packet type ...
        // is a Malformed Packet" (2.2.2.2); an unknown identifier is valid for none.
        _ => return Err(DecodeError::Malformed("unknown property identifier")),
    })
}

/// Reads a property block (2.2.2): its length, then each property, handed to `apply`, which stores it
/// or refuses it for the packet at hand.
pub(super) fn read_properties(
    r: &mut Reader,
    mut apply: impl FnMut(Property) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let len = r.var_int()?;
    let len = usize::try_from(len).map_err(|_| SHORT)?;
    let mut block = Reader::new(r.take(len)?);
    while !block.is_empty() {
        apply(read_property(&mut block)?)?;
    }
    Ok(())
}

/// Stores a property that may appear at most once; a second one is a Protocol Error (every property
/// section of 3.x says so, except for User Property and a server's Subscription Identifiers).
pub(super) fn set_once<T>(slot: &mut Option<T>, value: T) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::Protocol("property included more than once"));
    }
    *slot = Some(value);
    Ok(())
}

/// One property value on its way out.
pub(super) enum Value<'a> {
    Byte(u8),
    Two(u16),
    Four(u32),
    VarInt(u32),
    Str(&'a str),
    Binary(&'a [u8]),
    Pair(&'a str, &'a str),
}

/// Receives the present properties of a set, in order.
pub(super) trait PropertySink {
    fn put(&mut self, id: u8, value: Value<'_>);

    fn opt(&mut self, id: u8, value: Option<Value<'_>>) {
        if let Some(value) = value {
            self.put(id, value);
        }
    }

    fn user_properties(&mut self, pairs: &[(ByteString, ByteString)]) {
        for (name, value) in pairs {
            self.put(id::USER_PROPERTY, Value::Pair(name, value));
        }
    }
}

/// A set of properties that can be encoded.
pub(super) trait Properties {
    fn visit(&self, sink: &mut impl PropertySink);
}

/// Sums encoded sizes without writing anything.
struct LenSink(usize);

impl PropertySink for LenSink {
    fn put(&mut self, _id: u8, value: Value<'_>) {
        self.0 += 1 + match value {
            Value::Byte(_) => 1,
            Value::Two(_) => 2,
            Value::Four(_) => 4,
            Value::VarInt(v) => var_int_len(v as usize),
            Value::Str(s) => 2 + s.len(),
            Value::Binary(b) => 2 + b.len(),
            Value::Pair(k, v) => 4 + k.len() + v.len(),
        };
    }
}

/// Writes each property, keeping the first error so the caller can roll the buffer back.
struct WriteSink<'b> {
    buf: &'b mut BytesMut,
    error: Option<EncodeError>,
}

impl WriteSink<'_> {
    fn keep(&mut self, result: Result<(), EncodeError>) {
        if let (Err(e), None) = (result, &self.error) {
            self.error = Some(e);
        }
    }
}

impl PropertySink for WriteSink<'_> {
    fn put(&mut self, id: u8, value: Value<'_>) {
        self.buf.put_u8(id);
        let result = match value {
            Value::Byte(v) => {
                self.buf.put_u8(v);
                Ok(())
            }
            Value::Two(v) => {
                self.buf.put_u16(v);
                Ok(())
            }
            Value::Four(v) => {
                self.buf.put_u32(v);
                Ok(())
            }
            Value::VarInt(v) => put_var_int(self.buf, v),
            Value::Str(s) => put_binary(self.buf, s.as_bytes(), "property"),
            Value::Binary(b) => put_binary(self.buf, b, "property"),
            Value::Pair(k, v) => put_binary(self.buf, k.as_bytes(), "user property")
                .and_then(|()| put_binary(self.buf, v.as_bytes(), "user property")),
        };
        self.keep(result);
    }
}

/// The length of a property set's properties, without the length prefix.
pub(super) fn properties_len(props: &impl Properties) -> usize {
    let mut sink = LenSink(0);
    props.visit(&mut sink);
    sink.0
}

/// The bytes a property block takes, its length prefix included.
pub(super) fn block_len(props_len: usize) -> usize {
    var_int_len(props_len) + props_len
}

/// Writes a property block whose length `props_len` was measured with [`properties_len`].
pub(super) fn put_properties(
    buf: &mut BytesMut,
    props: &impl Properties,
    props_len: usize,
) -> Result<(), EncodeError> {
    put_len(buf, props_len)?;
    let mut sink = WriteSink { buf, error: None };
    props.visit(&mut sink);
    sink.error.map_or(Ok(()), Err)
}

/// Writes a variable byte integer, refusing values it cannot carry.
pub(super) fn put_var_int(buf: &mut BytesMut, mut value: u32) -> Result<(), EncodeError> {
    if value > MAX_VAR_INT {
        return Err(EncodeError::InvalidField(
            "variable byte integer above 268,435,455",
        ));
    }
    loop {
        // Truncation is the point: the low seven bits go out first.
        let byte = (value & 0x7F) as u8;
        value >>= 7;
        if value == 0 {
            buf.put_u8(byte);
            return Ok(());
        }
        buf.put_u8(byte | 0x80);
    }
}

/// Writes a length (remaining length, property length) as a variable byte integer.
pub(super) fn put_len(buf: &mut BytesMut, len: usize) -> Result<(), EncodeError> {
    let len =
        u32::try_from(len).map_err(|_| EncodeError::InvalidField("length above 268,435,455"))?;
    put_var_int(buf, len)
}

/// Writes Binary Data or the bytes of a UTF-8 string with their two-byte length.
pub(super) fn put_binary(
    buf: &mut BytesMut,
    bytes: &[u8],
    field: &'static str,
) -> Result<(), EncodeError> {
    let len = u16::try_from(bytes.len()).map_err(|_| EncodeError::FieldTooLong(field))?;
    buf.put_u16(len);
    buf.put_slice(bytes);
    Ok(())
}

/// Writes a UTF-8 Encoded String.
pub(super) fn put_string(
    buf: &mut BytesMut,
    s: &str,
    field: &'static str,
) -> Result<(), EncodeError> {
    put_binary(buf, s.as_bytes(), field)
}
