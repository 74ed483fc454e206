//! The parts of the wire format that carry sessions: a delivery (a message with what one
//! subscriber's subscriptions decided about it), subscription options, a will, and a whole
//! [`SessionSnapshot`] moving between nodes.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use super::{
    WireError, get_bytestring, get_len, get_message, get_u8, get_u16, get_u32, put_len,
    put_message, put_str,
};
use crate::codec::{PacketId, ProtocolVersion, QoS, RetainHandling, SubscriptionOptions};
use crate::identity::{ClientId, ClientInfo};
use crate::message::Delivery;
use crate::session::{
    InflightEntry, InflightState, PendingWill, SessionSnapshot, SubscriptionRecord,
};
use crate::topic::SubscriptionFilter;

pub(super) fn put_delivery(buf: &mut BytesMut, delivery: &Delivery) {
    put_message(buf, &delivery.message);
    buf.put_u8(delivery.qos as u8);
    buf.put_u8(u8::from(delivery.retain));
    put_len(buf, delivery.subscription_ids.len());
    for id in &delivery.subscription_ids {
        buf.put_u32(*id);
    }
}

pub(super) fn get_delivery(body: &mut Bytes) -> Result<Delivery, WireError> {
    let message = Arc::new(get_message(body)?);
    let qos = get_qos(body)?;
    let retain = get_u8(body)? != 0;
    let count = bounded_count(body, 4)?;
    let mut subscription_ids = Vec::with_capacity(count);
    for _ in 0..count {
        subscription_ids.push(get_u32(body)?);
    }
    Ok(Delivery {
        // Counted whole against the one session it goes to.
        share: Delivery::share_of(&message, 1),
        seq: 0,
        message,
        qos,
        retain,
        subscription_ids,
    })
}

fn get_qos(body: &mut Bytes) -> Result<QoS, WireError> {
    QoS::from_bits(get_u8(body)?).ok_or_else(|| WireError::Message("a QoS above 2".into()))
}

/// The options as MQTT 5 encodes them in SUBSCRIBE (3.8.3.1).
fn options_byte(options: &SubscriptionOptions) -> u8 {
    options.qos as u8
        | u8::from(options.no_local) << 2
        | u8::from(options.retain_as_published) << 3
        | (options.retain_handling as u8) << 4
}

fn options_from(byte: u8) -> Result<SubscriptionOptions, WireError> {
    let qos =
        QoS::from_bits(byte & 0b11).ok_or_else(|| WireError::Message("a QoS above 2".into()))?;
    let retain_handling = match (byte >> 4) & 0b11 {
        0 => RetainHandling::OnSubscribe,
        1 => RetainHandling::OnNewSubscribe,
        2 => RetainHandling::Never,
        _ => return Err(WireError::Message("retain handling 3".into())),
    };
    Ok(SubscriptionOptions {
        qos,
        no_local: byte & 0b100 != 0,
        retain_as_published: byte & 0b1000 != 0,
        retain_handling,
    })
}

/// Who a client is: its will is published with its rights, wherever that happens.
fn put_client(buf: &mut BytesMut, client: &ClientInfo) {
    put_str(buf, client.client_id.as_str());
    match &client.username {
        Some(username) => {
            buf.put_u8(1);
            put_str(buf, username);
        }
        None => buf.put_u8(0),
    }
    buf.put_u8(client.protocol.level());
    put_str(buf, &client.remote_addr.to_string());
    put_str(buf, &client.listener);
    buf.put_u8(u8::from(client.certificate_identity));
}

