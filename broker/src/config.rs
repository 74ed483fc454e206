//! The broker's YAML configuration: one file, every field with a safe default.
//!
//! Unknown keys are rejected with their path (`limits.max_packt_size: unknown field`), so a typo never
//! silently falls back to a default. The operator renders this same format; the keys named in
//! DESIGN.md §2 keep their meaning. Every key is described in `docs/configuration.md`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use crate::codec::QoS;

/// Why a configuration could not be used. Messages name the offending key, and carry their cause
/// rather than a `source`, so that a report that prints the chain names it once.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    /// `message` already names the key (serde_yaml puts the path in front) and the line.
    #[error("{path}: {message}")]
    Parse {
        path: String,
        key: String,
        message: String,
    },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: String,
        key: String,
        message: String,
    },
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub listeners: Vec<ListenerConfig>,
    pub auth: AuthConfig,
    pub log: LogConfig,
    pub limits: Limits,
    pub features: Features,
    pub sys: SysConfig,
    /// The HTTP endpoint (metrics, health, admin API); off when absent.
    pub http: Option<HttpConfig>,
    /// Membership of a cluster of brokers; a single node when absent.
    pub cluster: Option<ClusterConfig>,
    /// Where sessions and retained messages are kept across restarts; in memory only when absent.
    pub storage: Option<StorageConfig>,
}

impl Default for Config {
    /// The configuration without a file: MQTT on 127.0.0.1:1883 for anonymous local clients, like
    /// Mosquitto 2's local-only mode.
    fn default() -> Self {
        Self {
            listeners: vec![ListenerConfig::default()],
            auth: AuthConfig {
                allow_anonymous: true,
                ..AuthConfig::default()
            },
            log: LogConfig::default(),
            limits: Limits::default(),
            features: Features::default(),
            sys: SysConfig::default(),
            http: None,
            cluster: None,
            storage: None,
        }
    }
}

/// The transport a listener speaks.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ListenerProtocol {
    /// MQTT over plain TCP.
    #[default]
    Tcp,
    /// MQTT over TLS (needs `tls`).
    Tls,
    /// MQTT over WebSocket (`websocket.path`, default `/mqtt`).
    Ws,
    /// MQTT over WebSocket over TLS (needs `tls`).
    Wss,
}

impl ListenerProtocol {
    pub fn uses_tls(self) -> bool {
        matches!(self, Self::Tls | Self::Wss)
    }

    pub fn uses_websocket(self) -> bool {
        matches!(self, Self::Ws | Self::Wss)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Tls => "tls",
            Self::Ws => "ws",
            Self::Wss => "wss",
        }
    }
}

/// One listening socket.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// A name for logs and metrics; unique among listeners.
    pub name: String,
    #[serde(default)]
    pub protocol: ListenerProtocol,
    #[serde(deserialize_with = "bind_address")]
    pub bind: SocketAddr,
    /// Connected clients this listener accepts at once (0x89 *Server busy* beyond).
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// Expect a PROXY protocol v1 or v2 header first (from a load balancer) and take the client's
    /// address from it.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// Certificate, key and client-certificate settings for `tls` and `wss`.
    #[serde(default)]
    pub tls: Option<TlsSettings>,
    /// WebSocket settings for `ws` and `wss`.
    #[serde(default)]
    pub websocket: Option<WebSocketSettings>,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            name: "mqtt".into(),
            protocol: ListenerProtocol::Tcp,
            bind: SocketAddr::from(([127, 0, 0, 1], 1883)),
            max_connections: None,
            proxy_protocol: false,
            tls: None,
            websocket: None,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            allow_anonymous: false,
            users_file: None,
            acl_file: None,
            reload_poll_secs: 2,
            certificate_identities: CertificateIdentities::Any,
            failed_logins_per_address: 5,
            login_backoff_secs: 1,
            login_backoff_max_secs: 60,
            max_pending_logins: 16,
            max_pending_logins_per_address: 4,
        }
    }
}

/// The HTTP endpoint: `/metrics`, `/healthz`, `/readyz` and the admin API under `/api/v1/`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    #[serde(deserialize_with = "bind_address")]
    pub bind: SocketAddr,
    /// File holding the bearer token for `/api/v1/`; without it the admin API is off.
    pub admin_token_file: Option<PathBuf>,
    /// Connections open at once; one more closes the oldest, so the endpoint never holds more file
    /// descriptors than this and held sockets cannot keep a new request out.
    pub max_connections: usize,
    /// Seconds a client has to send a complete request header, from the connection's start or,
    /// on a kept-alive connection, from the previous response.
    pub header_read_timeout_secs: u64,
    /// Seconds without a byte read or written after which a connection is closed, whatever it is
    /// doing (a request body or a response that stalls).
    pub idle_timeout_secs: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 9090)),
            admin_token_file: None,
            max_connections: 64,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 30,
        }
    }
}

