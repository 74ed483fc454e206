//! How the broker's state is laid out in the store's tables: keys, and values each sealed with a
//! CRC32C over key and value, so that a damaged value (or one found under the wrong key) is
//! recognised when it is read, not taken for data. redb checks its pages when the file is opened;
//! this check also covers reads after that, and any store an embedding program supplies.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use bytestring::ByteString;

use crate::codec::{ProtocolVersion, QoS, RetainHandling, SubscriptionOptions};
use crate::identity::{ClientId, ClientInfo};
use crate::message::{Message, RetainStamp};

/// Why a stored value could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("checksum mismatch")]
    Checksum,
    #[error("truncated")]
    Truncated,
    #[error("{0}")]
    Invalid(String),
}

/// A session as stored: who it belongs to and what outlives its connection besides its
/// subscriptions and messages (which have their own tables).
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub client_id: ClientId,
    /// Session Expiry Interval in seconds (`u32::MAX` never).
    pub expiry_interval: u32,
    /// When its connection ended, in milliseconds since the Unix epoch; `None` while connected.
    /// The expiry counts from here, across a restart.
    pub disconnected_at: Option<u64>,
    /// A will waiting out its delay since `disconnected_at`.
    pub will: Option<StoredWill>,
}

/// A will waiting out its delay.
#[derive(Debug, Clone)]
pub struct StoredWill {
    /// The client that set it: the will is published with its rights.
    pub client: Arc<ClientInfo>,
    /// Will Delay Interval in seconds.
    pub delay: u32,
    /// The message, with its Message Expiry Interval still a property: it starts when the will is
    /// published.
    pub message: Message,
}

/// A session's QoS 1 or 2 delivery as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    /// The message, in the messages table; 0 once released (PUBREC received).
    pub message: u64,
    pub qos: QoS,
    pub retain: bool,
    /// Set once the client sent PUBREC: only PUBREL (with this packet id) is left to send.
    pub released: Option<u16>,
    pub subscription_ids: Vec<u32>,
}

/// Milliseconds since the Unix epoch now.
pub fn unix_millis_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

/// A message's expiry as milliseconds since the Unix epoch (0 for never), so that a restart
/// does not reset it: the time the broker was down counts.
pub fn expiry_millis(message: &Message, now: Instant, now_millis: u64) -> u64 {
    match message.expires_at {
        None => 0,
        Some(at) => {
            let left = at.saturating_duration_since(now);
            now_millis
                .saturating_add(u64::try_from(left.as_millis()).unwrap_or(u64::MAX))
                .max(1)
        }
    }
}

/// The `Instant` a stored expiry falls on, `Err(())` when it has passed.
pub fn expiry_instant(millis: u64, now: Instant, now_millis: u64) -> Result<Option<Instant>, ()> {
    if millis == 0 {
        return Ok(None);
    }
    if millis <= now_millis {
        return Err(());
    }
    Ok(Some(now + Duration::from_millis(millis - now_millis)))
}

// Keys.

pub fn session_key(session: u64) -> Vec<u8> {
    session.to_be_bytes().to_vec()
}

pub fn delivery_key(session: u64, seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(16);
    key.extend_from_slice(&session.to_be_bytes());
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

pub fn subscription_key(session: u64, filter: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + filter.len());
    key.extend_from_slice(&session.to_be_bytes());
    key.extend_from_slice(filter.as_bytes());
    key
}

pub fn inbound_key(session: u64, packet_id: u16) -> Vec<u8> {
    let mut key = Vec::with_capacity(10);
    key.extend_from_slice(&session.to_be_bytes());
    key.extend_from_slice(&packet_id.to_be_bytes());
    key
}

pub fn message_key(id: u64) -> Vec<u8> {
    id.to_be_bytes().to_vec()
}

/// The session id a key of a per-session table starts with, and the rest.
pub fn split_session_key(key: &[u8]) -> Result<(u64, &[u8]), RecordError> {
    let (head, rest) = key.split_at_checked(8).ok_or(RecordError::Truncated)?;
    let session = u64::from_be_bytes(head.try_into().map_err(|_| RecordError::Truncated)?);
    Ok((session, rest))
}