fn get_client(body: &mut Bytes) -> Result<ClientInfo, WireError> {
    let client_id = ClientId::new(get_bytestring(body)?);
    let username = match get_u8(body)? {
        0 => None,
        _ => Some(Arc::from(&*get_bytestring(body)?)),
    };
    let protocol = match get_u8(body)? {
        3 => ProtocolVersion::V3_1,
        4 => ProtocolVersion::V3_1_1,
        5 => ProtocolVersion::V5,
        other => return Err(WireError::Message(format!("protocol level {other}"))),
    };
    let remote_addr: SocketAddr = get_bytestring(body)?
        .parse()
        .map_err(|_| WireError::Message("a client address".into()))?;
    let listener = Arc::from(&*get_bytestring(body)?);
    let certificate_identity = get_u8(body)? != 0;
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

pub(super) fn put_will(buf: &mut BytesMut, will: &PendingWill) {
    put_client(buf, &will.client);
    buf.put_u32(will.delay);
    // The will's expiry interval stays a property until it is published (it starts then).
    buf.put_u8(u8::from(
        will.message.properties.message_expiry_interval.is_some(),
    ));
    buf.put_u32(will.message.properties.message_expiry_interval.unwrap_or(0));
    put_message(buf, &will.message);
}

pub(super) fn get_will(body: &mut Bytes) -> Result<PendingWill, WireError> {
    let client = Arc::new(get_client(body)?);
    let delay = get_u32(body)?;
    let has_expiry = get_u8(body)? != 0;
    let expiry = get_u32(body)?;
    let mut message = get_message(body)?;
    message.expires_at = None;
    message.properties.message_expiry_interval = has_expiry.then_some(expiry);
    Ok(PendingWill {
        message,
        delay,
        client,
    })
}

pub(super) fn put_snapshot(buf: &mut BytesMut, snapshot: &SessionSnapshot) {
    put_str(buf, snapshot.client_id.as_str());
    buf.put_u32(snapshot.expiry_interval);
    put_len(buf, snapshot.subscriptions.len());
    for (filter, record) in &snapshot.subscriptions {
        put_str(buf, &filter.to_string());
        buf.put_u8(options_byte(&record.options));
        buf.put_u32(record.identifier.unwrap_or(0));
    }
    put_len(buf, snapshot.queued.len());
    for delivery in &snapshot.queued {
        put_delivery(buf, delivery);
    }
    put_len(buf, snapshot.inflight.len());
    for entry in &snapshot.inflight {
        buf.put_u16(entry.packet_id.get());
        match &entry.state {
            InflightState::AwaitingAck(delivery) => {
                buf.put_u8(0);
                put_delivery(buf, delivery);
            }
            InflightState::AwaitingComp { .. } => buf.put_u8(1),
        }
    }
    buf.put_u16(snapshot.next_packet_id.get());
    put_len(buf, snapshot.inbound_qos2.len());
    for id in &snapshot.inbound_qos2 {
        buf.put_u16(*id);
    }
    match &snapshot.pending_will {
        Some(will) => {
            buf.put_u8(1);
            put_will(buf, will);
        }
        None => buf.put_u8(0),
    }
}

pub(super) fn get_snapshot(body: &mut Bytes) -> Result<SessionSnapshot, WireError> {
    let client_id = ClientId::new(get_bytestring(body)?);
    let expiry_interval = get_u32(body)?;
    let count = bounded_count(body, 9)?;
    let mut subscriptions = Vec::with_capacity(count);
    for _ in 0..count {
        let text = get_bytestring(body)?;
        let filter = SubscriptionFilter::parse(&text, true)
            .map_err(|e| WireError::Route(text.to_string(), e.to_string()))?;
        let options = options_from(get_u8(body)?)?;
        let identifier = Some(get_u32(body)?).filter(|id| *id != 0);
        subscriptions.push((
            filter,
            SubscriptionRecord {
                options,
                identifier,
            },
        ));
    }
    let count = bounded_count(body, 8)?;
    let mut queued = Vec::with_capacity(count);
    for _ in 0..count {
        queued.push(get_delivery(body)?);
    }
    let count = bounded_count(body, 3)?;
    let mut inflight = Vec::with_capacity(count);
    for _ in 0..count {
        let packet_id = get_packet_id(body)?;
        let state = match get_u8(body)? {
            0 => InflightState::AwaitingAck(get_delivery(body)?),
            _ => InflightState::AwaitingComp { seq: 0 },
        };
        inflight.push(InflightEntry { packet_id, state });
    }
    let next_packet_id = get_packet_id(body)?;
    let count = bounded_count(body, 2)?;
    let mut inbound_qos2 = Vec::with_capacity(count);
    for _ in 0..count {
        inbound_qos2.push(get_u16(body)?);
    }
    let pending_will = match get_u8(body)? {
        0 => None,
        _ => Some(Box::new(get_will(body)?)),
    };
    Ok(SessionSnapshot {
        client_id,
        expiry_interval,
        subscriptions,
        queued,
        inflight,
        next_packet_id,
        inbound_qos2,
        pending_will,
    })
}

fn get_packet_id(body: &mut Bytes) -> Result<PacketId, WireError> {
    PacketId::new(get_u16(body)?).ok_or_else(|| WireError::Message("packet identifier 0".into()))
}

/// A count of items each at least `min_size` bytes long: one the body cannot hold is a lie.
fn bounded_count(body: &mut Bytes, min_size: usize) -> Result<usize, WireError> {
    let count = get_len(body)?;
    if count > bytes::Buf::remaining(body) / min_size.max(1) {
        return Err(WireError::Truncated);
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytestring::ByteString;

    use super::*;
    use crate::message::Message;

    #[test]
    fn a_session_survives_the_wire_whole() {
        let message = |text: &'static str| {
            let mut m = Message::new("s/1", text, QoS::ExactlyOnce, false);
            m.id = 7;
            Arc::new(m)
        };
        let delivery = |text| Delivery {
            share: 0,
            seq: 0,
            message: message(text),
            qos: QoS::AtLeastOnce,
            retain: false,
            subscription_ids: vec![5],
        };
        let mut will = Message::new("w", "bye", QoS::AtLeastOnce, true);
        will.properties.message_expiry_interval = Some(30);
        let snapshot = SessionSnapshot {
            client_id: ClientId::new("mover"),
            expiry_interval: 3600,
            subscriptions: vec![(
                SubscriptionFilter::parse(&ByteString::from_static("s/#"), true).unwrap(),
                SubscriptionRecord {
                    options: SubscriptionOptions {
                        qos: QoS::ExactlyOnce,
                        no_local: true,
                        retain_as_published: true,
                        retain_handling: RetainHandling::Never,
                    },
                    identifier: Some(5),
                },
            )],
            queued: vec![delivery("queued")],
            inflight: vec![
                InflightEntry {
                    packet_id: PacketId::new(41).unwrap(),
                    state: InflightState::AwaitingComp { seq: 0 },
                },
                InflightEntry {
                    packet_id: PacketId::new(42).unwrap(),
                    state: InflightState::AwaitingAck(delivery("inflight")),
                },
            ],
            next_packet_id: PacketId::new(43).unwrap(),
            inbound_qos2: vec![9, 10],
            pending_will: Some(Box::new(PendingWill {
                message: will,
                delay: 20,
                client: Arc::new(ClientInfo {
                    client_id: ClientId::new("mover"),
                    username: Some(Arc::from("alice")),
                    protocol: crate::codec::ProtocolVersion::V5,
                    remote_addr: std::net::SocketAddr::from(([10, 1, 2, 3], 40000)).into(),
                    listener: Arc::from("mqtts"),
                    certificate_identity: false,
                    connected_at: None,
                }),
            })),
        };
        let mut buf = BytesMut::new();
        put_snapshot(&mut buf, &snapshot);
        let back = get_snapshot(&mut buf.freeze()).expect("decodes");
        assert_eq!(back.client_id, snapshot.client_id);
        assert_eq!(back.expiry_interval, 3600);
        assert_eq!(back.subscriptions, snapshot.subscriptions);
        assert_eq!(back.queued[0].message.payload, "queued");
        assert_eq!(back.queued[0].message.id, 7);
        assert_eq!(back.queued[0].subscription_ids, [5]);
        let ids: Vec<u16> = back.inflight.iter().map(|e| e.packet_id.get()).collect();
        assert_eq!(ids, [41, 42]);
        assert!(matches!(
            back.inflight[0].state,
            InflightState::AwaitingComp { .. }
        ));
        assert_eq!(back.next_packet_id.get(), 43);
        assert_eq!(back.inbound_qos2, [9, 10]);
        let will = back.pending_will.expect("the will moves too");
        assert_eq!((will.delay, will.message.retain), (20, true));
        assert_eq!(will.message.properties.message_expiry_interval, Some(30));
        assert_eq!(will.client.username.as_deref(), Some("alice"));
        assert_eq!(will.client.remote_addr.to_string(), "10.1.2.3:40000");
    }
}
