//! From the first byte to CONNACK: read CONNECT, check it, authenticate (plain or MQTT 5 enhanced),
//! open the session and answer. A refusal here never creates or disturbs a session.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tracing::{debug, info};

use super::{Close, Connection, EnhancedAuthState, Extras, Io};
use crate::broker::{Broker, ListenerGate, Refusal, SessionRequest};
use crate::codec::{
    self, Auth, AuthProperties, ConnAck, ConnAckProperties, Connect, DecodeError, Packet,
    ProtocolVersion, PublishProperties, QoS, ReasonCode,
};
use crate::config::{Config, Features, Limits};
use crate::hook::{AuthDecision, AuthStep, ConnectRequest};
use crate::identity::{ClientId, ClientInfo};
use crate::limits::TokenBucket;
use crate::message::Message;
use crate::session::{NEVER_EXPIRES, PendingWill};
use crate::stats::LimitKind;
use crate::storage::Storage;

/// Why no connection was established.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    /// CONNACK with a failure code was sent (or the v3 equivalent).
    #[error("refused with CONNACK {0}")]
    ConnAck(ReasonCode),
    /// The input was not a usable CONNECT.
    #[error("bad CONNECT: {0}")]
    Malformed(DecodeError),
    #[error("first packet was {0}, not CONNECT")]
    FirstPacketNotConnect(&'static str),
    #[error("no CONNECT in time")]
    Timeout,
    #[error("connection closed")]
    Network,
    /// Taking in more of CONNECT would take the broker past `limits.max_partial_packet_bytes`.
    #[error("the broker holds too many bytes of unfinished packets")]
    PartialBudget,
}

/// What the handshake holds against `limits.max_partial_packet_bytes` while CONNECT arrives: given
/// back if the handshake fails, handed to the connection if it succeeds.
struct HandshakeHold<'a> {
    broker: &'a Broker,
    held: u16,
}

impl HandshakeHold<'_> {
    fn hold(&mut self, unfinished: usize) -> bool {
        self.broker.hold_partial(&mut self.held, unfinished)
    }

    /// What the connection now holds, and gives back itself.
    fn into_connection(self) -> u16 {
        let hold = std::mem::ManuallyDrop::new(self);
        hold.held
    }
}

impl Drop for HandshakeHold<'_> {
    fn drop(&mut self) {
        self.hold(0);
    }
}