pub fn u64_of(bytes: &[u8]) -> Result<u64, RecordError> {
    Ok(u64::from_be_bytes(
        bytes.try_into().map_err(|_| RecordError::Truncated)?,
    ))
}

pub fn u16_of(bytes: &[u8]) -> Result<u16, RecordError> {
    Ok(u16::from_be_bytes(
        bytes.try_into().map_err(|_| RecordError::Truncated)?,
    ))
}

// Values.

/// Appends the checksum of `key` and `value` to `value`.
fn seal(key: &[u8], mut value: Vec<u8>) -> Vec<u8> {
    let crc = crc32c::crc32c_append(crc32c::crc32c(key), &value);
    value.extend_from_slice(&crc.to_be_bytes());
    value
}

/// The value without its checksum, once the checksum matches.
pub fn unseal<'a>(key: &[u8], value: &'a [u8]) -> Result<&'a [u8], RecordError> {
    let (body, crc) = value
        .split_at_checked(value.len().wrapping_sub(4))
        .filter(|_| value.len() >= 4)
        .ok_or(RecordError::Truncated)?;
    let expected = u32::from_be_bytes(crc.try_into().map_err(|_| RecordError::Truncated)?);
    if crc32c::crc32c_append(crc32c::crc32c(key), body) != expected {
        return Err(RecordError::Checksum);
    }
    Ok(body)
}

pub fn encode_session(key: &[u8], record: &SessionRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    put_str(&mut out, record.client_id.as_str());
    out.extend_from_slice(&record.expiry_interval.to_be_bytes());
    out.extend_from_slice(&record.disconnected_at.unwrap_or(0).to_be_bytes());
    match &record.will {
        Some(will) => {
            out.push(1);
            put_client(&mut out, &will.client);
            out.extend_from_slice(&will.delay.to_be_bytes());
            let expiry = will.message.properties.message_expiry_interval;
            out.push(u8::from(expiry.is_some()));
            out.extend_from_slice(&expiry.unwrap_or(0).to_be_bytes());
            put_publish(&mut out, &will.message, None);
        }
        None => out.push(0),
    }
    seal(key, out)
}

pub fn decode_session(key: &[u8], value: &[u8]) -> Result<SessionRecord, RecordError> {
    let mut body = Reader(unseal(key, value)?);
    let client_id = ClientId::new(body.str()?);
    let expiry_interval = body.u32()?;
    let disconnected_at = Some(body.u64()?).filter(|at| *at != 0);
    let will = match body.u8()? {
        0 => None,
        _ => {
            let client = Arc::new(get_client(&mut body)?);
            let delay = body.u32()?;
            let has_expiry = body.u8()? != 0;
            let expiry = body.u32()?;
            let (mut message, _) = get_publish(&mut body, 0)?;
            message.properties.message_expiry_interval = has_expiry.then_some(expiry);
            Some(StoredWill {
                client,
                delay,
                message,
            })
        }
    };
    body.end()?;
    Ok(SessionRecord {
        client_id,
        expiry_interval,
        disconnected_at,
        will,
    })
}

pub fn encode_delivery(key: &[u8], record: &DeliveryRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + 4 * record.subscription_ids.len());
    out.extend_from_slice(&record.message.to_be_bytes());
    out.push(record.qos as u8);
    out.push(u8::from(record.retain));
    out.push(u8::from(record.released.is_some()));
    out.extend_from_slice(&record.released.unwrap_or(0).to_be_bytes());
    let count = u16::try_from(record.subscription_ids.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&count.to_be_bytes());
    for id in record.subscription_ids.iter().take(usize::from(count)) {
        out.extend_from_slice(&id.to_be_bytes());
    }
    seal(key, out)
}

pub fn decode_delivery(key: &[u8], value: &[u8]) -> Result<DeliveryRecord, RecordError> {
    let mut body = Reader(unseal(key, value)?);
    let message = body.u64()?;
    let qos = qos(body.u8()?)?;
    let retain = body.u8()? != 0;
    let released = (body.u8()? != 0).then_some(0);
    let packet_id = body.u16()?;
    let released = released.map(|_| packet_id);
    let count = body.u16()?;
    let mut subscription_ids = Vec::with_capacity(usize::from(count).min(body.0.len() / 4));
    for _ in 0..count {
        subscription_ids.push(body.u32()?);
    }
    body.end()?;
    Ok(DeliveryRecord {
        message,
        qos,
        retain,
        released,
        subscription_ids,
    })
}

