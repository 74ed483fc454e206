//! The broker's shared core: configuration, router, session registry, hooks and counters, and the rules
//! that span them — opening, taking over, detaching and ending sessions, wills, and publishing.
//!
//! Connection tasks, the `$SYS` task and the inline client all hold an `Arc<Broker>`. Nothing here
//! awaits while holding a lock; timers (will delay, session expiry) are separate tracked tasks that
//! re-check the session's generation when they fire, so a reconnect simply makes them stale.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use crate::backpressure::Backpressure;
use crate::codec::ReasonCode;
use crate::config::Config;
use crate::hook::{Access, ClientInfo, Hooks};
use crate::limits::TokenBucket;
use crate::message::Message;
use crate::router::{Routed, Router};
use crate::session::{
    ClientId, ConnectionControl, Generation, PendingWill, Session, SessionId, SessionRegistry,
    unix_seconds_now,
};
use crate::stats::Stats;
use crate::topic::SubscriptionFilter;

/// Session Expiry Interval meaning "never" [MQTT-3.1.2-?] (0xFFFFFFFF).
pub const NEVER_EXPIRES: u32 = u32::MAX;

#[derive(Debug)]
pub struct Broker {
    pub config: Arc<Config>,
    pub router: Router,
    /// Publishers waiting for backlogged subscribers.
    pub backpressure: Backpressure,
    pub sessions: SessionRegistry,
    pub hooks: Hooks,
    pub stats: Arc<Stats>,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
    /// Every task the broker spawns, so shutdown can wait for them.
    pub tasks: TaskTracker,
    pub started_at: Instant,
    /// Cancelled when listeners must stop accepting: on drain, and (as a child) on shutdown.
    pub accepting: CancellationToken,
    draining: AtomicBool,
    reloaders: Mutex<Vec<Arc<dyn Reload>>>,
    /// Connections holding a slot under `limits.max_connections`.
    admitted: AtomicUsize,
    connection_rate: Option<Mutex<TokenBucket>>,
    /// The runtime the connections run on, recorded when the first one is parked: the parking
    /// lot's thread resumes connections there.
    pub(crate) runtime: std::sync::OnceLock<tokio::runtime::Handle>,
}

/// Something that re-reads its files on demand (users, ACL, TLS certificates, the admin token).
pub trait Reload: Send + Sync + std::fmt::Debug + 'static {
    /// A short name for reports, e.g. `acl`.
    fn name(&self) -> &'static str;
    /// Re-reads; `Ok(true)` if something changed. On error the previous state stays in force.
    fn reload(&self) -> Result<bool, String>;
    /// Files whose change on disk should trigger a reload.
    fn watched_files(&self) -> Vec<std::path::PathBuf> {
        Vec::new()
    }
    /// Whether a change can alter what connected clients may do, so that they must be re-checked
    /// (users and ACL: yes; certificates and the admin token: no).
    fn affects_client_rights(&self) -> bool {
        false
    }
}

/// What one reload did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadOutcome {
    pub name: &'static str,
    pub changed: bool,
    pub error: Option<String>,
}

/// What re-checking connected clients after a rights change did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Revalidation {
    /// Connections told to go (MQTT 5: DISCONNECT 0x87) because their credentials were revoked.
    pub disconnected: usize,
    /// Subscriptions removed because the ACL no longer allows them.
    pub subscriptions_removed: usize,
    /// Subscriptions kept at a lower QoS than before.
    pub subscriptions_downgraded: usize,
}

/// How far a drain has got.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DrainProgress {
    /// `running`, `draining` or `drained`.
    pub state: &'static str,
    pub connections: i64,
    pub sessions: usize,
    pub inflight: usize,
    pub queued: usize,
}

/// What re-checking one subscription did.
enum SubscriptionCheck {
    Kept,
    Removed,
    Downgraded,
}

/// What a connection asks for when it opens its session.
#[derive(Debug)]
pub struct SessionRequest {
    pub client_id: ClientId,
    pub clean_start: bool,
    pub expiry_interval: u32,
    pub client: Arc<ClientInfo>,
}

