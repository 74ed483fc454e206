//! Broker-wide metrics: Prometheus counters, gauges and a histogram bumped on the hot path (each an
//! atomic), read by the `/metrics` endpoint and by `$SYS`. Labels are bounded enums, never client
//! data. Names start with `tern_`; counters end in `_total`.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

use crate::codec::QoS;

/// Why a message was not delivered to a subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// A session's queue was full and the new message was dropped.
    QueueFull,
    /// A session's queue was full and its oldest message was dropped for the new one.
    QueueFullOldest,
    /// The message expiry interval ran out before delivery.
    Expired,
    /// The packet would exceed the client's Maximum Packet Size [MQTT-3.1.2-25].
    TooLargeForClient,
    /// Authorization denied the publish.
    NotAuthorized,
    /// A retained message matching a new subscription found its session's queue full: a filter
    /// may match more retained messages than a queue holds.
    RetainedQueueFull,
    /// A retained PUBLISH found the retained store full; MQTT 5 publishers were told (0x97).
    RetainedStoreFull,
    /// A QoS 1 or 2 PUBLISH from an MQTT 5 client while the store's commits fail (a full disk):
    /// refused with 0x97 rather than acknowledged without being kept.
    StorageFailing,
}

impl DropReason {
    pub const ALL: [DropReason; 8] = [
        Self::QueueFull,
        Self::QueueFullOldest,
        Self::Expired,
        Self::TooLargeForClient,
        Self::NotAuthorized,
        Self::RetainedQueueFull,
        Self::RetainedStoreFull,
        Self::StorageFailing,
    ];

    pub fn kind(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::QueueFullOldest => "queue_full_oldest",
            Self::Expired => "expired",
            Self::TooLargeForClient => "too_large_for_client",
            Self::NotAuthorized => "not_authorized",
            Self::RetainedQueueFull => "retained_queue_full",
            Self::RetainedStoreFull => "retained_store_full",
            Self::StorageFailing => "storage_failing",
        }
    }
}

/// A configured limit that refused something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    PacketSize,
    ReceiveMaximum,
    TopicLength,
    TopicLevels,
    Connections,
    ConnectionRate,
    PublishRate,
    Subscriptions,
    QueueFull,
    /// A publisher paused for a backlogged subscriber (`limits.backlog_high_water`).
    Backlog,
    /// A login refused without a password check: its address failed too often
    /// (`auth.failed_logins_per_address`).
    LoginBackoff,
    /// A login refused without a password check: too many wait for one (`auth.max_pending_logins`,
    /// `auth.max_pending_logins_per_address`).
    PendingLogins,
    /// A session's queue held `limits.max_queued_bytes`.
    QueuedBytes,
    /// All queues together held `limits.max_queued_bytes_total`.
    QueuedBytesTotal,
    /// The retained store held `limits.max_retained_messages`.
    RetainedMessages,
    /// The retained store held `limits.max_retained_bytes`.
    RetainedBytes,
    /// Connections together held `limits.max_partial_packet_bytes` in packets not yet whole.
    PartialPacketBytes,
}

impl LimitKind {
    pub const ALL: [LimitKind; 17] = [
        Self::PacketSize,
        Self::ReceiveMaximum,
        Self::TopicLength,
        Self::TopicLevels,
        Self::Connections,
        Self::ConnectionRate,
        Self::PublishRate,
        Self::Subscriptions,
        Self::QueueFull,
        Self::Backlog,
        Self::LoginBackoff,
        Self::PendingLogins,
        Self::QueuedBytes,
        Self::QueuedBytesTotal,
        Self::RetainedMessages,
        Self::RetainedBytes,
        Self::PartialPacketBytes,
    ];

    pub fn kind(self) -> &'static str {
        match self {
            Self::PacketSize => "max_packet_size",
            Self::ReceiveMaximum => "receive_maximum",
            Self::TopicLength => "max_topic_length",
            Self::TopicLevels => "max_topic_levels",
            Self::Connections => "max_connections",
            Self::ConnectionRate => "connection_rate",
            Self::PublishRate => "publish_rate",
            Self::Subscriptions => "max_subscriptions",
            Self::QueueFull => "max_queued_messages",
            Self::Backlog => "backlog_high_water",
            Self::LoginBackoff => "login_backoff",
            Self::PendingLogins => "max_pending_logins",
            Self::QueuedBytes => "max_queued_bytes",
            Self::QueuedBytesTotal => "max_queued_bytes_total",
            Self::RetainedMessages => "max_retained_messages",
            Self::RetainedBytes => "max_retained_bytes",
            Self::PartialPacketBytes => "max_partial_packet_bytes",
        }
    }
}

