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
//! go of whenever they are empty. A plain TCP connection idle for `limits.park_after_idle_ms` (or
//! silent right after its CONNACK) leaves its task altogether and waits in the [`park`]ing lot.

mod aliases;
mod handshake;
mod held_acks;
mod inbound;
mod io;
mod outbound;
pub(crate) mod park;

use std::borrow::Cow;
use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::{debug, info};

use crate::backpressure::BacklogWait;
use crate::broker::{Broker, ConnectionSlot, ListenerGate};
use crate::codec::{self, Auth, Disconnect, EncodeError, Packet, ProtocolVersion, ReasonCode};
use crate::control::ConnectionControl;
use crate::hook::EnhancedAuth;
use crate::identity::{ClientInfo, Generation};
use crate::limits::TokenBucket;
use crate::session::{PendingWill, Session};

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
/// A connection is not parked closer than this to its keep-alive deadline: the lot resumes it
/// [`park::RESUME_BEFORE_DEADLINE`] ahead, and its sweep is a second or so coarse.
const PARK_MIN_KEEP_ALIVE_LEFT: Duration = Duration::from_secs(4);

/// A stream a connection runs over. Only plain TCP can be parked: TLS and WebSocket keep state of
/// their own above the socket.
pub trait Transport: AsyncRead + AsyncWrite + Send + Unpin + 'static {
    /// Whether [`Transport::into_socket`] gives the socket back.
    const PARKABLE: bool = false;

    /// The socket, taken out of the runtime's reactor, for the parking lot.
    fn into_socket(self) -> std::io::Result<StdTcpStream>
    where
        Self: Sized,
    {
        Err(std::io::Error::other(
            "only plain TCP connections are parked",
        ))
    }
}

impl Transport for TcpStream {
    const PARKABLE: bool = true;

    fn into_socket(self) -> std::io::Result<StdTcpStream> {
        self.into_std()
    }
}

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
pub async fn accept<S: Transport>(
    broker: Arc<Broker>,
    stream: S,
    remote_addr: SocketAddr,
    gate: Arc<ListenerGate>,
    identity: Option<String>,
) -> Option<RunningConnection> {
    let mut io = Io::new(stream, Arc::clone(broker.stats()));
    match handshake::accept(&broker, &mut io, remote_addr, gate, identity).await {
        Ok(connection) => Some(Box::pin(connection.run(io, Start::Fresh))),
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
    /// The cluster holds a message whose acknowledgement was held for it.
    Confirmed,
    /// The network connection closed or failed.
    Closed,
    Queued,
    KeepAliveExpired,
    /// Nothing happened for `limits.park_after_idle_ms` and nothing is pending: park.
    Idle,
}

/// How the event loop ended.
enum Exit {
    Close(Close),
    /// The connection goes on without a task, in the parking lot.
    Park,
}

/// Whether the connection was just accepted or comes back from the parking lot.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Start {
    /// Still to do: resend the session's inflight messages, apply what came with CONNECT.
    Fresh,
    Resumed,
}

/// When the event loop next looks at whether it may park, and whether anything happened since the
/// last look: "idle" is no input, no deliveries and no resumed reads for one whole interval.
struct IdleCheck {
    /// `None` where connections are not parked (TLS, WebSocket, `limits.park_after_idle_ms: 0`).
    next: Option<Instant>,
    interval: Duration,
    active: bool,
}

impl IdleCheck {
    /// The first look is at once: a client that sent nothing after CONNECT, or whose wake-up turns
    /// out to have been for nothing, is parked as soon as it is quiet.
    fn new(parkable: bool, interval_ms: u64) -> Self {
        let interval = Duration::from_millis(interval_ms);
        Self {
            next: (parkable && !interval.is_zero()).then(Instant::now),
            interval,
            active: false,
        }
    }
}

