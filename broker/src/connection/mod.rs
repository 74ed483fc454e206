//! One client connection: a single task that reads and decodes packets, applies them, and writes what
//! the session has for the client, over any byte stream (TCP, TLS, WebSocket).
//!
//! Everything a read produces (acks, SUBACKs) and everything the session queue yields is encoded into
//! one write buffer and written in batches; the loop keeps reading while a write is pending, so a
//! client that writes while we write cannot deadlock us, and it stops pulling from the session queue
//! while the buffer is full, which leaves slow-consumer handling to the queue's counted overflow
//! policy.
//!
//! An idle connection is what a broker holds most of, so its state is kept small: the loop waits on
//! its sources by polling them in one function rather than holding a future for each, kicks and
//! deliveries arrive as flags on the [`ConnectionControl`], and the read and write buffers are let
//! go of whenever they are empty.

mod aliases;
mod handshake;
mod inbound;
mod io;
mod outbound;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tracing::{debug, info};

use crate::backpressure::BacklogWait;
use crate::broker::Broker;
use crate::codec::{self, Auth, Disconnect, EncodeError, Packet, ProtocolVersion, ReasonCode};
use crate::hook::{ClientInfo, EnhancedAuth};
use crate::limits::TokenBucket;
use crate::listener::ListenerHandle;
use crate::session::{ConnectionControl, PendingWill, Session};

use aliases::{InboundAliases, OutboundAliases};
use io::Io;

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

/// A connection's life after the handshake, boxed: this is what a client costs while it stays.
pub type RunningConnection = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Entry point for listeners: reads CONNECT and completes the handshake over `stream`, then returns
/// the connection to run. The handshake's state is gone by then; only the connection's is kept.
pub async fn accept<S>(
    broker: Arc<Broker>,
    stream: S,
    remote_addr: SocketAddr,
    listener: Arc<ListenerHandle>,
    identity: Option<String>,
) -> Option<RunningConnection>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let mut io = Io::new(stream, Arc::clone(&broker.stats));
    match handshake::accept(&broker, &mut io, remote_addr, listener, identity).await {
        Ok(connection) => Some(Box::pin(connection.run(io))),
        Err(reason) => {
            debug!(%remote_addr, %reason, "connection refused before CONNACK");
            None
        }
    }
}

/// What woke the event loop, in the order it looks: a kick first, so a client that floods us
/// cannot delay its own disconnection.
enum Event {
    Kicked,
    /// Bytes went out; the write buffer may have room for more deliveries.
    Wrote,
    Received,
    /// A backlog this client's messages fed has drained (or was waited for long enough).
    Resumed,
    /// The network connection closed or failed.
    Closed,
    Queued,
    KeepAliveExpired,
}

/// What applying input left for the event loop to wait for.
enum Wait {
    Nothing,
    /// AUTH may wait on an authenticator.
    Auth(Box<Auth>),
    /// `limits.max_publish_rate` holds the client's reads back this long.
    Pause(Duration),
}

/// The state of an established connection (after a successful CONNACK).
pub(crate) struct Connection {
    broker: Arc<Broker>,
    client: Arc<ClientInfo>,
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
    /// QoS 1/2 deliveries wait for the client's acks, so reads matter between writes (set when the
    /// session queue is looked at).
    awaiting_acks: bool,
    inbound_aliases: InboundAliases,
    outbound_aliases: OutboundAliases,
    /// Enhanced authentication, if CONNECT named a method. This field, the will and the publish
    /// rate are boxed: most clients have none of them, and this state is paid per connected client.
    enhanced_auth: Option<Box<EnhancedAuthState>>,
    /// The will from CONNECT; handed to the broker when the connection ends.
    will: Option<Box<PendingWill>>,
    /// `limits.max_publish_rate`, when set.
    publish_rate: Option<Box<TokenBucket>>,
    /// Set while a subscriber this client publishes to is backlogged: the client is not read from
    /// until it resolves (see `crate::backpressure`).
    backlog_wait: Option<BacklogWait>,
    /// Released when the connection ends.
    _slot: handshake::ConnectionSlot,
    write_buf: BytesMut,
}

/// The authentication method from CONNECT and a re-authentication in progress (MQTT 5, 4.12.1).
struct EnhancedAuthState {
    method: bytestring::ByteString,
    reauth: Option<Box<dyn EnhancedAuth>>,
}