/// Why the HTTP endpoint closed a connection (`http.*` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpClose {
    /// The oldest connection, closed to make room for a new one: `http.max_connections` were open.
    MaxConnections,
    /// No complete request header within `http.header_read_timeout_secs` of the connection's start.
    HeaderReadTimeout,
    /// No next request within `http.header_read_timeout_secs` of the previous response.
    KeepAliveTimeout,
    /// Nothing read or written for `http.idle_timeout_secs` while a request was under way.
    IdleTimeout,
}

impl HttpClose {
    pub const ALL: [HttpClose; 4] = [
        Self::MaxConnections,
        Self::HeaderReadTimeout,
        Self::KeepAliveTimeout,
        Self::IdleTimeout,
    ];

    pub fn kind(self) -> &'static str {
        match self {
            Self::MaxConnections => "max_connections",
            Self::HeaderReadTimeout => "header_read_timeout",
            Self::KeepAliveTimeout => "keep_alive_timeout",
            Self::IdleTimeout => "idle_timeout",
        }
    }
}

/// Every metric the broker keeps. The per-label handles are resolved once so the hot path does no
/// label lookup.
#[derive(Debug, Clone)]
pub struct Stats {
    registry: Registry,
    pub connections: IntGauge,
    /// Connections waiting in the parking lot without a task (see `connection::park`).
    pub connections_parked: IntGauge,
    pub connections_total: IntCounter,
    messages_received: [IntCounter; 3],
    messages_sent: [IntCounter; 3],
    pub bytes_received: IntCounter,
    pub bytes_sent: IntCounter,
    pub auth_failures: IntCounter,
    pub protocol_errors: IntCounter,
    dropped: [IntCounter; DropReason::ALL.len()],
    limits: [IntCounter; LimitKind::ALL.len()],
    /// Time from a PUBLISH arriving to its delivery being written for a subscriber.
    pub delivery_latency: Histogram,
    /// Connections to the HTTP endpoint open now.
    pub http_connections: IntGauge,
    http_closed: [IntCounter; HttpClose::ALL.len()],
    /// Sampled when scraped (see `crate::http::metrics`).
    pub sessions: IntGauge,
    pub subscriptions: IntGauge,
    /// Distinct filters (and shared groups) with subscribers on this node.
    pub routes: IntGauge,
    pub retained: IntGauge,
    pub inflight: IntGauge,
    pub queued: IntGauge,
    /// Bytes queued across sessions, as counted against `limits.max_queued_bytes_total`.
    pub queued_bytes: IntGauge,
    pub retained_bytes: IntGauge,
    /// Bytes held in packets not yet whole, as counted against `limits.max_partial_packet_bytes`.
    pub partial_packet_bytes: IntGauge,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    pub fn new() -> Self {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).unwrap_or_else(|_| unreachable_metric());
            let _ = registry.register(Box::new(g.clone()));
            g
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).unwrap_or_else(|_| unreachable_metric());
            let _ = registry.register(Box::new(c.clone()));
            c
        };
        let counter_vec = |name: &str, help: &str, label: &str| {
            let v = IntCounterVec::new(Opts::new(name, help), &[label])
                .unwrap_or_else(|_| unreachable_metric());
            let _ = registry.register(Box::new(v.clone()));
            v
        };
        let by_qos = |v: &IntCounterVec| ["0", "1", "2"].map(|q| v.with_label_values(&[q]));
        let received = counter_vec(
            "tern_messages_received_total",
            "PUBLISH packets accepted from clients.",
            "qos",
        );
        let sent = counter_vec(
            "tern_messages_sent_total",
            "PUBLISH packets written to clients.",
            "qos",
        );
        let dropped = counter_vec(
            "tern_messages_dropped_total",
            "Messages not delivered to a subscriber, by reason.",
            "reason",
        );
        let limits = counter_vec(
            "tern_limit_hits_total",
            "Times a configured limit refused something, by limit.",
            "limit",
        );
        let http_closed = counter_vec(
            "tern_http_connections_closed_total",
            "HTTP connections closed by a bound of the HTTP endpoint, by reason.",
            "reason",
        );
        let delivery_latency = Histogram::with_opts(
            HistogramOpts::new(
                "tern_delivery_latency_seconds",
                "Time from a PUBLISH arriving to its delivery being written for a subscriber.",
            )
            .buckets(vec![
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
                0.1, 0.25, 0.5, 1.0, 5.0,
            ]),
        )
        .unwrap_or_else(|_| unreachable_metric());
        let _ = registry.register(Box::new(delivery_latency.clone()));
        Self {
            connections: gauge("tern_connections", "Client connections open now."),
            connections_parked: gauge(
                "tern_connections_parked",
                "Idle client connections held without a task, their sockets watched by the parking lot.",
            ),
            connections_total: counter(
                "tern_connections_total",
                "Client connections accepted since start.",
            ),
            messages_received: by_qos(&received),
            messages_sent: by_qos(&sent),
            bytes_received: counter(
                "tern_bytes_received_total",
                "Bytes read from client connections.",
            ),
            bytes_sent: counter(
                "tern_bytes_sent_total",
                "Bytes written to client connections.",
            ),
            auth_failures: counter(
                "tern_auth_failures_total",
                "Connections refused by authentication.",
            ),
            protocol_errors: counter(
                "tern_protocol_errors_total",
                "Connections closed for malformed input or a protocol error.",
            ),
            dropped: DropReason::ALL.map(|r| dropped.with_label_values(&[r.kind()])),
            limits: LimitKind::ALL.map(|l| limits.with_label_values(&[l.kind()])),
            delivery_latency,
            http_connections: gauge(
                "tern_http_connections",
                "Connections to the HTTP endpoint open now.",
            ),
            http_closed: HttpClose::ALL.map(|r| http_closed.with_label_values(&[r.kind()])),
            sessions: gauge("tern_sessions", "Sessions held, connected or not."),
            subscriptions: gauge("tern_subscriptions", "Subscriptions held."),
            routes: gauge(
                "tern_routes",
                "Distinct topic filters, and shared groups, with subscribers on this node.",
            ),
            retained: gauge("tern_retained_messages", "Retained messages stored."),
            inflight: gauge(
                "tern_inflight_messages",
                "QoS 1/2 messages sent to clients and not yet acknowledged.",
            ),
            queued: gauge(
                "tern_queued_messages",
                "Messages waiting in session queues.",
            ),
            queued_bytes: gauge(
                "tern_queued_bytes",
                "Bytes of message data waiting in session queues, a shared message counted once.",
            ),
            retained_bytes: gauge(
                "tern_retained_bytes",
                "Bytes of message data in the retained store.",
            ),
            partial_packet_bytes: gauge(
                "tern_partial_packet_bytes",
                "Bytes held by connections in packets not yet received whole.",
            ),
            registry,
        }
    }

    pub fn message_received(&self, qos: QoS) {
        self.messages_received[qos as usize].inc();
    }

    pub fn message_sent(&self, qos: QoS) {
        self.messages_sent[qos as usize].inc();
    }

    pub fn dropped(&self, reason: DropReason) {
        self.dropped[reason as usize].inc();
    }

    pub fn dropped_many(&self, reason: DropReason, times: usize) {
        self.dropped[reason as usize].inc_by(times as u64);
    }

    pub fn limit_hit(&self, limit: LimitKind) {
        self.limits[limit as usize].inc();
    }

    pub fn http_closed(&self, reason: HttpClose) {
        self.http_closed[reason as usize].inc();
    }

    pub fn dropped_count(&self, reason: DropReason) -> u64 {
        self.dropped[reason as usize].get()
    }

    pub fn received_total(&self) -> u64 {
        self.messages_received.iter().map(IntCounter::get).sum()
    }

    pub fn sent_total(&self) -> u64 {
        self.messages_sent.iter().map(IntCounter::get).sum()
    }

    /// The Prometheus text exposition of every metric.
    /// Where other parts (the cluster) register their own metrics, so one scrape shows them all.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}

/// Metric names and label sets above are constants that the prometheus crate accepts; this is only
/// reached if that ever changes, and then a metric that cannot be built is a programming error.
#[cold]
fn unreachable_metric<T>() -> T {
    panic!("invalid built-in metric definition")
}