pub fn encode_subscription(
    key: &[u8],
    options: &SubscriptionOptions,
    identifier: Option<u32>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(5);
    out.push(
        options.qos as u8
            | u8::from(options.no_local) << 2
            | u8::from(options.retain_as_published) << 3
            | (options.retain_handling as u8) << 4,
    );
    out.extend_from_slice(&identifier.unwrap_or(0).to_be_bytes());
    seal(key, out)
}

pub fn decode_subscription(
    key: &[u8],
    value: &[u8],
) -> Result<(SubscriptionOptions, Option<u32>), RecordError> {
    let mut body = Reader(unseal(key, value)?);
    let byte = body.u8()?;
    let identifier = Some(body.u32()?).filter(|id| *id != 0);
    body.end()?;
    let retain_handling = match (byte >> 4) & 0b11 {
        0 => RetainHandling::OnSubscribe,
        1 => RetainHandling::OnNewSubscribe,
        2 => RetainHandling::Never,
        _ => return Err(RecordError::Invalid("retain handling 3".into())),
    };
    let options = SubscriptionOptions {
        qos: qos(byte & 0b11)?,
        no_local: byte & 0b100 != 0,
        retain_as_published: byte & 0b1000 != 0,
        retain_handling,
    };
    Ok((options, identifier))
}

/// An inbound QoS 2 packet id holds nothing but its key.
pub fn encode_marker(key: &[u8]) -> Vec<u8> {
    seal(key, Vec::new())
}

pub fn check_marker(key: &[u8], value: &[u8]) -> Result<(), RecordError> {
    Reader(unseal(key, value)?).end()
}

/// A message: its expiry (milliseconds since the Unix epoch, 0 for never), then the MQTT 5
/// PUBLISH that carries it.
pub fn encode_message(key: &[u8], message: &Message, expires_at_millis: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + message.data_size());
    out.extend_from_slice(&expires_at_millis.to_be_bytes());
    put_publish(&mut out, message, None);
    seal(key, out)
}

/// The message (its id from the key) and its expiry in milliseconds since the Unix epoch.
pub fn decode_message(key: &[u8], value: &[u8]) -> Result<(Message, u64), RecordError> {
    let id = u64_of(key)?;
    let mut body = Reader(unseal(key, value)?);
    let expires_at = body.u64()?;
    let (message, _) = get_publish(&mut body, id)?;
    body.end()?;
    Ok((message, expires_at))
}

pub fn encode_retained(key: &[u8], message: u64, stamp: &RetainStamp) -> Vec<u8> {
    let mut out = Vec::with_capacity(20 + stamp.origin.len());
    out.extend_from_slice(&message.to_be_bytes());
    out.extend_from_slice(&stamp.millis.to_be_bytes());
    put_str(&mut out, &stamp.origin);
    seal(key, out)
}

pub fn decode_retained(key: &[u8], value: &[u8]) -> Result<(u64, RetainStamp), RecordError> {
    let mut body = Reader(unseal(key, value)?);
    let message = body.u64()?;
    let millis = body.u64()?;
    let origin: Arc<str> = Arc::from(body.str()?.as_ref());
    body.end()?;
    Ok((message, RetainStamp { millis, origin }))
}

// Parts.