/// What applying input left for the event loop to wait for.
enum Wait {
    Nothing,
    /// AUTH may wait on an authenticator.
    Auth(Box<Auth>),
    /// `limits.max_publish_rate` holds the client's reads back this long.
    Pause(Duration),
    /// A SUBACK waits for the cluster's other nodes, the store, or both.
    SubAck(Box<inbound::HeldSubAck>),
}

/// The state of an established connection (after a successful CONNACK).
pub(crate) struct Connection {
    client: Arc<ClientInfo>,
    protocol: ProtocolVersion,
    session: Arc<Session>,
    control: Arc<ConnectionControl>,
    generation: Generation,
    /// 1.5 × keep alive in milliseconds, or `None` when keep alive is 0 [MQTT-3.1.2-22].
    keep_alive_ms: Option<std::num::NonZeroU32>,
    last_received: Instant,
    /// The session expiry from CONNECT (after capping) was 0, which DISCONNECT may not raise. A
    /// bool, not the interval: nothing else about it is needed, and this state is paid per client.
    zero_expiry_at_connect: bool,
    /// Outbound QoS 1/2 window: min(client's Receive Maximum, our max_inflight).
    inflight_window: u16,
    /// The client's Maximum Packet Size (u32::MAX when it set none).
    client_max_packet_size: u32,
    /// Whether reason strings and user properties may go on packets other than CONNACK/DISCONNECT.
    problem_information: bool,
    /// QoS 1/2 deliveries wait for the client's acks, so reads matter between writes (set when the
    /// session queue is looked at).
    awaiting_acks: bool,
    /// The client's Topic Alias Maximum (0: no aliases towards it).
    outbound_alias_maximum: u16,
    /// Topic aliases and enhanced authentication, made when first needed. This field, the will and
    /// the publish rate are boxed: most clients use none of them, and this state is paid per
    /// connected client.
    extras: Option<Box<Extras>>,
    /// The will from CONNECT; handed to the broker when the connection ends.
    will: Option<Box<PendingWill>>,
    /// `limits.max_publish_rate`, when set.
    publish_rate: Option<Box<TokenBucket>>,
    /// Set while a subscriber this client publishes to is backlogged: the client is not read from
    /// until it resolves (see `crate::backpressure`).
    backlog_wait: Option<BacklogWait>,
    /// Messages this client may still publish without pausing for a backlog, since its last pause
    /// ended: the share `Backpressure::release` woke it for. Without it, publishers woken together
    /// race for the room, the first to run take it all, and the rest pause again after one
    /// message each: an uneven share, and a wake-up per message.
    resume_quota: u8,
    /// Blocks of an unfinished packet this connection counts against
    /// `limits.max_partial_packet_bytes`; given back when it ends (see `Broker::hold_partial`).
    partial_held: u16,
    /// Released when the connection ends; also the connection's handle on the broker
    /// (`slot.broker()`).
    slot: ConnectionSlot,
    /// While parked, the place the connection holds in the broker's task tracker, so that shutdown
    /// waits for it; let go of once it runs in a task again.
    tracked_while_parked: Option<tokio_util::task::task_tracker::TaskTrackerToken>,
    write_buf: BytesMut,
}

/// MQTT 5 features a connection may use, kept out of [`Connection`] until it does.
#[derive(Default)]
struct Extras {
    inbound_aliases: InboundAliases,
    outbound_aliases: OutboundAliases,
    /// Set if CONNECT named an authentication method.
    enhanced_auth: Option<EnhancedAuthState>,
    /// PUBACKs and PUBRECs waiting for the cluster (`cluster.acknowledge: cluster`).
    held_acks: held_acks::HeldAcks,
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
    fn run<S: Transport>(mut self, mut io: Io<S>, start: Start) -> impl Future<Output = ()> {
        async move {
            // Input applied before the loop keeps the connection out of the lot for one interval,
            // as input read in the loop does.
            let active = matches!(start, Start::Resumed) && !io.read_buf.is_empty();
            let started = match start {
                Start::Fresh => self.start(&mut io).await,
                // Input read while resuming (see `resume`) is applied before anything else.
                Start::Resumed if !io.read_buf.is_empty() => {
                    let applied = match self.process_input(&mut io.read_buf).await {
                        Ok(()) => self.hold_unfinished(io.read_buf.len()),
                        Err(close) => Err(close),
                    };
                    io.release_read_buf();
                    applied
                }
                Start::Resumed => Ok(()),
            };
            let exit = match started {
                Ok(()) => self.event_loop(&mut io, active).await,
                Err(close) => Exit::Close(close),
            };
            match exit {
                // Boxed: needed once, at the end.
                Exit::Close(close) => Box::pin(self.finish(&mut io, close)).await,
                Exit::Park => self.park(io),
            }
        }
    }