impl HttpConfig {
    /// The bounds must let a request through: zero would refuse or cut every connection.
    fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if self.max_connections == 0 {
            return Err(("http.max_connections", "must be at least 1"));
        }
        if !(1..=3600).contains(&self.header_read_timeout_secs) {
            return Err(("http.header_read_timeout_secs", "must be 1 ..= 3600"));
        }
        if !(1..=86_400).contains(&self.idle_timeout_secs) {
            return Err(("http.idle_timeout_secs", "must be 1 ..= 86400 (a day)"));
        }
        Ok(())
    }
}

/// Who may connect.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Let clients in that no authentication hook vouched for. Off unless asked for when a file is given.
    pub allow_anonymous: bool,
    /// `username:hash` lines (argon2id, or Mosquitto's `$6$`/`$7$`); see `docs/acl.md`.
    pub users_file: Option<PathBuf>,
    /// Ordered allow/deny rules; with one configured, anything no rule allows is denied.
    pub acl_file: Option<PathBuf>,
    /// Seconds between checks of the users, ACL, TLS and token files for changes; 0 turns the checks
    /// off (the admin API's reload still works).
    pub reload_poll_secs: u64,
    /// Which verified client certificates log a client in on a `use_identity_as_username` listener.
    pub certificate_identities: CertificateIdentities,
    /// Wrong passwords from one address before it must wait between tries; 0 turns this off.
    pub failed_logins_per_address: u32,
    /// The first wait, in seconds, doubled with each further failure.
    pub login_backoff_secs: u64,
    /// The longest wait, in seconds.
    pub login_backoff_max_secs: u64,
    /// Password verifications waiting or running at once, broker-wide.
    pub max_pending_logins: usize,
    /// Password verifications waiting or running at once for one address.
    pub max_pending_logins_per_address: u32,
}

/// Which verified client certificates identify a user.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum CertificateIdentities {
    /// Any certificate the listener's client CA signed, as Mosquitto's `use_identity_as_username`.
    #[default]
    Any,
    /// Only certificates whose identity is a user in `users_file`. Removing the user revokes the
    /// certificate: new connections are refused and connected ones closed (0x87), without waiting
    /// for the certificate to expire.
    Listed,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter: `info`, `debug`, or per target such as `info,tern_broker::listener=debug`.
    /// The `RUST_LOG` environment variable overrides it.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// What the broker does with a QoS 1/2 message for a session whose queue is full. QoS 0 messages are
/// always dropped (and counted) when the queue is full.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum QueueOverflow {
    /// Drop the oldest queued message to make room, and count it.
    #[default]
    DropOldest,
    /// Drop the new message, and count it.
    DropNewest,
    /// Disconnect the client (v5 reason 0x97 quota exceeded); an offline session drops the newest.
    Disconnect,
}