/// Reads CONNECT and completes the handshake.
pub(super) async fn accept<S>(
    broker: &Arc<Broker>,
    io: &mut Io<S>,
    remote_addr: SocketAddr,
    gate: Arc<ListenerGate>,
    identity: Option<String>,
) -> Result<Connection, Refused>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let timeout = Duration::from_secs(broker.config().limits.connect_timeout_secs);
    let mut hold = HandshakeHold { broker, held: 0 };
    let connect = match tokio::time::timeout(timeout, read_connect(broker, io, &mut hold)).await {
        Ok(result) => result?,
        Err(_) => return Err(Refused::Timeout),
    };
    let protocol = connect.protocol;
    let mut connack = ConnAckProperties::default();

    let client_id = match assign_client_id(&connect) {
        Ok(id) => id,
        Err(reason) => return refuse(io, &connect, reason, "client identifier not valid").await,
    };
    if connect.client_id.is_empty() && protocol.is_v5() {
        connack.assigned_client_identifier = Some(ByteString::from(client_id.as_str())); // [MQTT-3.2.2-16]
    }
    // A verified client certificate's common name replaces the CONNECT username
    // (`use_identity_as_username`), and then stands in for the password.
    let certificate_identity = identity.is_some();
    // Shared with the session, which shows it in listings.
    let client = Arc::new(ClientInfo {
        client_id,
        username: identity
            .as_deref()
            .or(connect.username.as_deref())
            .map(Arc::from),
        protocol,
        remote_addr: remote_addr.into(),
        listener: Arc::clone(&gate.name),
        certificate_identity,
        connected_at: crate::identity::unix_seconds_now(),
    });
    let slot = match broker.admit(&gate) {
        Ok(slot) => slot,
        Err(Refusal { reason, why }) => return refuse(io, &connect, reason, why).await,
    };
    if let Err((reason, why)) = check_will(&broker.config().features, &connect) {
        return refuse(io, &connect, reason, why).await;
    }
    if let Err(reason) = authenticate(broker, io, &client, &connect, &mut connack).await? {
        broker.stats().auth_failures.inc();
        info!(client_id = %client.client_id, %remote_addr, %reason, "authentication failed");
        return refuse(io, &connect, reason, "not authorized").await;
    }
    if let Err((reason, why)) = authorize_will(broker, &client, &connect) {
        info!(client_id = %client.client_id, %remote_addr, %reason, why, "will refused");
        return refuse(io, &connect, reason, why).await;
    }
    let (expiry, keep_alive) = session_terms(&broker.config().limits, &connect, &mut connack);
    if expiry > 0 && broker.storage().is_some_and(Storage::is_failing) {
        // A session to keep could not be kept while the store's commits fail (a full disk):
        // 0x97 Quota exceeded (MQTT 3.1.1: 0x03 Server unavailable), and the client can try
        // another node.
        return refuse(io, &connect, ReasonCode::QUOTA_EXCEEDED, "storage failing").await;
    }
    let will = will_of(&connect, &client);

    let attachment = broker
        .open_session(SessionRequest {
            client_id: client.client_id.clone(),
            clean_start: connect.clean_start,
            expiry_interval: expiry,
            client: Arc::clone(&client),
        })
        .await;
    if protocol.is_v5() {
        announce_limits(broker.config(), &mut connack);
    }
    let packet = Packet::ConnAck(ConnAck {
        session_present: attachment.session_present,
        reason_code: ReasonCode::SUCCESS,
        properties: connack,
    });
    let client_max_packet_size = connect.properties.maximum_packet_size.unwrap_or(u32::MAX);
    let mut write_buf = BytesMut::with_capacity(256);
    if codec::encode(&packet, protocol, client_max_packet_size, &mut write_buf).is_err() {
        broker.detach(&attachment.session, attachment.generation, None);
        return Err(Refused::Network);
    }

    if let (Some(cluster), Some(will)) = (broker.cluster(), &will) {
        // Kept by another node too, which publishes it if this node dies.
        cluster.keep_will(&client.client_id, will);
    }
    if let (Some(_), Some(will)) = (broker.storage(), &will) {
        // Kept on disk too, and published after a restart if this node crashes.
        broker.store_will(&attachment.session, will);
    }
    let stats = broker.stats();
    stats.connections.inc();
    stats.connections_total.inc();
    for hook in broker.hooks().iter() {
        hook.on_connect(&client, attachment.session_present);
    }
    crate::sys::client_notice(broker, &client, true);
    info!(
        client_id = %client.client_id, remote = %remote_addr, ?protocol,
        clean_start = connect.clean_start, session_present = attachment.session_present,
        "client connected"
    );

    let limits = &broker.config().limits;
    let client_receive_maximum = connect
        .properties
        .receive_maximum
        .map_or(u16::MAX, |r| r.get());
    Ok(Connection {
        protocol,
        session: attachment.session,
        control: attachment.control,
        generation: attachment.generation,
        // At most 65,535 s × 1,500: fits.
        keep_alive_ms: std::num::NonZeroU32::new(u32::from(keep_alive) * 1500),
        last_received: Instant::now(),
        zero_expiry_at_connect: expiry == 0,
        inflight_window: client_receive_maximum.min(limits.max_inflight),
        client_max_packet_size,
        awaiting_acks: false,
        problem_information: connect
            .properties
            .request_problem_information
            .unwrap_or(true),
        outbound_alias_maximum: connect.properties.topic_alias_maximum.unwrap_or(0),
        tracked_while_parked: None,
        extras: connect
            .properties
            .authentication_method
            .clone()
            .map(|method| {
                Box::new(Extras {
                    enhanced_auth: Some(EnhancedAuthState {
                        method,
                        reauth: None,
                    }),
                    ..Extras::default()
                })
            }),
        publish_rate: limits
            .max_publish_rate
            .map(|rate| Box::new(TokenBucket::per_second(rate))),
        backlog_wait: None,
        resume_quota: 0,
        partial_held: hold.into_connection(),
        slot,
        will,
        write_buf,
        client,
    })
}