    /// What a new connection does before it first waits.
    async fn start<S: Transport>(&mut self, io: &mut Io<S>) -> Result<(), Close> {
        // Shutdown kicks the connections attached when it begins; one that attached later sees it here.
        if self.slot.broker().shutdown_token().is_cancelled() {
            return Err(Close::Server(
                ReasonCode::SERVER_SHUTTING_DOWN,
                Cow::Borrowed("server shutting down"),
            ));
        }
        self.resend_inflight()?;
        // Packets that arrived in the same read as CONNECT are already in the buffer.
        self.process_input(&mut io.read_buf).await?;
        self.hold_unfinished(io.read_buf.len())?;
        io.release_read_buf();
        Ok(())
    }

    /// Counts the unfinished packet left in the read buffer against the broker's budget for such
    /// bytes. A connection that would take it past the budget is closed rather than paused: a
    /// paused one would keep its bytes, and the budget would stay spent.
    fn hold_unfinished(&mut self, unfinished: usize) -> Result<(), Close> {
        // Most reads end on a packet boundary, or close to one: nothing to count.
        let nothing_held = self.partial_held == 0 && unfinished <= crate::broker::PARTIAL_FREE;
        if nothing_held
            || self
                .slot
                .broker()
                .hold_partial(&mut self.partial_held, unfinished)
        {
            return Ok(());
        }
        debug!(client_id = %self.client.client_id, unfinished, "unfinished packet over the broker's budget");
        Err(Close::Server(
            ReasonCode::QUOTA_EXCEEDED,
            Cow::Borrowed("too many bytes of unfinished packets held"),
        ))
    }

