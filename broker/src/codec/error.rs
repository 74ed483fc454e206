//! Codec errors. "Need more bytes" is not an error: [`super::decode`] returns `Ok(None)` for it.

use thiserror::Error;

use super::reason::ReasonCode;

/// Why a packet could not be decoded. Each variant maps to the reason code a v5 server sends before it
/// closes the connection ([`DecodeError::reason_code`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The bytes do not follow the packet's grammar (reason 0x81).
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// The grammar is followed but a rule of the protocol is broken (reason 0x82).
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// The packet is larger than the maximum this side accepts (reason 0x95).
    #[error("packet of {size} bytes exceeds the maximum packet size of {max}")]
    TooLarge { size: usize, max: u32 },
    /// CONNECT names a protocol or level this server does not speak (reason 0x84).
    #[error("unsupported protocol name or level {level}")]
    UnsupportedProtocol { level: u8 },
    /// A PUBLISH topic name breaks the topic rules (reason 0x90).
    #[error("topic name invalid: {0}")]
    TopicNameInvalid(&'static str),
}

impl DecodeError {
    /// The v5 reason code for DISCONNECT or CONNACK.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            Self::Malformed(_) => ReasonCode::MALFORMED_PACKET,
            Self::Protocol(_) => ReasonCode::PROTOCOL_ERROR,
            Self::TooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            Self::UnsupportedProtocol { .. } => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
            Self::TopicNameInvalid(_) => ReasonCode::TOPIC_NAME_INVALID,
        }
    }

    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::Protocol(_) => "protocol_error",
            Self::TooLarge { .. } => "too_large",
            Self::UnsupportedProtocol { .. } => "unsupported_protocol",
            Self::TopicNameInvalid(_) => "topic_name_invalid",
        }
    }
}

/// Why a packet could not be encoded. The buffer is left as it was.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// The encoded packet would exceed the peer's maximum packet size.
    #[error("packet of {size} bytes exceeds the peer's maximum packet size of {max}")]
    TooLarge { size: usize, max: u32 },
    /// A string or binary field is longer than 65,535 bytes.
    #[error("{0} is longer than 65535 bytes")]
    FieldTooLong(&'static str),
    /// The packet cannot be expressed at this protocol level (for example AUTH before v5).
    #[error("{0} cannot be sent at this protocol level")]
    NotInProtocol(&'static str),
    /// A field holds a value its encoding cannot carry, or fields contradict each other (a QoS 1
    /// PUBLISH without a packet identifier, a subscription identifier above 268,435,455).
    #[error("invalid field: {0}")]
    InvalidField(&'static str),
}
