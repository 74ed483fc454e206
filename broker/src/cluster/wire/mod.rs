//! The peer-link wire format, sans-IO: frames decoded from a buffer and encoded into one, no
//! sockets. A frame is a 4-byte big-endian length (of what follows), a 1-byte kind and the kind's
//! fields. Strings are UTF-8 with a 4-byte length, numbers big-endian. A message travels as an
//! MQTT 5 PUBLISH encoded by the broker's own codec, so it is checked on arrival exactly as a
//! client's would be.
//!
//! Decoding never panics on any input: "need more bytes" is `Ok(None)`, anything else is a
//! [`WireError`], after which the link is closed (a peer that sends garbage is not trusted to
//! resynchronise). `broker/fuzz` feeds this decoder random input.

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use crate::codec;
use crate::message::{Delivery, Message, RetainStamp, RetainedWrite};
use crate::session::{PendingWill, SessionSnapshot};
use crate::topic::SubscriptionFilter;

mod session;

/// The version of this format; a peer speaking another is refused at the handshake.
pub const PROTOCOL_VERSION: u16 = 2;
/// The largest frame accepted: an MQTT packet's maximum plus room for the frame's own fields.
pub const MAX_FRAME: usize = codec::MAX_REMAINING_LENGTH + 64 * 1024;

/// Why a peer's bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("frame of {0} bytes is larger than the limit")]
    TooLarge(usize),
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("frame ends inside a field")]
    Truncated,
    #[error("frame has {0} bytes after its last field")]
    Trailing(usize),
    #[error("a string is not UTF-8")]
    Utf8,
    #[error("bad route {0:?}: {1}")]
    Route(String, String),
    #[error("bad message: {0}")]
    Message(String),
}

impl WireError {
    /// A bounded label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::TooLarge(_) => "too_large",
            Self::UnknownKind(_) => "unknown_kind",
            Self::Truncated => "truncated",
            Self::Trailing(_) => "trailing",
            Self::Utf8 => "utf8",
            Self::Route(..) => "route",
            Self::Message(_) => "message",
        }
    }
}

/// The first frame each side sends on a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub protocol: u16,
    pub cluster: String,
    pub node_id: String,
    /// The sender's incarnation (its start time), as in its gossip identity.
    pub generation: u64,
}

/// A message forwarded to a node that has a matching route.
#[derive(Debug, Clone)]
pub struct Forward {
    /// The sender's numbering of what it forwards to this peer: `seq` counts up within `stream`,
    /// which the sender picks afresh whenever it starts following the peer. A copy sent again
    /// after a link broke carries its old number, and the receiver drops what it already had.
    pub stream: u64,
    pub seq: u64,
    pub message: Arc<Message>,
    /// Deliver to the node's direct subscribers with a matching filter.
    pub direct: bool,
    /// Shared groups the sending node picked this node for; it picks one member of each.
    pub groups: Vec<SubscriptionFilter>,
}