/// Sizes and counts that bound what one client can make the broker hold.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest packet the broker accepts, in bytes (announced as Maximum Packet Size to v5 clients).
    pub max_packet_size: u32,
    /// QoS 1/2 messages a client may have unacknowledged towards the broker (v5 Receive Maximum).
    pub receive_maximum: u16,
    /// Upper bound on unacknowledged QoS 1/2 messages towards one client; the client's own Receive
    /// Maximum lowers it further.
    pub max_inflight: u16,
    /// Messages queued per session (online or offline) beyond the inflight window.
    pub max_queued_messages: usize,
    /// Bytes of message data queued per session (a message shared with other sessions counts
    /// whole), under the same overflow policy.
    pub max_queued_bytes: usize,
    /// Bytes of message data queued across all sessions (a shared message counts about once);
    /// beyond it new deliveries are dropped whatever the policy.
    pub max_queued_bytes_total: usize,
    pub queue_overflow: QueueOverflow,
    /// Queued deliveries in a connected subscriber's session at which the publishers feeding it
    /// stop being read until the queue is back to half; 0 turns backpressure off. Capped at
    /// `max_queued_messages`.
    pub backlog_high_water: usize,
    /// Longest one publisher waits for one backlog, in milliseconds; a subscriber that has not
    /// drained by then is not waited for again until it has.
    pub backlog_max_pause_ms: u64,
    /// Milliseconds of publishing a connected subscriber's queue may span, oldest queued message
    /// to newest, before the publishers feeding it stop being read, as at `backlog_high_water`;
    /// they go on once it is back to half. Counts from 32 queued deliveries; 0 turns it off.
    pub backlog_max_delay_ms: u64,
    /// Topic aliases a v5 client may use towards the broker; 0 disables them.
    pub topic_alias_maximum: u16,
    /// Longest topic name or filter in bytes.
    pub max_topic_length: usize,
    /// Most levels in a topic name or filter.
    pub max_topic_levels: usize,
    /// When set, overrides the client's keep alive (v5 Server Keep Alive; also applied to v3 clients).
    pub server_keep_alive: Option<u16>,
    /// Caps the session expiry a client asks for, in seconds. Also bounds v3 persistent sessions,
    /// which otherwise never expire.
    pub max_session_expiry_secs: Option<u32>,
    /// Seconds a new connection has to send CONNECT.
    pub connect_timeout_secs: u64,
    /// Milliseconds without input or deliveries after which a plain TCP connection is parked: it
    /// gives up its task and its socket waits in one epoll set for the whole process. A client that
    /// sends nothing after CONNECT is parked as soon as its CONNACK is out. 0 never parks.
    pub park_after_idle_ms: u64,
    /// Connected clients the broker accepts at once; more are refused (0x89 *Server busy*).
    pub max_connections: Option<usize>,
    /// New connections per second, broker-wide; more are refused (0x9F *Connection rate exceeded*).
    pub max_connection_rate: Option<u32>,
    /// PUBLISH packets per second one client may send; faster clients are slowed down by reading
    /// their connection more slowly (nothing is dropped).
    pub max_publish_rate: Option<u32>,
    /// Subscriptions one session may hold; more are refused in SUBACK (0x97 *Quota exceeded*).
    pub max_subscriptions_per_client: Option<usize>,
    /// Retained messages the broker stores; more are refused (MQTT 5: 0x97 *Quota exceeded*).
    pub max_retained_messages: usize,
    /// Bytes of message data the retained store holds, refused beyond as above.
    pub max_retained_bytes: usize,
    /// Bytes all connections together may hold in packets not yet received whole; a connection
    /// that would take more is closed (MQTT 5: DISCONNECT 0x97 *Quota exceeded*).
    pub max_partial_packet_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_packet_size: 1024 * 1024,
            receive_maximum: 1024,
            max_inflight: 1024,
            max_queued_messages: 10_000,
            max_queued_bytes: 32 * MIB,
            max_queued_bytes_total: 512 * MIB,
            queue_overflow: QueueOverflow::DropOldest,
            backlog_high_water: 1_000,
            backlog_max_pause_ms: 500,
            backlog_max_delay_ms: 100,
            topic_alias_maximum: 64,
            max_topic_length: 65_535,
            max_topic_levels: 65_535,
            server_keep_alive: None,
            max_session_expiry_secs: None,
            connect_timeout_secs: 10,
            park_after_idle_ms: 1_000,
            max_connections: None,
            max_connection_rate: None,
            max_publish_rate: None,
            max_subscriptions_per_client: Some(1_000),
            max_retained_messages: 100_000,
            max_retained_bytes: 128 * MIB,
            max_partial_packet_bytes: 64 * MIB,
        }
    }
}

const MIB: usize = 1024 * 1024;

/// Optional MQTT features, announced to v5 clients in CONNACK.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Features {
    pub retain_available: bool,
    pub wildcard_subscriptions: bool,
    pub shared_subscriptions: bool,
    pub subscription_identifiers: bool,
    /// Highest QoS the broker accepts from publishers and grants to subscribers (0, 1 or 2).
    pub maximum_qos: u8,
}

impl Default for Features {
    fn default() -> Self {
        Self {
            retain_available: true,
            wildcard_subscriptions: true,
            shared_subscriptions: true,
            subscription_identifiers: true,
            maximum_qos: 2,
        }
    }
}

impl Features {
    pub fn maximum_qos(&self) -> QoS {
        QoS::from_bits(self.maximum_qos).unwrap_or(QoS::ExactlyOnce)
    }
}

/// The `$SYS/broker/...` statistics topics.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SysConfig {
    /// Seconds between updates; 0 turns the statistics topics off.
    pub interval_secs: u64,
    /// Publish `$SYS/broker/clients/{id}/connected|disconnected` notices.
    pub client_notices: bool,
}

impl Default for SysConfig {
    fn default() -> Self {
        Self {
            interval_secs: 10,
            client_notices: true,
        }
    }
}