/// A connection's hold on its session.
#[derive(Debug)]
pub struct Attachment {
    pub session: Arc<Session>,
    pub session_present: bool,
    pub control: Arc<ConnectionControl>,
    pub generation: Generation,
}

impl Broker {
    pub fn new(config: Config, hooks: Hooks, shutdown: CancellationToken) -> Self {
        let connection_rate = config
            .limits
            .max_connection_rate
            .map(|rate| Mutex::new(TokenBucket::per_second(rate)));
        let backpressure = Backpressure::new(&config.limits);
        let stats = Arc::new(Stats::default());
        Self {
            router: Router::new(backpressure.marks(), Arc::clone(&stats)),
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
            admitted: AtomicUsize::new(0),
            connection_rate,
            runtime: std::sync::OnceLock::new(),
        }
    }

    /// Takes a slot under `limits.max_connections`; false when the broker is full.
    pub fn admit_connection(&self) -> bool {
        let before = self.admitted.fetch_add(1, Ordering::AcqRel);
        if self
            .config
            .limits
            .max_connections
            .is_some_and(|max| before >= max)
        {
            self.admitted.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    pub fn release_connection(&self) {
        self.admitted.fetch_sub(1, Ordering::AcqRel);
    }

    /// Whether `limits.max_connection_rate` lets one more connection in now.
    pub fn admit_connection_rate(&self) -> bool {
        self.connection_rate
            .as_ref()
            .is_none_or(|bucket| bucket.lock().try_take(Instant::now()))
    }

    /// Registers something the admin API's reload (and file watchers) should re-read.
    pub fn register_reload(&self, reload: Arc<dyn Reload>) {
        self.reloaders.lock().push(reload);
    }

    /// Re-reads every registered file set; each reports separately so one bad file does not hide
    /// the others.
    pub fn reload_all(&self) -> Vec<ReloadOutcome> {
        let reloaders = self.reloaders.lock().clone();
        let outcomes: Vec<ReloadOutcome> = reloaders
            .iter()
            .map(|r| match r.reload() {
                Ok(changed) => ReloadOutcome {
                    name: r.name(),
                    changed,
                    error: None,
                },
                Err(error) => {
                    tracing::warn!(name = r.name(), %error, "reload failed; previous state kept");
                    ReloadOutcome {
                        name: r.name(),
                        changed: false,
                        error: Some(error),
                    }
                }
            })
            .collect();
        let rights_changed = reloaders
            .iter()
            .zip(&outcomes)
            .any(|(r, o)| o.changed && r.affects_client_rights());
        if rights_changed {
            self.revalidate_clients();
        }
        outcomes
    }

    /// Files the registered reloaders watch.
    pub fn watched_files(&self) -> Vec<std::path::PathBuf> {
        self.reloaders
            .lock()
            .iter()
            .flat_map(|r| r.watched_files())
            .collect()
    }

    /// Applies changed rights to connected clients: a revoked client is disconnected (0x87); a
    /// subscription no longer allowed is removed, and one allowed at a lower QoS is downgraded.
    /// Clients whose rights did not change are not touched.
    pub fn revalidate_clients(&self) -> Revalidation {
        let mut done = Revalidation::default();
        for session in self.sessions.snapshot() {
            let (client, connection, subscriptions) = {
                let state = session.lock();
                let Some(client) = state.client.clone() else {
                    continue;
                };
                let subscriptions: Vec<_> = state
                    .subscriptions
                    .iter()
                    .map(|(f, r)| (f.clone(), r.clone()))
                    .collect();
                (client, state.connection.clone(), subscriptions)
            };
            if let Some(connection) = &connection
                && self.hooks.revoked(&client)
            {
                tracing::info!(client_id = %client.client_id, "credentials revoked; disconnecting");
                connection.kick(ReasonCode::NOT_AUTHORIZED);
                done.disconnected += 1;
                continue;
            }
            for (filter, record) in subscriptions {
                match self.revalidate_subscription(&session, &client, filter, record) {
                    SubscriptionCheck::Kept => {}
                    SubscriptionCheck::Removed => done.subscriptions_removed += 1,
                    SubscriptionCheck::Downgraded => done.subscriptions_downgraded += 1,
                }
            }
        }
        tracing::debug!(?done, "connected clients re-checked");
        done
    }

    fn revalidate_subscription(
        &self,
        session: &Arc<Session>,
        client: &ClientInfo,
        filter: bytestring::ByteString,
        mut record: crate::session::SubscriptionRecord,
    ) -> SubscriptionCheck {
        let Ok(parsed) = SubscriptionFilter::parse(&filter, true) else {
            return SubscriptionCheck::Kept;
        };
        let requested = record.options.qos;
        let granted =
            match self
                .hooks
                .authorize_subscribe(client, parsed.filter.as_str(), requested)
            {
                Access::Deny => None,
                Access::AllowUpTo(max) => Some(requested.min(max)),
                Access::Allow | Access::Continue => Some(requested),
            };
        match granted {
            None => {
                tracing::info!(client_id = %client.client_id, %filter, "subscription no longer allowed; removed");
                self.router.unsubscribe(session.id, &parsed);
                session.lock().subscriptions.remove(&filter);
                SubscriptionCheck::Removed
            }
            Some(qos) if qos != requested => {
                record.options.qos = qos;
                self.router
                    .subscribe(session, &parsed, record.options, record.identifier);
                session.lock().subscriptions.insert(filter, record);
                SubscriptionCheck::Downgraded
            }
            Some(_) => SubscriptionCheck::Kept,
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Starts a drain: stop accepting, then tell every connected client to go elsewhere (MQTT 5:
    /// DISCONNECT 0x9C *Use another server*; 3.x: close). Sessions stay, so persistent ones keep
    /// their queued messages. Returns false if a drain had already started.
    pub fn start_drain(&self) -> bool {
        if self.draining.swap(true, Ordering::SeqCst) {
            return false;
        }
        tracing::info!("draining: no new connections, disconnecting clients");
        self.accepting.cancel();
        self.kick_connected(ReasonCode::USE_ANOTHER_SERVER);
        true
    }

    /// Begins shutdown: listeners stop accepting, and every connected client is told 0x8B *Server
    /// shutting down*. A connection that attaches after this sees the cancelled token as its event
    /// loop starts, so none is left running.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
        self.kick_connected(ReasonCode::SERVER_SHUTTING_DOWN);
    }

    fn kick_connected(&self, reason: ReasonCode) {
        for session in self.sessions.snapshot() {
            if let Some(connection) = &session.lock().connection {
                connection.kick(reason);
            }
        }
    }

    pub fn drain_progress(&self) -> DrainProgress {
        let connections = self.stats.connections.get();
        let (sessions, inflight, queued) = self.session_totals();
        let state = match (self.is_draining(), connections) {
            (false, _) => "running",
            (true, 0) => "drained",
            (true, _) => "draining",
        };
        DrainProgress {
            state,
            connections,
            sessions,
            inflight,
            queued,
        }
    }

    /// Sessions held, and the messages in flight and queued across them.
    pub fn session_totals(&self) -> (usize, usize, usize) {
        let sessions = self.sessions.snapshot();
        let (mut inflight, mut queued) = (0, 0);
        for session in &sessions {
            let state = session.lock();
            inflight += state.inflight.len();
            queued += state.queue.len();
        }
        (sessions.len(), inflight, queued)
    }

    /// Accepts a message for delivery: hooks, retained store, then every matching session.
    /// Returns how many sessions it was handed to.
    pub fn publish(&self, message: Message, from: Option<&ClientInfo>) -> usize {
        self.route_publish(message, from).sessions
    }

    /// [`Self::publish`], saying also which subscriber backs up (for a publishing connection).
    pub fn route_publish(&self, message: Message, from: Option<&ClientInfo>) -> Routed {
        let message = Arc::new(message);
        for hook in self.hooks.iter() {
            hook.on_publish(from, &message);
        }
        if message.retain && self.config.features.retain_available {
            self.router.retain(&message);
        }
        self.router.route(&message)
    }

    /// Opens, resumes or takes over the session for a CONNECT [MQTT-3.1.2-4], [MQTT-3.1.2-5],
    /// [MQTT-3.1.4-3].
    pub fn open_session(self: &Arc<Self>, request: SessionRequest) -> Attachment {
        let control = Arc::new(ConnectionControl::default());
        let mut ended_session = None;
        let limits = &self.config.limits;

        let (session, session_present, generation) = {
            let mut sessions = self.sessions.lock();
            let existing = sessions.get(&request.client_id).cloned();
            let resumed = existing
                .as_ref()
                .filter(|_| !request.clean_start)
                .and_then(|session| Self::resume(session, &request, &control));
            match (resumed, existing) {
                (Some(generation), Some(session)) => (session, true, generation),
                (_, existing) => {
                    // Clean start (or nothing to resume): any old session ends here. Its connection,
                    // if any, is kicked and publishes its own will as it closes.
                    ended_session = existing;
                    let session = Arc::new(Session::new(
                        self.sessions.next_id(),
                        request.client_id.clone(),
                        limits.max_queued_messages,
                        limits.queue_overflow,
                    ));
                    {
                        let mut state = session.lock();
                        state.generation = 1;
                        state.connection = Some(Arc::clone(&control));
                        state.expiry_interval = request.expiry_interval;
                        state.client = Some(request.client.clone());
                        state.connected_since = unix_seconds_now();
                    }
                    session.set_online(true);
                    sessions.insert(Arc::clone(&session));
                    (session, false, 1)
                }
            }
        };

        if let Some(old) = ended_session {
            self.end_session(&old, Some(ReasonCode::SESSION_TAKEN_OVER), None);
        }
        Attachment {
            session,
            session_present,
            control,
            generation,
        }
    }

    /// Attaches a new connection to an existing session, kicking the one attached before. Returns the
    /// new generation, or `None` if the session has just ended and cannot be resumed.
    fn resume(
        session: &Arc<Session>,
        request: &SessionRequest,
        control: &Arc<ConnectionControl>,
    ) -> Option<Generation> {
        let mut state = session.lock();
        if state.ended {
            return None;
        }
        if let Some(old) = state.connection.take() {
            old.kick(ReasonCode::SESSION_TAKEN_OVER);
        }
        // A will still waiting out its delay is cancelled by this new connection [MQTT-3.1.3-9].
        state.pending_will = None;
        state.generation = state.generation.wrapping_add(1);
        state.connection = Some(Arc::clone(control));
        state.expiry_interval = request.expiry_interval;
        state.client = Some(request.client.clone());
        state.connected_since = unix_seconds_now();
        session.set_online(true);
        Some(state.generation)
    }

    /// A connection let go of its session, handing over its will: `None` after a DISCONNECT with reason
    /// 0x00 [MQTT-3.1.2-10]. Applies the session expiry interval [MQTT-3.1.2-23] and the will delay.
    pub fn detach(
        self: &Arc<Self>,
        session: &Arc<Session>,
        generation: Generation,
        will: Option<Box<PendingWill>>,
    ) {
        enum Next {
            /// Another connection took the session over; only an undelayed will goes out [MQTT-3.1.3-9].
            TakenOver,
            /// The session ended (clean-start takeover): the will goes out now.
            Ended,
            Detached {
                expiry: u32,
            },
        }
        let next = {
            let mut state = session.lock();
            if state.ended {
                Next::Ended
            } else if state.generation != generation {
                Next::TakenOver
            } else {
                state.connection = None;
                session.set_online(false);
                Next::Detached {
                    expiry: state.expiry_interval,
                }
            }
        };
        self.backpressure.subscriber_gone(session);
        match next {
            Next::Ended => {
                if let Some(will) = will {
                    self.publish_will(will, session.id);
                }
            }
            Next::TakenOver => {
                if let Some(will) = will.filter(|w| w.delay == 0) {
                    self.publish_will(will, session.id);
                }
            }
            Next::Detached { expiry: 0 } => {
                if let Some(will) = will {
                    self.publish_will(will, session.id);
                }
                self.end_session(session, None, Some(generation));
            }
            Next::Detached { expiry } => {
                match will {
                    Some(will) if will.delay > 0 => {
                        let delay = Duration::from_secs(u64::from(will.delay));
                        session.lock().pending_will = Some(will);
                        self.spawn_will_timer(session, generation, delay);
                    }
                    Some(will) => self.publish_will(will, session.id),
                    None => {}
                }
                if expiry != NEVER_EXPIRES {
                    self.spawn_expiry_timer(
                        session,
                        generation,
                        Duration::from_secs(u64::from(expiry)),
                    );
                }
            }
        }
    }

    /// Ends a session: it leaves the registry and the router, its queue is dropped, and a will still
    /// pending is published now, since the session ending comes before its delay [MQTT-3.1.3-9].
    /// With `idle_since`, only a session still detached at that generation is ended (for timers).
    pub fn end_session(
        &self,
        session: &Arc<Session>,
        kick: Option<ReasonCode>,
        idle_since: Option<Generation>,
    ) {
        let (subscriptions, will) = {
            let mut state = session.lock();
            let reattached =
                idle_since.is_some_and(|g| state.generation != g || state.connection.is_some());
            if state.ended || reattached {
                return;
            }
            state.ended = true;
            state.queue.clear();
            if let (Some(reason), Some(connection)) = (kick, state.connection.take()) {
                connection.kick(reason);
            }
            session.set_online(false);
            (
                std::mem::take(&mut state.subscriptions),
                state.pending_will.take(),
            )
        };
        self.backpressure.subscriber_gone(session);
        self.sessions.remove_if_same(session);
        for filter in subscriptions.keys() {
            if let Ok(parsed) = SubscriptionFilter::parse(filter, true) {
                self.router.unsubscribe(session.id, &parsed);
            }
        }
        if let Some(will) = will {
            self.publish_will(will, session.id);
        }
        if idle_since.is_some() {
            debug!(client_id = %session.client_id, "session ended");
            for hook in self.hooks.iter() {
                hook.on_session_expired(&session.client_id);
            }
        }
    }

    fn publish_will(&self, will: Box<PendingWill>, publisher: SessionId) {
        let mut message = will.message;
        message.publisher = Some(publisher);
        // The will's Message Expiry Interval starts when it is published [MQTT-3.1.3-?].
        let interval = message.properties.message_expiry_interval.take();
        message.received_at = Instant::now();
        self.publish(message.with_expiry_interval(interval), None);
    }

    fn spawn_will_timer(
        self: &Arc<Self>,
        session: &Arc<Session>,
        generation: Generation,
        delay: Duration,
    ) {
        let broker = Arc::clone(self);
        let session = Arc::clone(session);
        self.tasks.spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = broker.shutdown.cancelled() => return,
            }
            let will = {
                let mut state = session.lock();
                if state.generation != generation || state.connection.is_some() || state.ended {
                    return;
                }
                state.pending_will.take()
            };
            if let Some(will) = will {
                broker.publish_will(will, session.id);
            }
        });
    }

    fn spawn_expiry_timer(
        self: &Arc<Self>,
        session: &Arc<Session>,
        generation: Generation,
        expiry: Duration,
    ) {
        let broker = Arc::clone(self);
        let session = Arc::clone(session);
        self.tasks.spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(expiry) => {}
                () = broker.shutdown.cancelled() => return,
            }
            broker.end_session(&session, None, Some(generation));
        });
    }
}