fn qos(bits: u8) -> Result<QoS, RecordError> {
    QoS::from_bits(bits).ok_or_else(|| RecordError::Invalid(format!("QoS {bits}")))
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&u32::try_from(s.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_publish(out: &mut Vec<u8>, message: &Message, expiry: Option<u32>) {
    let mut packet = BytesMut::new();
    message.encode_as_publish(expiry, &mut packet);
    out.extend_from_slice(
        &u32::try_from(packet.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(&packet);
}

fn get_publish(body: &mut Reader<'_>, id: u64) -> Result<(Message, Option<u32>), RecordError> {
    let len = body.u32()? as usize;
    let packet = BytesMut::from(body.take(len)?);
    Message::decode_from_publish(packet, id).map_err(RecordError::Invalid)
}

fn put_client(out: &mut Vec<u8>, client: &ClientInfo) {
    put_str(out, client.client_id.as_str());
    match &client.username {
        Some(username) => {
            out.push(1);
            put_str(out, username);
        }
        None => out.push(0),
    }
    out.push(client.protocol.level());
    put_str(out, &client.remote_addr.to_string());
    put_str(out, &client.listener);
    out.push(u8::from(client.certificate_identity));
}

fn get_client(body: &mut Reader<'_>) -> Result<ClientInfo, RecordError> {
    let client_id = ClientId::new(body.str()?);
    let username = match body.u8()? {
        0 => None,
        _ => Some(Arc::from(body.str()?.as_ref())),
    };
    let protocol = match body.u8()? {
        3 => ProtocolVersion::V3_1,
        4 => ProtocolVersion::V3_1_1,
        5 => ProtocolVersion::V5,
        other => return Err(RecordError::Invalid(format!("protocol level {other}"))),
    };
    let remote_addr: SocketAddr = body
        .str()?
        .parse()
        .map_err(|_| RecordError::Invalid("a client address".into()))?;
    let listener = Arc::from(body.str()?.as_ref());
    let certificate_identity = body.u8()? != 0;
    Ok(ClientInfo {
        client_id,
        username,
        protocol,
        remote_addr: remote_addr.into(),
        listener,
        certificate_identity,
        connected_at: None,
    })
}

/// Reads a value front to back.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], RecordError> {
        let (head, rest) = self.0.split_at_checked(len).ok_or(RecordError::Truncated)?;
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, RecordError> {
        u16_of(self.take(2)?)
    }

    fn u32(&mut self) -> Result<u32, RecordError> {
        Ok(u32::from_be_bytes(
            self.take(4)?
                .try_into()
                .map_err(|_| RecordError::Truncated)?,
        ))
    }

    fn u64(&mut self) -> Result<u64, RecordError> {
        u64_of(self.take(8)?)
    }

    fn str(&mut self) -> Result<ByteString, RecordError> {
        let len = self.u32()? as usize;
        let bytes = self.take(len)?;
        let text = std::str::from_utf8(bytes)
            .map_err(|_| RecordError::Invalid("text that is not UTF-8".into()))?;
        Ok(ByteString::from(text))
    }

    fn end(&self) -> Result<(), RecordError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(RecordError::Invalid("bytes after the value".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_read_back_under_its_key_is_what_was_written() {
        let key = delivery_key(7, 42);
        let record = DeliveryRecord {
            message: 99,
            qos: QoS::ExactlyOnce,
            retain: true,
            released: Some(513),
            subscription_ids: vec![1, 70_000],
        };
        let value = encode_delivery(&key, &record);
        assert_eq!(decode_delivery(&key, &value), Ok(record));
    }

    /// Every single flipped bit of a value, and the same value under another key, is caught.
    #[test]
    fn damage_and_a_misplaced_value_are_detected() {
        let key = message_key(5);
        let mut message = Message::new("a/b", "payload", QoS::AtLeastOnce, false);
        message.id = 5;
        let value = encode_message(&key, &message, 0);
        for bit in 0..value.len() * 8 {
            let mut damaged = value.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_message(&key, &damaged).is_err(), "bit {bit}");
        }
        assert_eq!(
            decode_message(&message_key(6), &value).err(),
            Some(RecordError::Checksum)
        );
        assert!(decode_message(&key, &value[..3]).is_err());
        let (back, expiry) = decode_message(&key, &value).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (back.topic.as_ref(), &back.payload[..], expiry),
            ("a/b", &b"payload"[..], 0)
        );
    }

    #[test]
    fn a_stored_expiry_counts_the_time_the_broker_was_down() {
        let now = Instant::now();
        let message =
            Message::new("t", "p", QoS::AtLeastOnce, false).with_expiry_interval(Some(10));
        let stored = expiry_millis(&message, now, 1_000_000);
        assert!((1_009_000..=1_010_000).contains(&stored));
        // Read back 4 s later: about 6 s left.
        let at = expiry_instant(stored, now, 1_004_000)
            .ok()
            .flatten()
            .unwrap_or(now);
        assert!(at > now + Duration::from_secs(5) && at <= now + Duration::from_secs(6));
        // Read back 11 s later: expired.
        assert!(expiry_instant(stored, now, 1_011_000).is_err());
    }
}