impl SysConfig {
    pub fn interval(&self) -> Option<Duration> {
        (self.interval_secs > 0).then(|| Duration::from_secs(self.interval_secs))
    }
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: display.clone(),
            error,
        })?;
        Self::from_yaml(&text, &display)
    }

    /// Parses and validates YAML text; `origin` names the source in error messages. `${NAME}` is
    /// replaced by the environment variable `NAME` first (an unset one is an error), so that one
    /// file serves every pod of a StatefulSet (`node_id: ${POD_NAME}`).
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let expanded = expand_env(text, |name| std::env::var(name).ok()).map_err(|name| {
            ConfigError::Invalid {
                path: origin.to_string(),
                key: format!("${{{name}}}"),
                message: "the environment variable is not set".into(),
            }
        })?;
        Self::parse_yaml(&expanded, origin)
    }

    fn parse_yaml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        // An empty file is a valid file with every default (and anonymous access off).
        let config: Config = if text.trim().is_empty() {
            Config {
                auth: AuthConfig::default(),
                ..Config::default()
            }
        } else {
            let deserializer = serde_yaml::Deserializer::from_str(text);
            let mut config: Config =
                serde_path_to_error::deserialize(deserializer).map_err(|e| ConfigError::Parse {
                    path: origin.to_string(),
                    key: display_key(e.path()),
                    message: e.into_inner().to_string(),
                })?;
            // `allow_anonymous` defaults to true only without a file.
            if !yaml_mentions_anonymous(text) {
                config.auth.allow_anonymous = false;
            }
            config
        };
        config.validate(origin)?;
        Ok(config)
    }

    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| ConfigError::Invalid {
            path: origin.to_string(),
            key: key.to_string(),
            message: message.to_string(),
        };
        if self.auth.certificate_identities == CertificateIdentities::Listed
            && self.auth.users_file.is_none()
        {
            return Err(invalid(
                "auth.certificate_identities",
                "listed needs auth.users_file",
            ));
        }
        let auth = &self.auth;
        if auth.login_backoff_secs == 0 || auth.login_backoff_secs > auth.login_backoff_max_secs {
            return Err(invalid(
                "auth.login_backoff_secs",
                "must be 1 ..= auth.login_backoff_max_secs",
            ));
        }
        if auth.max_pending_logins == 0 || auth.max_pending_logins_per_address == 0 {
            return Err(invalid(
                "auth.max_pending_logins",
                "max_pending_logins and max_pending_logins_per_address must be at least 1",
            ));
        }
        if self.listeners.is_empty() {
            return Err(invalid("listeners", "at least one listener is required"));
        }
        for (i, listener) in self.listeners.iter().enumerate() {
            if listener.name.is_empty() {
                return Err(invalid(
                    &format!("listeners[{i}].name"),
                    "must not be empty",
                ));
            }
            if listener.protocol.uses_tls() && listener.tls.is_none() {
                return Err(invalid(
                    &format!("listeners[{i}].tls"),
                    "required for protocol tls and wss",
                ));
            }
            if !listener.protocol.uses_tls() && listener.tls.is_some() {
                return Err(invalid(
                    &format!("listeners[{i}].tls"),
                    "only protocol tls and wss use it",
                ));
            }
            if let Some(tls) = &listener.tls
                && tls.client_ca_file.is_none()
                && (tls.require_client_certificate || tls.use_identity_as_username)
            {
                return Err(invalid(
                    &format!("listeners[{i}].tls"),
                    "require_client_certificate and use_identity_as_username need client_ca_file",
                ));
            }
            if !listener.protocol.uses_websocket() && listener.websocket.is_some() {
                return Err(invalid(
                    &format!("listeners[{i}].websocket"),
                    "only protocol ws and wss use it",
                ));
            }
            if self.listeners[..i].iter().any(|l| l.name == listener.name) {
                return Err(invalid(
                    &format!("listeners[{i}].name"),
                    "duplicate listener name",
                ));
            }
        }
        let limits = &self.limits;
        if limits.max_packet_size < 64 {
            return Err(invalid(
                "limits.max_packet_size",
                "must be at least 64 bytes",
            ));
        }
        if limits.max_packet_size as usize > crate::codec::MAX_REMAINING_LENGTH + 5 {
            return Err(invalid(
                "limits.max_packet_size",
                "must be at most 268435460 bytes (the protocol's limit)",
            ));
        }
        if limits.receive_maximum == 0 {
            return Err(invalid("limits.receive_maximum", "must be at least 1"));
        }
        if limits.max_inflight == 0 {
            return Err(invalid("limits.max_inflight", "must be at least 1"));
        }
        if limits.max_topic_length == 0 || limits.max_topic_length > 65_535 {
            return Err(invalid("limits.max_topic_length", "must be 1 ..= 65535"));
        }
        if limits.max_topic_levels == 0 {
            return Err(invalid("limits.max_topic_levels", "must be at least 1"));
        }
        if limits.backlog_high_water > 0 && !(1..=60_000).contains(&limits.backlog_max_pause_ms) {
            return Err(invalid(
                "limits.backlog_max_pause_ms",
                "must be 1 ..= 60000 while limits.backlog_high_water is set",
            ));
        }
        if limits.backlog_max_delay_ms > 60_000 {
            return Err(invalid(
                "limits.backlog_max_delay_ms",
                "must be 0 ..= 60000 (0 turns it off)",
            ));
        }
        if limits.park_after_idle_ms > 86_400_000 {
            return Err(invalid(
                "limits.park_after_idle_ms",
                "must be 0 ..= 86400000 (a day)",
            ));
        }
        if let Some(http) = &self.http {
            http.validate()
                .map_err(|(key, message)| invalid(key, message))?;
        }
        if self.features.maximum_qos > 2 {
            return Err(invalid("features.maximum_qos", "must be 0, 1 or 2"));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(invalid("log.level", &e.to_string()));
        }
        if let Some(cluster) = &self.cluster
            && let Err((key, message)) = cluster.check()
        {
            return Err(invalid(key, &message));
        }
        if let Some(storage) = &self.storage
            && let Err((key, message)) = storage.check()
        {
            return Err(invalid(key, message));
        }
        Ok(())
    }
}