/// Everything that travels on a peer link.
#[derive(Debug, Clone)]
pub enum Frame {
    Hello(Hello),
    /// A snapshot of the sender's routes follows, ending with [`Frame::RoutesEnd`]; deltas numbered
    /// after `version` follow it.
    RoutesBegin {
        version: u64,
    },
    RoutesChunk(Vec<SubscriptionFilter>),
    RoutesEnd,
    /// One route appeared (`added`) or went on the sender; `version` is one more than the last.
    RouteDelta {
        version: u64,
        added: bool,
        route: SubscriptionFilter,
    },
    /// The receiver found a gap in the deltas and asks for a new snapshot.
    RoutesRequest,
    Forward(Forward),
    /// A retained message was written (or deleted) on the sender; part of the state a new link's
    /// snapshot carries in full.
    Retained(RetainedWrite),
    /// The end of what a new link carries first (routes, then retained messages): the receiver is
    /// caught up with the sender.
    SyncEnd,
    /// The receiver has applied the sender's routes up to `version`.
    RoutesAck {
        version: u64,
    },
    /// The receiver holds the sender's forwarded messages of `stream` up to `seq`.
    ForwardAck {
        stream: u64,
        seq: u64,
    },
    /// To a client id's arbiter: this node has a CONNECT for it.
    Claim(Claim),
    /// The arbiter's answer: who held the client id before.
    ClaimReply {
        request: u64,
        previous: Option<Owner>,
    },
    /// To the node that held a session: let its connection go and hand the session over.
    TakeOver {
        request: u64,
        client_id: String,
        clean_start: bool,
    },
    /// The session (or `None`: nothing left to move) for a [`Frame::TakeOver`].
    HandOver {
        request: u64,
        snapshot: Option<Box<SessionSnapshot>>,
    },
    /// A delivery for a session that has moved to the receiver, from the node it left.
    SessionDelivery {
        client_id: String,
        delivery: Delivery,
    },
    /// To the node a session left: this node's routes for it are in place everywhere.
    MoveDone {
        client_id: String,
    },
    /// From the node a session left: nothing more for it follows.
    MoveEnded {
        client_id: String,
    },
    /// To an arbiter: these sessions live on the sender (after the arbiter changed).
    Register(Vec<(String, u64)>),
    /// From an arbiter: another node holds a newer connection for this client id.
    Evict {
        client_id: String,
    },
    /// To a client's will keeper: publish this will if the sender dies.
    WillKeep(Box<WillKeep>),
    /// To a client's will keeper: the will is gone (published, discarded or the client left).
    WillDrop {
        client_id: String,
    },
    /// To a client id's arbiter: who holds it? (answered with [`Frame::ClaimReply`]).
    Locate {
        request: u64,
        client_id: String,
    },
    /// To the node that holds a client id (the admin API): disconnect the client, or also end its
    /// session (`end`).
    Kick {
        request: u64,
        client_id: String,
        end: bool,
    },
    /// The answer to [`Frame::Kick`]: 0 no such client, 1 not connected, 2 done.
    Kicked {
        request: u64,
        outcome: u8,
    },
}

/// A claim of a client id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub request: u64,
    pub client_id: String,
    /// When the claimant accepted the CONNECT: the newer connection wins a conflict.
    pub stamp: u64,
}

/// A node that holds (or held) a client id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub node_id: String,
    pub stamp: u64,
}

/// A will kept for a client connected to another node.
#[derive(Debug, Clone)]
pub struct WillKeep {
    pub client_id: String,
    /// The generation of the owner node: its will is published when that incarnation dies.
    pub owner_generation: u64,
    pub will: PendingWill,
}

mod kind {
    pub const HELLO: u8 = 1;
    pub const ROUTES_BEGIN: u8 = 2;
    pub const ROUTES_CHUNK: u8 = 3;
    pub const ROUTES_END: u8 = 4;
    pub const ROUTE_DELTA: u8 = 5;
    pub const ROUTES_REQUEST: u8 = 6;
    pub const FORWARD: u8 = 7;
    pub const RETAINED: u8 = 8;
    pub const SYNC_END: u8 = 9;
    pub const ROUTES_ACK: u8 = 10;
    pub const CLAIM: u8 = 11;
    pub const CLAIM_REPLY: u8 = 12;
    pub const TAKE_OVER: u8 = 13;
    pub const HAND_OVER: u8 = 14;
    pub const SESSION_DELIVERY: u8 = 15;
    pub const MOVE_DONE: u8 = 16;
    pub const MOVE_ENDED: u8 = 17;
    pub const REGISTER: u8 = 18;
    pub const EVICT: u8 = 19;
    pub const WILL_KEEP: u8 = 20;
    pub const WILL_DROP: u8 = 21;
    pub const LOCATE: u8 = 22;
    pub const KICK: u8 = 23;
    pub const KICKED: u8 = 24;
    pub const FORWARD_ACK: u8 = 25;
}