    async fn event_loop<S: Transport>(&mut self, io: &mut Io<S>, active: bool) -> Exit {
        let mut idle = IdleCheck::new(
            S::PARKABLE,
            self.slot.broker().config().limits.park_after_idle_ms,
        );
        idle.active = active;
        // One timer for the keep-alive deadline and the idle check, checked lazily: it fires at the
        // earliest possible deadline and re-arms from the last packet, so a busy connection never
        // touches the timer wheel.
        let timer = tokio::time::sleep_until(
            self.next_timer(&idle)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400)),
        );
        tokio::pin!(timer);
        let control = Arc::clone(&self.control);
        let mut flushing = false;
        loop {
            if self.write_buf.len() < WRITE_HIGH_WATER
                && let Err(close) = self.pull_deliveries()
            {
                return Exit::Close(close);
            }
            let event = std::future::poll_fn(|cx| {
                self.poll_event(cx, io, &control, timer.as_mut(), &mut flushing, &mut idle)
            })
            .await;
            match event {
                Event::Kicked => {
                    // What the client sent before it was kicked still counts: a DISCONNECT already
                    // on its way decides the will, not the kick.
                    if let Some(close) = Box::pin(self.drain_received(io)).await {
                        return Exit::Close(close);
                    }
                    let reason = control
                        .reason()
                        .unwrap_or(ReasonCode::ADMINISTRATIVE_ACTION);
                    return Exit::Close(Close::Server(reason, Cow::Borrowed(reason.name())));
                }
                Event::Received | Event::Resumed => {
                    idle.active = true;
                    if let Err(close) = self.process_input(&mut io.read_buf).await {
                        return Exit::Close(close);
                    }
                    if let Err(close) = self.hold_unfinished(io.read_buf.len()) {
                        return Exit::Close(close);
                    }
                    io.release_read_buf();
                }
                Event::Queued => idle.active = true,
                Event::Confirmed => {
                    if let Err(close) = self.release_acks() {
                        return Exit::Close(close);
                    }
                }
                Event::Wrote => {}
                Event::Closed => return Exit::Close(Close::Network),
                Event::KeepAliveExpired => {
                    return Exit::Close(Close::Server(
                        ReasonCode::KEEP_ALIVE_TIMEOUT,
                        Cow::Borrowed("keep alive timeout"),
                    ));
                }
                Event::Idle => return Exit::Park,
            }
        }
    }

    /// When the keep alive runs out: 1.5 × keep alive after the last packet.
    fn keep_alive_deadline(&self) -> Option<Instant> {
        self.keep_alive_ms
            .map(|limit| self.last_received + Duration::from_millis(u64::from(limit.get())))
    }

    /// The earlier of the keep-alive deadline and the next idle check.
    fn next_timer(&self, idle: &IdleCheck) -> Option<Instant> {
        match (self.keep_alive_deadline(), idle.next) {
            (Some(deadline), Some(check)) => Some(deadline.min(check)),
            (deadline, check) => deadline.or(check),
        }
    }

    /// Whether the connection may leave its task: nothing to read, write or wait for, and its
    /// keep-alive deadline far enough away for the lot's coarse sweep.
    fn can_park<S: Transport>(&self, io: &Io<S>, flushing: bool, now: Instant) -> bool {
        self.write_buf.is_empty()
            && !flushing
            && io.read_buf.is_empty()
            && self.backlog_wait.is_none()
            && self.extras.as_ref().is_none_or(|e| e.held_acks.is_empty())
            && !self.slot.broker().shutdown_token().is_cancelled()
            && self
                .keep_alive_deadline()
                .is_none_or(|deadline| deadline >= now + PARK_MIN_KEEP_ALIVE_LEFT)
    }

    /// Hands the connection to the parking lot (see [`park`]); called from its task, which ends.
    fn park<S: Transport>(self, io: Io<S>) {
        self.slot.broker().record_runtime();
        match io.into_stream().into_socket() {
            Ok(socket) => park::park(Box::new(self), socket),
            Err(error) => {
                debug!(client_id = %self.client.client_id, %error, "cannot park connection");
                self.release(Close::Network);
            }
        }
    }

    /// Goes on with a parked connection in a new task on the broker's runtime.
    fn resume(mut self: Box<Self>, socket: StdTcpStream) {
        let broker = Arc::clone(self.slot.broker());
        // Dropped once the task that takes over is tracked.
        let _place = self.tracked_while_parked.take();
        let Some(runtime) = broker.runtime() else {
            // Only a connection that recorded the runtime is parked.
            return self.release(Close::Network);
        };
        broker.tasks().spawn_on(
            async move {
                let connection = *self;
                // What arrived while the connection was parked is read now: the runtime learns
                // of the socket's readiness only after it is registered again, and a connection
                // woken by a kick must act on input already there (a DISCONNECT before a
                // takeover) before it closes.
                let arrived = io::read_arrived(&socket);
                match TcpStream::from_std(socket) {
                    Ok(stream) => {
                        let mut io = Io::new(stream, Arc::clone(connection.slot.broker().stats()));
                        io.take_arrived(arrived);
                        connection.run(io, Start::Resumed).await;
                    }
                    Err(error) => {
                        debug!(client_id = %connection.client.client_id, %error, "cannot resume connection");
                        connection.release(Close::Network);
                    }
                }
            },
            runtime,
        );
    }

    /// One look at everything the connection waits for, without a future per source: the event
    /// loop's wait is a few references, however many sources there are.
    fn poll_event<S: Transport>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut Io<S>,
        control: &ConnectionControl,
        mut timer: std::pin::Pin<&mut tokio::time::Sleep>,
        flushing: &mut bool,
        idle: &mut IdleCheck,
    ) -> Poll<Event> {
        control.register(cx.waker());
        if control.is_kicked() {
            return Poll::Ready(Event::Kicked);
        }
        if let Some(extras) = &self.extras
            && extras.held_acks.poll_first(cx).is_ready()
        {
            return Poll::Ready(Event::Confirmed);
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
                self.resume_quota = crate::backpressure::MESSAGES_PER_RESUME;
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
        // While paused for a backlog neither counts: the client is not read from.
        if self.backlog_wait.is_none() && (self.keep_alive_ms.is_some() || idle.next.is_some()) {
            while timer.as_mut().poll(cx).is_ready() {
                let now = Instant::now();
                if self
                    .keep_alive_deadline()
                    .is_some_and(|deadline| now >= deadline)
                {
                    return Poll::Ready(Event::KeepAliveExpired);
                }
                if idle.next.is_some_and(|check| now >= check) {
                    if !idle.active && self.can_park(io, *flushing, now) {
                        return Poll::Ready(Event::Idle);
                    }
                    idle.active = false;
                    idle.next = Some(now + idle.interval);
                }
                let Some(next) = self.next_timer(idle) else {
                    break;
                };
                timer.as_mut().reset(next);
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
                Wait::SubAck(held) => {
                    let inbound::HeldSubAck {
                        routes,
                        stored,
                        answer,
                    } = *held;
                    if let (Some(version), Some(cluster)) = (routes, self.slot.broker().cluster()) {
                        cluster.wait_acked(version).await;
                    }
                    if let Some(receipt) = stored {
                        std::future::poll_fn(|cx| receipt.poll_done(cx)).await;
                    }
                    self.answer_subscribe(answer)?;
                    if self.write_buf.len() < WRITE_HIGH_WATER {
                        self.pull_deliveries()?;
                    }
                }
            }
            wait = self.apply_input(read_buf)?;
        }
    }

    /// Applies whole packets from the read buffer until it holds none, or one needs a wait.
    fn apply_input(&mut self, read_buf: &mut BytesMut) -> Result<Wait, Close> {
        let max = self.slot.broker().config().limits.max_packet_size;
        // One clock read for the whole read: its packets arrived together.
        let arrived = Instant::now();
        loop {
            let packet = match codec::decode(read_buf, self.protocol, max) {
                Ok(Some(packet)) => packet,
                Ok(None) => return Ok(Wait::Nothing),
                Err(error) => {
                    self.slot.broker().stats().protocol_errors.inc();
                    if matches!(error, codec::DecodeError::TooLarge { .. }) {
                        self.slot
                            .broker()
                            .stats()
                            .limit_hit(crate::stats::LimitKind::PacketSize);
                    }
                    debug!(client_id = %self.client.client_id, %error, "malformed input");
                    return Err(Close::Server(
                        error.reason_code(),
                        Cow::Owned(error.to_string()),
                    ));
                }
            };
            self.last_received = arrived;
            let is_publish = matches!(packet, Packet::Publish(_));
            match packet {
                Packet::Auth(auth) if self.protocol.is_v5() => {
                    return Ok(Wait::Auth(Box::new(auth)));
                }
                Packet::Subscribe(subscribe) => {
                    if let Some(wait) = self.on_subscribe(subscribe)? {
                        return Ok(wait);
                    }
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
        self.backlog_wait = self.slot.broker().backpressure().wait_for(subscriber);
        if self.backlog_wait.is_some() {
            self.slot
                .broker()
                .stats()
                .limit_hit(crate::stats::LimitKind::Backlog);
        }
    }

    /// Stops reading this client until a cluster peer's outbox has drained (see
    /// `crate::cluster`'s peer module): the same pause as for a backlogged subscriber.
    fn wait_for_peer(&mut self, wait: crate::backpressure::BacklogWait) {
        if self.backlog_wait.is_some() {
            return;
        }
        self.backlog_wait = Some(wait);
        self.slot
            .broker()
            .stats()
            .limit_hit(crate::stats::LimitKind::Backlog);
    }

    /// Holds a client to `limits.max_publish_rate` by pausing its reads: nothing is dropped, the
    /// client's own flow control slows it down.
    fn publish_pause(&mut self) -> Option<Duration> {
        let bucket = self.publish_rate.as_mut()?;
        let wait = bucket.take_or_wait(std::time::Instant::now())?;
        self.slot
            .broker()
            .stats()
            .limit_hit(crate::stats::LimitKind::PublishRate);
        Some(wait)
    }

    /// Sends the PUBACK or PUBREC for a client's message, or holds it until `receipt` is done, and
    /// holds it too while one sent earlier is held (see [`held_acks`]).
    fn send_publish_ack(
        &mut self,
        ack: Packet,
        receipt: Option<Arc<crate::receipt::Receipt>>,
    ) -> Result<(), Close> {
        let waits = receipt.as_ref().is_some_and(|r| !r.is_done())
            || self
                .extras
                .as_ref()
                .is_some_and(|e| !e.held_acks.is_empty());
        if !waits {
            return self.send(&ack);
        }
        self.extras
            .get_or_insert_with(Box::default)
            .held_acks
            .push(receipt, ack);
        Ok(())
    }

    /// Sends the held acknowledgements whose messages the cluster now holds.
    fn release_acks(&mut self) -> Result<(), Close> {
        let ready = match &mut self.extras {
            Some(extras) => extras.held_acks.take_ready(),
            None => return Ok(()),
        };
        for ack in &ready {
            self.send(ack)?;
        }
        Ok(())
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

    /// Ends the connection: lets go of the session, notifies hooks, and tells a v5 client why.
    async fn finish<S: AsyncRead + AsyncWrite + Unpin>(mut self, io: &mut Io<S>, close: Close) {
        let mut write_buf = std::mem::take(&mut self.write_buf);
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
        let flush = !write_buf.is_empty() && !matches!(close, Close::Network);
        // The session is let go of before the last bytes are written: a connection taking it over
        // waits for exactly that, and should not wait on a client that does not read. The
        // connection counts as open until they are written, so a drain that waits for the
        // connections to close knows its clients were told to go.
        let reason = self.let_go(&close);
        if flush {
            let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, io.write_all(&mut write_buf)).await;
        }
        let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, io.shutdown()).await;
        self.gone(reason);
    }

    /// Lets go of the session (publishing the will if the close calls for it) and notifies hooks.
    fn release(mut self, close: Close) {
        let reason = self.let_go(&close);
        self.gone(reason);
    }

    /// Lets go of the session, publishing the will if the close calls for it, and of the bytes
    /// its unfinished packet held; returns the reason the server gave, if it closed the connection.
    fn let_go(&mut self, close: &Close) -> Option<ReasonCode> {
        self.slot.broker().hold_partial(&mut self.partial_held, 0);
        let (publish_will, reason) = match close {
            Close::Client { will } => (*will, None),
            Close::Network => (true, None),
            Close::Server(reason, message) => {
                debug!(client_id = %self.client.client_id, %reason, %message, "server closes connection");
                (true, Some(*reason))
            }
        };
        let will = self.will.take().filter(|_| publish_will);
        self.slot
            .broker()
            .detach(&self.session, self.generation, will);
        reason
    }

    /// The connection is over: counted, announced and told to the hooks.
    fn gone(self, reason: Option<ReasonCode>) {
        self.slot.broker().stats().connections.dec();
        crate::sys::client_notice(self.slot.broker(), &self.client, false);
        for hook in self.slot.broker().hooks().iter() {
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