/// A will the broker cannot honour is refused at CONNECT [MQTT-3.2.2-12], [MQTT-3.2.2-13].
fn check_will(features: &Features, connect: &Connect) -> Result<(), (ReasonCode, &'static str)> {
    let Some(will) = &connect.will else {
        return Ok(());
    };
    if will.qos > features.maximum_qos() {
        return Err((ReasonCode::QOS_NOT_SUPPORTED, "will QoS not supported"));
    }
    if will.retain && !features.retain_available {
        return Err((ReasonCode::RETAIN_NOT_SUPPORTED, "retain not supported"));
    }
    Ok(())
}

/// A will goes out on the client's behalf, so it must pass what the client's own PUBLISH on its
/// topic would: the topic limits, `$SYS` and the ACL. One that does not refuses the connection, as
/// a will the server cannot honour does [MQTT-3.2.2-12]: CONNACK 0x87 *Not authorized* (3.1.1:
/// return code 5), or 0x90 *Topic Name invalid*, the code MQTT 5 gives for a Will Topic the server
/// does not accept (§3.2.2.2). Accepting the connection and dropping the will would leave the
/// client believing it has one.
fn authorize_will(
    broker: &Broker,
    client: &ClientInfo,
    connect: &Connect,
) -> Result<(), (ReasonCode, &'static str)> {
    let Some(will) = &connect.will else {
        return Ok(());
    };
    let limits = &broker.config().limits;
    if let Err(error) = crate::topic::check_limits(
        &will.topic,
        limits.max_topic_length,
        limits.max_topic_levels,
    ) {
        let limit = match error {
            crate::topic::TopicError::TooManyLevels { .. } => LimitKind::TopicLevels,
            _ => LimitKind::TopicLength,
        };
        broker.stats().limit_hit(limit);
        return Err((
            ReasonCode::TOPIC_NAME_INVALID,
            "will topic beyond the topic limits",
        ));
    }
    broker
        .authorize_publish(client, &will.topic, will.qos, will.retain)
        .map_err(|reason| (reason, "will not authorized"))
}

/// Decides whether the client may connect: enhanced authentication when CONNECT names a method,
/// otherwise the hooks, then the anonymous switch. The inner error is the CONNACK reason code.
async fn authenticate<S>(
    broker: &Broker,
    io: &mut Io<S>,
    client: &ClientInfo,
    connect: &Connect,
    connack: &mut ConnAckProperties,
) -> Result<Result<(), ReasonCode>, Refused>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if let Some(method) = &connect.properties.authentication_method {
        let data = connect.properties.authentication_data.clone();
        return Ok(enhanced_auth(broker, io, client, method, data)
            .await?
            .map(|data| {
                connack.authentication_method = Some(method.clone());
                connack.authentication_data = data;
            }));
    }
    let request = ConnectRequest {
        client,
        password: connect.password.as_deref(),
    };
    Ok(match broker.hooks().authenticate(&request).await {
        AuthDecision::Allow => Ok(()),
        AuthDecision::Deny(reason) => Err(reason),
        // A client certificate the TLS layer verified is an authenticated identity.
        AuthDecision::Continue if client.certificate_identity => Ok(()),
        AuthDecision::Continue if broker.config().auth.allow_anonymous => Ok(()),
        AuthDecision::Continue if connect.username.is_some() => {
            Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD)
        }
        AuthDecision::Continue => Err(ReasonCode::NOT_AUTHORIZED),
    })
}