impl Frame {
    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Hello(_) => "hello",
            Self::RoutesBegin { .. } => "routes_begin",
            Self::RoutesChunk(_) => "routes_chunk",
            Self::RoutesEnd => "routes_end",
            Self::RouteDelta { .. } => "route_delta",
            Self::RoutesRequest => "routes_request",
            Self::Forward(_) => "forward",
            Self::Retained(_) => "retained",
            Self::SyncEnd => "sync_end",
            Self::RoutesAck { .. } => "routes_ack",
            Self::ForwardAck { .. } => "forward_ack",
            Self::Claim(_) => "claim",
            Self::ClaimReply { .. } => "claim_reply",
            Self::TakeOver { .. } => "take_over",
            Self::HandOver { .. } => "hand_over",
            Self::SessionDelivery { .. } => "session_delivery",
            Self::MoveDone { .. } => "move_done",
            Self::MoveEnded { .. } => "move_ended",
            Self::Register(_) => "register",
            Self::Evict { .. } => "evict",
            Self::WillKeep(_) => "will_keep",
            Self::WillDrop { .. } => "will_drop",
            Self::Locate { .. } => "locate",
            Self::Kick { .. } => "kick",
            Self::Kicked { .. } => "kicked",
        }
    }
}

/// Appends `frame` to `buf`.
pub fn encode(frame: &Frame, buf: &mut BytesMut) {
    if let Frame::Forward(forward) = frame {
        return encode_forward(forward, buf);
    }
    let start = buf.len();
    buf.put_u32(0); // length, filled in below
    match frame {
        Frame::Hello(hello) => {
            buf.put_u8(kind::HELLO);
            buf.put_u16(hello.protocol);
            put_str(buf, &hello.cluster);
            put_str(buf, &hello.node_id);
            buf.put_u64(hello.generation);
        }
        Frame::RoutesBegin { version } => {
            buf.put_u8(kind::ROUTES_BEGIN);
            buf.put_u64(*version);
        }
        Frame::RoutesChunk(routes) => {
            buf.put_u8(kind::ROUTES_CHUNK);
            put_len(buf, routes.len());
            for route in routes {
                put_str(buf, &route.to_string());
            }
        }
        Frame::RoutesEnd => buf.put_u8(kind::ROUTES_END),
        Frame::RouteDelta {
            version,
            added,
            route,
        } => {
            buf.put_u8(kind::ROUTE_DELTA);
            buf.put_u64(*version);
            buf.put_u8(u8::from(*added));
            put_str(buf, &route.to_string());
        }
        Frame::RoutesRequest => buf.put_u8(kind::ROUTES_REQUEST),
        Frame::Forward(_) => {} // encoded above
        Frame::SyncEnd => buf.put_u8(kind::SYNC_END),
        Frame::RoutesAck { version } => {
            buf.put_u8(kind::ROUTES_ACK);
            buf.put_u64(*version);
        }
        Frame::ForwardAck { stream, seq } => {
            buf.put_u8(kind::FORWARD_ACK);
            buf.put_u64(*stream);
            buf.put_u64(*seq);
        }
        Frame::Claim(claim) => {
            buf.put_u8(kind::CLAIM);
            buf.put_u64(claim.request);
            put_str(buf, &claim.client_id);
            buf.put_u64(claim.stamp);
        }
        Frame::ClaimReply { request, previous } => {
            buf.put_u8(kind::CLAIM_REPLY);
            buf.put_u64(*request);
            match previous {
                Some(owner) => {
                    buf.put_u8(1);
                    put_str(buf, &owner.node_id);
                    buf.put_u64(owner.stamp);
                }
                None => buf.put_u8(0),
            }
        }
        Frame::TakeOver {
            request,
            client_id,
            clean_start,
        } => {
            buf.put_u8(kind::TAKE_OVER);
            buf.put_u64(*request);
            put_str(buf, client_id);
            buf.put_u8(u8::from(*clean_start));
        }
        Frame::HandOver { request, snapshot } => {
            buf.put_u8(kind::HAND_OVER);
            buf.put_u64(*request);
            match snapshot {
                Some(snapshot) => {
                    buf.put_u8(1);
                    session::put_snapshot(buf, snapshot);
                }
                None => buf.put_u8(0),
            }
        }
        Frame::SessionDelivery {
            client_id,
            delivery,
        } => {
            buf.put_u8(kind::SESSION_DELIVERY);
            put_str(buf, client_id);
            session::put_delivery(buf, delivery);
        }
        Frame::MoveDone { client_id } => {
            buf.put_u8(kind::MOVE_DONE);
            put_str(buf, client_id);
        }
        Frame::MoveEnded { client_id } => {
            buf.put_u8(kind::MOVE_ENDED);
            put_str(buf, client_id);
        }
        Frame::Register(owners) => {
            buf.put_u8(kind::REGISTER);
            put_len(buf, owners.len());
            for (client_id, stamp) in owners {
                put_str(buf, client_id);
                buf.put_u64(*stamp);
            }
        }
        Frame::Evict { client_id } => {
            buf.put_u8(kind::EVICT);
            put_str(buf, client_id);
        }
        Frame::WillKeep(keep) => {
            buf.put_u8(kind::WILL_KEEP);
            put_str(buf, &keep.client_id);
            buf.put_u64(keep.owner_generation);
            session::put_will(buf, &keep.will);
        }
        Frame::WillDrop { client_id } => {
            buf.put_u8(kind::WILL_DROP);
            put_str(buf, client_id);
        }
        Frame::Locate { request, client_id } => {
            buf.put_u8(kind::LOCATE);
            buf.put_u64(*request);
            put_str(buf, client_id);
        }
        Frame::Kick {
            request,
            client_id,
            end,
        } => {
            buf.put_u8(kind::KICK);
            buf.put_u64(*request);
            put_str(buf, client_id);
            buf.put_u8(u8::from(*end));
        }
        Frame::Kicked { request, outcome } => {
            buf.put_u8(kind::KICKED);
            buf.put_u64(*request);
            buf.put_u8(*outcome);
        }
        Frame::Retained(write) => {
            buf.put_u8(kind::RETAINED);
            buf.put_u64(write.stamp.millis);
            put_str(buf, &write.stamp.origin);
            put_str(buf, &write.topic);
            match &write.message {
                Some(message) => {
                    buf.put_u8(1);
                    put_message(buf, message);
                }
                None => buf.put_u8(0),
            }
        }
    }
    let len = buf.len() - start - 4;
    // Frames are built from values that fit: a message is at most an MQTT packet.
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Appends a [`Frame::Forward`] frame for `forward` to `buf` (without building the frame).
pub fn encode_forward(forward: &Forward, buf: &mut BytesMut) {
    let start = buf.len();
    buf.put_u32(0); // length, filled in below
    buf.put_u8(kind::FORWARD);
    buf.put_u64(forward.stream);
    buf.put_u64(forward.seq);
    buf.put_u8(u8::from(forward.direct));
    put_len(buf, forward.groups.len());
    for group in &forward.groups {
        put_str(buf, &group.to_string());
    }
    put_message(buf, &forward.message);
    let len = buf.len() - start - 4;
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Takes one whole frame off the front of `buf`: `Ok(None)` until one has arrived.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, WireError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > MAX_FRAME {
        return Err(WireError::TooLarge(len));
    }
    if buf.len() < 4 + len {
        buf.reserve(4 + len - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    let mut body = buf.split_to(len).freeze();
    let frame = decode_body(&mut body)?;
    if body.has_remaining() {
        return Err(WireError::Trailing(body.remaining()));
    }
    Ok(Some(frame))
}

fn decode_body(body: &mut Bytes) -> Result<Frame, WireError> {
    let kind = get_u8(body)?;
    Ok(match kind {
        kind::HELLO => Frame::Hello(Hello {
            protocol: get_u16(body)?,
            cluster: get_str(body)?,
            node_id: get_str(body)?,
            generation: get_u64(body)?,
        }),
        kind::ROUTES_BEGIN => Frame::RoutesBegin {
            version: get_u64(body)?,
        },
        kind::ROUTES_CHUNK => {
            let count = get_len(body)?;
            // Each route takes at least its 4-byte length: a count larger than the body is a lie.
            if count > body.remaining() / 4 {
                return Err(WireError::Truncated);
            }
            let mut routes = Vec::with_capacity(count);
            for _ in 0..count {
                routes.push(get_route(body)?);
            }
            Frame::RoutesChunk(routes)
        }
        kind::ROUTES_END => Frame::RoutesEnd,
        kind::ROUTE_DELTA => Frame::RouteDelta {
            version: get_u64(body)?,
            added: get_u8(body)? != 0,
            route: get_route(body)?,
        },
        kind::ROUTES_REQUEST => Frame::RoutesRequest,
        kind::FORWARD => {
            let stream = get_u64(body)?;
            let seq = get_u64(body)?;
            let direct = get_u8(body)? != 0;
            let count = get_len(body)?;
            if count > body.remaining() / 4 {
                return Err(WireError::Truncated);
            }
            let mut groups = Vec::with_capacity(count);
            for _ in 0..count {
                groups.push(get_route(body)?);
            }
            let message = Arc::new(get_message(body)?);
            Frame::Forward(Forward {
                stream,
                seq,
                message,
                direct,
                groups,
            })
        }
        kind::SYNC_END => Frame::SyncEnd,
        kind::ROUTES_ACK => Frame::RoutesAck {
            version: get_u64(body)?,
        },
        kind::FORWARD_ACK => Frame::ForwardAck {
            stream: get_u64(body)?,
            seq: get_u64(body)?,
        },
        kind::CLAIM => Frame::Claim(Claim {
            request: get_u64(body)?,
            client_id: get_str(body)?,
            stamp: get_u64(body)?,
        }),
        kind::CLAIM_REPLY => {
            let request = get_u64(body)?;
            let previous = match get_u8(body)? {
                0 => None,
                _ => Some(Owner {
                    node_id: get_str(body)?,
                    stamp: get_u64(body)?,
                }),
            };
            Frame::ClaimReply { request, previous }
        }
        kind::TAKE_OVER => Frame::TakeOver {
            request: get_u64(body)?,
            client_id: get_str(body)?,
            clean_start: get_u8(body)? != 0,
        },
        kind::HAND_OVER => {
            let request = get_u64(body)?;
            let snapshot = match get_u8(body)? {
                0 => None,
                _ => Some(Box::new(session::get_snapshot(body)?)),
            };
            Frame::HandOver { request, snapshot }
        }
        kind::SESSION_DELIVERY => Frame::SessionDelivery {
            client_id: get_str(body)?,
            delivery: session::get_delivery(body)?,
        },
        kind::MOVE_DONE => Frame::MoveDone {
            client_id: get_str(body)?,
        },
        kind::MOVE_ENDED => Frame::MoveEnded {
            client_id: get_str(body)?,
        },
        kind::REGISTER => {
            let count = get_len(body)?;
            if count > body.remaining() / 12 {
                return Err(WireError::Truncated);
            }
            let mut owners = Vec::with_capacity(count);
            for _ in 0..count {
                owners.push((get_str(body)?, get_u64(body)?));
            }
            Frame::Register(owners)
        }
        kind::EVICT => Frame::Evict {
            client_id: get_str(body)?,
        },
        kind::WILL_KEEP => Frame::WillKeep(Box::new(WillKeep {
            client_id: get_str(body)?,
            owner_generation: get_u64(body)?,
            will: session::get_will(body)?,
        })),
        kind::WILL_DROP => Frame::WillDrop {
            client_id: get_str(body)?,
        },
        kind::LOCATE => Frame::Locate {
            request: get_u64(body)?,
            client_id: get_str(body)?,
        },
        kind::KICK => Frame::Kick {
            request: get_u64(body)?,
            client_id: get_str(body)?,
            end: get_u8(body)? != 0,
        },
        kind::KICKED => Frame::Kicked {
            request: get_u64(body)?,
            outcome: get_u8(body)?,
        },
        kind::RETAINED => {
            let millis = get_u64(body)?;
            let origin: Arc<str> = Arc::from(get_str(body)?);
            let topic = get_bytestring(body)?;
            let message = match get_u8(body)? {
                0 => None,
                _ => {
                    let message = get_message(body)?;
                    if message.topic != topic {
                        return Err(WireError::Message(
                            "a retained message on another topic".into(),
                        ));
                    }
                    Some(Arc::new(message))
                }
            };
            Frame::Retained(RetainedWrite {
                topic,
                stamp: RetainStamp { millis, origin },
                message,
            })
        }
        other => return Err(WireError::UnknownKind(other)),
    })
}

/// A message: its id, then an MQTT 5 PUBLISH (with its remaining expiry), length-prefixed.
pub(super) fn put_message(buf: &mut BytesMut, message: &Message) {
    let mut packet = BytesMut::new();
    message.encode_as_publish(
        message.remaining_expiry(std::time::Instant::now()),
        &mut packet,
    );
    buf.put_u64(message.id);
    put_len(buf, packet.len());
    buf.put_slice(&packet);
}

pub(super) fn get_message(body: &mut Bytes) -> Result<Message, WireError> {
    let id = get_u64(body)?;
    let len = get_len(body)?;
    if body.remaining() < len {
        return Err(WireError::Truncated);
    }
    let packet = BytesMut::from(&body.split_to(len)[..]);
    let (message, expiry) = Message::decode_from_publish(packet, id).map_err(WireError::Message)?;
    Ok(message.with_expiry_interval(expiry))
}

pub(super) fn put_len(buf: &mut BytesMut, len: usize) {
    buf.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
}

pub(super) fn put_str(buf: &mut BytesMut, s: &str) {
    put_len(buf, s.len());
    buf.put_slice(s.as_bytes());
}

pub(super) fn get_u8(body: &mut Bytes) -> Result<u8, WireError> {
    body.try_get_u8().map_err(|_| WireError::Truncated)
}

pub(super) fn get_u16(body: &mut Bytes) -> Result<u16, WireError> {
    body.try_get_u16().map_err(|_| WireError::Truncated)
}

pub(super) fn get_u32(body: &mut Bytes) -> Result<u32, WireError> {
    body.try_get_u32().map_err(|_| WireError::Truncated)
}

pub(super) fn get_u64(body: &mut Bytes) -> Result<u64, WireError> {
    body.try_get_u64().map_err(|_| WireError::Truncated)
}

pub(super) fn get_len(body: &mut Bytes) -> Result<usize, WireError> {
    let len = body.try_get_u32().map_err(|_| WireError::Truncated)?;
    Ok(len as usize)
}

pub(super) fn get_bytestring(body: &mut Bytes) -> Result<ByteString, WireError> {
    let len = get_len(body)?;
    if body.remaining() < len {
        return Err(WireError::Truncated);
    }
    ByteString::try_from(body.split_to(len)).map_err(|_| WireError::Utf8)
}

pub(super) fn get_str(body: &mut Bytes) -> Result<String, WireError> {
    get_bytestring(body).map(|s| s.to_string())
}

fn get_route(body: &mut Bytes) -> Result<SubscriptionFilter, WireError> {
    let text = get_bytestring(body)?;
    SubscriptionFilter::parse(&text, true)
        .map_err(|error| WireError::Route(text.to_string(), error.to_string()))
}

#[cfg(test)]
mod tests;