/// The `storage:` section (DESIGN.md §2): sessions, their queued and in-flight QoS 1/2 messages
/// and retained messages kept in one file under `dir`; see `docs/storage.md`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// The directory of the store (`DIR/tern.redb`), created if missing: in Kubernetes, the pod's
    /// volume.
    pub dir: PathBuf,
    /// When what a client is told is kept is on disk.
    #[serde(default)]
    pub durability: Durability,
    /// With `batched`: how often what changed is written and synced.
    #[serde(default = "default_batch_interval_ms")]
    pub batch_interval_ms: u64,
}

/// When an acknowledgement may go out, relative to the disk (see `docs/storage.md`).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// PUBACK, PUBREC and SUBACK wait until what they acknowledge is synced to disk; one sync
    /// covers every change that arrived meanwhile (group commit). The default: it is what an
    /// acknowledgement promises.
    #[default]
    Sync,
    /// Changes are written and synced every `batch_interval_ms`; acknowledgements do not wait, so
    /// a crash loses at most that interval (and at most `storage::BATCHED_BACKLOG` changes: past
    /// that, acknowledgements wait as in `Sync`).
    Batched,
    /// Nothing is written: sessions and retained messages live in memory only, as without a
    /// `storage` section.
    Off,
}

fn default_batch_interval_ms() -> u64 {
    10
}

impl StorageConfig {
    /// The settings for a store an embedding program supplies without a `storage` section: no
    /// directory, acknowledgements after the disk.
    pub fn embedded() -> Self {
        Self {
            dir: PathBuf::new(),
            durability: Durability::default(),
            batch_interval_ms: default_batch_interval_ms(),
        }
    }

    /// The batching interval, for `batched`.
    pub fn batch_interval(&self) -> Duration {
        Duration::from_millis(self.batch_interval_ms)
    }

    /// The first key that is wrong, and why.
    fn check(&self) -> Result<(), (&'static str, &'static str)> {
        if self.dir.as_os_str().is_empty() {
            return Err(("storage.dir", "must not be empty"));
        }
        if !(1..=60_000).contains(&self.batch_interval_ms) {
            return Err(("storage.batch_interval_ms", "must be 1 ..= 60000"));
        }
        Ok(())
    }
}

/// A `bind` value: an IP address and a port. Host names are refused rather than resolved, because a
/// name can stand for several addresses (`localhost` is 127.0.0.1 and ::1) and what a socket listens
/// on should not depend on the resolver at start; the message says what to write instead.
fn bind_address<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
    // A visitor rather than `String::deserialize` and a check after it: an error raised inside the
    // deserializer's call is the one `serde_path_to_error` labels with the key.
    struct BindAddress;
    impl serde::de::Visitor<'_> for BindAddress {
        type Value = SocketAddr;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an IP address and port, such as 127.0.0.1:1883")
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<SocketAddr, E> {
            parse_bind_address(text).map_err(E::custom)
        }
    }
    deserializer.deserialize_str(BindAddress)
}