/// The session expiry and keep alive that apply, after the configured caps; MQTT 5 clients are told
/// when they differ from what they asked for [MQTT-3.2.2-21].
fn session_terms(
    limits: &Limits,
    connect: &Connect,
    connack: &mut ConnAckProperties,
) -> (u32, u16) {
    let v5 = connect.protocol.is_v5();
    let requested = if v5 {
        connect.properties.session_expiry_interval.unwrap_or(0)
    } else if connect.clean_start {
        0
    } else {
        NEVER_EXPIRES
    };
    let expiry = limits
        .max_session_expiry_secs
        .map_or(requested, |max| requested.min(max));
    if expiry != requested && v5 {
        connack.session_expiry_interval = Some(expiry);
    }
    let keep_alive = match limits.server_keep_alive {
        Some(server) => {
            if v5 {
                connack.server_keep_alive = Some(server);
            }
            server
        }
        None => connect.keep_alive,
    };
    (expiry, keep_alive)
}

/// The will as a message ready to publish. Its Message Expiry Interval stays a property until the
/// will is published, because the interval starts then.
fn will_of(connect: &Connect, client: &Arc<ClientInfo>) -> Option<Box<PendingWill>> {
    let will = connect.will.as_ref()?;
    let properties = &will.properties;
    Some(Box::new(PendingWill {
        message: Message {
            topic: will.topic.clone(),
            payload: will.payload.clone(),
            qos: will.qos,
            retain: will.retain,
            properties: PublishProperties {
                payload_format_indicator: properties.payload_format_indicator,
                message_expiry_interval: properties.message_expiry_interval,
                content_type: properties.content_type.clone(),
                response_topic: properties.response_topic.clone(),
                correlation_data: properties.correlation_data.clone(),
                user_properties: properties.user_properties.clone(),
                ..PublishProperties::default()
            },
            expires_at: None,
            publisher: None,
            received_at: std::time::Instant::now(),
            id: 0,
        },
        delay: properties.will_delay_interval.unwrap_or(0),
        client: Arc::clone(client),
    }))
}

/// The server's limits and switched-off features, for an MQTT 5 CONNACK.
fn announce_limits(config: &Config, connack: &mut ConnAckProperties) {
    let (limits, features) = (&config.limits, &config.features);
    connack.receive_maximum = std::num::NonZeroU16::new(limits.receive_maximum);
    connack.maximum_packet_size = Some(limits.max_packet_size);
    connack.topic_alias_maximum = Some(limits.topic_alias_maximum);
    if features.maximum_qos() < QoS::ExactlyOnce {
        connack.maximum_qos = Some(features.maximum_qos());
    }
    let off = |on: bool| (!on).then_some(false);
    connack.retain_available = off(features.retain_available);
    connack.wildcard_subscription_available = off(features.wildcard_subscriptions);
    connack.subscription_identifiers_available = off(features.subscription_identifiers);
    connack.shared_subscription_available = off(features.shared_subscriptions);
}

/// Reads until a whole first packet is there; it must be CONNECT [MQTT-3.1.0-1]. What has arrived
/// of it counts against `limits.max_partial_packet_bytes` as it arrives.
async fn read_connect<S>(
    broker: &Broker,
    io: &mut Io<S>,
    hold: &mut HandshakeHold<'_>,
) -> Result<Box<Connect>, Refused>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let max = broker.config().limits.max_packet_size;
    loop {
        let hint = codec::sniff_connect_version(&io.read_buf);
        match codec::decode(&mut io.read_buf, ProtocolVersion::V5, max) {
            Ok(Some(Packet::Connect(connect))) => {
                // What came after CONNECT in the same read; the connection takes it over.
                hold.hold(io.read_buf.len());
                return Ok(connect);
            }
            Ok(Some(other)) => return Err(Refused::FirstPacketNotConnect(other.kind())),
            Ok(None) => {}
            Err(error) => {
                broker.stats().protocol_errors.inc();
                if matches!(error, DecodeError::TooLarge { .. }) {
                    broker.stats().limit_hit(LimitKind::PacketSize);
                }
                answer_bad_connect(io, hint, &error).await;
                return Err(Refused::Malformed(error));
            }
        }
        match io.fill().await {
            Ok(true) => {}
            Ok(false) | Err(_) => return Err(Refused::Network),
        }
        if !hold.hold(io.read_buf.len()) {
            return Err(Refused::PartialBudget);
        }
    }
}

