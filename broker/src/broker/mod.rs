//! The broker's shared core, which connection tasks, the `$SYS` task, the admin API and the inline
//! client all hold as an `Arc<Broker>`. It owns the mutable state that spans clients and is the only
//! way to change it:
//!
//! - [`admission`]: connection slots and the connection rate;
//! - [`sessions`]: opening, resuming, taking over, detaching and ending sessions, and wills;
//! - [`subscriptions`]: subscribing and unsubscribing, the one path that keeps the router, each
//!   session's own record and the hooks in step, and re-checking subscriptions after a reload;
//! - [`publish`]: accepting a message (hooks, retained store, routing) and delivering it locally;
//! - [`reload`]: re-reading files and applying changed rights to connected clients;
//! - [`drain`]: stopping to accept, telling clients to go, and shutting down;
//! - [`durable`]: what the store keeps of it, and rebuilding it from the store at start.
//!
//! What it lends out is read-only or synchronises itself: the configuration, statistics, hooks, the
//! retained store and backpressure. Nothing here awaits while holding a lock; timers (will delay,
//! session expiry) are separate tracked tasks that re-check the session's generation when they fire,
//! so a reconnect simply makes them stale.

mod admission;
mod cluster;
mod drain;
mod durable;
mod publish;
mod reload;
mod sessions;
mod subscriptions;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use admission::{ConnectionSlot, ListenerGate, PARTIAL_FREE, Refusal};
pub use cluster::BrokerSink;
pub use drain::DrainProgress;
pub use publish::Published;
pub use reload::Revalidation;
pub use sessions::{Attachment, SessionRequest};
pub use subscriptions::{Subscribed, Unsubscribed};

use crate::backpressure::Backpressure;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::hook::Hooks;
use crate::identity::ClientId;
use crate::reload::Reload;
use crate::router::{RetainedStore, Router};
use crate::session::{QueueLimits, Session, SessionRegistry};
use crate::stats::Stats;
use crate::storage::Storage;

#[derive(Debug)]
pub struct Broker {
    config: Arc<Config>,
    hooks: Hooks,
    stats: Arc<Stats>,
    /// Which sessions want a message. Changed only through [`subscriptions`], which keeps each
    /// session's own record of its subscriptions in step.
    router: Router,
    retained: RetainedStore,
    /// Publishers waiting for backlogged subscribers.
    backpressure: Backpressure,
    /// Sessions by client identifier. Changed only through [`sessions`].
    sessions: SessionRegistry,
    /// The bounds of every session's queue, and the broker-wide count of queued bytes, which
    /// the queues keep themselves.
    queue_limits: Arc<QueueLimits>,
    admission: admission::Admission,
    /// The other nodes, when this one is part of a cluster.
    cluster: Option<Cluster>,
    /// Where sessions and retained messages outlive the process, when `storage` is configured.
    storage: Option<Storage>,
    /// This node's name in retained-message stamps: its cluster node id, or empty.
    origin: Arc<str>,
    /// Claims and session moves under way in the cluster.
    cluster_state: cluster::ClusterState,
    reloaders: Mutex<Vec<Arc<dyn Reload>>>,
    /// Cancelled when the server shuts down.
    shutdown: CancellationToken,
    /// Cancelled when listeners must stop accepting: on drain, and (as a child) on shutdown.
    accepting: CancellationToken,
    draining: AtomicBool,
    /// Every task the broker spawns, so shutdown can wait for them.
    tasks: TaskTracker,
    /// The runtime the connections run on, recorded when the first one is parked: the parking
    /// lot's thread resumes connections there.
    runtime: OnceLock<tokio::runtime::Handle>,
    started_at: Instant,
}

impl Broker {
    pub fn new(config: Config, hooks: Hooks, shutdown: CancellationToken) -> Self {
        Self::with_stats(config, hooks, shutdown, Arc::new(Stats::default()))
    }