fn parse_bind_address(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let example = "such as 127.0.0.1:1883, or 0.0.0.0:1883 or [::]:1883 for every interface";
    let problem = match text.rsplit_once(':') {
        None => "needs an IP address and a port".to_owned(),
        Some((_, port)) if port.parse::<u16>().is_err() => "needs a port (0 to 65535)".to_owned(),
        Some(("", _)) => "needs an IP address before the port".to_owned(),
        Some((host, _)) if host.parse::<std::net::Ipv6Addr>().is_ok() => {
            format!("an IPv6 address goes in brackets: [{host}]")
        }
        Some((host, _)) => {
            format!("{host:?} is not an IP address (host names are not resolved)")
        }
    };
    Err(format!(
        "{text:?}: {problem}; give an IP address and port, {example}"
    ))
}

/// `serde_path_to_error` prints the root as `.`; say so in words.
fn display_key(path: &serde_path_to_error::Path) -> String {
    let key = path.to_string();
    if key == "." {
        "(top level)".into()
    } else {
        key
    }
}

/// Whether the YAML sets `auth.allow_anonymous` explicitly.
fn yaml_mentions_anonymous(text: &str) -> bool {
    serde_yaml::from_str::<serde_yaml::Value>(text)
        .ok()
        .and_then(|v| v.get("auth")?.get("allow_anonymous").cloned())
        .is_some()
}

/// A listener's `tls:` section.
#[derive(Debug, Clone, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) for the leaf certificate.
    pub key_file: PathBuf,
    /// PEM CA certificates that client certificates are verified against. Without it the server
    /// does not ask for client certificates.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// Refuse clients without a valid certificate (needs `client_ca_file`).
    #[serde(default)]
    pub require_client_certificate: bool,
    /// Report the client certificate's common name as the client's identity, to be used as its
    /// username (needs `client_ca_file`).
    #[serde(default)]
    pub use_identity_as_username: bool,
}

/// A listener's `websocket:` section.
#[derive(Debug, Clone, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WebSocketSettings {
    /// The only path that accepts the upgrade; anything else gets 404.
    #[serde(default = "default_path")]
    pub path: String,
}

impl Default for WebSocketSettings {
    fn default() -> Self {
        Self {
            path: default_path(),
        }
    }
}

fn default_path() -> String {
    "/mqtt".to_owned()
}

/// Replaces every `${NAME}` (NAME: letters, digits and `_`) with `lookup(NAME)`; `$$` is a literal
/// `$`. Returns the first name `lookup` does not know.
pub fn expand_env(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
            continue;
        }
        let name = after.strip_prefix('{').and_then(|inner| {
            let end = inner.find('}')?;
            let name = &inner[..end];
            let valid =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            valid.then_some(name)
        });
        match name {
            Some(name) => {
                out.push_str(&lookup(name).ok_or_else(|| name.to_string())?);
                rest = &after[name.len() + 2..];
            }
            None => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The `cluster:` section: how this node finds and talks to the others of its cluster.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Nodes that gossip another cluster name are ignored.
    pub name: String,
    /// Unique and stable across restarts: the pod name in Kubernetes.
    pub node_id: String,
    /// Gossip (UDP) and peer links (TCP) share this address.
    pub bind: SocketAddr,
    /// What peers dial; defaults to `bind` when that is a concrete address.
    #[serde(default)]
    pub advertise: Option<SocketAddr>,
    /// `host:port` of nodes to gossip with first; DNS names are re-resolved (in Kubernetes, the
    /// headless Service).
    #[serde(default)]
    pub seeds: Vec<String>,
    /// Mutual TLS on peer links.
    #[serde(default)]
    pub tls: Option<PeerTlsConfig>,
    /// How often a node gossips; with the failure detector's threshold it sets how soon a dead
    /// node is noticed (see `docs/cluster.md`).
    #[serde(default = "default_gossip_interval_ms")]
    pub gossip_interval_ms: u64,
    /// The phi-accrual failure detector's threshold: higher is slower and surer.
    #[serde(default = "default_phi_threshold")]
    pub phi_threshold: f64,
    /// Messages queued for one peer before QoS 0 messages to it are dropped (QoS 1 and 2 may use
    /// four times as much before they are dropped too, each counted and logged).
    #[serde(default = "default_peer_queue")]
    pub peer_queue_messages: usize,
    /// When a publisher's QoS 1 or 2 message that other nodes need is acknowledged.
    #[serde(default)]
    pub acknowledge: ClusterAcknowledge,
}

/// When a QoS 1 or 2 message bound for other nodes is acknowledged to its publisher (PUBACK,
/// PUBREC); see `docs/cluster.md`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ClusterAcknowledge {
    /// Once this node has accepted it: delivered to its own subscribers' queues and queued for the
    /// peers that need it.
    #[default]
    Local,
    /// Once every peer that needs it holds it too (or has been declared dead).
    Cluster,
}

/// Certificates for the peer links: each node presents its own and requires one signed by `ca_file`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PeerTlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub ca_file: PathBuf,
}