/// A CONNECT that could not be decoded: an unsupported level gets return code 0x01 in the 3.1.1
/// format [MQTT-3.1.2-2]; a broken v5 CONNECT gets CONNACK with the reason code; v3 just a close.
async fn answer_bad_connect<S>(io: &mut Io<S>, hint: Option<ProtocolVersion>, error: &DecodeError)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let protocol = match (error, hint) {
        (DecodeError::UnsupportedProtocol { .. }, _) => ProtocolVersion::V3_1_1,
        (_, Some(ProtocolVersion::V5)) => ProtocolVersion::V5,
        _ => return,
    };
    let mut buf = BytesMut::new();
    let packet = connack_failure(error.reason_code());
    if codec::encode(&packet, protocol, u32::MAX, &mut buf).is_ok() {
        let _ = io.write_all(&mut buf).await;
    }
}

fn connack_failure(reason: ReasonCode) -> Packet {
    Packet::ConnAck(ConnAck {
        session_present: false, // [MQTT-3.2.2-6]
        reason_code: reason,
        properties: ConnAckProperties::default(),
    })
}

/// Sends a refusing CONNACK and reports the refusal [MQTT-3.2.2-7].
/// The Reason String is left out if the CONNACK would otherwise exceed the client's Maximum Packet
/// Size [MQTT-3.1.2-25].
async fn refuse<S>(
    io: &mut Io<S>,
    connect: &Connect,
    reason: ReasonCode,
    why: &'static str,
) -> Result<Connection, Refused>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let max = connect.properties.maximum_packet_size.unwrap_or(u32::MAX);
    let mut packet = connack_failure(reason);
    if let Packet::ConnAck(connack) = &mut packet {
        connack.properties.reason_string = Some(ByteString::from_static(why));
    }
    let mut buf = BytesMut::new();
    let encoded = codec::encode(&packet, connect.protocol, max, &mut buf)
        .or_else(|_| codec::encode(&connack_failure(reason), connect.protocol, max, &mut buf));
    if encoded.is_ok() {
        let _ = io.write_all(&mut buf).await;
    }
    Err(Refused::ConnAck(reason))
}