impl Connection {
    /// The connection from CONNACK to its end. Not an `async fn`: one would store its arguments
    /// twice (rust-lang/rust#62958), and this state is what every connected client costs.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn stores its arguments twice"
    )]
    fn run<S: AsyncRead + AsyncWrite + Unpin>(mut self, mut io: Io<S>) -> impl Future<Output = ()> {
        async move {
            let close = self.event_loop(&mut io).await;
            // Boxed: needed once, at the end.
            Box::pin(self.finish(&mut io, close)).await;
        }
    }

    async fn event_loop<S: AsyncRead + AsyncWrite + Unpin>(&mut self, io: &mut Io<S>) -> Close {
        // Shutdown kicks the connections attached when it begins; one that attached later sees it here.
        if self.broker.shutdown.is_cancelled() {
            return Close::Server(
                ReasonCode::SERVER_SHUTTING_DOWN,
                Cow::Borrowed("server shutting down"),
            );
        }
        if let Err(close) = self.resend_inflight() {
            return close;
        }
        // The keep-alive timer is checked lazily: it fires at the earliest possible deadline and
        // re-arms from the last packet, so a busy connection never touches the timer wheel.
        let keep_alive = tokio::time::sleep(self.keep_alive.unwrap_or(Duration::from_secs(86_400)));
        tokio::pin!(keep_alive);
        let control = Arc::clone(&self.control);
        // Packets that arrived in the same read as CONNECT are already in the buffer.
        if let Err(close) = self.process_input(&mut io.read_buf).await {
            return close;
        }
        io.release_read_buf();
        let mut flushing = false;
        loop {
            if self.write_buf.len() < WRITE_HIGH_WATER
                && let Err(close) = self.pull_deliveries()
            {
                return close;
            }
            let event = std::future::poll_fn(|cx| {
                self.poll_event(cx, io, &control, keep_alive.as_mut(), &mut flushing)
            })
            .await;
            match event {
                Event::Kicked => {
                    // What the client sent before it was kicked still counts: a DISCONNECT already
                    // on its way decides the will, not the kick.
                    if let Some(close) = Box::pin(self.drain_received(io)).await {
                        return close;
                    }
                    let reason = control
                        .reason()
                        .unwrap_or(ReasonCode::ADMINISTRATIVE_ACTION);
                    return Close::Server(reason, Cow::Borrowed(reason.name()));
                }
                Event::Received | Event::Resumed => {
                    if let Err(close) = self.process_input(&mut io.read_buf).await {
                        return close;
                    }
                    io.release_read_buf();
                }
                Event::Wrote | Event::Queued => {}
                Event::Closed => return Close::Network,
                Event::KeepAliveExpired => {
                    return Close::Server(
                        ReasonCode::KEEP_ALIVE_TIMEOUT,
                        Cow::Borrowed("keep alive timeout"),
                    );
                }
            }
        }
    }

    /// One look at everything the connection waits for, without a future per source: the event
    /// loop's wait is a few references, however many sources there are.
    fn poll_event<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut Io<S>,
        control: &ConnectionControl,
        mut keep_alive: std::pin::Pin<&mut tokio::time::Sleep>,
        flushing: &mut bool,
    ) -> Poll<Event> {
        control.register(cx.waker());
        if control.is_kicked() {
            return Poll::Ready(Event::Kicked);
        }
        // While QoS 1/2 deliveries await acks, reads are polled even after a write made progress:
        // a connection that always has deliveries to write must still read the acks that reopen
        // its window. Otherwise it writes on, as long as the socket takes it, and reads after.
        let mut wrote = false;
        if !self.write_buf.is_empty() {
            match io.poll_write_from(cx, &mut self.write_buf) {
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(Event::Closed),
                Poll::Ready(Ok(_)) => {
                    if self.write_buf.is_empty() {
                        // Like the read buffer: an idle connection holds none.
                        self.write_buf = BytesMut::new();
                        *flushing = true;
                    }
                    if !self.awaiting_acks {
                        return Poll::Ready(Event::Wrote);
                    }
                    wrote = true;
                }
                Poll::Pending => {}
            }
        } else if *flushing {
            match io.poll_flush(cx) {
                Poll::Ready(Ok(())) => *flushing = false,
                Poll::Ready(Err(_)) => return Poll::Ready(Event::Closed),
                Poll::Pending => {}
            }
        }
        // While a subscriber it feeds is backlogged, the client is not read from; everything else
        // (its own deliveries, kicks) goes on.
        if let Some(wait) = &mut self.backlog_wait {
            if let Poll::Ready(paused) = wait.as_mut().poll(cx) {
                self.backlog_wait = None;
                // The client was not silent, we were not reading: the pause does not count
                // towards its keep alive.
                self.last_received += paused;
                return Poll::Ready(Event::Resumed);
            }
        } else if self.write_buf.len() < WRITE_HARD_LIMIT {
            // A client that does not read its acks is not read from either.
            match io.poll_fill(cx) {
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(Event::Closed),
                Poll::Ready(Ok(_)) => return Poll::Ready(Event::Received),
                Poll::Pending => {}
            }
        }
        if self.write_buf.len() < WRITE_HIGH_WATER && control.take_queued() {
            return Poll::Ready(Event::Queued);
        }
        if let Some(limit) = self.keep_alive.filter(|_| self.backlog_wait.is_none()) {
            while keep_alive.as_mut().poll(cx).is_ready() {
                let deadline = self.last_received + limit;
                if Instant::now() >= deadline {
                    return Poll::Ready(Event::KeepAliveExpired);
                }
                keep_alive.as_mut().reset(deadline);
            }
        }
        if wrote {
            Poll::Ready(Event::Wrote)
        } else {
            Poll::Pending
        }
    }

    /// Applies input that has already arrived, without waiting for more; returns how the connection
    /// ended if that input ended it.
    async fn drain_received<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut Io<S>,
    ) -> Option<Close> {
        for _ in 0..DRAIN_READS {
            // A closing connection waits for no backlog: all of its input is applied.
            loop {
                self.backlog_wait = None;
                if let Err(close) = self.process_input(&mut io.read_buf).await {
                    return Some(close);
                }
                if self.backlog_wait.is_none() {
                    break;
                }
            }
            // One poll of the read returns only data already in the socket buffer.
            match std::future::poll_fn(|cx| Poll::Ready(io.poll_fill(cx))).await {
                Poll::Ready(Ok(0) | Err(_)) => return Some(Close::Network),
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => return None,
            }
        }
        None
    }

    /// Decodes and applies every whole packet in the read buffer, waiting where a packet asks for it.
    /// The decoding itself is synchronous ([`Self::apply_input`]), and input that must wait goes on
    /// in a boxed future: this one is part of every connection for its whole life, as large as its
    /// largest await point.
    async fn process_input(&mut self, read_buf: &mut BytesMut) -> Result<(), Close> {
        match self.apply_input(read_buf)? {
            Wait::Nothing => Ok(()),
            wait => Box::pin(self.process_input_waiting(wait, read_buf)).await,
        }
    }

    /// The rest of [`Self::process_input`] once a packet asked for a wait.
    async fn process_input_waiting(
        &mut self,
        mut wait: Wait,
        read_buf: &mut BytesMut,
    ) -> Result<(), Close> {
        loop {
            match wait {
                Wait::Nothing => return Ok(()),
                Wait::Auth(auth) => {
                    self.on_auth(*auth).await?;
                    if self.write_buf.len() < WRITE_HIGH_WATER {
                        self.pull_deliveries()?;
                    }
                }
                Wait::Pause(pause) => tokio::time::sleep(pause).await,
            }
            wait = self.apply_input(read_buf)?;
        }
    }

    /// Applies whole packets from the read buffer until it holds none, or one needs a wait.
    fn apply_input(&mut self, read_buf: &mut BytesMut) -> Result<Wait, Close> {
        let max = self.broker.config.limits.max_packet_size;
        loop {
            let packet = match codec::decode(read_buf, self.protocol, max) {
                Ok(Some(packet)) => packet,
                Ok(None) => return Ok(Wait::Nothing),
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
                Packet::Auth(auth) if self.protocol.is_v5() => {
                    return Ok(Wait::Auth(Box::new(auth)));
                }
                packet => self.handle(packet)?,
            }
            // Deliveries this packet caused (to this same client) go out before the answers to
            // later packets in the same read.
            if self.write_buf.len() < WRITE_HIGH_WATER {
                self.pull_deliveries()?;
            }
            // The rest of the read waits until the backlog this publish fed has drained.
            if self.backlog_wait.is_some() {
                return Ok(Wait::Nothing);
            }
            if is_publish && let Some(wait) = self.publish_pause() {
                return Ok(Wait::Pause(wait));
            }
        }
    }

    /// Stops reading this client until `subscriber`'s backlog drains (see `crate::backpressure`).
    fn wait_for_backlog(&mut self, subscriber: Arc<Session>) {
        if self.backlog_wait.is_some() {
            return;
        }
        self.backlog_wait = self.broker.backpressure.wait_for(subscriber);
        if self.backlog_wait.is_some() {
            self.broker
                .stats
                .limit_hit(crate::stats::LimitKind::Backlog);
        }
    }

    /// Holds a client to `limits.max_publish_rate` by pausing its reads: nothing is dropped, the
    /// client's own flow control slows it down.
    fn publish_pause(&mut self) -> Option<Duration> {
        let bucket = self.publish_rate.as_mut()?;
        let wait = bucket.take_or_wait(std::time::Instant::now())?;
        self.broker
            .stats
            .limit_hit(crate::stats::LimitKind::PublishRate);
        Some(wait)
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
    async fn finish<S: AsyncRead + AsyncWrite + Unpin>(self, io: &mut Io<S>, close: Close) {
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
        let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, io.shutdown()).await;

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