fn default_gossip_interval_ms() -> u64 {
    500
}

fn default_phi_threshold() -> f64 {
    8.0
}

fn default_peer_queue() -> usize {
    10_000
}

impl ClusterConfig {
    /// The address peers dial.
    pub fn advertise_addr(&self) -> SocketAddr {
        self.advertise.unwrap_or(self.bind)
    }

    /// The first key that is wrong, and why.
    fn check(&self) -> Result<(), (&'static str, String)> {
        let valid_name = |s: &str| {
            !s.is_empty()
                && s.len() <= 253
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !valid_name(&self.name) {
            return Err((
                "cluster.name",
                "1 to 253 letters, digits, '-', '_' or '.'".into(),
            ));
        }
        if !valid_name(&self.node_id) {
            return Err((
                "cluster.node_id",
                "1 to 253 letters, digits, '-', '_' or '.'".into(),
            ));
        }
        let advertise = self.advertise_addr();
        if advertise.ip().is_unspecified() || advertise.port() == 0 {
            return Err((
                "cluster.advertise",
                format!(
                    "required when cluster.bind ({}) is not an address peers can dial",
                    self.bind
                ),
            ));
        }
        if self.bind.port() == 0 {
            return Err(("cluster.bind", "needs a fixed port".into()));
        }
        if !(10..=60_000).contains(&self.gossip_interval_ms) {
            return Err(("cluster.gossip_interval_ms", "must be 10 ..= 60000".into()));
        }
        if !(1.0..=32.0).contains(&self.phi_threshold) {
            return Err(("cluster.phi_threshold", "must be 1 ..= 32".into()));
        }
        if self.peer_queue_messages == 0 {
            return Err(("cluster.peer_queue_messages", "must be at least 1".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_yaml(text, "test.yaml")
    }

    #[test]
    fn without_a_file_the_broker_serves_anonymous_localhost() {
        let config = Config::default();
        assert_eq!(config.listeners[0].bind.to_string(), "127.0.0.1:1883");
        assert!(config.auth.allow_anonymous);
    }

    #[test]
    fn a_file_turns_anonymous_access_off_unless_it_asks() {
        let config = parse("listeners: [{name: a, bind: '0.0.0.0:1883'}]").unwrap();
        assert!(!config.auth.allow_anonymous);
        let config = parse("auth: {allow_anonymous: true}").unwrap();
        assert!(config.auth.allow_anonymous);
        assert!(!parse("").unwrap().auth.allow_anonymous);
    }

    #[test]
    fn the_design_contract_keys_parse() {
        let config = parse(
            "listeners:\n  - name: mqtt\n    protocol: tcp\n    bind: 0.0.0.0:1883\nauth:\n  allow_anonymous: false\n",
        )
        .unwrap();
        assert_eq!(config.listeners[0].protocol, ListenerProtocol::Tcp);
        assert_eq!(config.listeners[0].bind.port(), 1883);
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_path() {
        let err = parse("limits:\n  max_packt_size: 10\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("limits"), "{err}");
        assert!(err.contains("max_packt_size"), "{err}");
        let err = parse("listeners:\n  - name: a\n    bind: 127.0.0.1:1\n    colour: red\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listeners[0]"), "{err}");
    }

    #[test]
    fn a_backlog_delay_out_of_range_names_the_key() {
        let err = parse("limits: {backlog_max_delay_ms: 60001}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("limits.backlog_max_delay_ms"), "{err}");
        assert!(parse("limits: {backlog_max_delay_ms: 0}").is_ok());
    }

    #[test]
    fn a_backlog_pause_out_of_range_names_the_key() {
        let err = parse("limits: {park_after_idle_ms: 86400001}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("limits.park_after_idle_ms"), "{err}");
        assert!(parse("limits: {park_after_idle_ms: 0}").is_ok());
        let err = parse("limits: {backlog_max_pause_ms: 0}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("limits.backlog_max_pause_ms"), "{err}");
        let config = parse("limits: {backlog_high_water: 0, backlog_max_pause_ms: 0}").unwrap();
        assert_eq!(
            config.limits.backlog_high_water, 0,
            "off: the pause is unused"
        );
    }

    #[test]
    fn a_host_name_to_bind_to_asks_for_an_ip_address() {
        let err = parse("listeners: [{name: a, bind: 'localhost:1883'}]")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listeners[0].bind"), "{err}");
        assert!(err.contains("\"localhost\" is not an IP address"), "{err}");
        assert!(err.contains("host names are not resolved"), "{err}");
        let err = parse("http: {bind: 'metrics.local:9090'}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("http.bind"), "{err}");
        assert!(err.contains("not an IP address"), "{err}");
    }

    #[test]
    fn a_bind_address_without_ip_or_port_says_which_is_missing() {
        for (bind, problem) in [
            ("1883", "needs an IP address and a port"),
            (":1883", "needs an IP address before the port"),
            ("127.0.0.1:http", "needs a port"),
            ("::1:1883", "an IPv6 address goes in brackets: [::1]"),
        ] {
            let err = parse(&format!("listeners: [{{name: a, bind: '{bind}'}}]"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(problem), "{bind}: {err}");
        }
        let config = parse("listeners: [{name: a, bind: '[::1]:1883'}]").unwrap();
        assert_eq!(config.listeners[0].bind.to_string(), "[::1]:1883");
    }

    #[test]
    fn http_bounds_have_safe_defaults_and_refuse_zero() {
        let http = parse("http: {bind: '127.0.0.1:0'}").unwrap().http.unwrap();
        assert_eq!(
            (
                http.max_connections,
                http.header_read_timeout_secs,
                http.idle_timeout_secs
            ),
            (64, 10, 30)
        );
        for (key, value) in [
            ("max_connections", 0),
            ("header_read_timeout_secs", 0),
            ("header_read_timeout_secs", 3601),
            ("idle_timeout_secs", 0),
        ] {
            let err = parse(&format!("http: {{{key}: {value}}}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("http.{key}")), "{err}");
        }
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = parse("limits: {receive_maximum: 0}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("limits.receive_maximum"), "{err}");
        let err = parse("listeners: [{name: a, bind: 'nonsense'}]")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listeners[0].bind"), "{err}");
        let err = parse("log: {level: 'info,=bad=='}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("log.level"), "{err}");
        let err =
            parse("listeners: [{name: a, bind: '127.0.0.1:1'}, {name: a, bind: '127.0.0.1:2'}]")
                .unwrap_err()
                .to_string();
        assert!(err.contains("listeners[1].name"), "{err}");
        let err = parse("auth: {certificate_identities: listed}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("auth.certificate_identities"), "{err}");
        let err = parse("auth: {certificate_identities: some}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("auth.certificate_identities"), "{err}");
    }

    #[test]
    fn environment_variables_fill_in_placeholders() {
        let env = |name: &str| (name == "POD_NAME").then(|| "demo-2".to_string());
        assert_eq!(
            expand_env("node_id: ${POD_NAME}\nprice: $$5 and $x", env).as_deref(),
            Ok("node_id: demo-2\nprice: $5 and $x")
        );
        assert_eq!(expand_env("a: ${MISSING}", env), Err("MISSING".to_string()));
        assert_eq!(
            expand_env("a: ${not valid}", env).as_deref(),
            Ok("a: ${not valid}")
        );
    }

    #[test]
    fn a_cluster_section_needs_an_address_peers_can_dial() {
        let config = parse(
            "cluster:\n  name: demo\n  node_id: demo-0\n  bind: 127.0.0.2:4370\n  seeds: [127.0.0.3:4370]\n",
        )
        .expect("valid");
        let cluster = config.cluster.expect("a cluster");
        assert_eq!(cluster.advertise_addr(), "127.0.0.2:4370".parse().unwrap());
        assert_eq!(cluster.gossip_interval_ms, 500);

        let error = parse("cluster:\n  name: demo\n  node_id: demo-0\n  bind: 0.0.0.0:4370\n")
            .expect_err("a wildcard needs advertise")
            .to_string();
        assert!(error.contains("cluster.advertise"), "{error}");
        let error = parse("cluster:\n  name: demo\n  node_id: 'a b'\n  bind: 127.0.0.2:4370\n")
            .expect_err("a space is not allowed")
            .to_string();
        assert!(error.contains("cluster.node_id"), "{error}");
    }

    #[test]
    fn acknowledgement_is_local_unless_the_cluster_is_asked_for() {
        let section = "cluster:\n  name: demo\n  node_id: demo-0\n  bind: 127.0.0.2:4370\n";
        let cluster = |extra: &str| parse(&format!("{section}{extra}")).map(|c| c.cluster);
        assert_eq!(
            cluster("").expect("valid").map(|c| c.acknowledge),
            Some(ClusterAcknowledge::Local)
        );
        assert_eq!(
            cluster("  acknowledge: cluster\n")
                .expect("valid")
                .map(|c| c.acknowledge),
            Some(ClusterAcknowledge::Cluster)
        );
        let error = cluster("  acknowledge: peers\n")
            .expect_err("not a choice")
            .to_string();
        assert!(error.contains("cluster.acknowledge"), "{error}");
    }
}