/// The client identifier to use: the client's, or a fresh one for an empty identifier where the
/// protocol allows that [MQTT-3.1.3-6], [MQTT-3.1.3-8].
fn assign_client_id(connect: &Connect) -> Result<ClientId, ReasonCode> {
    if !connect.client_id.is_empty() {
        // MQTT 3.1 limits identifiers to 23 characters and refuses longer ones with return code 2.
        if connect.protocol == ProtocolVersion::V3_1 && connect.client_id.chars().count() > 23 {
            return Err(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
        }
        return Ok(ClientId::new(&connect.client_id));
    }
    let allowed = match connect.protocol {
        ProtocolVersion::V3_1 => false,
        ProtocolVersion::V3_1_1 => connect.clean_start,
        ProtocolVersion::V5 => true,
    };
    if !allowed {
        return Err(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
    }
    Ok(ClientId::new(format!("tern-{:016x}", fastrand::u64(..))))
}

/// Runs an MQTT 5 enhanced authentication exchange during CONNECT (4.12). The outer `Result` is for
/// a broken exchange, the inner one for the verdict: success data, or the CONNACK reason code.
async fn enhanced_auth<S>(
    broker: &Broker,
    io: &mut Io<S>,
    client: &ClientInfo,
    method: &ByteString,
    mut data: Option<Bytes>,
) -> Result<Result<Option<Bytes>, ReasonCode>, Refused>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(mut exchange) = broker.hooks().start_enhanced_auth(method, client) else {
        debug!(client_id = %client.client_id, %method, "no hook knows this authentication method");
        return Ok(Err(ReasonCode::BAD_AUTHENTICATION_METHOD));
    };
    let max = broker.config().limits.max_packet_size;
    loop {
        match exchange.step(data.take()).await {
            AuthStep::Success(data) => return Ok(Ok(data)),
            AuthStep::Failure(reason) => return Ok(Err(reason)),
            AuthStep::Continue(challenge) => {
                let packet = Packet::Auth(Auth {
                    reason_code: ReasonCode::CONTINUE_AUTHENTICATION,
                    properties: AuthProperties {
                        authentication_method: Some(method.clone()),
                        authentication_data: challenge,
                        ..Default::default()
                    },
                });
                let mut buf = BytesMut::new();
                codec::encode(&packet, ProtocolVersion::V5, u32::MAX, &mut buf)
                    .map_err(|_| Refused::Network)?;
                io.write_all(&mut buf).await.map_err(|_| Refused::Network)?;
            }
        }
        let reply = loop {
            match codec::decode(&mut io.read_buf, ProtocolVersion::V5, max) {
                Ok(Some(packet)) => break packet,
                Ok(None) => match io.fill().await {
                    Ok(true) => {}
                    Ok(false) | Err(_) => return Err(Refused::Network),
                },
                Err(error) => return Err(Refused::Malformed(error)),
            }
        };
        match reply {
            Packet::Auth(auth)
                if auth.reason_code == ReasonCode::CONTINUE_AUTHENTICATION
                    && auth.properties.authentication_method.as_ref() == Some(method) =>
            {
                data = auth.properties.authentication_data;
            }
            _ => return Ok(Err(ReasonCode::PROTOCOL_ERROR)), // only AUTH 0x18 with the same method may follow [MQTT-3.1.2-30], [MQTT-4.12.0-3]
        }
    }
}

impl Connection {
    /// Handles AUTH after CONNACK: a client-initiated re-authentication (4.12.1).
    pub(super) async fn on_auth(&mut self, auth: Auth) -> Result<(), Close> {
        let client = Arc::clone(&self.client);
        let broker = Arc::clone(self.slot.broker());
        let state = match self
            .extras
            .as_mut()
            .and_then(|extras| extras.enhanced_auth.as_mut())
        {
            Some(state)
                if auth.properties.authentication_method.as_ref() == Some(&state.method) =>
            {
                state
            }
            _ => return Err(Close::protocol("AUTH without the method used at CONNECT")), // [MQTT-4.12.1-1]
        };
        let starting = auth.reason_code == ReasonCode::RE_AUTHENTICATE;
        let continuing =
            auth.reason_code == ReasonCode::CONTINUE_AUTHENTICATION && state.reauth.is_some();
        if !starting && !continuing {
            return Err(Close::protocol("unexpected AUTH reason code"));
        }
        let method = state.method.clone();
        if starting {
            state.reauth = broker.hooks().start_enhanced_auth(&method, &client);
        }
        let Some(exchange) = state.reauth.as_mut() else {
            return Err(Close::Server(
                ReasonCode::BAD_AUTHENTICATION_METHOD,
                Cow::Borrowed("re-authentication unavailable"),
            ));
        };
        let (reason, data) = match exchange.step(auth.properties.authentication_data).await {
            AuthStep::Continue(data) => (ReasonCode::CONTINUE_AUTHENTICATION, data),
            AuthStep::Success(data) => {
                state.reauth = None;
                (ReasonCode::SUCCESS, data)
            }
            AuthStep::Failure(reason) => {
                return Err(Close::Server(
                    reason,
                    Cow::Borrowed("re-authentication failed"),
                )); // [MQTT-4.12.1-2]
            }
        };
        self.send(&Packet::Auth(Auth {
            reason_code: reason,
            properties: AuthProperties {
                authentication_method: Some(method),
                authentication_data: data,
                ..Default::default()
            },
        }))
    }
}