    /// A broker that counts in `stats`, which others (the users file's login guard) count in too.
    pub fn with_stats(
        config: Config,
        hooks: Hooks,
        shutdown: CancellationToken,
        stats: Arc<Stats>,
    ) -> Self {
        let backpressure = Backpressure::new(&config.limits);
        Self {
            router: Router::new(backpressure.marks(), Arc::clone(&stats)),
            retained: RetainedStore::new(&config.limits),
            queue_limits: QueueLimits::from_limits(&config.limits),
            admission: admission::Admission::new(&config.limits),
            cluster: None,
            storage: None,
            origin: Arc::from(""),
            cluster_state: cluster::ClusterState::default(),
            config: Arc::new(config),
            backpressure,
            sessions: SessionRegistry::default(),
            hooks,
            stats,
            tasks: TaskTracker::new(),
            started_at: Instant::now(),
            accepting: shutdown.child_token(),
            shutdown,
            draining: AtomicBool::new(false),
            reloaders: Mutex::new(Vec::new()),
            runtime: OnceLock::new(),
        }
    }

    /// Makes this broker one node of `cluster`.
    #[must_use]
    pub fn with_cluster(mut self, cluster: Cluster) -> Self {
        self.origin = Arc::from(cluster.node_id());
        self.cluster = Some(cluster);
        self
    }

    /// Keeps sessions and retained messages in `storage` (see [`durable`]).
    #[must_use]
    pub fn with_storage(mut self, storage: Storage) -> Self {
        self.storage = Some(storage);
        self
    }

    /// The store, when sessions and retained messages outlive the process.
    pub fn storage(&self) -> Option<&Storage> {
        self.storage.as_ref()
    }

    /// The cluster this broker is a node of, if any.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_ref()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn hooks(&self) -> &Hooks {
        &self.hooks
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Retained messages: stored by [`Self::publish`] and replicated to a cluster's other nodes,
    /// read on subscribe, listed by the admin API, swept for expiry by housekeeping. Deleted through
    /// [`Self::delete_retained`].
    pub fn retained(&self) -> &RetainedStore {
        &self.retained
    }

    /// Publishers waiting for backlogged subscribers: a publishing connection waits here, and
    /// whoever takes deliveries from a session's queue lets them go on.
    pub fn backpressure(&self) -> &Backpressure {
        &self.backpressure
    }

    /// Every task the broker spawns is tracked here, so that shutdown can wait for it.
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// Cancelled when the server shuts down.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Cancelled when listeners must stop accepting (drain or shutdown).
    pub fn accepting_token(&self) -> &CancellationToken {
        &self.accepting
    }

    pub fn uptime(&self) -> std::time::Duration {
        self.started_at.elapsed()
    }

    /// The runtime connections run on, once a connection has recorded it.
    pub(crate) fn runtime(&self) -> Option<&tokio::runtime::Handle> {
        self.runtime.get()
    }

    /// Records the current runtime as the one connections run on (see [`Self::runtime`]).
    pub(crate) fn record_runtime(&self) {
        if self.runtime.get().is_none()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let _ = self.runtime.set(runtime);
        }
    }

    /// The session of `client_id`, if the broker holds one.
    pub fn session(&self, client_id: &ClientId) -> Option<Arc<Session>> {
        self.sessions.get(client_id)
    }

    /// Every session the broker holds, for listings and `$SYS`.
    pub fn sessions(&self) -> Vec<Arc<Session>> {
        self.sessions.snapshot()
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Bytes queued across all sessions, as counted against `limits.max_queued_bytes_total`.
    pub fn queued_bytes(&self) -> usize {
        self.queue_limits.total_bytes()
    }

    /// Subscriptions across all sessions (a session's overlapping filters each count).
    pub fn subscription_count(&self) -> usize {
        self.router.subscription_count()
    }

    /// Distinct routes on this node: filters, and shared groups, with at least one subscriber.
    pub fn route_count(&self) -> usize {
        self.router.route_count()
    }
}
