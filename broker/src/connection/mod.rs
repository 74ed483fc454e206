//! One client connection: a single task that reads and decodes packets, applies them, and writes what
//! the session has for the client, over any byte stream (TCP now; TLS and WebSocket wrap the same).
//!
//! The task owns its read and write buffers. Everything a read produces (acks, SUBACKs) and everything
//! the session queue yields is encoded into one write buffer and written in batches; the loop keeps
//! reading while a write is pending, so a client that writes while we write cannot deadlock us, and it
//! stops pulling from the session queue while the buffer is full, which leaves slow-consumer handling
//! to the queue's counted overflow policy.

mod aliases;
mod cancelled;
mod handshake;
mod inbound;
mod outbound;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tracing::{debug, info};

use crate::broker::Broker;
use crate::codec::{self, Disconnect, EncodeError, Packet, ProtocolVersion, ReasonCode};
use crate::hook::{ClientInfo, EnhancedAuth};
use crate::limits::TokenBucket;
use crate::listener::ListenerHandle;
use crate::session::{ConnectionControl, PendingWill, Session};
use crate::stats::Stats;

use aliases::{InboundAliases, OutboundAliases};

/// Stop pulling deliveries from the session once this much is waiting to be written.
const WRITE_HIGH_WATER: usize = 64 * 1024;
/// Stop reading (and so producing acks) once this much is waiting: the client is not reading.
const WRITE_HARD_LIMIT: usize = 4 * 1024 * 1024;
/// Reads of already-arrived input a kicked connection makes before it closes.
const DRAIN_READS: usize = 4;
/// How long the final DISCONNECT may take to write before the socket is dropped anyway.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a connection ends.
#[derive(Debug)]
pub(crate) enum Close {
    /// The server ends it: v5 clients get DISCONNECT with this reason (and the text as Reason String).
    Server(ReasonCode, Cow<'static, str>),
    /// The client sent DISCONNECT; `will` is false for reason 0x00 [MQTT-3.1.2-10].
    Client { will: bool },
    /// The network connection closed or failed.
    Network,
}

impl Close {
    fn protocol(message: impl Into<Cow<'static, str>>) -> Self {
        Self::Server(ReasonCode::PROTOCOL_ERROR, message.into())
    }
}

/// Entry point for listeners: runs one client connection to its end.
pub async fn serve<S>(
    broker: Arc<Broker>,
    stream: S,
    remote_addr: SocketAddr,
    listener: Arc<ListenerHandle>,
    identity: Option<String>,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin,
{
    let (reader, writer) = tokio::io::split(stream);
    let mut io = Io {
        reader,
        writer,
        read_buf: BytesMut::with_capacity(READ_BUF_INITIAL),
        stats: Arc::clone(&broker.stats),
    };
    // Boxed: the handshake's state is only needed until CONNACK, not for the life of the connection.
    let handshake = handshake::accept(&broker, &mut io, remote_addr, listener, identity);
    let connection = match Box::pin(handshake).await {
        Ok(connection) => connection,
        Err(reason) => {
            debug!(%remote_addr, %reason, "connection refused before CONNACK");
            return;
        }
    };
    connection.run(io).await;
}

/// Read buffers start small, grow (doubling) only while a large packet arrives, and shrink back once
/// it is consumed: most connections are idle most of the time, and per-connection memory is what
/// limits how many clients one broker holds.
const READ_BUF_INITIAL: usize = 512;
/// An empty read buffer larger than this is replaced by a small one.
const READ_BUF_KEEP: usize = 16 * 1024;

fn make_room(buf: &mut BytesMut) {
    if buf.is_empty() && buf.capacity() > READ_BUF_KEEP {
        *buf = BytesMut::with_capacity(READ_BUF_INITIAL);
    } else if buf.capacity() - buf.len() < READ_BUF_INITIAL / 2 {
        buf.reserve(buf.len().max(READ_BUF_INITIAL));
    }
}

/// The socket halves and the read buffer.
struct Io<R, W> {
    reader: R,
    writer: W,
    read_buf: BytesMut,
    stats: Arc<Stats>,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Io<R, W> {
    /// Reads more bytes; `Ok(false)` on end of stream.
    async fn fill(&mut self) -> std::io::Result<bool> {
        make_room(&mut self.read_buf);
        let n = self.reader.read_buf(&mut self.read_buf).await?;
        self.stats.bytes_received.inc_by(n as u64);
        Ok(n > 0)
    }

    /// Writes a whole buffer, for the handshake and the final packet.
    async fn write_all(&mut self, buf: &mut BytesMut) -> std::io::Result<()> {
        self.stats.bytes_sent.inc_by(buf.len() as u64);
        self.writer.write_all(buf).await?;
        buf.clear();
        self.writer.flush().await
    }
}

/// The state of an established connection (after a successful CONNACK).
pub(crate) struct Connection {
    broker: Arc<Broker>,
    client: ClientInfo,
    protocol: ProtocolVersion,
    session: Arc<Session>,
    control: Arc<ConnectionControl>,
    generation: u64,
    /// 1.5 × keep alive, or `None` when keep alive is 0 [MQTT-3.1.2-22].
    keep_alive: Option<Duration>,
    last_received: Instant,
    /// Session expiry asked for in CONNECT (after capping); DISCONNECT may not raise it from 0.
    connect_expiry: u32,
    /// Outbound QoS 1/2 window: min(client's Receive Maximum, our max_inflight).
    inflight_window: usize,
    /// The client's Maximum Packet Size (u32::MAX when it set none).
    client_max_packet_size: u32,
    /// Whether reason strings and user properties may go on packets other than CONNACK/DISCONNECT.
    problem_information: bool,
    inbound_aliases: InboundAliases,
    outbound_aliases: OutboundAliases,
    /// An enhanced re-authentication in progress (MQTT 5, 4.12.1).
    reauth: Option<Box<dyn EnhancedAuth>>,
    auth_method: Option<bytestring::ByteString>,
    /// The will from CONNECT; handed to the broker when the connection ends.
    /// Boxed like the session's copy: most clients have none.
    will: Option<Box<PendingWill>>,
    /// `limits.max_publish_rate`, when set.
    publish_rate: Option<TokenBucket>,
    /// Released when the connection ends.
    _slot: handshake::ConnectionSlot,
    write_buf: BytesMut,
}

impl Connection {
    async fn run<R, W>(mut self, mut io: Io<R, W>)
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let close = self.event_loop(&mut io).await;
        // Boxed for the same reason as the handshake: needed once, at the end.
        Box::pin(self.finish(&mut io, close)).await;
    }

    async fn event_loop<R, W>(&mut self, io: &mut Io<R, W>) -> Close
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        if let Err(close) = self.resend_inflight() {
            return close;
        }
        // The keep-alive timer is checked lazily: it fires at the earliest possible deadline and
        // re-arms from the last packet, so a busy connection never touches the timer wheel.
        let keep_alive = tokio::time::sleep(self.keep_alive.unwrap_or(Duration::from_secs(86_400)));
        tokio::pin!(keep_alive);
        let control = Arc::clone(&self.control);
        let shutdown = self.broker.shutdown.clone();
        // Made once, not per turn of the loop: each one made and dropped registers and
        // unregisters a waiter under its token's lock (see `cancelled`).
        let kicked = cancelled::Cancelled::new(control.cancel_token());
        tokio::pin!(kicked);
        let shutting_down = cancelled::Cancelled::new(&shutdown);
        tokio::pin!(shutting_down);
        let Io {
            reader,
            writer,
            read_buf,
            stats,
        } = io;
        // Packets that arrived in the same read as CONNECT are already in the buffer.
        if let Err(close) = self.process_input(read_buf).await {
            return close;
        }
        loop {
            if self.write_buf.len() < WRITE_HIGH_WATER
                && let Err(close) = self.pull_deliveries()
            {
                return close;
            }
            tokio::select! {
                biased;
                () = &mut kicked => {
                    // What the client sent before it was kicked still counts: a DISCONNECT already
                    // on its way decides the will, not the kick.
                    if let Some(close) = Box::pin(self.drain_received(reader, read_buf)).await {
                        return close;
                    }
                    let reason = control.reason().unwrap_or(ReasonCode::ADMINISTRATIVE_ACTION);
                    return Close::Server(reason, Cow::Borrowed(reason.name()));
                }
                () = &mut shutting_down => {
                    return Close::Server(ReasonCode::SERVER_SHUTTING_DOWN, Cow::Borrowed("server shutting down"));
                }
                written = writer.write(&self.write_buf), if !self.write_buf.is_empty() => {
                    match written {
                        Ok(0) | Err(_) => return Close::Network,
                        Ok(n) => {
                            stats.bytes_sent.inc_by(n as u64);
                            self.write_buf.advance(n);
                            if self.write_buf.is_empty() && writer.flush().await.is_err() {
                                return Close::Network;
                            }
                        }
                    }
                }
                read = reader.read_buf(read_buf), if self.write_buf.len() < WRITE_HARD_LIMIT => {
                    match read {
                        Ok(0) | Err(_) => return Close::Network,
                        Ok(n) => {
                            stats.bytes_received.inc_by(n as u64);
                            if let Err(close) = self.process_input(read_buf).await {
                                return close;
                            }
                            make_room(read_buf);
                        }
                    }
                }
                () = control.queued(), if self.write_buf.len() < WRITE_HIGH_WATER => {}
                () = &mut keep_alive, if self.keep_alive.is_some() => {
                    let Some(limit) = self.keep_alive else { continue };
                    let deadline = self.last_received + limit;
                    if Instant::now() >= deadline {
                        return Close::Server(ReasonCode::KEEP_ALIVE_TIMEOUT, Cow::Borrowed("keep alive timeout"));
                    }
                    keep_alive.as_mut().reset(deadline);
                }
            }
        }
    }

    /// Applies input that has already arrived, without waiting for more; returns how the connection
    /// ended if that input ended it.
    async fn drain_received<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        read_buf: &mut BytesMut,
    ) -> Option<Close> {
        for _ in 0..DRAIN_READS {
            if let Err(close) = self.process_input(read_buf).await {
                return Some(close);
            }
            // A zero timeout polls the read once: it returns data already in the socket buffer.
            match tokio::time::timeout(Duration::ZERO, reader.read_buf(read_buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                Ok(Ok(_)) | Ok(Err(_)) => return Some(Close::Network),
                Err(_) => return None,
            }
        }
        None
    }

    /// Decodes and applies every whole packet in the read buffer.
    async fn process_input(&mut self, read_buf: &mut BytesMut) -> Result<(), Close> {
        let max = self.broker.config.limits.max_packet_size;
        loop {
            let packet = match codec::decode(read_buf, self.protocol, max) {
                Ok(Some(packet)) => packet,
                Ok(None) => return Ok(()),
                Err(error) => {
                    self.broker.stats.protocol_errors.inc();
                    if matches!(error, codec::DecodeError::TooLarge { .. }) {
                        self.broker
                            .stats
                            .limit_hit(crate::stats::LimitKind::PacketSize);
                    }
                    debug!(client_id = %self.client.client_id, %error, "malformed input");
                    return Err(Close::Server(
                        error.reason_code(),
                        Cow::Owned(error.to_string()),
                    ));
                }
            };
            self.last_received = Instant::now();
            let is_publish = matches!(packet, Packet::Publish(_));
            match packet {
                // Boxed, like every rare await here: this future is part of every connection's
                // task for its whole life, and is as large as its largest await point.
                Packet::Auth(auth) if self.protocol.is_v5() => Box::pin(self.on_auth(auth)).await?,
                packet => self.handle(packet)?,
            }
            // Deliveries this packet caused (to this same client) go out before the answers to
            // later packets in the same read.
            if self.write_buf.len() < WRITE_HIGH_WATER {
                self.pull_deliveries()?;
            }
            if is_publish {
                self.throttle_publishes().await;
            }
        }
    }

    /// Holds a client to `limits.max_publish_rate` by pausing its reads: nothing is dropped, the
    /// client's own flow control slows it down.
    async fn throttle_publishes(&mut self) {
        let Some(bucket) = self.publish_rate.as_mut() else {
            return;
        };
        if let Some(wait) = bucket.take_or_wait(std::time::Instant::now()) {
            self.broker
                .stats
                .limit_hit(crate::stats::LimitKind::PublishRate);
            Box::pin(tokio::time::sleep(wait)).await;
        }
    }

    /// Encodes a control packet into the write buffer. Reason strings and user properties are dropped
    /// if the packet would otherwise exceed the client's Maximum Packet Size [MQTT-3.1.2-25].
    fn send(&mut self, packet: &Packet) -> Result<(), Close> {
        match codec::encode(
            packet,
            self.protocol,
            self.client_max_packet_size,
            &mut self.write_buf,
        ) {
            Ok(_) => Ok(()),
            Err(EncodeError::TooLarge { .. }) => {
                let bare = strip_diagnostics(packet);
                codec::encode(
                    &bare,
                    self.protocol,
                    self.client_max_packet_size,
                    &mut self.write_buf,
                )
                .map(drop)
                .map_err(|e| {
                    Close::Server(
                        ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR,
                        Cow::Owned(e.to_string()),
                    )
                })
            }
            Err(e) => Err(Close::Server(
                ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR,
                Cow::Owned(e.to_string()),
            )),
        }
    }

    /// Ends the connection: tells a v5 client why, lets go of the session, and notifies hooks.
    async fn finish<R, W>(self, io: &mut Io<R, W>, close: Close)
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let (publish_will, reason) = match &close {
            Close::Client { will } => (*will, None),
            Close::Network => (true, None),
            Close::Server(reason, message) => {
                debug!(client_id = %self.client.client_id, %reason, %message, "server closes connection");
                (true, Some(*reason))
            }
        };
        let mut write_buf = self.write_buf;
        if let (Close::Server(reason, message), true) = (&close, self.protocol.is_v5()) {
            let mut disconnect = Disconnect::new(*reason);
            disconnect.properties.reason_string =
                Some(bytestring::ByteString::from(message.to_string()));
            let packet = Packet::Disconnect(disconnect);
            if codec::encode(
                &packet,
                self.protocol,
                self.client_max_packet_size,
                &mut write_buf,
            )
            .is_err()
            {
                let bare = Packet::Disconnect(Disconnect::new(*reason));
                let _ = codec::encode(
                    &bare,
                    self.protocol,
                    self.client_max_packet_size,
                    &mut write_buf,
                );
            }
        }
        if !write_buf.is_empty() && !matches!(close, Close::Network) {
            let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, io.write_all(&mut write_buf)).await;
        }
        let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, io.writer.shutdown()).await;

        self.broker.stats.connections.dec();
        let will = self.will.filter(|_| publish_will);
        self.broker.detach(&self.session, self.generation, will);
        crate::sys::client_notice(&self.broker, &self.client, false);
        for hook in self.broker.hooks.iter() {
            hook.on_disconnect(&self.client, reason);
        }
        info!(client_id = %self.client.client_id, remote = %self.client.remote_addr, ?reason, "client disconnected");
    }
}

/// The same packet without Reason String and User Properties, which may be dropped to fit a size limit.
fn strip_diagnostics(packet: &Packet) -> Packet {
    let mut packet = packet.clone();
    match &mut packet {
        Packet::PubAck(ack) | Packet::PubRec(ack) | Packet::PubRel(ack) | Packet::PubComp(ack) => {
            ack.properties = Default::default();
        }
        Packet::SubAck(ack) => ack.properties = Default::default(),
        Packet::UnsubAck(ack) => ack.properties = Default::default(),
        Packet::Disconnect(d) => {
            d.properties.reason_string = None;
            d.properties.user_properties.clear();
        }
        Packet::Auth(a) => {
            a.properties.reason_string = None;
            a.properties.user_properties.clear();
        }
        Packet::ConnAck(c) => {
            c.properties.reason_string = None;
            c.properties.user_properties.clear();
        }
        _ => {}
    }
    packet
}
